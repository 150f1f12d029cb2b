"""A results folder as one consistent experiment: its tables, its data source, no stale files.

A results folder (``results/<name>``, or a protocol's ``results_dir``) is written by the stages of
one protocol. Three rules keep what it holds honest:

1. **Every table names the command that makes it.** :data:`STAGE_TABLES`; :func:`require_tables`
   stops a command whose input tables are missing with one line naming the first missing table
   and the command that makes it, before anything is written.
2. **One data source per folder.** The first command that resolves ``data.esc50`` (the clips
   stage of ``sonieval data splits``, ``run`` and ``demo``) pins what it resolved to in
   ``data_source.json`` (:func:`pin_data_source`). A later resolution that differs is refused
   (:func:`check_data_source`) with what is pinned and how to start a new results folder.
3. **No stale files.** Sonifications whose clip is not in the current clips table, and WAVs under
   ``sonifications/`` that the sonifications table does not list (left by an earlier data source,
   listening set or system grid), are never scored or rated: :func:`check_sonifications` (a
   protocol's tables), :func:`check_audio_folders` (folders given to ``score``/``study create``).
   ``sonieval data stale`` lists them and deletes them.

``<results>/data_source.json`` (format 1, written once, atomically):

    kind           "esc50": a clip set in the official ESC-50 layout at ``root``;
                   "synthetic": the built-in SYNTHETIC clip set (not ESC-50)
    root           absolute folder the clips were read from
    meta_sha256    SHA-256 of ``root/meta/esc50.csv`` (which clips the copy lists, and their classes)
    label          the data set in words, as the outputs print it
    setting        data.esc50 as the protocol wrote it (auto, synthetic or a path)
    resolved_via   how that setting was resolved ($SONIEVAL_ESC50, the protocol's path, the fallback)
    pinned_at      UTC time it was written
    protocol       the protocol file whose command wrote it
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from sonieval.data.synthetic import SYNTHETIC_MARKER
from sonieval.errors import DataError
from sonieval.files import sha256_file, write_text_atomic
from sonieval.results_layout import SYNTHETIC_SET, ResultsLayout
from sonieval.tables import read_table, resolve_table_path

PIN_FORMAT = 1
ESC50, SYNTHETIC = "esc50", "synthetic"
META_RELPATH = Path("meta") / "esc50.csv"
STALE_SHOWN = 3  # stale files named in a one-line error; `sonieval data stale` lists them all


class DataSourceChanged(DataError):
    """``data.esc50`` resolves to another data source than the one the results folder is pinned to."""


class MissingTable(DataError):
    """A command's input table does not exist yet."""


class StaleFiles(DataError):
    """Sonifications that do not belong to the current clips and sonifications tables."""


class MixedDataSources(DataError):
    """Folders of audio made from different data sources, given to one leaderboard or study."""


# ----------------------------------------------------------------------------- tables and their commands


@dataclass(frozen=True)
class StageTable:
    kind: str
    command: str  # the command that writes it, before the protocol argument
    pipeline: bool = True  # made by `sonieval run` too

    def path(self, results: str | os.PathLike) -> Path:
        """Where the table lies in ``results`` (sonieval.results_layout)."""
        return ResultsLayout(Path(results)).stage_table(self.kind)

    @property
    def relpath(self) -> str:
        """Inside the results folder: ``tables/clips.parquet``."""
        return self.path("").as_posix()


STAGE_TABLES = {
    t.kind: t
    for t in (
        StageTable("clips", "sonieval data splits"),
        StageTable("prepared", "sonieval prepare"),
        StageTable("training", "sonieval train"),
        StageTable("sonifications", "sonieval sonify"),
        StageTable("scores", "sonieval score"),
        StageTable("ratings", "sonieval study export", pipeline=False),
    )
}


def _target(protocol: str | os.PathLike | None) -> str:
    return os.fspath(protocol) if protocol else "PROTOCOL"


