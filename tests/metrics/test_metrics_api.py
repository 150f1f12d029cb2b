"""The metrics as a user calls them: ``sonieval.metrics.kad / fad / Leaderboard`` on arrays, folders and lists
of files; nothing written unless asked; the same numbers as ``sonieval score``; one error line for bad input;
and the leaderboard page's Markdown and HTML carrying the same sections."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import sonieval.metrics as metrics
from sonieval.cli import main
from sonieval.errors import SonievalError
from sonieval.metrics import Leaderboard, fad, kad
from sonieval.tables import read_table

RATE = 16000


def _tone(freq: float, seconds: float, noise: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.4 * np.sin(2 * np.pi * freq * t) + noise * np.random.default_rng(seed).standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Three folders of 1-1.5 s clips: a reference of tones, a close system and a noisy one."""
    root = tmp_path_factory.mktemp("audio")
    spec = {"ref": (0.01, 0), "close": (0.02, 100), "noisy": (0.5, 200)}
    for name, (noise, seed) in spec.items():
        (root / name).mkdir()
        for i, freq in enumerate((220, 330, 440, 550, 660)):
            sf.write(root / name / f"c{i}.wav", _tone(freq + 7 * (name != "ref"), 1.0 + 0.1 * i, noise, seed + i), RATE)
    return root


def _arrays(folder):
    return [sf.read(p, dtype="float32")[0] for p in sorted(folder.glob("*.wav"))]


def test_public_names_are_exactly_the_api():
    assert sorted(metrics.__all__) == ["DistanceResult", "Leaderboard", "fad", "kad"]
    with pytest.raises(AttributeError):
        metrics.score_sets  # noqa: B018  (internal: importable from its module, not exported)


def test_kad_is_the_same_on_a_folder_a_list_of_files_and_arrays(sets, torch_threads):
    ref, ev = sets / "ref", sets / "close"
    on_folder = kad(ref, ev)
    on_files = kad(sorted(ref.glob("*.wav")), sorted(ev.glob("*.wav")))
    on_arrays = kad(_arrays(ref), _arrays(ev), sample_rate=RATE)
    assert on_folder.n_reference == 5 and on_folder.n_evaluated == 5
    assert on_folder.embedding == "logmel[weight-free]" and on_folder.bandwidth > 0
    assert np.isclose(float(on_files), float(on_folder), rtol=1e-9)
    assert np.isclose(float(on_arrays), float(on_folder), rtol=1e-6)
    d = on_folder.to_dict()
    assert {"value", "ci_low", "ci_high", "n_reference", "n_evaluated", "embedding", "bandwidth", "versions"} <= set(d)
    assert "kad_convention" in d["versions"] and "torch" in d["versions"]
    assert np.isnan(d["ci_low"])  # no bootstrap asked: no interval, said so
    # a real difference: the noisy system is further from the reference than the close one
    assert float(kad(ref, sets / "noisy")) > float(on_folder)


def test_arrays_at_another_rate_are_resampled_and_a_clips_by_samples_array_works(sets, torch_threads):
    ref = np.stack([_tone(f, 1.0, 0.01, i) for i, f in enumerate((220, 330, 440, 550))])
    ev = np.stack([_tone(f, 1.0, 0.3, 10 + i) for i, f in enumerate((220, 330, 440))])
    at_16k = kad(ref, ev, sample_rate=RATE)
    from sonieval.audio import resample

    at_22k = kad(resample(ref, RATE, 22050), resample(ev, RATE, 22050), sample_rate=22050)
    assert at_16k.n_reference == 4 and at_16k.n_evaluated == 3
    assert np.isclose(float(at_16k), float(at_22k), rtol=0.05)  # two resamplings apart, not bit-equal


