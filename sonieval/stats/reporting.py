"""The correlation report: analysis of ratings + scores, returned as DataFrames and, when asked,
written as HTML, Markdown, CSV, PNG, JSON.

:func:`report` (``sonieval.stats.report``) takes the ratings and scores as DataFrames or table
paths, runs every stage (screening, descriptives, reliability, models, correlations:
:mod:`sonieval.stats.analysis`) and returns a :class:`ReportResult`. Only when ``out_dir`` is given
does it write (:mod:`sonieval.stats.render`) into ``out_dir``:

    report.html, report.md        the same content, with figures
    summary.json                  the headline numbers (keys documented in docs/INTERFACES.md)
    tables/*.csv                  every table, each row with a ``provenance`` column
    figures/*.png                 mark distributions, system means, metric scatter plots, rater agreement

Every page and file names its inputs (path + SHA-256), n and package versions; when the ratings
are simulated, every page, table row, figure and the JSON say "SIMULATED". An undefined number is
written as "n/a" (null in JSON) with a note next to it saying why.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from sonieval.document import json_safe
from sonieval.errors import SonievalError
from sonieval.stats.analysis import analyse
from sonieval.stats.inputs import InputFile, read_clip_categories, read_item_scores, read_ratings, read_scores
from sonieval.stats.render import SIMULATED_BANNER, write_files
from sonieval.stats.screening import ScreeningRules
from sonieval.tables import RATING_ROLES
from sonieval.versions import package_versions

__all__ = ["report", "build_report", "ReportOptions", "ReportResult", "SIMULATED_BANNER", "STAGES"]

# The packages whose versions every report names (the ones that compute or draw it).
REPORT_PACKAGES = ("numpy", "pandas", "scipy", "statsmodels", "pingouin", "krippendorff", "matplotlib")


@dataclass
class ReportOptions:
    """How the report is computed and what it writes; every field can also be passed to :func:`report`
    as a keyword (``report(ratings, scores, n_boot=500, figures=False)``)."""

    scale_min: int | None = None  # None: the ratings' scale_min column, else 1
    scale_max: int | None = None  # None: the ratings' scale_max column, else 5
    n_boot: int = 2000
    seed: int = 0
    rules: ScreeningRules = field(default_factory=ScreeningRules)
    duplicates: str | None = None  # None: duplicated (rater, trial, attribute) rows are an error; first|last|mean
    attributes: tuple[str, ...] | None = None  # the study's rating attributes; None: the catalogue's (visual, audio)
    figures: bool = True
    progress: bool = False  # a tqdm bar over the stages (the CLI turns it on)
    simulated: bool | None = None  # None: from the ratings' `simulated` column
    simulated_note: str = ""
    notes: list[str] = field(default_factory=list)  # about the options themselves (e.g. a deprecated key)

    @classmethod
    def from_protocol(cls, proto) -> ReportOptions:
        """Options of a protocol: the study's scale, the report section's bootstrap and screening."""
        spec = proto.report
        notes = []
        if getattr(spec, "mixed_model_max_rows", None) is not None:
            notes.append(
                f"protocol key report.mixed_model_max_rows ({spec.mixed_model_max_rows}) is deprecated and "
                "ignored: the mixed model is now fitted exactly on every mark; delete the key"
            )
        return cls(
            scale_min=proto.study.scale_min,
            scale_max=proto.study.scale_max,
            attributes=tuple(a.name for a in proto.study.rating_attributes),
            n_boot=spec.bootstrap,
            seed=proto.seed,
            rules=ScreeningRules.from_spec(spec),
            duplicates=getattr(spec, "duplicates", None),
            notes=notes,
        )


STAGES = ("read", "screening", "descriptives", "reliability", "models", "correlations", "tables_figures", "write")


class _StageTimer(dict):
    """Stage → seconds; each finished stage also advances a tqdm bar (long reports take a while)."""

    def __init__(self, progress: bool):
        super().__init__()
        self.progress = progress
        self.bar = None

    def close(self):
        if self.bar is not None:
            self.bar.close()  # leave=False: the bar's line is cleared, an error stays one line

    def __setitem__(self, stage, seconds):
        super().__setitem__(stage, seconds)
        if self.progress and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=len(STAGES), desc="report", unit="stage", leave=False)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{stage} {seconds:.1f} s")
            self.bar.update(1)
            if self.bar.n >= self.bar.total:
                self.bar.close()


@dataclass
class ReportResult:
    """A report's results: ``tables`` (name → DataFrame, the same tables as ``tables/*.csv``),
    ``summary`` (the dict written as ``summary.json``: headline numbers, notes, provenance),
    ``timings`` (stage → seconds), and ``out_dir``/``files`` (None and [] when nothing was written)."""

    out_dir: Path | None
    summary: dict
    tables: dict[str, pd.DataFrame]
    timings: dict[str, float]
    files: list[Path]


# --- the one entry ----------------------------------------------------------------------------


def report(
    ratings,
    scores,
    *,
    item_scores=None,
    clips=None,
    out_dir: str | os.PathLike | None = None,
    options: ReportOptions | None = None,
    **overrides,
) -> ReportResult:
    """The correlation report of ``ratings`` against ``scores``; files only when ``out_dir`` is given.

    ``ratings``, ``scores``, ``item_scores`` and ``clips`` are each a pandas DataFrame or a path to
    a .csv/.parquet table with the columns of docs/results.md#tables (ratings need ``rater_id, clip_id,
    system_id, attribute, mark``; scores ``system_id, metric, value``; item scores ``system_id,
    clip_id, metric, value``; clips ``clip_id, category``, for per-class rows). ``options``: a
    :class:`ReportOptions`; keyword ``overrides`` set its fields (``n_boot=200, seed=1,
    scale_min=1, scale_max=5, figures=False``, ...). Returns a :class:`ReportResult` whose
    ``tables`` are DataFrames; with ``out_dir`` it also writes report.html, report.md,
    summary.json, tables/*.csv and figures/*.png there, the files ``sonieval report`` writes.
    """
    options = _with_overrides(options or ReportOptions(), overrides)
    timings = _StageTimer(options.progress)
    try:
        return _report(ratings, scores, item_scores, clips, out_dir, options, timings)
    finally:
        timings.close()


def build_report(
    ratings_path: str | os.PathLike,
    scores_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    item_scores_path: str | os.PathLike | None = None,
    clips_path: str | os.PathLike | None = None,
    options: ReportOptions | None = None,
) -> ReportResult:
    """:func:`report` from table files into ``out_dir`` (what ``sonieval report`` runs)."""
    return report(
        ratings_path, scores_path, item_scores=item_scores_path, clips=clips_path, out_dir=out_dir, options=options
    )


def _with_overrides(options: ReportOptions, overrides: dict) -> ReportOptions:
    names = [f.name for f in dataclasses.fields(ReportOptions)]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise SonievalError(
            f"unknown report option(s) {', '.join(unknown)}",
            path="sonieval.stats.report",
            hint=f"options are {', '.join(names)}",
        )
    return dataclasses.replace(options, **overrides) if overrides else options


# --- orchestration -------------------------------------------------------------------------------


@dataclass
class _Inputs:
    ratings: object  # inputs.Ratings
    scores: object  # inputs.Scores
    item_scores: pd.DataFrame | None
    sources: list[InputFile]
    notes: list[str]


def _read(ratings, scores, item_scores, clips, options: ReportOptions) -> _Inputs:
    """Checked tables (from DataFrames or files), where each came from, and the notes on the way."""
    r = read_ratings(
        ratings,
        scale_min=options.scale_min,
        scale_max=options.scale_max,
        duplicates=options.duplicates,
        attributes=options.attributes,
    )
    if options.simulated is not None:
        r.simulated = r.simulated or options.simulated
    s = read_scores(scores)
    items, notes, sources = None, [], [r.source, s.source]
    if item_scores is not None:
        items, item_source, notes = read_item_scores(item_scores)
        sources.append(item_source)
    if clips is not None:
        mapping, clip_source, clip_notes = read_clip_categories(clips)
        if "category" not in r.table.columns:
            r.table["category"] = r.table["clip_id"].map(mapping)
        sources.append(clip_source)
        notes = [*notes, *clip_notes]
    return _Inputs(r, s, items, sources, notes)


def _report(ratings, scores, item_scores, clips, out_dir, options: ReportOptions, timings) -> ReportResult:
    t = time.perf_counter()
    inputs = _read(ratings, scores, item_scores, clips, options)
    timings["read"] = time.perf_counter() - t
    summary, tables, notes = analyse(inputs.ratings, inputs.scores, inputs.item_scores, options, timings=timings)
    notes = list(notes) + list(inputs.notes)
    summary, stamp = _with_provenance(summary, notes, inputs, options)
    files: list[Path] = []
    if out_dir is not None:
        out_dir = Path(out_dir)
        son = inputs.ratings.table[inputs.ratings.table["role"] == RATING_ROLES[0]]
        files = write_files(
            out_dir,
            summary,
            tables,
            notes,
            scores=inputs.scores,
            son=son,
            options=options,
            sources=inputs.sources,
            stamp=stamp,
            timings=timings,
        )
    return ReportResult(out_dir=out_dir, summary=json_safe(summary), tables=tables, timings=dict(timings), files=files)


def _with_provenance(summary: dict, notes: list[str], inputs: _Inputs, options: ReportOptions) -> tuple[dict, str]:
    """The summary with the SIMULATED flag, notes and provenance; and the one-line stamp every file carries."""
    ratings = inputs.ratings
    simulated = bool(ratings.simulated)
    versions = {k: v for k, v in package_versions(REPORT_PACKAGES).items() if v is not None and k != "python"}
    provenance = {
        "inputs": [asdict(s) for s in inputs.sources if s is not None],
        "versions": versions,
        "created_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "parameters": {
            "scale": [ratings.scale_min, ratings.scale_max],
            "bootstrap": options.n_boot,
            "seed": options.seed,
            "screening": asdict(options.rules),
            "duplicates": options.duplicates or "refuse",
        },
        "n_ratings": summary["n_ratings"],
        "n_raters": summary["n_raters"],
        "n_raters_kept": summary["n_raters_kept"],
    }
    stamp = (
        ("SIMULATED | " if simulated else "")
        + " ".join(s.label() for s in inputs.sources if s is not None)
        + f" | n_ratings={summary['n_ratings']} raters={summary['n_raters_kept']}/{summary['n_raters']}"
        + f" | sonieval {versions.get('sonieval', '?')} | B={options.n_boot} seed={options.seed}"
    )
    warning = SIMULATED_BANNER + (": " + options.simulated_note if options.simulated_note else "")
    summary = {
        "simulated": simulated,
        **({"warning": warning} if simulated else {}),
        **summary,
        "notes": notes,
        "provenance": provenance,
    }
    return summary, stamp