def making_command(kind: str, protocol: str | os.PathLike | None = None) -> str:
    """``sonieval data splits protocols/demo.yaml``: the command that writes table ``kind``."""
    return f"{STAGE_TABLES[kind].command} {_target(protocol)}"


def missing_table_error(kind: str, path: str | os.PathLike, protocol: str | os.PathLike | None = None) -> MissingTable:
    """The one-line error for a table that is not there: which table, and the command that makes it."""
    spec = STAGE_TABLES[kind]
    hint = f"make it with `{making_command(kind, protocol)}`"
    if spec.pipeline:
        hint += f", or every stage at once with `sonieval run {_target(protocol)}`"
    return MissingTable(f"{kind} table not found", path=path, hint=hint)


def require_tables(results: str | os.PathLike, kinds: list[str], protocol: str | os.PathLike | None = None) -> None:
    """Stop (before anything is written) when one of the ``kinds`` tables is missing; the first
    missing one in pipeline order is named with the command that makes it."""
    for kind, spec in STAGE_TABLES.items():
        path = spec.path(results)
        if kind in kinds and not path.is_file():
            raise missing_table_error(kind, path, protocol)


# ----------------------------------------------------------------------------- the data source pin


@dataclass(frozen=True)
class DataSource:
    """Where a results folder's clips come from (see the module docstring for the fields)."""

    kind: str
    root: str
    meta_sha256: str | None = None
    label: str = ""
    setting: str = ""
    resolved_via: str = ""
    marked_synthetic: bool = False  # a folder in the official layout holding a SYNTHETIC set (its marker file)

    @property
    def synthetic(self) -> bool:
        return self.kind == SYNTHETIC

    def describe(self) -> str:
        if self.synthetic:
            return "the built-in SYNTHETIC clip set (not ESC-50)"
        sha = f"meta/esc50.csv sha256 {self.meta_sha256[:12]}" if self.meta_sha256 else "meta/esc50.csv unreadable"
        what = "SYNTHETIC clip set" if self.marked_synthetic else "ESC-50 copy"
        return f"the {what} at {self.root} ({sha})"

    def same_data(self, other: DataSource) -> bool:
        """The same clips, wherever the copy lies: the same meta/esc50.csv (the built-in synthetic set, not
        made yet when data.esc50 is resolved, is always the same set)."""
        if self.meta_sha256 and other.meta_sha256:
            return self.meta_sha256 == other.meta_sha256
        if self.synthetic or other.synthetic:
            return self.kind == other.kind
        return Path(self.root) == Path(other.root)

    def same_place(self, other: DataSource) -> bool:
        """The same clips read from the same folder (the tables hold paths into it)."""
        if self.synthetic and other.synthetic:
            return True
        return self.same_data(other) and Path(self.root) == Path(other.root)


def meta_sha256(root: str | os.PathLike) -> str | None:
    meta = Path(root) / META_RELPATH
    return sha256_file(meta) if meta.is_file() else None


def source_of_copy(
    root: str | os.PathLike,
    *,
    builtin_synthetic: bool = False,
    label: str = "",
    setting: str = "",
    resolved_via: str = "",
) -> DataSource:
    """The data source of a clip set in the official layout at ``root``."""
    root = Path(root).expanduser().resolve()
    kind = SYNTHETIC if builtin_synthetic else ESC50
    marked = not builtin_synthetic and (root / SYNTHETIC_MARKER).is_file()
    return DataSource(kind, str(root), meta_sha256(root), label, setting, resolved_via, marked)


def pin_path(results: str | os.PathLike) -> Path:
    return ResultsLayout(Path(results)).data_source