def test_leaderboard_matches_the_cli_and_writes_only_when_asked(sets, tmp_path, monkeypatch, torch_threads):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = sorted(p.relative_to(sets) for p in sets.rglob("*"))
    board = Leaderboard(sets / "ref", metrics=("kad", "fad"), bootstrap=40, seed=3)
    got = board.add("close", sets / "close")
    board.add("noisy", sets / "noisy")
    table = board.table()
    assert list(cwd.iterdir()) == [] and sorted(p.relative_to(sets) for p in sets.rglob("*")) == before
    assert list(table.loc[table.metric == "kad", "system_id"]) == ["close", "noisy"]
    assert table.loc[table.metric == "kad", "bandwidth"].nunique() == 1  # one sigma, the reference's
    assert table.loc[table.metric == "kad", "bandwidth"].iloc[0] == board.bandwidth

    out = tmp_path / "cli"
    rc = main(
        [
            "score",
            "--reference",
            str(sets / "ref"),
            "--system",
            f"close={sets / 'close'}",
            "--system",
            f"noisy={sets / 'noisy'}",
            "--out",
            str(out),
            "--bootstrap",
            "40",
            "--no-items",
            "--no-progress",
            "--metric",
            "kad",
            "--metric",
            "fad",
        ]
    )
    assert rc == 0
    cli = read_table(out / "scores.parquet", "scores").set_index(["system_id", "metric"])
    for (system, metric), row in cli.iterrows():
        mine = table[(table.system_id == system) & (table.metric == metric)].iloc[0]
        assert mine["value"] == pytest.approx(row["value"], rel=1e-12), (system, metric)
        assert mine["reference_set"] == row["reference_set"] and mine["n_reference"] == row["n_reference"]
        if metric == "kad":  # same clips, same seed: the same bootstrap draws (CLI seed 0)
            assert np.isfinite(row["ci_low"]) and row["ci_low"] < row["ci_high"]
    assert got["kad"].value == pytest.approx(cli.loc[("close", "kad"), "value"], rel=1e-12)
    assert float(kad(sets / "ref", sets / "close", bootstrap=40)) == pytest.approx(got["kad"].value, rel=1e-12)
    seed0 = kad(sets / "ref", sets / "close", bootstrap=40, seed=0)
    assert (seed0.ci_low, seed0.ci_high) == pytest.approx(
        (cli.loc[("close", "kad"), "ci_low"], cli.loc[("close", "kad"), "ci_high"]), rel=1e-12
    )
    assert fad(sets / "ref", sets / "close").value == pytest.approx(cli.loc[("close", "fad"), "value"], rel=1e-9)

    files = board.write(tmp_path / "board")
    names = sorted(p.name for p in files)
    assert names == ["leaderboard.csv", "leaderboard.html", "leaderboard.md", "paired_kad.csv", "scores.csv"]
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "## KAD · logmel[weight-free]" in md and "Paired bootstrap against the best system `close`" in md
    assert list(cwd.iterdir()) == []


def test_cache_is_written_only_when_given_and_gives_the_same_value(sets, tmp_path, torch_threads):
    first = kad(sets / "ref", sets / "noisy", cache=tmp_path / "cache")
    cached = list((tmp_path / "cache").rglob("*.npy"))
    assert len(cached) == 10
    again = kad(sets / "ref", sets / "noisy", cache=tmp_path / "cache")
    assert float(again) == float(first)


@pytest.mark.parametrize(
    "reference, needle",
    [
        ("missing-folder", "missing-folder: reference: folder not found"),
        ([], "reference: the list of clips is empty"),
        (["nowhere/a.wav"], "nowhere/a.wav: reference: file not found"),
        ([np.zeros(RATE, np.float32), np.zeros(RATE, np.float32)], "arrays need sample_rate="),
        (np.zeros(RATE, np.float32), "expected clips × samples"),
    ],
)
def test_bad_input_is_one_error_line_naming_it(tmp_path, monkeypatch, reference, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SonievalError) as err:
        kad(reference, [np.zeros(RATE, np.float32)] * 2, sample_rate=None)
    text = str(err.value)
    assert needle in text and "\n" not in text


def test_bad_settings_are_one_error_line(sets):
    with pytest.raises(SonievalError, match="did you mean 'logmel'"):
        kad(sets / "ref", sets / "close", embedding="logmell")
    with pytest.raises(SonievalError, match="expected a list of kad and/or fad"):
        Leaderboard(sets / "ref", metrics=("kad", "fid"))
    board = Leaderboard(sets / "ref")
    board.add("a", sets / "close")
    with pytest.raises(SonievalError, match="added twice"):
        board.add("a", sets / "noisy")
    with pytest.raises(SonievalError, match="no systems"):
        Leaderboard(sets / "ref").write(sets / "never")
    assert not (sets / "never").exists()


