"""ESC-50: find, download, verify, split, and pick the listening set; the ``clips`` stage.

ESC-50 (Piczak 2015): 2,000 clips, 50 classes x 40, 5 folds, 5 s, 44.1 kHz mono PCM_16 WAV, with
``meta/esc50.csv`` (filename, fold, target, category, esc10, src_file, take). Any copy in the
official layout can be used, including a partial one (e.g. fold 4 only): the meta CSV is the list
of what the copy holds, and verification reports which folds are present.

The reference work split ESC-50 80/10/10 with seed 42 and wrote the file lists to text files
(thesis §3); :func:`assign_splits` and :func:`write_split_files` do the same, stratified by class,
and :func:`select_listening_set` picks the N test clips (77 in the thesis, at least one per class)
that are sonified and rated.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sonieval.errors import AudioError, DataError
from sonieval.files import sha256_file, write_text_atomic

if TYPE_CHECKING:
    from sonieval.data.results_folder import DataSource
    from sonieval.ledger import RunLedger
    from sonieval.protocol import ListeningSetSpec, Protocol, SplitSpec

ESC50_ENV = "SONIEVAL_ESC50"
ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
# The ESC-50 authors publish no checksum, and GitHub's "archive/master.zip" is generated from the
# master branch (its bytes are not contractually stable). One third-party record of a 2026 download
# (a public research log's provenance table) gives the SHA-256 below for 645,695,005 bytes; it is
# unofficial, so a different digest is reported as a warning, not refused: the per-clip verification
# that follows every download is the real check. ``expected_sha256`` (``--sha256 HEX``) makes a
# mismatch fatal. The downloaded archive's digest is always printed and recorded in the copy's
# ``archive.sha256``; the extracted files are covered by ``checksums.sha256`` (sha256sum format).
ESC50_ARCHIVE_SHA256_SEEN = "805afc618aff80eff0641d51311647871fead5807da68bb18e43a27db47a79ce"
ESC50_ARCHIVE_BYTES_SEEN = 645_695_005
ESC50_COPY_NAME = "ESC-50"
META_RELPATH = Path("meta") / "esc50.csv"
AUDIO_DIRNAME = "audio"
CHECKSUMS_NAME = "checksums.sha256"
ARCHIVE_CHECKSUM_NAME = "archive.sha256"
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
ESC50_FOLDS = (1, 2, 3, 4, 5)
ESC50_RATE = 44_100
ESC50_FRAMES = 220_500  # 5 s at 44.1 kHz
ESC50_SUBTYPE = "PCM_16"
ESC50_FORMAT = "WAV"
CLIPS_STAGE = "clips"
FIX_HINT = "replace it with the file from the official archive, or remove its row from meta/esc50.csv"
EXTRA_HINT = (
    "move it out of audio/, where a copy holds only the clips that meta/esc50.csv lists, or add its row "
    "to meta/esc50.csv if it is an ESC-50 clip"
)


# ----------------------------------------------------------------------------- opening a copy


@dataclass
class Esc50:
    """An ESC-50 copy (or the synthetic stand-in) and the clips it lists."""

    root: Path
    clips: pd.DataFrame  # clip_id, filename, fold, target, category, esc10, src_file, take, path
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)  # what was adapted when opening it for a protocol
    source: DataSource | None = None  # what data.esc50 resolved to (set for a protocol's clips)

    @property
    def folds(self) -> list[int]:
        return sorted(int(f) for f in self.clips["fold"].unique())

    @property
    def label(self) -> str:
        """What this data set is, in words fit for every output (provenance)."""
        n, k = len(self.clips), self.clips["category"].nunique()
        folds = ", ".join(str(f) for f in self.folds)
        if self.synthetic:
            return f"SYNTHETIC clip set (not ESC-50) at {self.root} ({n} clips, {k} classes)"
        return f"ESC-50 copy at {self.root} ({n} clips, {k} classes, folds {folds})"


def resolve_esc50_root(option: str | os.PathLike | None = None) -> Path | None:
    """The ``--esc50`` option, else ``$SONIEVAL_ESC50``, else None."""
    if option:
        return Path(option).expanduser()
    value = os.environ.get(ESC50_ENV)
    return Path(value).expanduser() if value else None


def read_esc50_meta(root: str | os.PathLike) -> pd.DataFrame:
    """Read ``meta/esc50.csv`` and check its official columns and their types (one DataError line each)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            "ESC-50 folder not found",
            path=root,
            hint=f"point --esc50 / {ESC50_ENV} at a copy in the official layout, or download one with "
            "'sonieval data esc50 --root DIR'",
        )
    meta_path = root / META_RELPATH
    if not meta_path.is_file():
        raise DataError(
            f"no {META_RELPATH.as_posix()} here; not an ESC-50 copy in the official layout",
            path=root,
            hint="the folder must hold meta/esc50.csv and audio/",
        )
    try:
        meta = pd.read_csv(meta_path, dtype={"filename": str, "category": str, "take": str})
    except Exception as exc:  # pandas parser errors, decoding errors
        raise DataError(
            f"cannot read the meta CSV ({type(exc).__name__}: {exc})".splitlines()[0], path=meta_path
        ) from None
    missing = [c for c in ESC50_COLUMNS if c not in meta.columns]
    if missing:
        raise DataError(
            f"meta CSV lacks column(s) {', '.join(missing)}",
            path=meta_path,
            hint=f"ESC-50's meta/esc50.csv has columns {', '.join(ESC50_COLUMNS)}; restore it from the official archive",
        )
    if meta.empty:
        raise DataError("meta CSV lists no clips", path=meta_path)
    for col in ("fold", "target"):
        values = pd.to_numeric(meta[col], errors="coerce")
        bad = meta.index[values.isna() | (values != values.round())]
        if len(bad):
            row = int(bad[0])
            raise DataError(
                f"column {col!r} has a non-integer value {meta.at[row, col]!r} in data row {row + 1}",
                path=meta_path,
                hint="restore the file from the official archive",
            )
        meta[col] = values.astype(int)
    if meta["filename"].isna().any() or meta["category"].isna().any():
        row = int(meta.index[meta["filename"].isna() | meta["category"].isna()][0])
        raise DataError(f"empty filename or category in data row {row + 1}", path=meta_path)
    dup = meta["filename"][meta["filename"].duplicated()]
    if len(dup):
        raise DataError(f"filename {dup.iloc[0]!r} is listed more than once", path=meta_path)
    return meta