def read_pin(results: str | os.PathLike) -> DataSource | None:
    """The pinned data source of a results folder, or None when nothing is pinned yet."""
    path = pin_path(results)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {f.name for f in fields(DataSource)}
        source = DataSource(**{k: v for k, v in data.items() if k in names})
        if source.kind not in (ESC50, SYNTHETIC):
            raise ValueError(f"kind {source.kind!r}")
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(
            f"damaged data-source pin ({type(exc).__name__}: {exc})".splitlines()[0],
            path=path,
            hint="delete the file: the next `sonieval data splits PROTOCOL` pins the folder again",
        ) from None
    return source


def pin_data_source(results: str | os.PathLike, source: DataSource, protocol: str | os.PathLike | None = None) -> Path:
    """Write ``data_source.json`` unless the folder is pinned already (the pin is never moved)."""
    path = pin_path(results)
    if path.is_file():
        return path
    record = {
        "format": PIN_FORMAT,
        "about": "The data source this results folder was made from (sonieval). Every command that resolves "
        "data.esc50 checks it; to use another data source, start a new results folder.",
        **asdict(source),
        "pinned_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "protocol": str(Path(protocol).resolve()) if protocol else None,
    }
    return write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def implied_source(results: str | os.PathLike) -> DataSource | None:
    """The data source of a folder made before pins existed, read off its clips table (None: no table)."""
    path = STAGE_TABLES["clips"].path(results)
    if not path.is_file():
        return None
    clips = read_table(path, "clips")
    if clips.empty:
        return None
    label = str(clips["dataset"].iloc[0]) if "dataset" in clips.columns else ""
    root = resolve_table_path(str(clips["path"].iloc[0]), results).parent.parent
    builtin = "synthetic" in clips.columns and bool(clips["synthetic"].iloc[0]) and root.name == SYNTHETIC_SET
    return source_of_copy(root, builtin_synthetic=builtin, label=label)


def pinned_source(results: str | os.PathLike) -> tuple[DataSource | None, Path]:
    """(the folder's data source, the file that says so): the pin, else its clips table, else (None, pin path)."""
    pinned = read_pin(results)
    if pinned is not None:
        return pinned, pin_path(results)
    return implied_source(results), STAGE_TABLES["clips"].path(results)


def check_data_source(
    results: str | os.PathLike, source: DataSource, protocol: str | os.PathLike | None = None
) -> None:
    """Refuse a resolution of ``data.esc50`` that differs from the folder's data source (nothing is written)."""
    pinned, where = pinned_source(results)
    if pinned is None or pinned.same_place(source):
        return
    results = Path(results)
    if pinned.kind == source.kind == ESC50 and Path(pinned.root) == Path(source.root):
        problem = (
            f"the meta/esc50.csv of {source.root} changed since this results folder was made from it "
            f"(sha256 {str(pinned.meta_sha256)[:12]} then, {str(source.meta_sha256)[:12]} now)"
        )
        keep = "restore the copy's meta/esc50.csv to keep using this folder"
    else:
        via = f" ({source.resolved_via})" if source.resolved_via else ""
        problem = (
            f"this results folder holds {pinned.describe()}, but data.esc50 ({source.setting or '?'}) now "
            f"resolves to {source.describe()}{via}"
        )
        keep = _how_to_keep(pinned, source, protocol)
    raise DataSourceChanged(
        problem,
        path=where,
        hint=f"{keep}; or start a new results folder: set results_dir in {_target(protocol)}, or delete {results}",
    )


def _how_to_keep(pinned: DataSource, source: DataSource, protocol: str | os.PathLike | None) -> str:
    if pinned.synthetic:
        if source.setting == "auto":
            return "unset SONIEVAL_ESC50 to keep using this folder"
        return f"set data.esc50: synthetic in {_target(protocol)} to keep using this folder"
    if source.setting == "auto":
        return f"set SONIEVAL_ESC50={pinned.root} to keep using this folder"
    return f"set data.esc50: {pinned.root} in {_target(protocol)} to keep using this folder"


# ----------------------------------------------------------------------------- stale sonifications


