"""Statistics of listening studies: the correlation report and reliability on tidy tables.

Public API (DataFrames in, DataFrames out; see docs/api.md#reports-and-reliability-on-dataframes):

- :func:`report` — the correlation report of ratings against scores (DataFrames or table paths);
  returns a :class:`ReportResult` (``tables``: name → DataFrame, ``summary``: dict) and writes
  files only when ``out_dir`` is given. :class:`ReportOptions` and :class:`ScreeningRules` set it up.
- :func:`icc`, :func:`krippendorff_alpha`, :func:`mixed_model` — on any tidy table, column names
  as arguments (as pingouin does).
- :func:`simulate_ratings`, :func:`simulate_scores` — SIMULATED data with a planted structure
  (every row labelled simulated), for trying the rest.

The modules under ``sonieval.stats`` (analysis, render, inputs, reliability, crossed, ...) are the
implementation; their names may change.
"""

from sonieval.stats.reporting import ReportOptions, ReportResult, report
from sonieval.stats.screening import ScreeningRules
from sonieval.stats.simulate import simulate_ratings, simulate_scores
from sonieval.stats.tidy import icc, krippendorff_alpha, mixed_model

__all__ = [
    "report",
    "ReportOptions",
    "ReportResult",
    "ScreeningRules",
    "icc",
    "krippendorff_alpha",
    "mixed_model",
    "simulate_ratings",
    "simulate_scores",
]
