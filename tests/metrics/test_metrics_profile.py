"""Paired differences against every control kind (untrained, shuffled, the random twin, the ceiling) and
the explanation profile they decide, on item-score tables whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sonieval.document import Document
from sonieval.metrics.controls import item_summary, learning_table, paired_item_differences
from sonieval.metrics.profile import KEPT_SHARE, profile_figure, profile_table, profile_values_figure
from sonieval.metrics.render import add_learning, add_profile

TRAINED = "crepe-tiny.layer3/LIN/lr0.005/e8/transpose/none"
SHUFFLED = "crepe-tiny.layer3/LIN.shuffled/lr0.005/e8/transpose/none"
UNTRAINED = "crepe-tiny.layer3/LIN.untrained/lr0.0/e0/transpose/none"
TWIN = "crepe-tiny.twin.layer3/LIN/lr0.005/e8/transpose/none"
CEILING = "codec/mel/lr0.0/e0/none/codec"
DEEPER = "crepe-tiny.layer5/LIN/lr0.005/e8/transpose/none"  # no twin, no controls of its own scored
N_CLIPS = 20
# per measure, each system's mean; every clip adds the same "difficulty" to all systems (sd 0.3), so the
# systems' own CIs overlap while the clip-wise differences are tight: only a paired comparison separates them
PLAN = {
    "raw_pitch_accuracy": {CEILING: 0.8, TRAINED: 0.6, TWIN: 0.3, SHUFFLED: 0.2, UNTRAINED: 0.1},  # kept, ▲ twin
    "loudness_correlation": {CEILING: 0.95, TRAINED: 0.4, TWIN: 0.6, SHUFFLED: 0.3, UNTRAINED: 0.1},  # partly, ▼
    "mfcc_correlation": {CEILING: 0.9, TRAINED: 0.3, TWIN: 0.3, SHUFFLED: 0.3, UNTRAINED: 0.1},  # lost, = twin
    "centroid_distance": {CEILING: 0.5, TRAINED: 0.3, TWIN: 0.5, SHUFFLED: 0.5, UNTRAINED: 0.5},  # codec can't
    "onset_f1": {CEILING: 0.9, TRAINED: 0.8, TWIN: 0.5, SHUFFLED: 0.1, UNTRAINED: 0.1},  # 3 clips only
}


def item_scores(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 0.3, N_CLIPS)
    rows = []
    for metric, means in PLAN.items():
        shared = rng.normal(0.0, 0.02, N_CLIPS)
        for sid, mean in means.items():
            noise = rng.normal(0.0, 0.02, N_CLIPS)
            if metric == "mfcc_correlation" and sid in (TRAINED, TWIN, SHUFFLED):
                noise = shared  # no difference at all: trained, twin and shuffled give the same values
            for i in range(N_CLIPS):
                value = mean + difficulty[i] + noise[i]
                undefined = metric == "onset_f1" and i >= 3
                rows.append(
                    {
                        "system_id": sid,
                        "clip_id": f"c{i:02d}",
                        "metric": metric,
                        "embedding": "waveform-16k",
                        "value": np.nan if undefined else value,
                        "error": "onset_f1: no onsets detected in the original" if undefined else None,
                    }
                )
    rows += [{**r, "system_id": DEEPER} for r in rows if r["system_id"] == TRAINED]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def scored():
    items = item_scores()
    paired = paired_item_differences(items, "mel", n_boot=400)
    return items, paired, profile_table(items, paired, "mel", n_boot=400)


def test_paired_differences_cover_every_control_kind_and_pair_the_clips(scored):
    items, paired, _ = scored
    pitch = paired[(paired["system_id"] == TRAINED) & (paired["metric"] == "raw_pitch_accuracy")].set_index("control")
    assert sorted(pitch.index) == ["ceiling", "shuffled", "twin", "untrained"]
    assert pitch.loc["twin", "control_id"] == TWIN and pitch.loc["ceiling", "control_id"] == CEILING
    wide = items[items["metric"] == "raw_pitch_accuracy"].pivot(index="clip_id", columns="system_id", values="value")
    for control, cid in (("shuffled", SHUFFLED), ("twin", TWIN), ("ceiling", CEILING)):
        assert pitch.loc[control, "difference"] == pytest.approx((wide[TRAINED] - wide[cid]).mean())
    assert pitch.loc["shuffled", "n_pairs"] == N_CLIPS and pitch.loc["shuffled", "better"] == True  # noqa: E712
    assert pitch.loc["ceiling", "better"] == False  # noqa: E712 - the ceiling is better
    # loudness: the systems' own CIs overlap (the clips differ far more than the systems, 0.3 against 0.1),
    # the paired difference is clear of 0: only pairing separates them
    summary = item_summary(items, n_boot=400).set_index(["system_id", "metric"])
    trained, shuffled = summary.loc[(TRAINED, "loudness_correlation")], summary.loc[(SHUFFLED, "loudness_correlation")]
    assert trained["ci_low"] < shuffled["ci_high"]
    loud = paired[(paired["system_id"] == TRAINED) & (paired["metric"] == "loudness_correlation")]
    assert loud.set_index("control").loc["shuffled", "better"] == True  # noqa: E712
    onsets = paired[(paired["system_id"] == TRAINED) & (paired["metric"] == "onset_f1")]
    assert set(onsets["n_pairs"]) == {3}  # clips undefined on either side are left out of the pair
    assert not (paired["system_id"] == TWIN).any()  # a twin is a control, not a trained system


def test_the_profile_decides_kept_partly_lost_and_not_measurable(scored):
    _, _, profile = scored
    p = profile[profile["system_id"] == TRAINED].set_index("attribute")
    assert p.loc["pitch", "verdict"] == "kept" and p.loc["pitch", "pretraining"] == "keeps it"
    assert p.loc["pitch", "share"] == pytest.approx((0.6 - 0.2) / (0.8 - 0.2), abs=0.05)
    assert p.loc["loudness", "verdict"] == "partly kept" and p.loc["loudness", "pretraining"] == "twin better"
    assert p.loc["spectral_envelope", "verdict"] == "lost" and "shuffled" in p.loc["spectral_envelope", "reason"]
    assert p.loc["spectral_envelope", "pretraining"] == "no difference"
    assert p.loc["brightness", "verdict"] == "not measurable"
    assert "ceiling does not beat" in p.loc["brightness", "reason"]
    assert p.loc["onsets", "verdict"] == "not measurable" and "3 paired clips" in p.loc["onsets", "reason"]
    assert (p.loc["onsets", "n_defined"], p.loc["onsets", "n_items"]) == (3, N_CLIPS)
    deeper = profile[profile["system_id"] == DEEPER]
    assert deeper["verdict"].eq("not measurable").all() and deeper["pretraining"].isna().all()
    assert "shuffled, untrained" in deeper["reason"].iloc[0]


def test_the_learning_table_uses_paired_verdicts_and_shows_the_twin(scored):
    items, paired, _ = scored
    learning = learning_table(pd.DataFrame(), item_summary(items, n_boot=400), None, "mel", None, paired)
    row = learning[(learning["system_id"] == TRAINED) & (learning["measure"] == "raw_pitch_accuracy")].iloc[0]
    assert row["verdict"] == "paired" and row["beats_controls"] is True and row["beats_twin"] is True
    assert row["twin_value"] == pytest.approx(
        items.query("system_id == @TWIN and metric == 'raw_pitch_accuracy'")["value"].mean()
    )
    loud = learning[(learning["system_id"] == TRAINED) & (learning["measure"] == "loudness_correlation")].iloc[0]
    assert loud["beats_twin"] is False and loud["beats_controls"] is True


def test_the_page_states_the_rule_and_the_figures_are_drawn(scored, tmp_path):
    items, paired, profile = scored
    doc = Document(markup=True)
    figures = [
        profile_figure(profile, tmp_path / "profile.png"),
        profile_values_figure(profile, tmp_path / "profile_values.png"),
    ]
    add_learning(doc, learning_table(pd.DataFrame(), item_summary(items, n_boot=100), None, "mel", None, paired))
    add_profile(doc, profile, figures, tmp_path)
    text = doc.markdown()
    assert "## Explanation profile: what each trained system keeps" in text
    assert f"at least {KEPT_SHARE:.0%} of the way" in text and "random twin" in text
    assert "kept (" in text and "▲twin" in text and "not measurable" in text
    assert "![explanation profile](profile.png)" in text
    assert "Raw pitch accuracy" not in text.split("## Explanation profile")[0]  # not repeated in the learning section
    for f in figures:
        assert f.stat().st_size > 10_000


def _clicks(times, rate: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.01 * rng.standard_normal(int(seconds * rate))
    for t in times:
        i = int(t * rate)
        x[i : i + 400] += np.hanning(400) * rng.standard_normal(400) * (0.3 + 0.2 * np.sin(t))
    return x.astype(np.float32)


def test_the_score_stage_writes_the_profile_its_tables_and_figures(tmp_path, torch_threads):
    """score_sets end to end on WAVs named by system ids: the trained system's sonifications keep the
    originals' onsets, its random twin's come 80 ms late, the shuffled control's are one fixed pattern."""
    from sonieval.audio import write_wav
    from sonieval.ledger import RunLedger
    from sonieval.metrics.leaderboard import score_sets
    from sonieval.metrics.scoring import AudioSet, ScoreConfig

    rate, seconds, n = 16_000, 2.0, 8
    pattern = [[0.2 + 0.23 * k + 0.05 * i for k in range(6)] for i in range(n)]
    sides = {
        "original": lambda i: _clicks(pattern[i], rate, seconds, i),
        CEILING: lambda i: _clicks(pattern[i], rate, seconds, 100 + i),
        TRAINED: lambda i: _clicks([t + 0.01 for t in pattern[i]], rate, seconds, 200 + i),
        TWIN: lambda i: _clicks([t + 0.08 for t in pattern[i]], rate, seconds, 300 + i),
        SHUFFLED: lambda i: _clicks(pattern[0][::2], rate, seconds, 400),
        UNTRAINED: lambda i: _clicks([], rate, seconds, 500 + i),
    }
    paths = {
        side: [str(write_wav(tmp_path / f"s{j}" / f"c{i}.wav", make(i), rate, "FLOAT")) for i in range(n)]
        for j, (side, make) in enumerate(sides.items())
    }
    ids = [f"c{i}" for i in range(n)]
    reference = AudioSet("reference", paths["original"], ids)
    systems = [AudioSet(sid, paths[sid], ids, originals=paths["original"]) for sid in sides if sid != "original"]
    config = ScoreConfig(
        embeddings=["logmel"],
        metrics=["kad"],
        bootstrap=200,
        per_class=False,
        item_metrics=["loudness_correlation", "onset_f1"],
        progress=False,
    )
    out = tmp_path / "scores"
    with RunLedger(tmp_path / "ledger.sqlite") as ledger:
        got = score_sets(
            reference,
            systems,
            out,
            config=config,
            cache_dir=tmp_path / "cache",
            reference_label="clicks",
            ledger=ledger,
            primary_codec="mel",
        )
    onsets = got.profile.set_index("attribute").loc["onsets"]
    assert onsets["verdict"] == "kept" and onsets["pretraining"] == "keeps it", onsets.to_dict()
    assert {"paired_items.csv", "profile.csv", "leaderboard.md"} <= {p.name for p in out.iterdir()}
    assert (out / "figures" / "profile.png").is_file() and (out / "figures" / "profile_values.png").is_file()
    page = (out / "leaderboard.md").read_text()
    assert "## Explanation profile: what each trained system keeps" in page and "▲twin" in page
    summary = pd.read_csv(out / "item_summary.csv")
    assert {"n", "n_items", "undefined"} <= set(summary.columns)