@dataclass
class Staleness:
    """What in a results folder's sonifications does not belong to its current tables."""

    results: Path
    stale_rows: pd.DataFrame  # sonification rows whose clip is not in the clips table
    stale_wavs: list[Path]  # WAVs under sonifications/ that the sonifications table does not list

    @property
    def clean(self) -> bool:
        return self.stale_rows.empty and not self.stale_wavs


def _absolute(value: str, results: Path) -> str:
    """A table's path value as a normalised absolute path (string work: a results folder can list 100k files)."""
    return os.path.normpath(value if os.path.isabs(value) else os.path.join(results, value))


def find_stale(results: str | os.PathLike, under: str | os.PathLike | None = None) -> Staleness:
    """Stale sonification rows and WAV files of ``results`` (only those inside ``under`` when given)."""
    results = Path(results).resolve()
    son_path = STAGE_TABLES["sonifications"].path(results)
    son = read_table(son_path, "sonifications") if son_path.is_file() else None
    clips_path = STAGE_TABLES["clips"].path(results)
    scope = Path(under).resolve() if under is not None else ResultsLayout(results).sonifications
    prefix = str(scope) + os.sep
    stale_rows = pd.DataFrame()
    listed: set[str] = set()
    if son is not None:
        paths = [_absolute(str(p), results) if isinstance(p, str) and p else "" for p in son["path"]]
        listed = set(paths)
        if clips_path.is_file():
            known = set(read_table(clips_path, "clips")["clip_id"].astype(str))
            done = son["status"].astype(str).isin(["done", "ok"]).to_numpy()
            inside = [p.startswith(prefix) for p in paths]
            of_other_clips = ~son["clip_id"].astype(str).isin(known).to_numpy()
            stale_rows = son[done & inside & of_other_clips]
    wavs = sorted(scope.rglob("*.wav")) if scope.is_dir() else []
    stale_wavs = [p for p in wavs if os.path.normpath(p) not in listed and p.is_file()]
    return Staleness(results, stale_rows.reset_index(drop=True), stale_wavs)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _examples(items: list[str]) -> str:
    shown = ", ".join(items[:STALE_SHOWN])
    return shown + (f" and {len(items) - STALE_SHOWN} more" if len(items) > STALE_SHOWN else "")


def stale_rows_error(stale: Staleness, protocol: str | os.PathLike | None = None) -> StaleFiles:
    rows = [f"{r.system_id}/{r.clip_id}" for r in stale.stale_rows.itertuples()]
    return StaleFiles(
        f"{len(rows)} sonification(s) are of clips that are not in tables/clips.parquet (made from another data "
        f"source or an older clips table): {_examples(rows)}",
        path=STAGE_TABLES["sonifications"].path(stale.results),
        hint=f"rebuild the sonifications table for the current clips with `{making_command('sonifications', protocol)}`",
    )


def _stale_wavs_text(stale: Staleness) -> str:
    names = [
        p.relative_to(stale.results).as_posix() if _is_within(p, stale.results) else str(p) for p in stale.stale_wavs
    ]
    return (
        f"{len(names)} WAV file(s) under {ResultsLayout(stale.results).sonifications} are not listed in "
        f"tables/sonifications.parquet (stale: left by an earlier data source, listening set or system grid): "
        f"{_examples(names)}"
    )


def clean_command(target: str | os.PathLike) -> str:
    return f"sonieval data stale {_target(target)} --delete"


def stale_wavs_line(stale: Staleness, *, target: str | os.PathLike | None = None) -> str:
    """One line on the stale WAVs and the command that deletes them (``target``: protocol or results folder)."""
    return f"{_stale_wavs_text(stale)}; list or delete them with `{clean_command(target or stale.results)}`"