def open_esc50(root: str | os.PathLike) -> Esc50:
    """Open an ESC-50 copy (official layout); the meta CSV's rows are the clips."""
    from sonieval.data.synthetic import SYNTHETIC_MARKER

    root = Path(root).expanduser().resolve()
    meta = read_esc50_meta(root)
    clips = meta.copy()
    clips.insert(0, "clip_id", clips["filename"].map(lambda f: Path(f).stem))
    clips["path"] = clips["filename"].map(lambda f: str(root / AUDIO_DIRNAME / f))
    clips = clips.sort_values("clip_id", kind="stable").reset_index(drop=True)
    return Esc50(root=root, clips=clips, synthetic=(root / SYNTHETIC_MARKER).is_file())


def synthetic_root(proto: Protocol) -> Path:
    """Where the demo's synthetic clip set lives for a protocol."""
    return proto.layout.cache.synthetic_set


def resolve_data_source(proto: Protocol) -> DataSource:
    """What ``data.esc50`` resolves to now (auto: ``$SONIEVAL_ESC50``, else the built-in synthetic set),
    without making anything; compared with the results folder's pin (:mod:`sonieval.data.results_folder`)."""
    from sonieval.data.results_folder import SYNTHETIC, DataSource, source_of_copy

    setting = proto.data.esc50
    env_root = resolve_esc50_root(None) if setting == "auto" else None
    if setting == "synthetic" or (setting == "auto" and env_root is None):
        via = "data.esc50: synthetic" if setting == "synthetic" else f"${ESC50_ENV} is not set"
        return DataSource(SYNTHETIC, str(synthetic_root(proto).resolve()), None, setting=setting, resolved_via=via)
    if env_root is not None:
        return source_of_copy(env_root, setting=setting, resolved_via=f"from ${ESC50_ENV}")
    return source_of_copy(proto.resolve(setting), setting=setting, resolved_via="the protocol's data.esc50 path")