# --------------------------------------------------------------------------- one document, two pages


def _page_scores() -> pd.DataFrame:
    from sonieval.tables import make_system_id

    rows = []

    def add(sid, value, category=None):
        rows.append(
            {
                "system_id": sid,
                "metric": "kad",
                "embedding": "logmel[weight-free]",
                "value": value,
                "ci_low": value - 0.5,
                "ci_high": value + 0.5,
                "category": category,
                "n_evaluated": 4,
                "n_reference": 8,
                "reference_set": "esc50:test",
                "bandwidth": 20.0,
                "scale": 100.0,
                "saturated": False,
                "error": None,
                "versions": '{"sonieval": "0"}',
            }
        )

    for seed, trained in ((None, 3.0), (43, 4.0), (44, 5.0)):  # replicate seeds: the seed table
        suffix = "" if seed is None else f".s{seed}"
        for control, offset, lr, epoch in (
            ("", 0.0, 0.005, 8),
            (".shuffled", 20.0, 0.005, 8),
            (".untrained", 40.0, 0.0, 0),
        ):
            add(make_system_id("ast", f"LIN{control}{suffix}", lr, epoch, "transpose", "none"), trained + offset)
    for slot, trained in (("wavlm", 2.0), ("wavlm.layer1", 3.0)):  # several layers: the depth table
        add(f"{slot}/LIN/lr0.01/e5/grid/none", trained)
        add(f"{slot}/LIN.shuffled/lr0.01/e5/grid/none", 9.0)
        add(f"{slot}/LIN.untrained/lr0.0/e0/grid/none", 12.0)
    add(make_system_id("codec", "mel", 0.0, 0, "none", "codec"), 0.1)
    for cat, v in (("dog", 1.5), ("rain", 2.5)):  # per-class rows
        add("wavlm/LIN/lr0.01/e5/grid/none", v, cat)
    return pd.DataFrame(rows)


def _sections(md: str, page: str) -> tuple[list[str], list[str]]:
    md_heads = re.findall(r"^#{1,6} (.+)$", md, flags=re.M)
    html_heads = [html.unescape(re.sub(r"<[^>]+>", "", h)) for h in re.findall(r"<h\d>(.*?)</h\d>", page)]
    return [re.sub(r"`", "", h) for h in md_heads], html_heads


def test_markdown_and_html_carry_the_same_sections(tmp_path):
    from sonieval.metrics.controls import learning_table
    from sonieval.metrics.depth import depth_table
    from sonieval.metrics.render import leaderboard_document
    from sonieval.metrics.scoring import build_leaderboard, tidy_scores

    scores = tidy_scores(_page_scores())
    learning = learning_table(scores, pd.DataFrame(), None, "mel")
    paired = pd.DataFrame(
        [
            {
                "embedding": "logmel[weight-free]",
                "best_system": "codec/mel/lr0/e0/none/codec",
                "system_id": "wavlm/LIN/lr0.01/e5/grid/none",
                "kad_difference": -1.9,
                "ci_low": -2.5,
                "ci_high": -1.2,
                "p_value": 0.001,
                "paired_clips": True,
                "error": None,
            }
        ]
    )
    doc = leaderboard_document(build_leaderboard(scores), scores, paired, learning, depth=depth_table(learning))
    md, page = doc.markdown(), doc.html("leaderboard")
    md_heads, html_heads = _sections(md, page)
    assert md_heads == html_heads
    for section in (
        "Learning: trained systems against their controls",
        "Learning over replicate seeds",
        "Audibility by depth",
        "KAD · logmel[weight-free]",
    ):
        assert section in md_heads
    for text in ("Per class (KAD", "Paired bootstrap against the best system", "Beats both controls down to"):
        assert text in md and text in html.unescape(re.sub(r"<[^>]+>", "", page))
    assert md.count("\n|---") == page.count("<table>") == 6  # every Markdown table is an HTML table
    assert "| dog | 1.5 |" in md and "<td>dog</td><td>1.5</td>" in page
    assert "<code>wavlm/LIN/lr0.01/e5/grid/none</code>" in page and "`" not in re.sub(r"<[^>]+>", "", page)
