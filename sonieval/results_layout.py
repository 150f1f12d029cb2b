"""The layout of a results folder: every file and folder the stages write under ``<results>``, named once.

A results folder (``results/<name>``, or a protocol's ``results_dir``; ``proto.layout`` in code) is read and
written by every stage, the report, the study and the gallery. Their paths come from :class:`ResultsLayout`
alone, so a folder's name is spelled in this module and nowhere else (tests/foundation/
test_foundation_results_layout.py checks the source). What a stage writes *inside* a folder it owns (the
gallery's ``sounds/``, the study's ``audio/``, a run's ``tensorboard/``) stays that stage's business.

    <results>/ledger.sqlite          the run ledger (sonieval.ledger.RunLedger); ``manifest.sqlite`` in
                                     folders made before the ledger had one name, read as the ledger
    <results>/data_source.json       the pinned data source (sonieval.data.results_folder)
    <results>/run_failures.csv       the items the last ``sonieval run`` could not make
    <results>/splits/                train.txt, validation.txt, test.txt, listening_set.txt
    <results>/tables/                clips, prepared, training, sonifications (``.parquet``)
    <results>/cache/                 embeddings/, latents/, metric_embeddings/, weights/, synthetic-esc50/
                                     (elsewhere when the protocol sets ``cache_dir``)
    <results>/checkpoints/<encoder>/<variant>/lr<lr>/<alignment>/e<epoch>.pt
    <results>/training/<run>/        losses, curves, tensorboard/
    <results>/sonifications/<system_id>/<clip_id>.wav
    <results>/scores/                scores.parquet, item_scores.parquet, leaderboard.*, figures/, parts/
    <results>/study/                 the listening study (its database, stimuli, ratings.parquet)
    <results>/report/                report.html, report.md, tables/, figures/ (report_SIMULATED/ for the demo)
    <results>/gallery/index.html     the listening gallery
    <results>/figures/               waveform figures of ``sonieval sonify --figure``
    <results>/ledgers/               the shard ledgers of ``--shard`` runs
    <results>/finetuned/<encoder>    ``sonieval finetune``
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LEDGER_NAME",
    "OLD_LEDGER_NAME",
    "GALLERY",
    "GALLERY_PAGE",
    "SONIFICATIONS",
    "SYNTHETIC_SET",
    "TABLE_KINDS",
    "CacheLayout",
    "ReportLayout",
    "ResultsLayout",
    "ScoresLayout",
    "StudyLayout",
    "ledger_path",
]

LEDGER_NAME = "ledger.sqlite"
OLD_LEDGER_NAME = "manifest.sqlite"  # the run ledger's file before it had one name; still read
DATA_SOURCE_NAME = "data_source.json"
RUN_FAILURES_NAME = "run_failures.csv"

SPLITS = "splits"
TABLES = "tables"
CACHE = "cache"
CHECKPOINTS = "checkpoints"
TRAINING = "training"
SONIFICATIONS = "sonifications"
SCORES = "scores"
STUDY = "study"
REPORT = "report"
SIMULATED_REPORT = "report_SIMULATED"
GALLERY = "gallery"
GALLERY_PAGE = "index.html"
FIGURES = "figures"
SHARD_LEDGERS = "ledgers"
FINETUNED = "finetuned"
SYNTHETIC_SET = "synthetic-esc50"  # in the cache: a protocol's built-in SYNTHETIC clip set

# the tables of tables/ (one ``<kind>.parquet`` each)
TABLE_KINDS = ("clips", "prepared", "training", "sonifications")


def ledger_path(folder: str | os.PathLike) -> Path:
    """The run ledger of a folder (a results folder, a folder-mode ``score`` or ``study`` folder).

    A folder made before the ledger was renamed holds ``manifest.sqlite``: it is opened where it lies (never
    renamed: a shard or a second command may hold it open), so an old folder resumes where it stopped."""
    folder = Path(folder)
    new, old = folder / LEDGER_NAME, folder / OLD_LEDGER_NAME
    return old if old.is_file() and not new.exists() else new


@dataclass(frozen=True)
class CacheLayout:
    """A cache folder (``<results>/cache``, or the protocol's ``cache_dir``; ``score --cache``)."""

    root: Path

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def latents(self) -> Path:
        return self.root / "latents"

    def model(self, kind: str, key: str) -> Path:
        """The cache of one model: ``kind`` "embedding" (``embeddings/<key>``) or "latent" (``latents/<key>``)."""
        return {"embedding": self.embeddings, "latent": self.latents}[kind] / key

    @property
    def metric_embeddings(self) -> Path:
        """The embeddings the metrics compute (content-addressed; sonieval.metrics.embeddings.EmbeddingCache)."""
        return self.root / "metric_embeddings"

    @property
    def weights(self) -> Path:
        """Checksum records of the weights the protocol loads (sonieval.models.weights)."""
        return self.root / "weights"

    @property
    def synthetic_set(self) -> Path:
        """Where a protocol's built-in SYNTHETIC clip set is made."""
        return self.root / SYNTHETIC_SET


@dataclass(frozen=True)
class ScoresLayout:
    """The folder a leaderboard is written to (``<results>/scores``, or ``score --out`` for folders)."""

    root: Path

    @property
    def scores_table(self) -> Path:
        return self.root / "scores.parquet"

    @property
    def item_scores_table(self) -> Path:
        return self.root / "item_scores.parquet"

    @property
    def leaderboard(self) -> Path:
        """``leaderboard.md``, the page a person reads (beside ``.csv`` and ``.html``)."""
        return self.root / "leaderboard.md"

    def file(self, name: str) -> Path:
        """One of the leaderboard's own files (``leaderboard.md``, ``paired_kad.csv``, ...)."""
        return self.root / name

    @property
    def figures(self) -> Path:
        return self.root / FIGURES

    @property
    def parts(self) -> Path:
        """Each system's finished scores, kept so a killed ``score`` resumes."""
        return self.root / "parts"

    @property
    def cache(self) -> CacheLayout:
        """The metric cache of folder-mode ``score`` when no ``--cache`` is given."""
        return CacheLayout(self.root / CACHE)

    @property
    def ledger(self) -> Path:
        """The ledger of folder-mode ``score`` (a protocol's ``score`` writes the results folder's)."""
        return ledger_path(self.root)


@dataclass(frozen=True)
class ReportLayout:
    """The folder a report is written to (``<results>/report``, or ``report --out``)."""

    root: Path

    @property
    def tables(self) -> Path:
        return self.root / TABLES

    @property
    def figures(self) -> Path:
        return self.root / FIGURES


@dataclass(frozen=True)
class StudyLayout:
    """A study folder (``<results>/study``, or ``--study-dir`` of a study made from folders)."""

    root: Path

    @property
    def ledger(self) -> Path:
        """The ledger of a folder-mode study's stimuli (a protocol's study writes the results folder's)."""
        return ledger_path(self.root)

    @property
    def ratings_table(self) -> Path:
        """The ratings export (``sonieval study export``), read by the report and the gallery."""
        return self.root / "ratings.parquet"

    @property
    def ratings_csv(self) -> Path:
        """The same export as CSV (read when the Parquet file is absent)."""
        return self.root / "ratings.csv"


@dataclass(frozen=True)
class ResultsLayout:
    """Every path of one results folder. ``cache`` is the protocol's ``cache_dir`` when it sets one."""

    root: Path
    cache_root: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.cache_root is not None:
            object.__setattr__(self, "cache_root", Path(self.cache_root))

    # ---------------------------------------------------------------- files at the top

    @property
    def ledger(self) -> Path:
        """``ledger.sqlite`` (``manifest.sqlite`` in a folder made before the rename: :func:`ledger_path`)."""
        return ledger_path(self.root)

    @property
    def data_source(self) -> Path:
        return self.root / DATA_SOURCE_NAME

    @property
    def run_failures(self) -> Path:
        return self.root / RUN_FAILURES_NAME

    # ---------------------------------------------------------------- data and tables

    @property
    def splits(self) -> Path:
        return self.root / SPLITS

    def split_list(self, name: str) -> Path:
        """``splits/<name>.txt``: ``train``, ``validation``, ``test`` or ``listening_set``."""
        return self.splits / f"{name}.txt"

    @property
    def tables(self) -> Path:
        return self.root / TABLES

    def table(self, kind: str) -> Path:
        """``tables/<kind>.parquet`` for a kind of :data:`TABLE_KINDS`."""
        if kind not in TABLE_KINDS:
            raise KeyError(f"no table {kind!r} in tables/ (one of {', '.join(TABLE_KINDS)})")
        return self.tables / f"{kind}.parquet"

    def stage_table(self, kind: str) -> Path:
        """The table a stage writes, wherever it lies: those of tables/, ``scores`` and ``ratings``."""
        if kind == "scores":
            return self.scores.scores_table
        if kind == "ratings":
            return self.study_folder.ratings_table
        return self.table(kind)

    @property
    def cache(self) -> CacheLayout:
        return CacheLayout(self.cache_root if self.cache_root is not None else self.root / CACHE)

    # ---------------------------------------------------------------- training and sonification

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    def checkpoint_dir(self, encoder: str, variant: str, lr_text: str, alignment: str) -> Path:
        """``checkpoints/<encoder>/<variant>/lr<lr_text>/<alignment>`` (one system's epochs)."""
        return self.checkpoints / encoder / variant / f"lr{lr_text}" / alignment

    @property
    def training(self) -> Path:
        return self.root / TRAINING

    def training_run(self, run_id: str) -> Path:
        """``training/<run_id>``: one training run's losses, curves and TensorBoard events."""
        return self.training / run_id

    @property
    def sonifications(self) -> Path:
        return self.root / SONIFICATIONS

    def sonification(self, system_id: str, clip_id: str) -> Path:
        return self.sonifications / system_id / f"{clip_id}.wav"

    @property
    def shard_ledgers(self) -> Path:
        return self.root / SHARD_LEDGERS

    def shard_ledger(self, stage: str, shard: tuple[int, int]) -> Path:
        k, n = shard
        return self.shard_ledgers / f"{stage}-shard-{k}-of-{n}.sqlite"

    @property
    def finetuned(self) -> Path:
        return self.root / FINETUNED

    # ---------------------------------------------------------------- what is read and heard

    @property
    def scores(self) -> ScoresLayout:
        return ScoresLayout(self.root / SCORES)

    @property
    def study(self) -> Path:
        return self.root / STUDY

    @property
    def study_folder(self) -> StudyLayout:
        return StudyLayout(self.study)

    @property
    def report(self) -> ReportLayout:
        return ReportLayout(self.root / REPORT)

    @property
    def simulated_report(self) -> ReportLayout:
        """The demo's report of simulated ratings (named so that it is never taken for a real one)."""
        return ReportLayout(self.root / SIMULATED_REPORT)

    @property
    def gallery(self) -> Path:
        return self.root / GALLERY

    @property
    def gallery_page(self) -> Path:
        return self.gallery / GALLERY_PAGE

    @property
    def figures(self) -> Path:
        return self.root / FIGURES

    # ---------------------------------------------------------------- recognising a folder

    def holds_tables(self) -> bool:
        """Whether this looks like a results folder: its ``tables/`` exists."""
        return self.tables.is_dir()

    @staticmethod
    def containing(path: str | os.PathLike) -> ResultsLayout | None:
        """The results folder whose ``sonifications/`` holds ``path`` (None when it is not inside one)."""
        path = Path(path).expanduser().resolve()
        for candidate in (path, *path.parents):
            if candidate.name == SONIFICATIONS and ResultsLayout(candidate.parent).table(SONIFICATIONS).is_file():
                return ResultsLayout(candidate.parent)
        return None