def dataset_for_protocol(proto: Protocol) -> Esc50:
    """The clips a protocol works on: ``data.esc50`` (auto / synthetic / path), then folds, categories,
    ``max_clips_per_class`` (the first N per class in clip_id order, so the choice is deterministic).

    Refuses (:class:`~sonieval.data.results_folder.DataSourceChanged`) a resolution that differs from the
    data source the protocol's results folder is pinned to; it writes no pin (the clips stage does)."""
    import dataclasses

    from sonieval.data.results_folder import check_data_source, meta_sha256
    from sonieval.data.synthetic import make_synthetic_esc50

    spec = proto.data
    source = resolve_data_source(proto)
    check_data_source(proto.results_path, source, proto.source)
    root = make_synthetic_esc50(source.root, seconds=spec.clip_seconds) if source.synthetic else source.root
    ds = open_esc50(root)
    source = dataclasses.replace(source, label=ds.label, meta_sha256=source.meta_sha256 or meta_sha256(ds.root))
    clips = ds.clips
    where = f"{proto.source or '<protocol>'}: data"
    if spec.folds is not None:
        clips = clips[clips["fold"].isin(spec.folds)]
        if clips.empty:
            raise DataError(
                f"{where}.folds {spec.folds}: the copy at {ds.root} has none of these folds",
                hint=f"folds present: {', '.join(map(str, ds.folds))}",
            )
    categories = getattr(spec, "categories", None)
    notes: list[str] = []
    fallback = ds.synthetic and spec.esc50 in ("auto", "synthetic")
    if categories is not None and fallback and not set(categories) & set(ds.clips["category"]):
        # `auto` without $SONIEVAL_ESC50 (or `synthetic`): the protocol's ESC-50 class names cannot
        # apply to the synthetic set, so every synthetic class is used, and the outputs say so.
        notes.append(
            f"data.categories ({len(categories)} ESC-50 classes) ignored: the SYNTHETIC set has its own classes"
        )
        categories = None
    if categories is not None:
        known = set(ds.clips["category"])
        unknown = [c for c in categories if c not in known]
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            did = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(
                f"{where}.categories: {unknown[0]!r} is not a class of the copy at {ds.root}",
                hint=f"{did}classes: {', '.join(sorted(known))}",
            )
        clips = clips[clips["category"].isin(categories)]
    if spec.max_clips_per_class is not None:
        clips = clips.groupby("category", sort=False, group_keys=False).head(spec.max_clips_per_class)
    return Esc50(root=ds.root, clips=clips.reset_index(drop=True), synthetic=ds.synthetic, notes=notes, source=source)


# ----------------------------------------------------------------------------- verification


@dataclass
class VerificationReport:
    """What ``verify_esc50`` found: every problem, per file."""

    root: Path
    n_listed: int = 0
    folds_present: list[int] = field(default_factory=list)
    categories: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)  # file path -> problems
    hints: dict[str, str] = field(default_factory=dict)  # file path -> what to do (default FIX_HINT)
    checksums: str = "absent"  # absent | verified | written | skipped
    synthetic: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_problem_files(self) -> int:
        return len(self.problems)

    def add(self, path: str | os.PathLike, problem: str, hint: str | None = None) -> None:
        self.problems.setdefault(os.fspath(path), []).append(problem)
        if hint:
            self.hints[os.fspath(path)] = hint

    def problem_lines(self) -> list[str]:
        """One line per problem file: ``path: problem; problem (what to do)``."""
        return [
            f"{p}: {'; '.join(probs)} ({self.hints.get(p, FIX_HINT)})" for p, probs in sorted(self.problems.items())
        ]

    def summary(self) -> str:
        folds = ", ".join(map(str, self.folds_present)) or "none"
        absent = [f for f in ESC50_FOLDS if f not in self.folds_present]
        partial = f" (partial copy: fold(s) {', '.join(map(str, absent))} absent)" if absent else ""
        kind = "SYNTHETIC clip set (not ESC-50)" if self.synthetic else "ESC-50 copy"
        verdict = "all conform" if self.ok else f"{self.n_problem_files} file(s) with problems"
        return (
            f"{kind} at {self.root}: {self.n_listed} clips listed in meta/esc50.csv, {self.categories} classes, "
            f"folds present: {folds}{partial}; checksums: {self.checksums}; {verdict}"
        )