def check_sonifications(results: str | os.PathLike, protocol: str | os.PathLike | None = None) -> list[str]:
    """For a protocol's ``score`` and ``study create``: the clips and sonifications tables exist and every
    finished sonification is of a clip in the clips table (else :class:`StaleFiles`). Returns warning
    lines for stale WAVs on disk (they are not used: only the table's rows are scored or rated)."""
    require_tables(results, ["clips", "sonifications"], protocol)
    stale = find_stale(results)
    if not stale.stale_rows.empty:
        raise stale_rows_error(stale, protocol)
    return [stale_wavs_line(stale, target=protocol)] if stale.stale_wavs else []


# ----------------------------------------------------------------------------- folders given by the user


def results_folder_of(folder: str | os.PathLike) -> Path | None:
    """The results folder whose ``sonifications/`` holds ``folder`` (None when it is not inside one)."""
    layout = ResultsLayout.containing(folder)
    return layout.root if layout is not None else None


def source_of_folder(folder: str | os.PathLike) -> tuple[DataSource | None, str]:
    """(data source, how it is known) of a folder of audio: an ``audio/`` folder of a copy in the official
    layout, or a folder inside a results folder's ``sonifications/``; (None, "") when unknown."""
    folder = Path(folder).expanduser().resolve()
    if folder.name == "audio" and (folder.parent / META_RELPATH).is_file():
        builtin = folder.parent.name == SYNTHETIC_SET and (folder.parent / SYNTHETIC_MARKER).is_file()
        return source_of_copy(folder.parent, builtin_synthetic=builtin), f"{folder.parent / META_RELPATH}"
    results = results_folder_of(folder)
    if results is not None:
        source, where = pinned_source(results)
        if source is not None:
            return source, str(where)
    return None, ""


def check_audio_folders(
    reference: str | os.PathLike,
    systems: dict[str, str | os.PathLike],
    *,
    purpose: str = "scored",
    reference_option: str = "--reference",
) -> DataSource | None:
    """For folder-mode ``score`` and ``study create``: refuse system folders that hold stale WAVs or
    stale rows of their results folder, and folders made from different data sources. Returns the
    one data source they share when it is known."""
    for name, folder in systems.items():
        results = results_folder_of(folder)
        if results is None:
            continue
        stale = find_stale(results, under=folder)
        if not stale.stale_rows.empty:
            raise stale_rows_error(stale)
        if stale.stale_wavs:
            raise StaleFiles(
                f"system {name}: {_stale_wavs_text(stale)}",
                path=Path(folder),
                hint=f"they would be {purpose} as this system's: delete them with "
                f"`{clean_command(stale.results)}`, then run the command again",
            )
    known: list[tuple[str, DataSource, str]] = []
    given = [(f"{reference_option} {reference}", reference), *((f"--system {n}={f}", f) for n, f in systems.items())]
    for option, folder in given:
        source, where = source_of_folder(folder)
        if source is not None:
            known.append((option, source, where))
    what = "a leaderboard" if purpose == "scored" else "a study"
    first_option, first, _ = known[0] if known else (None, None, None)
    for option, source, where in known[1:]:
        if not source.same_data(first):
            raise MixedDataSources(
                f"{first_option} is {first.describe()}, but {option} was made from {source.describe()} "
                f"(recorded in {where}): {what} compares sonifications of one data source",
                hint=f"give as {reference_option} the clips the systems were made from, and {purpose.rstrip('d')} "
                "each data source's systems separately",
            )
    return known[0][1] if known else None


__all__ = [
    "STAGE_TABLES",
    "DataSource",
    "DataSourceChanged",
    "MissingTable",
    "StaleFiles",
    "MixedDataSources",
    "Staleness",
    "making_command",
    "missing_table_error",
    "require_tables",
    "source_of_copy",
    "read_pin",
    "pin_data_source",
    "pinned_source",
    "check_data_source",
    "find_stale",
    "check_sonifications",
    "results_folder_of",
    "source_of_folder",
    "check_audio_folders",
    "stale_wavs_line",
    "clean_command",
]
