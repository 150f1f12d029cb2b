"""The metrics as a library: KAD and FAD of audio given as arrays, a folder or a list of files, and a
:class:`Leaderboard` of many systems against one reference.

Everything is computed in memory with the row functions of :mod:`sonieval.metrics.scoring`, so a value
here equals the one ``sonieval score --reference DIR --system NAME=DIR`` writes for the same audio.
Nothing is written unless asked: ``cache=`` (a folder for per-file embeddings) or
:meth:`Leaderboard.write`. The embedding is named as everywhere else (``logmel``, ``hubert:small``,
``kadtk:vggish``, ...: :mod:`sonieval.metrics.embeddings`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.errors import DataError, SonievalError
from sonieval.metrics.scoring import (
    EmbeddedSet,
    ReferenceSide,
    ScoreConfig,
    build_leaderboard,
    common_fields,
    paired_with_best,
    score_versions,
    stack_frames,
    system_rows,
    tidy_scores,
)

__all__ = ["DistanceResult", "Leaderboard", "fad", "kad"]

# clips × samples, a list of 1-D clips, a folder, or a list of audio files
Audio = np.ndarray | Sequence[np.ndarray] | str | os.PathLike | Sequence[str | os.PathLike]
METRICS = ("kad", "fad")


@dataclass(frozen=True)
class DistanceResult:
    """One KAD or FAD value with its interval (NaN without a bootstrap) and provenance."""

    metric: str
    value: float
    ci_low: float
    ci_high: float
    n_reference: int  # clips
    n_evaluated: int  # clips
    embedding: str
    bandwidth: float | None  # KAD's sigma (fixed from the reference); None for FAD
    versions: dict
    saturated: bool | None = None  # KAD only: the cross term vanished (far sets look alike)
    ci_method: str = ""
    error: str | None = None

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> DistanceResult:
        bandwidth = row.get("bandwidth")
        bandwidth = float(bandwidth) if bandwidth is not None and math.isfinite(float(bandwidth)) else None
        saturated = row.get("saturated")
        return cls(
            metric=row["metric"],
            value=float(row["value"]),
            ci_low=float(row.get("ci_low", math.nan)),
            ci_high=float(row.get("ci_high", math.nan)),
            n_reference=int(row["n_reference"]),
            n_evaluated=int(row["n_evaluated"]),
            embedding=row["embedding"],
            bandwidth=bandwidth,
            versions=json.loads(row["versions"]),
            saturated=None if saturated is None else bool(saturated),
            ci_method=str(row.get("ci_method", "")),
            error=row.get("error"),
        )


def kad(
    reference: Audio,
    evaluated: Audio,
    *,
    embedding: str = "logmel",
    bandwidth: float | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    device: str = "cpu",
    cache: str | os.PathLike | None = None,
    sample_rate: int | None = None,
) -> DistanceResult:
    """Kernel audio distance (unbiased MMD², Gaussian kernel, ×100; kadtk's convention) of ``evaluated``
    against ``reference``, with sigma the reference's median pairwise distance unless ``bandwidth`` is
    given; ``bootstrap`` > 0 adds a 95 % percentile interval over clips. Arrays need ``sample_rate``."""
    settings = dict(bandwidth=bandwidth, bootstrap=bootstrap, seed=seed, device=device, cache=cache)
    return _one_distance("kad", reference, evaluated, embedding, sample_rate, settings)


def fad(
    reference: Audio,
    evaluated: Audio,
    *,
    embedding: str = "logmel",
    bootstrap: int = 0,
    seed: int = 0,
    device: str = "cpu",
    cache: str | os.PathLike | None = None,
    sample_rate: int | None = None,
) -> DistanceResult:
    """Fréchet audio distance of Gaussians fitted to the two sets' frames (symmetric eigen route);
    ``bootstrap`` > 0 adds a 95 % interval that contains the value (a jackknife over the evaluated clips,
    ``distances.fad_interval``): for the population FAD, or for the FAD at this many clips when they are
    fewer than the embedding's dimensions; ``ci_method`` says which. Arrays need ``sample_rate``."""
    settings = dict(bootstrap=bootstrap, seed=seed, device=device, cache=cache)
    return _one_distance("fad", reference, evaluated, embedding, sample_rate, settings)


def _one_distance(metric: str, reference, evaluated, embedding: str, sample_rate, settings: dict) -> DistanceResult:
    """One system against the reference on a board of one metric (the board holds the shared maths)."""
    board = Leaderboard(reference, embedding=embedding, metrics=(metric,), sample_rate=sample_rate, **settings)
    return _checked(board.add("evaluated", evaluated)[metric])


def _checked(result: DistanceResult) -> DistanceResult:
    if result.error:
        raise SonievalError(f"{result.metric.upper()} could not be computed: {result.error}")
    return result


class Leaderboard:
    """Many systems against one reference, with the reference's bandwidth (KAD) and Gaussian (FAD)
    computed once and fixed for every system, as ``sonieval score`` does.

    >>> board = Leaderboard("refs/", metrics=("kad", "fad"))      # doctest: +SKIP
    >>> board.add("lowpass", "out/lowpass/"); board.table()       # doctest: +SKIP
    """

    def __init__(
        self,
        reference: Audio,
        *,
        embedding: str = "logmel",
        metrics: Sequence[str] = ("kad",),
        bandwidth: float | None = None,
        bootstrap: int = 0,
        seed: int = 0,
        device: str = "cpu",
        cache: str | os.PathLike | None = None,
        sample_rate: int | None = None,
    ):
        from sonieval.metrics.embeddings import EmbeddingCache, load_embedding

        _check_settings(metrics, bootstrap)
        self.config = ScoreConfig.from_spec(
            embeddings=[embedding],
            metrics=list(metrics),
            bootstrap=bootstrap,
            per_class=False,
            item_metrics=[],
            bandwidth=bandwidth,
            seed=seed,
            device=device,
            progress=False,
        )
        self.sample_rate = sample_rate
        self._backend = load_embedding(embedding, device=device)
        self._cache = EmbeddingCache(cache) if cache is not None else None
        ref, label = self._embed(reference, "reference", sample_rate)
        self._side = ReferenceSide(
            ref,
            self.config,
            label=label,
            embedding_id=self._backend.embedding_id,
            weights=self._backend.weights,
            versions=score_versions(self._backend),
        )
        self._rows: list[dict] = []
        self._comparisons: dict = {}

    @property
    def bandwidth(self) -> float | None:
        """KAD's sigma, fixed from the reference (None without KAD)."""
        return None if self._side.kernel is None else float(self._side.kernel.bandwidth)

    def add(self, name: str, evaluated: Audio, *, sample_rate: int | None = None) -> dict[str, DistanceResult]:
        """Score one system; returns ``{metric: DistanceResult}`` (also kept for :meth:`table`)."""
        if any(r["system_id"] == name for r in self._rows):
            raise SonievalError(f"system {name!r} was added twice", hint="give each system its own name")
        ev, _ = self._embed(evaluated, f"system {name!r}", sample_rate or self.sample_rate)
        ev.name = name
        rows, comparison = system_rows(self._side, ev, self.config, common_fields(self._side, ev))
        self._rows += rows
        if comparison is not None:
            self._comparisons[name] = comparison
        return {r["metric"]: DistanceResult.from_row(r) for r in rows}

    def scores(self) -> pd.DataFrame:
        """Every row, in the scores table's columns (docs/results.md#tables)."""
        return tidy_scores(pd.DataFrame(self._rows)) if self._rows else pd.DataFrame()

    def table(self) -> pd.DataFrame:
        """The systems ranked per metric, best (lowest) first: leaderboard.csv's columns."""
        return build_leaderboard(self.scores()).drop(columns=["versions"], errors="ignore")

    def paired(self) -> pd.DataFrame:
        """KAD(best) − KAD(system) by a paired bootstrap over clips (needs ``bootstrap`` > 0 and KAD)."""
        if self.config.bootstrap <= 0:
            return pd.DataFrame()
        base = {"embedding": self._side.embedding_id, "reference_set": self._side.label}
        return pd.DataFrame(paired_with_best(self._comparisons, self.config, base))

    def write(self, folder: str | os.PathLike) -> list[Path]:
        """Write ``scores.csv``, ``leaderboard.csv``, ``paired_kad.csv`` and ``leaderboard.{md,html}``."""
        from sonieval.metrics.render import leaderboard_document, write_pages
        from sonieval.tables import write_table

        if not self._rows:
            raise SonievalError("nothing to write: the leaderboard has no systems", hint="call add(name, audio) first")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        scores, paired = self.scores(), self.paired()
        board = build_leaderboard(scores)
        files = [
            write_table(scores, out / "scores.csv", "scores"),
            write_table(board.drop(columns=["versions"], errors="ignore"), out / "leaderboard.csv"),
        ]
        if not paired.empty:
            files.append(write_table(paired, out / "paired_kad.csv"))
        return files + write_pages(leaderboard_document(board, scores, paired), out)

    def _embed(self, audio: Audio, what: str, sample_rate: int | None) -> tuple[EmbeddedSet, str]:
        source, label, arrays = _inputs(audio, what)
        keys = list(source)
        if arrays is None:
            frames = self._embed_files(source, what)
        else:
            frames = _embed_arrays(self._backend, dict(zip(keys, arrays)), sample_rate, what)
        return stack_frames(what, keys, keys, [None] * len(keys), frames), label

    def _embed_files(self, files: dict[str, str], what: str) -> dict[str, np.ndarray]:
        from sonieval.metrics.embeddings import embed_files

        got = embed_files(self._backend, list(files.values()), cache=self._cache, progress=False)
        if got.errors:
            first = next(iter(got.errors.values()))
            raise DataError(f"{what}: {len(got.errors)} file(s) could not be embedded; first: {first}")
        return {key: got.frames[path] for key, path in files.items()}


# --------------------------------------------------------------------------- inputs


def _check_settings(metrics: Sequence[str], bootstrap: int) -> None:
    bad = [m for m in metrics if m not in METRICS]
    if isinstance(metrics, str) or bad or not metrics:
        raise SonievalError(
            f"metrics={metrics!r}: expected a list of {' and/or '.join(METRICS)}", hint="e.g. metrics=('kad', 'fad')"
        )
    if bootstrap < 0:
        raise SonievalError(f"bootstrap={bootstrap}: must be 0 (no interval) or more")


def _inputs(audio: Audio, what: str):
    """(clip ids → file paths, or clip ids; the set's label; the arrays or None for files)."""
    if isinstance(audio, (str, os.PathLike)):
        return _folder(Path(audio), what)
    if isinstance(audio, np.ndarray):
        if audio.ndim != 2:
            raise DataError(
                f"{what}: an array of shape {audio.shape}; expected clips × samples",
                hint="a single clip is one set of one: pass a list of clips, with sample_rate=",
            )
        audio = list(audio)
    items = list(audio) if isinstance(audio, (list, tuple)) else None
    if items is None:
        raise DataError(
            f"{what}: {type(audio).__name__} is not audio",
            hint="pass a folder, a list of files, a clips × samples array or a list of 1-D arrays",
        )
    if not items:
        raise DataError(f"{what}: the list of clips is empty", hint="give at least 2 clips")
    if all(isinstance(x, (str, os.PathLike)) for x in items):
        files = {os.fspath(p): os.fspath(p) for p in items}
        missing = [p for p in files if not Path(p).is_file()]
        if missing:
            raise DataError(f"{what}: file not found", path=missing[0], hint=f"{len(missing)} of {len(files)} missing")
        return files, f"files:{len(files)}", None
    if all(isinstance(x, np.ndarray) for x in items):
        keys = [f"clip{i:05d}" for i in range(len(items))]
        return keys, f"arrays:{len(items)}", items
    raise DataError(f"{what}: a list that mixes file paths and arrays", hint="give one kind")


def _folder(folder: Path, what: str):
    from sonieval.metrics.leaderboard import _folder_set

    if not folder.is_dir():
        raise DataError(
            f"{what}: folder not found", path=folder, hint="pass a folder of audio, a list of files or arrays"
        )
    found = _folder_set(what, folder)  # the same clip ids and label as `sonieval score --reference/--system`
    return dict(zip(found.clip_ids, found.paths)), f"folder:{folder.resolve()}", None


def _embed_arrays(backend, clips: dict[str, np.ndarray], sample_rate: int | None, what: str) -> dict:
    """Frames of in-memory clips: resampled as files are read (soxr), batched by length as files are."""
    from sonieval.audio import resample

    if not sample_rate:
        raise DataError(f"{what}: arrays need sample_rate=", hint="e.g. kad(ref, ev, sample_rate=16000)")
    by_length: dict[int, list[tuple[str, np.ndarray]]] = {}
    for key, x in clips.items():
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
            raise DataError(f"{what}: clip {key} must be a non-empty 1-D array of finite samples, got {x.shape}")
        x = resample(x, int(sample_rate), backend.sample_rate)
        by_length.setdefault(len(x), []).append((key, x))
    frames = {}
    for group in by_length.values():
        for start in range(0, len(group), backend.batch_size):
            batch = group[start : start + backend.batch_size]
            for (key, _), f in zip(batch, backend.embed_batch([x for _, x in batch])):
                f = np.ascontiguousarray(f, dtype=np.float32)
                if f.ndim != 2 or not np.all(np.isfinite(f)):
                    raise DataError(
                        f"{what}: clip {key}: embedding {backend.embedding_id} gave non-finite or malformed frames"
                    )
                frames[key] = f
    return frames