def _conformance_problems(path: Path) -> list[str]:
    """Why a clip is not an ESC-50 clip (WAV, mono, 44.1 kHz, PCM_16, 220500 frames, finite samples)."""
    from sonieval.audio import audio_info, read_audio

    try:
        info = audio_info(path)
    except AudioError as exc:
        return [exc.problem]
    problems = []
    if info.format != ESC50_FORMAT:
        problems.append(f"format {info.format}, expected {ESC50_FORMAT}")
    if info.channels != 1:
        problems.append(f"{info.channels} channels, expected mono")
    if info.sample_rate != ESC50_RATE:
        problems.append(f"sample rate {info.sample_rate} Hz, expected {ESC50_RATE} Hz")
    if info.subtype != ESC50_SUBTYPE:
        problems.append(f"sample format {info.subtype}, expected {ESC50_SUBTYPE}")
    if info.frames != ESC50_FRAMES:
        problems.append(f"{info.frames} frames ({info.seconds:.3f} s), expected {ESC50_FRAMES} (5 s)")
    if not info.subtype.startswith("PCM"):
        # Integer PCM cannot hold NaN; float files must be read to find out.
        try:
            read_audio(path)
        except AudioError as exc:
            problems.append(exc.problem)
    return problems


def _expected_name_parts(row: pd.Series) -> str | None:
    """The official filename pattern is ``{fold}-{src_file}-{take}-{target}.wav``; say if a row contradicts it."""
    stem = Path(str(row["filename"])).stem
    parts = stem.split("-")
    if len(parts) != 4:
        return None  # unofficial names are allowed (custom copies); nothing to cross-check
    fold, _src, _take, target = parts
    if fold.isdigit() and int(fold) != int(row["fold"]):
        return f"filename says fold {fold}, meta/esc50.csv says {row['fold']}"
    if target.isdigit() and int(target) != int(row["target"]):
        return f"filename says target {target}, meta/esc50.csv says {row['target']}"
    return None


