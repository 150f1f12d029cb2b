"""Run inside a venv that holds only sonieval's core distributions (test_foundation_packaging.py).

Checks that the optional extras are absent there, that every module outside the extras' packages
imports, and that the two core jobs run: KAD between two folders of audio (weight-free logmel
embedding) and a stats report from two DataFrames. Prints one JSON line with what it measured.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import pkgutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

EXTRAS_ONLY = [
    "transformers",
    "huggingface_hub",
    "dac",
    "audiotools",
    "torchaudio",
    "tensorboard",
    "streamlit",
    "sqlalchemy",
    "psycopg",
    "pyloudnorm",
    "ray",
    "kadtk",
    "pytest",
]
# packages whose modules may need an extra at import (the study store and app use SQLAlchemy/Streamlit)
NEEDS_EXTRA = ("sonieval.study", "sonieval._study_app")


def import_everything() -> list[str]:
    import sonieval

    failed = []
    for info in pkgutil.walk_packages(sonieval.__path__, "sonieval."):
        if info.name.startswith(NEEDS_EXTRA) or info.name == "sonieval.__main__":  # __main__ runs the CLI
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            failed.append(f"{info.name}: {exc}")
    return failed


def write_folder(folder: Path, freqs: list[float], seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t = np.arange(16_000) / 16_000
    for i, f in enumerate(freqs):
        audio = 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / f"clip{i}.wav", audio.astype(np.float32), 16_000)
    return folder


def kad_on_folders(work: Path) -> float:
    import sonieval.metrics as metrics

    ref = write_folder(work / "reference", [220, 330, 440, 550, 660, 770], seed=1)
    ev = write_folder(work / "evaluated", [1200, 1500, 1800, 2100, 2400, 2700], seed=2)
    if callable(getattr(metrics, "kad", None)):  # the public API (issue 12)
        params = inspect.signature(metrics.kad).parameters
        value = metrics.kad(ref, ev, **({"embedding": "logmel"} if "embedding" in params else {}))
        return float(getattr(value, "value", value))
    from sonieval.metrics.leaderboard import score_folders

    out = score_folders(ref, {"evaluated": ev}, work / "scores")
    scores = (
        out.scores if hasattr(out, "scores") else __import__("pandas").read_parquet(work / "scores" / "scores.parquet")
    )
    return float(scores.loc[scores["metric"] == "kad", "value"].iloc[0])


def report_on_frames(work: Path) -> int:
    import sonieval.stats as stats
    from sonieval.stats.simulate import simulate_ratings, simulate_scores

    ratings, plant = simulate_ratings(n_systems=4, n_raters=6, n_clips=4, seed=0)
    scores = simulate_scores(plant, seed=0)
    public = getattr(stats, "report", None)
    if not callable(public):  # until sonieval.stats exports it (issue 12), the module's function
        public = getattr(importlib.import_module("sonieval.stats.report"), "report", None)
    if callable(public):
        result = public(ratings, scores)
        return len(getattr(result, "tables", result))
    from sonieval.stats.reporting import build_report

    ratings.to_parquet(work / "ratings.parquet")
    scores.to_parquet(work / "scores.parquet")
    result = build_report(work / "ratings.parquet", work / "scores.parquet", work / "report")
    return len(result.tables)


def main() -> int:
    present = [m for m in EXTRAS_ONLY if importlib.util.find_spec(m) is not None]
    failed = import_everything()
    with tempfile.TemporaryDirectory() as tmp:
        kad = kad_on_folders(Path(tmp))
        n_tables = report_on_frames(Path(tmp))
    import sonieval

    print(
        json.dumps(
            {
                "extras_present": present,
                "import_failures": failed,
                "kad": kad,
                "report_tables": n_tables,
                "sonieval_file": sonieval.__file__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