def read_checksums(path: Path) -> dict[str, str]:
    """Read a sha256sum-format file: ``<hex>  <relative path>`` per line."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DataError(
                f"line {n} is not '<sha256>  <path>'", path=path, hint="regenerate it with --write-checksums"
            )
        out[rel.lstrip("*")] = digest.lower()
    return out


def write_checksums(root: str | os.PathLike, progress: bool = True) -> Path:
    """Write ``checksums.sha256`` for the meta CSV and every listed clip (sha256sum format, so
    ``sha256sum -c checksums.sha256`` checks it too). Call it on a copy that verified cleanly."""
    from tqdm.auto import tqdm

    root = Path(root)
    relpaths = [META_RELPATH.as_posix()] + [f"{AUDIO_DIRNAME}/{f}" for f in read_esc50_meta(root)["filename"]]
    lines = [
        f"{sha256_file(root / rel)}  {rel}"
        for rel in tqdm(sorted(relpaths), desc="checksums", unit="file", disable=not progress, leave=False)
    ]
    return write_text_atomic(root / CHECKSUMS_NAME, "\n".join(lines) + "\n")


def verify_esc50(
    root: str | os.PathLike,
    *,
    checksums: bool = True,
    progress: bool = True,
) -> VerificationReport:
    """Check a copy: meta columns; every listed clip exists, is readable and conforms; no unlisted audio;
    ``checksums.sha256`` (when present and ``checksums``) matches.

    A malformed or missing meta CSV raises :class:`DataError` (nothing else can be checked);
    everything else is collected per file in the returned report.
    """
    from tqdm.auto import tqdm

    ds = open_esc50(root)
    root = ds.root
    report = VerificationReport(
        root=root,
        n_listed=len(ds.clips),
        folds_present=ds.folds,
        categories=int(ds.clips["category"].nunique()),
        synthetic=ds.synthetic,
    )
    bad_folds = sorted(set(ds.folds) - set(ESC50_FOLDS))
    if bad_folds:
        report.add(root / META_RELPATH, f"fold(s) {bad_folds} are not ESC-50 folds 1..5")
    audio_dir = root / AUDIO_DIRNAME
    listed = set(ds.clips["filename"])
    for row in tqdm(
        ds.clips.itertuples(index=False),
        total=len(ds.clips),
        desc="verify ESC-50",
        unit="clip",
        disable=not progress,
        leave=False,
    ):
        path = Path(row.path)
        if not path.exists():
            report.add(
                path,
                "missing (listed in meta/esc50.csv)",
                "restore it from the official archive, or remove its row from meta/esc50.csv",
            )
            continue
        problems = _conformance_problems(path)
        mismatch = _expected_name_parts(pd.Series(row._asdict()))
        if mismatch:
            problems.append(mismatch)
        for p in problems:
            report.add(path, p)
    if audio_dir.is_dir():
        for extra in sorted(audio_dir.iterdir()):
            if extra.name not in listed and not extra.name.startswith("."):
                report.add(extra, "not listed in meta/esc50.csv", EXTRA_HINT)
    else:
        report.add(
            audio_dir,
            "audio folder missing",
            "the copy must hold audio/ beside meta/ (official layout); "
            "download one with 'sonieval data esc50 --root DIR'",
        )
    sums_path = root / CHECKSUMS_NAME
    if not checksums:
        report.checksums = "skipped"
    elif sums_path.is_file():
        expected = read_checksums(sums_path)
        mismatched = 0
        for rel, digest in tqdm(
            sorted(expected.items()), desc="checksums", unit="file", disable=not progress, leave=False
        ):
            p = root / rel
            if p.is_file() and sha256_file(p) != digest:
                report.add(p, f"content differs from its SHA-256 in {CHECKSUMS_NAME}")
                mismatched += 1
        report.checksums = f"{len(expected) - mismatched} of {len(expected)} match {CHECKSUMS_NAME}"
    else:
        report.checksums = f"no {CHECKSUMS_NAME} (use --write-checksums to record one)"
    return report


# ----------------------------------------------------------------------------- download


def _safe_extract(archive: zipfile.ZipFile, dest: Path) -> None:
    """Extract, refusing members that would land outside ``dest`` (zip-slip)."""
    dest = dest.resolve()
    for member in archive.infolist():
        target = (dest / member.filename).resolve()
        if dest not in target.parents and target != dest:
            raise DataError(f"archive member {member.filename!r} points outside the extraction folder")
    archive.extractall(dest)


def download_esc50(
    root: str | os.PathLike,
    *,
    url: str = ESC50_URL,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    echo: Callable[[str], None] = print,
) -> Path:
    """Download the official archive into ``root``, extract it atomically to ``root/ESC-50``; return that path.

    An existing ``root/ESC-50`` is reused (nothing downloaded). The archive's SHA-256 must equal
    ``expected_sha256`` when given; otherwise a digest other than the one seen for the official
    archive is reported as a warning. It is always recorded in ``archive.sha256`` of the copy;
    ``checksums.sha256`` for the extracted files is written by the caller after verification.
    """
    import hashlib
    import urllib.error
    import urllib.request

    from tqdm.auto import tqdm

    root = Path(root).expanduser()
    dest = root / ESC50_COPY_NAME
    if (dest / META_RELPATH).is_file():
        echo(f"ESC-50 copy already at {dest}; not downloading again")
        return dest
    root.mkdir(parents=True, exist_ok=True)
    hint = f"no network? point --esc50 DIR or {ESC50_ENV} at an existing ESC-50 copy instead"
    digest = hashlib.sha256()
    # The archive (~600 MB) is only a means to the extracted copy: kept under a temporary name, removed after.
    fd, zip_name = tempfile.mkstemp(prefix=".ESC-50-master.", suffix=".zip.part", dir=root)
    os.close(fd)
    zip_tmp = Path(zip_name)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(zip_tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=total, unit="B", unit_scale=True, desc="download ESC-50", disable=not progress, leave=False
                ) as bar:
                    while block := response.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataError(f"download failed ({reason})", path=url, hint=hint) from None
        sha = digest.hexdigest()
        echo(f"downloaded {url}: SHA-256 {sha}")
        if not expected_sha256 and sha != ESC50_ARCHIVE_SHA256_SEEN:
            echo(
                f"warning: SHA-256 differs from the one recorded for the official archive "
                f"({ESC50_ARCHIVE_SHA256_SEEN}, {ESC50_ARCHIVE_BYTES_SEEN} bytes); GitHub may have regenerated it: "
                "every clip is verified next"
            )
        if expected_sha256 and sha != expected_sha256.lower():
            raise DataError(
                f"archive SHA-256 {sha} differs from the expected {expected_sha256}",
                path=url,
                hint="the download is corrupt or the archive changed; retry, or pass the new --sha256 after checking it",
            )
        staging = Path(tempfile.mkdtemp(prefix=".ESC-50.extract-", dir=root))
        try:
            try:
                with zipfile.ZipFile(zip_tmp) as archive:
                    _safe_extract(archive, staging)
            except zipfile.BadZipFile as exc:
                raise DataError(f"downloaded file is not a valid zip archive ({exc})", path=url, hint=hint) from None
            found = sorted(p.parent.parent for p in staging.rglob("esc50.csv") if p.parent.name == "meta")
            if not found:
                raise DataError("the archive holds no meta/esc50.csv", path=url, hint=hint)
            copy = found[0]
            write_text_atomic(copy / ARCHIVE_CHECKSUM_NAME, f"{sha}  {url}\n")
            os.replace(copy, dest)  # atomic: the copy appears complete or not at all
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        zip_tmp.unlink(missing_ok=True)
    return dest


# ----------------------------------------------------------------------------- splits


def split_counts(n: int, validation: float, test: float) -> tuple[int, int, int]:
    """(train, validation, test) clip counts for a class of ``n`` clips.

    Rounding rule: test and validation each get ``round_half_up(n * fraction)`` clips but at least
    one whenever the class can spare it (test needs n >= 2, validation n >= 3, so at least one
    training clip always remains); train gets the rest. So 40 clips give 32/4/4 (exactly 80/10/10)
    and 8 clips give 6/1/1 (the fold-4 subset) rather than 8/0/0.
    """

    def half_up(x: float) -> int:
        return int(np.floor(x + 0.5))

    k_test = max(1, half_up(n * test)) if n >= 2 else 0
    k_val = max(1, half_up(n * validation)) if n >= 3 else 0
    while k_test + k_val > n - 1 and (k_test + k_val) > 0:  # keep at least one training clip
        if k_val >= k_test and k_val > 0:
            k_val -= 1
        else:
            k_test -= 1
    return n - k_test - k_val, k_val, k_test


def _class_rng(seed: int, category: str) -> np.random.Generator:
    # One stream per class (seeded by the class name's CRC32), so adding or dropping a class does
    # not reshuffle the others.
    return np.random.default_rng([int(seed), zlib.crc32(str(category).encode())])


def assign_splits(clips: pd.DataFrame, split_spec: SplitSpec | None = None) -> pd.DataFrame:
    """Add ``split`` (train | validation | test), stratified by ``category``, deterministic for the seed.

    Within each class, clips are ordered by clip_id, permuted by a class-specific generator
    (numpy PCG64 seeded with (seed, crc32(category))), and cut by :func:`split_counts`.
    """
    from sonieval.protocol import SplitSpec

    spec = split_spec or SplitSpec()
    out = clips.sort_values("clip_id", kind="stable").reset_index(drop=True).copy()
    out["split"] = "train"
    for category, idx in out.groupby("category", sort=True).groups.items():
        idx = np.asarray(sorted(idx))  # ``out`` is in clip_id order, so index order is clip_id order
        order = idx[_class_rng(spec.seed, category).permutation(len(idx))]
        n_train, n_val, n_test = split_counts(len(idx), spec.validation, spec.test)
        out.loc[order[:n_test], "split"] = "test"
        out.loc[order[n_test : n_test + n_val], "split"] = "validation"
    return out


def select_listening_set(
    clips_with_split: pd.DataFrame, listening_spec: ListeningSetSpec | None = None
) -> pd.DataFrame:
    """The N test clips to sonify and rate: one per class first (when asked and N allows), then the rest
    drawn at random from the remaining test clips; deterministic for the seed.

    Returns the chosen rows (sorted by category, clip_id). ``result.attrs["note"]`` says in words what
    was done when the request could not be met as asked (fewer test clips than N: all are taken;
    more classes than N: not every class is covered); it is empty otherwise.
    """
    from sonieval.protocol import ListeningSetSpec

    spec = listening_spec or ListeningSetSpec()
    test = clips_with_split[clips_with_split["split"] == "test"].sort_values("clip_id", kind="stable")
    n_classes = test["category"].nunique()
    note = ""
    if len(test) <= spec.n_clips:
        chosen = test
        if len(test) < spec.n_clips:
            note = (
                f"only {len(test)} test clips available, fewer than the {spec.n_clips} asked; "
                f"the listening set is all {len(test)} ({n_classes} classes)"
            )
    else:
        rng = np.random.default_rng(int(spec.seed))
        picked: list[int] = []
        if spec.at_least_one_per_class:
            classes = sorted(test["category"].unique())
            if len(classes) > spec.n_clips:
                classes = sorted(rng.choice(classes, size=spec.n_clips, replace=False).tolist())
                note = f"{n_classes} classes but only {spec.n_clips} clips asked: {len(classes)} classes covered"
            for category in classes:
                members = test.index[test["category"] == category].tolist()
                picked.append(members[int(_class_rng(spec.seed, category).integers(len(members)))])
        taken = set(picked)
        rest = [i for i in test.index if i not in taken]
        extra = spec.n_clips - len(picked)
        if extra > 0:
            picked += rng.choice(rest, size=extra, replace=False).tolist()
        chosen = test.loc[picked]
    chosen = chosen.sort_values(["category", "clip_id"], kind="stable").copy()
    chosen.attrs["note"] = note
    return chosen


def _write_list(path: Path, filenames: list[str]) -> Path:
    return write_text_atomic(path, "".join(f"{f}\n" for f in filenames))


def write_split_files(clips_with_split: pd.DataFrame, folder: str | os.PathLike) -> dict[str, Path]:
    """Write ``train.txt``, ``validation.txt``, ``test.txt`` (one filename per line, sorted), as the
    reference work did; returns split -> path."""
    folder = Path(folder)
    out = {}
    for split in ("train", "validation", "test"):
        names = sorted(clips_with_split.loc[clips_with_split["split"] == split, "filename"])
        out[split] = _write_list(folder / f"{split}.txt", names)
    return out


def write_listening_set(listening: pd.DataFrame, folder: str | os.PathLike) -> Path:
    """Write ``listening_set.txt`` (one filename per line, in category order)."""
    return _write_list(Path(folder) / "listening_set.txt", list(listening["filename"]))


# ----------------------------------------------------------------------------- the clips stage

AUDIO_NOTE_COLUMNS = [
    "source_rate",
    "source_channels",
    "source_subtype",
    "source_seconds",
    "length_action",
    "resampled",
    "mixed_down",
]


def prepare_clips(proto: Protocol, ledger: RunLedger, *, progress: bool = True, engine=None) -> pd.DataFrame:
    """The ``clips`` stage: read every clip at 44.1 kHz under the protocol's length policy, record each
    clip's status, error and audio notes in the ledger, assign splits, pick the listening set, and write
    ``<results>/tables/clips.parquet`` and ``<results>/splits/*.txt``. The clips are read in this process
    (``engine``, which every stage of ``sonieval run`` is given, is not used).

    A clip that cannot be read (or, under ``length_policy: strict``, has the wrong length) is
    ``status=failed`` with its error, is left out of the split files and the listening set, and
    the others finish. Splits are assigned over every listed clip, so one bad file does not move
    the others between splits. ``result.attrs`` holds ``dataset`` (the data set's label),
    ``data_notes`` (what was adapted), ``batch`` (the batch summary) and ``listening_note``.
    """
    from sonieval.audio import CODEC_RATE, load_clip
    from sonieval.data.results_folder import pin_data_source
    from sonieval.ledger import ItemOutcome, LedgerItem
    from sonieval.tables import CLIPS_COLUMNS, write_table

    ds = dataset_for_protocol(proto)
    pin_data_source(proto.results_path, ds.source, proto.source)  # the first resolution is this folder's source
    spec = proto.data
    clips = assign_splits(ds.clips, spec.split)

    def item_for(row: pd.Series) -> LedgerItem:
        path = Path(row["path"])
        try:
            st = path.stat()
            stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        except OSError:
            stamp = {"size": None, "mtime_ns": None}
        inputs = {
            "path": str(path),
            **stamp,
            "rate": CODEC_RATE,
            "seconds": spec.clip_seconds,
            "policy": spec.length_policy,
        }
        return LedgerItem(key=row["clip_id"], inputs=inputs, payload=path)

    def read_one(item: LedgerItem) -> ItemOutcome:
        clip = load_clip(item.payload, CODEC_RATE, spec.clip_seconds, spec.length_policy)
        return ItemOutcome(path=item.payload, extra=clip.notes)

    items = [item_for(row) for _, row in clips.iterrows()]
    batch = ledger.run_batch(CLIPS_STAGE, items, read_one, desc="read clips", progress=progress)

    status, error, notes = [], [], []
    for key in clips["clip_id"]:
        row = ledger.get(CLIPS_STAGE, key) or {}
        status.append("ok" if row.get("status") == "done" else "failed")
        error.append(row.get("error") if row.get("status") != "done" else None)
        notes.append(row.get("extra") or {})
    clips["status"] = status
    clips["error"] = error
    for col in AUDIO_NOTE_COLUMNS:
        clips[col] = [n.get(col) for n in notes]
    clips["length_action"] = clips["length_action"].fillna("")

    good = clips[clips["status"] == "ok"]
    listening = select_listening_set(good, spec.listening_set)
    clips["listening"] = clips["clip_id"].isin(set(listening["clip_id"]))
    clips["dataset"] = ds.label
    clips["synthetic"] = ds.synthetic

    splits_dir = proto.layout.splits
    write_split_files(good, splits_dir)
    write_listening_set(listening, splits_dir)
    ordered = CLIPS_COLUMNS + ["listening"] + [c for c in clips.columns if c not in CLIPS_COLUMNS + ["listening"]]
    table = clips[ordered].copy()
    for col in ("source_rate", "source_channels"):
        table[col] = table[col].astype("Int64")
    write_table(table, proto.layout.table("clips"), kind="clips")
    table.attrs.update(
        dataset=ds.label,
        data_notes=list(ds.notes),
        batch=batch.summary("clips"),
        listening_note=listening.attrs.get("note", ""),
    )
    return table


def describe_clips_stage(table: pd.DataFrame, proto: Protocol) -> list[str]:
    """Human-readable lines about a finished clips stage (for the CLI and the demo)."""
    res = proto.results_path
    n_ok = int((table["status"] == "ok").sum())
    from sonieval.data.results_folder import pin_path

    lines = [
        f"data: {table.attrs.get('dataset', '')} (this results folder's data source, pinned in {pin_path(res)})",
        f"clips: {table.attrs.get('batch', '')}; {n_ok} readable",
    ]
    lines += [f"  note: {n}" for n in table.attrs.get("data_notes", [])]
    for split in ("train", "validation", "test"):
        k = int(((table["split"] == split) & (table["status"] == "ok")).sum())
        lines.append(f"  {split}: {k} clips -> {proto.layout.split_list(split)}")
    lines.append(
        f"  listening set: {int(table['listening'].sum())} clips -> {proto.layout.split_list('listening_set')}"
    )
    if table.attrs.get("listening_note"):
        lines.append(f"  note: {table.attrs['listening_note']}")
    lines.append(f"  table: {proto.layout.table('clips')}")
    for row in table[table["status"] != "ok"].itertuples():
        lines.append(f"  failed: {row.error}")
    return lines


__all__ = [
    "Esc50",
    "VerificationReport",
    "resolve_esc50_root",
    "open_esc50",
    "read_esc50_meta",
    "dataset_for_protocol",
    "verify_esc50",
    "download_esc50",
    "assign_splits",
    "split_counts",
    "select_listening_set",
    "write_split_files",
    "write_listening_set",
    "prepare_clips",
    "describe_clips_stage",
]
