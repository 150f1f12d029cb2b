"""Leaderboards: KAD and FAD of each system against a reference set, overall and per class.

Two entry points share one engine (:func:`score_sets`):

- :func:`run_score` (``sonieval score PROTOCOL``): the reference set is the clips of
  ``metrics.reference_set`` (an ESC-50 split name such as ``test``, several joined with ``+``,
  ``all``, or a folder of audio) from ``<results>/tables/clips.parquet``; the systems are the
  sonified systems of ``<results>/tables/sonifications.parquet``.
- :func:`score_folders` (``sonieval score --reference DIR --system NAME=DIR ...``): any folders
  of audio; files whose path (relative, without extension) matches a reference file get per-item
  scores against it.

Per embedding, sigma and the reference kernel block (KAD) and the reference Gaussian (FAD) are
computed once and fixed for every system. KAD CIs resample clips (frames of one clip are not
independent) from the stored per-clip kernel block sums; FAD CIs resample the evaluated clips
(the reference Gaussian fixed), at most :data:`FAD_BOOTSTRAP_MAX` resamples because each refits a
covariance. Every row carries the embedding id (with its ``weight-free`` / ``random-init`` /
``pretrained`` label), the reference set and its size, the number evaluated, the bandwidth, the
scale and the package versions.

Outputs under ``<out>/``: ``scores.parquet`` and ``scores.csv`` (DESIGN.md §3 scores table, plus
``category`` for per-class rows), ``item_scores.parquet``, ``paired_kad.csv`` (each system against
the best by KAD: paired bootstrap of the difference), ``leaderboard.{csv,md,html}`` and
``figures/<metric>__<embedding>__<encoder>__<postprocess>.png`` (the reference work's dot plot:
one point per system, a line at the best); with learning controls ``learning.csv``, and for
encoders sonified at several layers ``depth.csv`` and ``figures/depth__<encoder>.png`` (audibility
by depth, :mod:`sonieval.metrics.depth`).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from sonieval.errors import DataError, SonievalError
from sonieval.metrics.embed_tasks import fill_embedding_cache
from sonieval.pipeline.engines import run_items
from sonieval.ledger import ItemOutcome, LedgerItem, RunLedger

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
FAD_BOOTSTRAP_MAX = 200
CI_LEVEL = 0.95
STAGE = "score"
SCORE_ROW_EXTRA = [
    "category", "embedding_weights", "ci_method", "n_reference_frames", "n_evaluated_frames",
    "reference_term", "evaluated_term", "cross_term", "saturated", "n_failed", "error", "system_random_init",
    "system_control", "system_codec_label", "system_encoder_random_init", "system_codec_random_init",
]
# Marks in every rendered leaderboard: the audio of a † system comes from a randomly initialised codec
# (it shows that the pipeline runs, nothing more); a ‡ system's gate learned from a randomly initialised
# encoder (a random projection of the audio: the method is real and can learn, the encoder is not AST).
RANDOM_CODEC_MARK, RANDOM_ENCODER_MARK = "†", "‡"


@dataclass
class AudioSet:
    """A named set of audio files: the reference, or one system's outputs."""

    name: str
    paths: list[str]
    clip_ids: list[str]
    categories: list[str | None] = field(default_factory=list)
    originals: list[str | None] = field(default_factory=list)  # the original clip of each item
    random_init: bool | None = None  # made with a randomly initialised encoder/codec (sonify's column)
    # More of sonify's provenance, copied onto every score row: control, codec_label,
    # encoder_random_init, codec_random_init (absent for folders of audio).
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if not self.categories:
            self.categories = [None] * n
        if not self.originals:
            self.originals = [None] * n
        if not (len(self.clip_ids) == len(self.categories) == len(self.originals) == n):
            raise DataError(f"audio set {self.name!r}: paths, clip ids, categories and originals differ in length")


@dataclass
class ScoreConfig:
    embeddings: list[str] = field(default_factory=lambda: ["logmel"])
    metrics: list[str] = field(default_factory=lambda: ["kad", "fad"])
    bootstrap: int = 1000
    per_class: bool = True
    item_metrics: list[str] = field(
        default_factory=lambda: ["frame_kad", "embedding_cosine", "logmel_l1", "mrstft", "envelope_correlation"]
    )
    bandwidth: float | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


@dataclass
class ScoreOutputs:
    scores: pd.DataFrame
    item_scores: pd.DataFrame
    leaderboard: pd.DataFrame
    files: list[Path]
    failures: dict[str, str]
    learning: pd.DataFrame = field(default_factory=pd.DataFrame)  # trained systems beside their controls
    depth: pd.DataFrame = field(default_factory=pd.DataFrame)  # the learning table by layer (encoders with several)
    notes: list[str] = field(default_factory=list)  # warnings for the console (e.g. stale files not scored)


# --------------------------------------------------------------------------- provenance


def package_versions(extra: dict | None = None) -> dict:
    import importlib.metadata as md

    import sonieval

    out = {"sonieval": sonieval.__version__, "python": platform.python_version()}
    for pkg in ("numpy", "torch", "scipy", "librosa", "transformers", "kadtk"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["kad_convention"] = (
        "kadtk-1.1.0 calc_kernel_audio_distance equivalent (unbiased MMD^2, Gaussian kernel, x100), "
        "except bandwidth = median pairwise distance of the REFERENCE set, fixed per leaderboard"
    )
    out["fad_convention"] = "Frechet distance of Gaussians, unbiased covariance, symmetric eigen route"
    out.update(extra or {})
    return out


# --------------------------------------------------------------------------- engine


def _frames_of(audio_set: AudioSet, frames: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Stack the frames of the items that embedded; group label = the item's clip id (so that two
    systems' sonifications of the same clips pair up in a paired bootstrap)."""
    blocks, groups, kept = [], [], []
    for i, p in enumerate(audio_set.paths):
        f = frames.get(p)
        if f is None or f.shape[0] == 0:
            continue
        blocks.append(f)
        groups.append(np.full(f.shape[0], audio_set.clip_ids[i], dtype=object))
        kept.append(i)
    if not blocks:
        return np.zeros((0, 0), np.float32), np.zeros(0, object), []
    dims = {b.shape[1] for b in blocks}
    if len(dims) > 1:
        raise DataError(f"{audio_set.name}: embeddings of different dimensions {sorted(dims)}")
    return np.concatenate(blocks), np.concatenate(groups), kept


def _row(system_id: str, metric: str, base: dict, **values) -> dict:
    row = {"system_id": system_id, "metric": metric, **base}
    row.update(values)
    return row


def _part_path(out_dir: Path, kind: str, key: str) -> Path:
    return out_dir / "parts" / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.parquet"


def score_sets(
    reference: AudioSet,
    systems: list[AudioSet],
    out_dir: str | os.PathLike,
    *,
    config: ScoreConfig,
    cache_dir: str | os.PathLike,
    reference_label: str,
    manifest: RunLedger,
    training: pd.DataFrame | None = None,
    primary_codec: str | None = None,
    engine=None,
) -> ScoreOutputs:
    """Score every system against ``reference`` with each embedding; write tables and figures.

    ``training`` (the train stage's table) adds each gate's validation R² to the learning table;
    ``primary_codec`` names the codec of gates whose system_id names none (their ceiling). ``engine``
    (sonieval.pipeline.engines; default: this process) runs the embedding pass (one GPU per task when there
    are GPUs) and one CPU task per system; the driver records them."""
    from sonieval.metrics import distances as D
    from sonieval.metrics.embeddings import EmbeddingCache, embed_files, load_embedding
    from sonieval.metrics.items import EMBEDDING_ITEM_METRICS, check_item_metrics

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_item_metrics(config.item_metrics)
    if not systems:
        raise DataError("no systems to score", hint="sonify first, or pass --system NAME=DIR")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise DataError(f"system names must be unique, got {names}")
    cache = EmbeddingCache(cache_dir)
    failures: dict[str, str] = {}
    score_parts: list[Path] = []
    item_parts: list[Path] = []
    paired_rows: list[dict] = []
    control_rows: list[dict] = []

    for spec in config.embeddings:
        try:
            backend = load_embedding(spec, device=config.device)
            emb_id = backend.embedding_id
            versions = package_versions({"embedding_version": backend.version, "embedding_params": backend.params()})
            all_paths = list(reference.paths)
            for s in systems:
                all_paths += s.paths + [o for o in s.originals if o]
            fill_embedding_cache(manifest, engine, spec, all_paths, cache_dir, config.device, progress=config.progress)
            extraction = embed_files(backend, all_paths, cache=cache, progress=config.progress,
                                     desc=f"embed ({emb_id})")
            for p, err in extraction.errors.items():
                manifest.record(f"{STAGE}-embed", f"{emb_id}|{p}", "failed", inputs={"embedding": emb_id, "path": p},
                                error=err)
                failures[f"{emb_id}|{p}"] = err
            ref_frames, ref_groups, ref_kept = _frames_of(reference, extraction.frames)
            if len(ref_kept) < 2:
                raise DataError(
                    f"reference set {reference_label!r}: only {len(ref_kept)} clip(s) could be embedded with {emb_id}",
                    hint="a reference set needs at least 2 clips",
                )
            ref_categories = np.array([reference.categories[i] for i in ref_kept], dtype=object)
            ref_clip_ids = [reference.clip_ids[i] for i in ref_kept]
            ref_sha = hashlib.sha256("\n".join(sorted(ref_clip_ids)).encode()).hexdigest()[:16]
            base = {
                "embedding": emb_id, "embedding_weights": backend.weights, "reference_set": reference_label,
                "n_reference": len(ref_kept), "n_reference_frames": int(ref_frames.shape[0]),
                "versions": json.dumps(versions, sort_keys=True, default=str),
            }
            # the reference side, once per embedding
            ref_kernel = None
            ref_kernel_error = None
            if "kad" in config.metrics:
                try:
                    ref_kernel = D.ReferenceKernel(ref_frames, ref_groups, bandwidth=config.bandwidth)
                except D.MetricError as exc:
                    ref_kernel_error = str(exc)
            ref_stats = None
            ref_stats_error = None
            if "fad" in config.metrics:
                try:
                    ref_stats = D.gaussian_stats(ref_frames, f"reference set {reference_label}")
                except D.MetricError as exc:
                    ref_stats_error = str(exc)
            class_ref_stats: dict[str, object] = {}

            def score_system(item: LedgerItem) -> ItemOutcome:
                s: AudioSet = item.payload
                ev_frames, ev_groups, ev_kept = _frames_of(s, extraction.frames)
                n_failed = len(s.paths) - len(ev_kept)
                if not ev_kept:
                    raise DataError(f"system {s.name}: none of its {len(s.paths)} clips could be embedded with {emb_id}")
                ev_categories = np.array([s.categories[i] for i in ev_kept], dtype=object)
                ev_clip_ids = [s.clip_ids[i] for i in ev_kept]
                rows: list[dict] = []
                common = {**base, "n_evaluated": len(ev_kept), "n_evaluated_frames": int(ev_frames.shape[0]),
                          "n_failed": n_failed, "system_random_init": s.random_init,
                          **{f"system_{k}": v for k, v in s.provenance.items()}}
                cats = [None]
                if config.per_class:
                    cats += sorted({c for c in ev_categories if c is not None} & {c for c in ref_categories if c is not None})
                if "kad" in config.metrics:
                    if ref_kernel is None:
                        rows.append(_row(s.name, "kad", common, category=None, value=np.nan, error=ref_kernel_error,
                                         ci_method="none"))
                    else:
                        comp = ref_kernel.compare(ev_frames, ev_groups)
                        _save_comparison(comp, _part_path(out_dir, "kernel", item.key).with_suffix(".npz"))
                        for cat in cats:
                            if cat is None:
                                res = comp.result()
                                n_ref, n_ev = len(ref_kept), len(ev_kept)
                                lo = hi = np.nan
                                method = "none (bootstrap: 0)"
                                if config.bootstrap > 0:
                                    lo, hi, _ = comp.bootstrap(config.bootstrap, level=CI_LEVEL, seed=config.seed)
                                    method = f"percentile bootstrap over clips, {config.bootstrap} resamples, {CI_LEVEL:.0%}"
                            else:
                                rsel = [ref_clip_ids[i] for i in np.flatnonzero(ref_categories == cat)]
                                esel = [ev_clip_ids[i] for i in np.flatnonzero(ev_categories == cat)]
                                try:
                                    res = comp.result(rsel, esel)
                                except D.MetricError as exc:
                                    rows.append(_row(s.name, "kad", common, category=cat, value=np.nan, error=str(exc),
                                                     ci_method="none", n_reference=len(rsel), n_evaluated=len(esel)))
                                    continue
                                n_ref, n_ev = len(rsel), len(esel)
                                lo = hi = np.nan
                                method = "none (per-class rows have no CI)"
                            rows.append(_row(
                                s.name, "kad", common, category=cat, value=res.value, ci_low=lo, ci_high=hi,
                                ci_method=method, bandwidth=res.bandwidth, scale=res.scale, n_reference=n_ref,
                                n_evaluated=n_ev, n_reference_frames=res.n_reference, n_evaluated_frames=res.n_evaluated,
                                reference_term=res.reference_term, evaluated_term=res.evaluated_term,
                                cross_term=res.cross_term, saturated=res.saturated, error=None,
                            ))
                if "fad" in config.metrics:
                    for cat in cats:
                        if cat is None:
                            rstats, err, n_ref = ref_stats, ref_stats_error, len(ref_kept)
                            mask = np.ones(len(ev_groups), bool)
                            n_ev = len(ev_kept)
                        else:
                            if cat not in class_ref_stats:
                                cmask = np.isin(ref_groups, [ref_clip_ids[i] for i in np.flatnonzero(ref_categories == cat)])
                                try:
                                    class_ref_stats[cat] = D.gaussian_stats(ref_frames[cmask], f"reference class {cat}")
                                except D.MetricError as exc:
                                    class_ref_stats[cat] = exc
                            got = class_ref_stats[cat]
                            rstats, err = (None, str(got)) if isinstance(got, Exception) else (got, None)
                            n_ref = int(np.sum(ref_categories == cat))
                            esel = [ev_clip_ids[i] for i in np.flatnonzero(ev_categories == cat)]
                            mask = np.isin(ev_groups, esel)
                            n_ev = len(esel)
                        if rstats is None:
                            rows.append(_row(s.name, "fad", common, category=cat, value=np.nan, error=err,
                                             ci_method="none", n_reference=n_ref, n_evaluated=n_ev))
                            continue
                        try:
                            res = D.frechet_audio_distance(rstats, ev_frames[mask])
                        except D.MetricError as exc:
                            rows.append(_row(s.name, "fad", common, category=cat, value=np.nan, error=str(exc),
                                             ci_method="none", n_reference=n_ref, n_evaluated=n_ev))
                            continue
                        lo = hi = np.nan
                        method = "none (per-class rows have no CI)" if cat is not None else "none (bootstrap: 0)"
                        if cat is None and config.bootstrap > 0:
                            n_b = min(config.bootstrap, FAD_BOOTSTRAP_MAX)
                            try:
                                lo, hi = D.fad_bootstrap(rstats, ev_frames, ev_groups, n_resamples=n_b,
                                                         level=CI_LEVEL, seed=config.seed)
                                method = (f"percentile bootstrap over evaluated clips (reference fixed), {n_b} resamples,"
                                          f" {CI_LEVEL:.0%}")
                            except D.MetricError as exc:
                                method = f"none ({exc.problem})"
                        rows.append(_row(
                            s.name, "fad", common, category=cat, value=res.value, ci_low=lo, ci_high=hi, ci_method=method,
                            bandwidth=np.nan, scale=res.scale, n_reference=n_ref, n_evaluated=n_ev,
                            n_reference_frames=res.n_reference, n_evaluated_frames=res.n_evaluated, error=None,
                        ))
                # per-item measures from this embedding's frames
                item_rows = []
                for i in ev_kept:
                    orig = s.originals[i]
                    if not orig:
                        continue
                    of = extraction.frames.get(orig)
                    for m in [m for m in config.item_metrics if m in EMBEDDING_ITEM_METRICS]:
                        item_rows.append(_item_row(s.name, s.clip_ids[i], m, emb_id, extraction.frames[s.paths[i]], of))
                part = _part_path(out_dir, "scores", item.key)
                _write_part(pd.DataFrame(rows), part)
                ipart = _part_path(out_dir, "items", item.key)
                _write_part(pd.DataFrame(item_rows), ipart)
                return ItemOutcome(path=part, extra={"items": str(ipart), "n_rows": len(rows)})

            items = [
                LedgerItem(
                    key=f"{emb_id}|{reference_label}|{s.name}",
                    inputs={"embedding": emb_id, "embedding_key": backend.cache_key(), "reference": ref_sha,
                            "system": _set_digest(s), "config": _config_digest(config)},
                    system_id=s.name, payload=s,
                )
                for s in systems
            ]
            batch = run_items(manifest, STAGE, items, score_system, engine, desc=f"score ({emb_id})",
                              progress=config.progress)
            failures.update({k: v for k, v in batch.failed.items()})
            for it in items:
                if it.key in batch.failed:
                    continue
                score_parts.append(_part_path(out_dir, "scores", it.key))
                item_parts.append(_part_path(out_dir, "items", it.key))
            if ref_kernel is not None and config.bootstrap > 0:
                comps = {}
                for it in items:
                    kpath = _part_path(out_dir, "kernel", it.key).with_suffix(".npz")
                    if it.key not in batch.failed and kpath.is_file():
                        comps[it.system_id] = _load_comparison(ref_kernel, kpath)
                paired_rows += _paired_with_best(comps, config, {"embedding": emb_id, "reference_set": reference_label})
                control_rows += _paired_with_controls(comps, config, {"embedding": emb_id}, primary_codec)
        except SonievalError as exc:
            # one embedding that cannot run (weights unavailable, ...) does not stop the others
            failures[f"embedding {spec}"] = str(exc)
            manifest.record(STAGE, f"embedding|{spec}", "failed", inputs={"embedding": spec}, error=str(exc))

    # audio-based per-item measures do not depend on the embedding: once per system
    if not score_parts and failures:
        first = next(iter(failures.values()))
        raise SonievalError(f"nothing could be scored; first failure: {first}")
    audio_parts = _score_audio_items(systems, out_dir, config, manifest, failures, engine)
    scores = _concat(score_parts)
    item_scores = _concat(item_parts + audio_parts)
    return _write_outputs(scores, item_scores, out_dir, failures, pd.DataFrame(paired_rows), config=config,
                          training=training, primary_codec=primary_codec, paired_controls=pd.DataFrame(control_rows))


def _save_comparison(comp, path: Path) -> None:
    """The per-clip kernel block sums of one system (small: clips x clips), for paired comparisons."""
    from sonieval.files import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh, labels=comp.groups[1].astype(str), sizes=comp.group_sizes, ee_sums=comp.ee.group_sums,
                ee_diag=comp.ee.group_diagonal, ee_total=comp.ee.total, ee_diagonal=comp.ee.diagonal,
                re_sums=comp.re.group_sums, re_total=comp.re.total,
            )


def _load_comparison(ref_kernel, path: Path):
    from sonieval.metrics.distances import KernelComparison, _BlockSums

    z = np.load(path, allow_pickle=False)
    labels = z["labels"].astype(object)
    codes = np.repeat(np.arange(len(labels)), z["sizes"])
    ee = _BlockSums(float(z["ee_total"]), float(z["ee_diagonal"]), z["ee_sums"], z["ee_diag"])
    re_ = _BlockSums(float(z["re_total"]), 0.0, z["re_sums"])
    return KernelComparison(ref_kernel, int(z["sizes"].sum()), (codes, labels), ee, re_)


def _paired_with_best(comps: dict, config: ScoreConfig, base: dict) -> list[dict]:
    """KAD(best) - KAD(other) for every other system: paired bootstrap over shared clips."""
    from sonieval.metrics.distances import MetricError, paired_kad_difference

    if len(comps) < 2:
        return []
    values = {sid: c.result().value for sid, c in comps.items()}
    best = min(values, key=values.get)
    rows = []
    for sid, comp in sorted(comps.items()):
        if sid == best:
            continue
        try:
            cmp = paired_kad_difference(comps[best], comp, n_resamples=config.bootstrap, level=CI_LEVEL,
                                        seed=config.seed)
        except MetricError as exc:
            rows.append({**base, "best_system": best, "system_id": sid, "error": str(exc)})
            continue
        rows.append({**base, "best_system": best, "system_id": sid, "kad_difference": cmp.difference,
                     "ci_low": cmp.ci_low, "ci_high": cmp.ci_high, "p_value": cmp.p_value,
                     "paired_clips": cmp.paired_clips, "n_resamples": cmp.n_resamples, "error": None})
    return rows


def _paired_with_controls(comps: dict, config: ScoreConfig, base: dict, primary_codec: str | None) -> list[dict]:
    """KAD(trained) - KAD(control) for every trained system and each of its controls that was scored:
    a paired bootstrap (one reference resample for both, the same clip draws), the test the learning
    table's KAD verdict uses. Two CIs side by side would be far too conservative here: most of each
    KAD CI's width is the shared reference set's resampling, which a difference cancels."""
    from sonieval.metrics.controls import control_ids
    from sonieval.metrics.distances import MetricError, paired_kad_difference
    from sonieval.tables import CEILING

    rows = []
    for sid, comp in sorted(comps.items()):
        for control, cid in (control_ids(sid, primary_codec) or {}).items():
            if control == CEILING or cid not in comps:
                continue
            try:
                cmp = paired_kad_difference(comp, comps[cid], n_resamples=config.bootstrap, level=CI_LEVEL,
                                            seed=config.seed)
            except MetricError as exc:
                rows.append({**base, "system_id": sid, "control": control, "control_id": cid, "error": str(exc)})
                continue
            rows.append({**base, "system_id": sid, "control": control, "control_id": cid,
                         "kad_difference": cmp.difference, "ci_low": cmp.ci_low, "ci_high": cmp.ci_high,
                         "p_value": cmp.p_value, "paired_clips": cmp.paired_clips, "error": None})
    return rows


def _item_row(system_id, clip_id, metric, emb_id, ev_frames, orig_frames) -> dict:
    from sonieval.metrics.items import ITEM_METRIC_DIRECTION, ItemScoreError, score_item

    if orig_frames is None:
        value, err = np.nan, f"{metric}: the original clip could not be embedded"
    else:
        got = score_item([metric], evaluated_frames=ev_frames, original_frames=orig_frames)[metric]
        value, err = (np.nan, str(got)) if isinstance(got, ItemScoreError) else (float(got), None)
    return {"system_id": system_id, "clip_id": clip_id, "metric": metric, "embedding": emb_id, "value": value,
            "direction": ITEM_METRIC_DIRECTION[metric], "error": err}


def _score_audio_items(systems, out_dir, config, manifest, failures, engine=None) -> list[Path]:
    from sonieval.audio import ENCODER_RATE, read_audio
    from sonieval.metrics.items import AUDIO_MEASURES, ITEM_METRIC_DIRECTION, ItemScoreError, score_item

    wanted = [m for m in config.item_metrics if m in AUDIO_MEASURES]
    if not wanted:
        return []
    parts = []

    def run(item: LedgerItem) -> ItemOutcome:
        s: AudioSet = item.payload
        rows = []
        originals: dict[str, np.ndarray | SonievalError] = {}
        for path, clip_id, orig in zip(s.paths, s.clip_ids, s.originals):
            if not orig:
                continue
            if orig not in originals:
                try:
                    originals[orig] = read_audio(orig, ENCODER_RATE)[0]
                except SonievalError as exc:
                    originals[orig] = exc
            try:
                ev = read_audio(path, ENCODER_RATE)[0]
            except SonievalError as exc:
                ev = exc
            for m in wanted:
                o = originals[orig]
                if isinstance(o, SonievalError) or isinstance(ev, SonievalError):
                    bad = o if isinstance(o, SonievalError) else ev
                    value, err = np.nan, f"{m}: {bad}"
                else:
                    got = score_item([m], evaluated_audio=ev, original_audio=o)[m]
                    value, err = (np.nan, str(got)) if isinstance(got, ItemScoreError) else (float(got), None)
                embedding = "logmel[weight-free]" if m == "logmel_l1" else "waveform-16k"
                rows.append({"system_id": s.name, "clip_id": clip_id, "metric": m, "embedding": embedding,
                             "value": value, "direction": ITEM_METRIC_DIRECTION[m], "error": err})
        part = _part_path(out_dir, "items", item.key)
        _write_part(pd.DataFrame(rows), part)
        return ItemOutcome(path=part)

    items = [
        LedgerItem(key=f"audio-items|{s.name}", inputs={"system": _set_digest(s), "metrics": wanted},
                     system_id=s.name, payload=s)
        for s in systems if any(s.originals)
    ]
    batch = run_items(manifest, f"{STAGE}-items", items, run, engine, desc="per-item audio measures",
                      progress=config.progress)
    failures.update(batch.failed)
    for it in items:
        if it.key not in batch.failed:
            parts.append(_part_path(out_dir, "items", it.key))
    return parts


def _set_digest(s: AudioSet) -> str:
    from sonieval.files import sha256_bytes

    text = json.dumps([s.paths, s.clip_ids, s.categories, s.originals], default=str)
    stamps = []
    for p in s.paths:
        try:
            st = os.stat(p)
            stamps.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            stamps.append("missing")
    return sha256_bytes((text + "|".join(stamps)).encode())[:16]


def _config_digest(config: ScoreConfig) -> str:
    d = {k: v for k, v in config.__dict__.items() if k not in ("progress", "device", "embeddings")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_part(df: pd.DataFrame, path: Path) -> None:
    from sonieval.files import atomic_path

    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _concat(parts: Iterable[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in parts if Path(p).is_file()]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------- outputs


def _with_system_parts(df: pd.DataFrame) -> pd.DataFrame:
    from sonieval.tables import CODEC_SLOT, INPUT_LAYER, NO_CONTROL, parse_system_id

    enc, layer, post, label, control = [], [], [], [], []
    for sid in df["system_id"]:
        try:
            k = parse_system_id(sid)
            enc.append(k.slot.name)  # one figure per encoder: its layers side by side
            layer.append(k.slot.layer if k.encoder != CODEC_SLOT else None)
            post.append(k.postprocess)
            at = "" if k.slot.layer == INPUT_LAYER else f"{k.slot.layer}/"
            label.append(f"{at}{k.variant}/lr{k.lr:g}/e{k.epoch}/{k.alignment}")
            control.append(k.control)
        except SonievalError:
            enc.append("folders")
            layer.append(None)
            post.append("-")
            label.append(sid)
            control.append(NO_CONTROL)
    out = df.copy()
    out["encoder"], out["layer"], out["postprocess"], out["system_label"], out["control"] = enc, layer, post, label, control
    return out


def _flag(row, column: str) -> bool:
    value = row.get(column) if hasattr(row, "get") else None
    return bool(value) if value is not None and not (isinstance(value, float) and np.isnan(value)) else False


def random_mark(row) -> str:
    """† (random codec: the audio shows only that the pipeline runs) or ‡ (random encoder only) or ''."""
    has_detail = "system_codec_random_init" in row and pd.notna(row.get("system_codec_random_init"))
    if has_detail:
        if _flag(row, "system_codec_random_init"):
            return RANDOM_CODEC_MARK
        return RANDOM_ENCODER_MARK if _flag(row, "system_encoder_random_init") else ""
    return RANDOM_CODEC_MARK if _flag(row, "system_random_init") else ""


def build_leaderboard(scores: pd.DataFrame) -> pd.DataFrame:
    """Overall rows ranked per (embedding, metric), best (lowest) first."""
    if scores.empty:
        return pd.DataFrame()
    overall = scores[scores["category"].isna()].copy()
    overall = _with_system_parts(overall)
    overall["rank"] = overall.groupby(["embedding", "metric"])["value"].rank(method="min", na_option="bottom")
    cols = ["embedding", "metric", "rank", "system_id", "control", "system_random_init", "system_codec_label",
            "system_encoder_random_init", "system_codec_random_init", "value", "ci_low", "ci_high",
            "n_evaluated", "n_failed",
            "reference_set", "n_reference", "bandwidth", "scale", "saturated", "cross_term", "embedding_weights",
            "ci_method", "error", "encoder", "layer", "postprocess", "system_label", "versions"]
    overall = overall[[c for c in cols if c in overall.columns]]
    return overall.sort_values(["embedding", "metric", "rank", "system_id"]).reset_index(drop=True)


def _fmt(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _notes(board: pd.DataFrame) -> list[str]:
    notes = []
    marks = {random_mark(r) for _, r in board.iterrows()}
    if RANDOM_CODEC_MARK in marks:
        notes.append(f"Systems marked {RANDOM_CODEC_MARK} were decoded by a RANDOMLY INITIALISED codec (or made "
                     "with randomly initialised models): their scores show that the pipeline runs, not how a "
                     "trained system performs.")
    if RANDOM_ENCODER_MARK in marks:
        notes.append(f"Systems marked {RANDOM_ENCODER_MARK} sonify a RANDOMLY INITIALISED encoder (a random projection "
                     "of the audio, not a pretrained model) through a real or weight-free codec: their gates really "
                     "learn, so they test the method, not what a pretrained encoder holds.")
    if "system_codec_label" in board.columns:
        labels = sorted({str(v) for v in board["system_codec_label"].dropna()})
        if labels:
            notes.append("Codecs: " + ", ".join(f"`{v}`" for v in labels) + ".")
    if "control" in board.columns and (board["control"].isin(["untrained", "shuffled", "ceiling"])).any():
        notes.append("Controls are systems: `.untrained` = the gate at its initialisation, `.shuffled` = the gate "
                     "trained on mismatched (embedding, latent) pairs, `codec/…/codec` = the codec's own "
                     "reconstruction of the original (the ceiling).")
    for (emb, metric), g in board.groupby(["embedding", "metric"]):
        first = g.iloc[0]
        line = (f"{metric.upper()} on `{emb}` against reference set `{first['reference_set']}` "
                f"(n_reference = {first['n_reference']} clips)")
        if metric == "kad":
            line += f", bandwidth σ = {_fmt(first['bandwidth'])} (median pairwise distance of the reference), scale ×100"
            if g["saturated"].fillna(False).astype(bool).all():
                line += (". **All systems are saturated** (cross term ≈ 0 on σ's scale): equal KADs here mean "
                         "'all far from the reference', not 'all equal'")
        if "random-init" in emb:
            line += ". The embedding is RANDOMLY INITIALISED (not a pretrained model)"
        if "weight-free" in emb:
            line += ". The embedding is weight-free (log-mel), not a learned model"
        notes.append(line + ".")
    return notes


def per_class_table(scores: pd.DataFrame, embedding: str, metric: str) -> pd.DataFrame:
    """Per-class values: one row per category, one column per system."""
    rows = scores[(scores["embedding"] == embedding) & (scores["metric"] == metric) & scores["category"].notna()]
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot_table(index="category", columns="system_id", values="value", aggfunc="first")


MEASURE_TITLES = {
    "validation_r2": "Validation R² against the train-mean latent (higher is better)",
    "kad": "KAD against the reference set (lower is better)",
    "fad": "FAD against the reference set (lower is better)",
    "logmel_l1": "Log-mel distance of each sonification to its own original (mean over clips, lower is better)",
    "envelope_correlation": "Envelope correlation with its own original (mean over clips, higher is better)",
    "frame_kad": "Frame KAD of each sonification against its own original (mean over clips, lower is better)",
    "mrstft": "Multi-resolution STFT distance to its own original (mean over clips, lower is better)",
    "embedding_cosine": "Embedding cosine distance to its own original (mean over clips, lower is better)",
}


def _ci_cell(row, name: str) -> str:
    v = row.get(f"{name}_value")
    if v is None or not np.isfinite(v):
        return "—"
    lo, hi = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    ci = f" [{_fmt(lo, 3)}, {_fmt(hi, 3)}]" if lo is not None and np.isfinite(lo) else ""
    return f"{_fmt(v, 3)}{ci}"


def learning_markdown(learning: pd.DataFrame) -> list[str]:
    """Each trained system beside its controls and the codec ceiling, per measure, with 95 % CIs."""
    if learning is None or learning.empty:
        return []
    lines = ["## Learning: trained systems against their controls", "",
             "Each trained gate beside the same gate untrained and trained on shuffled pairs, and the codec's "
             "own reconstruction (ceiling). 95 % CIs: R² resamples validation clips, KAD/FAD and the item "
             "measures resample sonified clips (KAD also the reference set). *beats both*: for KAD, the paired "
             "bootstrap difference to each control (one reference resample for both, the same clip draws; "
             "paired_controls.csv) has its 95 % CI below 0; for the other measures the trained CI lies entirely "
             "on the better side of both controls' CIs.", ""]
    for (measure, emb), g in learning.groupby(["measure", "embedding"], sort=False):
        lines += [f"### {MEASURE_TITLES.get(measure, measure)} · {emb}", "",
                  "| system | trained | shuffled | untrained | ceiling | beats both |", "|---|---:|---:|---:|---:|---|"]
        for _, r in g.iterrows():
            verdict = {True: "yes", False: "no"}.get(r["beats_controls"], "—")
            lines.append(f"| `{r['system_id']}` | {_ci_cell(r, 'system')} | {_ci_cell(r, 'shuffled')} | "
                         f"{_ci_cell(r, 'untrained')} | {_ci_cell(r, 'ceiling')} | {verdict} |")
        lines.append("")
    return lines


def seeds_markdown(seeds: pd.DataFrame) -> list[str]:
    """The learning table over replicate seeds: mean and t interval over seeds per side."""
    if seeds is None or seeds.empty:
        return []
    n = int(seeds["n_seeds"].max())
    lines = ["## Learning over replicate seeds", "",
             f"Each system trained with {n} seeds (gate initialisation and batch order; the data are the same): "
             "mean over seeds with a 95 % t interval over seeds, beside the controls trained with the same seeds and "
             "the codec ceiling. *seeds* = how many seeds beat both controls on their own per-clip CIs; *beats both* "
             "= the trained seed interval lies entirely on the better side of both controls' seed intervals.", ""]
    for (measure, emb), g in seeds.groupby(["measure", "embedding"], sort=False):
        lines += [f"### {MEASURE_TITLES.get(measure, measure)} · {emb}", "",
                  "| system | trained | shuffled | untrained | ceiling | seeds | beats both |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for _, r in g.iterrows():
            verdict = {True: "yes", False: "no"}.get(r["beats_controls"], "—")
            lines.append(f"| `{r['system']}` | {_ci_cell(r, 'system')} | {_ci_cell(r, 'shuffled')} | "
                         f"{_ci_cell(r, 'untrained')} | {_ci_cell(r, 'ceiling')} | "
                         f"{int(r['seeds_beating_both'])}/{int(r['n_seeds'])} | {verdict} |")
        lines.append("")
    return lines


DEPTH_INTRO = ("Each encoder sonified at several layers: per layer, the trained gate beside the same gate "
               "untrained and trained on shuffled pairs, and the codec's own reconstruction (ceiling), with 95 % CIs "
               "(R²: validation clips resampled; KAD and item measures: sonified clips resampled). *Beats both "
               "controls down to* = the deepest layer whose trained CI lies entirely on the better side of both "
               "controls' CIs (*beats both* per layer).")


def _depth_notes(scores: pd.DataFrame, training: pd.DataFrame | None) -> dict[str, str]:
    """Per encoder, the provenance line of its depth figure: random weights, n validation and sonified clips."""
    from sonieval.tables import system_parts

    notes: dict[str, str] = {}
    if scores is None or scores.empty:
        return notes
    overall = scores[scores["category"].isna()] if "category" in scores.columns else scores
    encoders = {}
    for sid, g in overall.groupby("system_id"):
        try:
            encoders.setdefault(system_parts(sid)["encoder"], []).append(g)
        except SonievalError:
            continue
    for enc, parts in encoders.items():
        g = pd.concat(parts)
        random = "system_encoder_random_init" in g.columns and g["system_encoder_random_init"].fillna(False).astype(bool).any()
        n_son = int(pd.to_numeric(g["n_evaluated"], errors="coerce").max())
        n_val = None
        if training is not None and "n_validation" in training.columns:
            v = pd.to_numeric(training.loc[training["encoder"] == enc, "n_validation"], errors="coerce").dropna()
            n_val = int(v.max()) if not v.empty else None
        bits = ["RANDOM-WEIGHT encoder (tests the method, not a pretrained model)" if random else "pretrained encoder"]
        bits += [f"R² over {n_val} validation clips"] if n_val else []
        bits += [f"KAD/items over {n_son} sonified clips; bars: 95 % CIs"]
        notes[enc] = "; ".join(bits)
    return notes


def depth_markdown(depth: pd.DataFrame | None, figures: list[Path] | None = None, out_dir: Path | None = None,
                   notes: dict[str, str] | None = None) -> list[str]:
    """Audibility by depth: per encoder a table per measure (layer by layer) and its figure."""
    from sonieval.metrics.depth import depth_summary

    if depth is None or depth.empty:
        return []
    summary = depth_summary(depth)
    figs = {f.stem.split("__", 1)[1]: f for f in figures or []}
    lines = ["## Audibility by depth", "", DEPTH_INTRO, ""]
    for enc, d in depth.groupby("encoder", sort=False):
        lines += [f"### {enc}", ""]
        if (notes or {}).get(enc):
            lines += [f"_{notes[enc]}_", ""]
        if enc in figs and out_dir is not None:
            lines += [f"![audibility by depth: {enc}]({figs[enc].relative_to(out_dir).as_posix()})", ""]
        for (measure, emb), g in d.groupby(["measure", "embedding"], sort=False):
            s = summary[(summary["encoder"] == enc) & (summary["measure"] == measure) & (summary["embedding"] == emb)]
            reach = "; ".join(f"`{r.gate}`: {'no layer' if pd.isna(r.audible_to) else r.audible_to}"
                              for r in s.itertuples())
            lines += [f"#### {MEASURE_TITLES.get(measure, measure)} · {emb}", "", f"Beats both controls down to: {reach}.", "",
                      "| layer | gate | trained | shuffled | untrained | ceiling | beats both |",
                      "|---|---|---:|---:|---:|---:|---|"]
            for _, r in g.iterrows():
                verdict = {True: "yes", False: "no"}.get(r["beats_controls"], "—")
                lines.append(f"| {r['layer']} | `{r['gate']}` | {_ci_cell(r, 'system')} | {_ci_cell(r, 'shuffled')} | "
                             f"{_ci_cell(r, 'untrained')} | {_ci_cell(r, 'ceiling')} | {verdict} |")
            lines.append("")
    return lines


def depth_html(depth: pd.DataFrame | None, figures: list[Path], out_dir: Path, notes: dict[str, str] | None = None) -> list[str]:
    if depth is None or depth.empty:
        return []
    figs = {f.stem.split("__", 1)[1]: f for f in figures}
    body = ["<h2>Audibility by depth</h2>", f"<p>{html.escape(DEPTH_INTRO)}</p>"]
    for enc, d in depth.groupby("encoder", sort=False):
        body.append(f"<h3>{html.escape(str(enc))}</h3>")
        if (notes or {}).get(enc):
            body.append(f"<p><em>{html.escape(notes[enc])}</em></p>")
        if enc in figs:
            body.append(f"<p><img src='{html.escape(figs[enc].relative_to(out_dir).as_posix())}' style='max-width:1000px'></p>")
        for (measure, emb), g in d.groupby(["measure", "embedding"], sort=False):
            body.append(f"<h4>{html.escape(MEASURE_TITLES.get(measure, measure))} · {html.escape(emb)}</h4>")
            cells = {label: [_ci_cell(r, name) for _, r in g.iterrows()] for label, name in
                     (("trained", "system"), ("shuffled", "shuffled"), ("untrained", "untrained"), ("ceiling", "ceiling"))}
            verdict = [{True: "yes", False: "no"}.get(v, "—") for v in g["beats_controls"]]
            shown = pd.DataFrame({"layer": list(g["layer"]), "gate": list(g["gate"]), **cells, "beats both": verdict})
            body.append(shown.to_html(index=False, na_rep="—"))
    return body


def leaderboard_markdown(
    board: pd.DataFrame, scores: pd.DataFrame | None = None, paired: pd.DataFrame | None = None,
    learning: pd.DataFrame | None = None, depth: list[str] | None = None,
) -> str:
    from sonieval.metrics.controls import seed_table

    lines = ["# KAD / FAD leaderboard", ""]
    if board.empty:
        return "\n".join(lines + ["No scores."])
    lines += [f"- {n}" for n in _notes(board)]
    versions = json.loads(board["versions"].iloc[0])
    lines += [f"- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k not in (
        "kad_convention", "fad_convention", "embedding_params")), ""]
    lines += learning_markdown(learning)
    lines += seeds_markdown(seed_table(learning) if learning is not None else None)
    lines += depth or []
    for (emb, metric), g in board.groupby(["embedding", "metric"]):
        lines += [f"## {metric.upper()} · {emb}", "", "| rank | system | value | 95% CI | n evaluated | note |",
                  "|---:|---|---:|---|---:|---|"]
        for _, r in g.iterrows():
            ci = "—" if not np.isfinite(r["ci_low"]) else f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
            sat = r.get("saturated")
            note = r["error"] if isinstance(r.get("error"), str) else ("saturated" if pd.notna(sat) and bool(sat) else "")
            mark = random_mark(r)
            mark = f" {mark}" if mark else ""
            lines.append(f"| {int(r['rank'])} | `{r['system_id']}`{mark} | {_fmt(r['value'])} | {ci} | "
                         f"{int(r['n_evaluated'])} | {note} |")
        lines.append("")
        pivot = per_class_table(scores, emb, metric) if scores is not None else pd.DataFrame()
        if not pivot.empty:
            systems = list(pivot.columns)
            lines += [f"Per class ({metric.upper()}, no CIs; a class's reference and evaluated clips only):", "",
                      "| class | " + " | ".join(f"`{c}`" for c in systems) + " |",
                      "|---|" + "---:|" * len(systems)]
            for cat, r in pivot.iterrows():
                lines.append(f"| {cat} | " + " | ".join(_fmt(r[c]) for c in systems) + " |")
            lines.append("")
        if metric == "kad" and paired is not None and not paired.empty:
            pg = paired[paired["embedding"] == emb]
            if not pg.empty:
                lines += [f"Paired bootstrap against the best system `{pg['best_system'].iloc[0]}` "
                          "(KAD(best) − KAD(system); same reference resamples, shared clip draws when the "
                          "systems sonified the same clips):", "",
                          "| system | difference | 95% CI | p | paired clips |", "|---|---:|---|---:|---|"]
                for _, r in pg.iterrows():
                    if isinstance(r.get("error"), str):
                        lines.append(f"| `{r['system_id']}` | — | — | — | {r['error']} |")
                        continue
                    lines.append(f"| `{r['system_id']}` | {_fmt(r['kad_difference'])} | "
                                 f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {_fmt(r['p_value'], 3)} | "
                                 f"{'yes' if r['paired_clips'] else 'no'} |")
                lines.append("")
    return "\n".join(lines)


def leaderboard_html(board: pd.DataFrame, figures: list[Path], out_dir: Path,
                     learning: pd.DataFrame | None = None, depth: list[str] | None = None) -> str:
    head = "<!doctype html><meta charset='utf-8'><title>sonieval leaderboard</title>"
    style = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px}</style>")
    body = ["<h1>KAD / FAD leaderboard</h1>", "<ul>"]
    body += [f"<li>{html.escape(n)}</li>" for n in _notes(board)]
    body.append("</ul>")
    if learning is not None and not learning.empty:
        body.append("<h2>Learning: trained systems against their controls</h2>")
        for (measure, emb), g in learning.groupby(["measure", "embedding"], sort=False):
            body.append(f"<h3>{html.escape(MEASURE_TITLES.get(measure, measure))} · {html.escape(emb)}</h3>")
            cells = {label: [_ci_cell(r, name) for _, r in g.iterrows()] for label, name in
                     (("trained", "system"), ("shuffled", "shuffled"), ("untrained", "untrained"), ("ceiling", "ceiling"))}
            verdict = [{True: "yes", False: "no"}.get(v, "—") for v in g["beats_controls"]]
            shown = pd.DataFrame({"system": list(g["system_id"]), **cells, "beats both": verdict})
            body.append(shown.to_html(index=False, na_rep="—"))
    body += depth or []
    if not board.empty:
        body.append("<p>Versions: <code>" + html.escape(board["versions"].iloc[0]) + "</code></p>")
        shown = board.drop(columns=["versions", "encoder", "layer", "postprocess", "system_label"], errors="ignore")
        for (emb, metric), g in shown.groupby(["embedding", "metric"]):
            body.append(f"<h2>{html.escape(metric.upper())} · {html.escape(emb)}</h2>")
            body.append(g.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:.4g}"))
    for f in figures:
        body.append(f"<p><img src='{html.escape(str(f.relative_to(out_dir)))}' style='max-width:900px'></p>")
    return head + style + "\n".join(body)


def dot_plots(board: pd.DataFrame, fig_dir: Path) -> list[Path]:
    """The reference work's figure: one point per system (with its CI), a line at the best."""
    from sonieval.plotting import pyplot, save_figure

    plt = pyplot()

    paths = []
    if board.empty:
        return paths
    for (emb, metric, enc, post), g in board.groupby(["embedding", "metric", "encoder", "postprocess"]):
        g = g[np.isfinite(g["value"].astype(float))].sort_values("system_label")
        if g.empty:
            continue
        fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(g) + 2), 4.0))
        x = np.arange(len(g))
        y = g["value"].to_numpy(float)
        lo, hi = g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)
        has_ci = np.isfinite(lo) & np.isfinite(hi)
        # a percentile interval need not contain the estimate: clamp the bar lengths at 0
        below = np.clip(y[has_ci] - lo[has_ci], 0, None)
        above = np.clip(hi[has_ci] - y[has_ci], 0, None)
        ax.errorbar(x[has_ci], y[has_ci], yerr=[below, above], fmt="none",
                    ecolor="0.6", capsize=3)
        ax.plot(x, y, "o", color="C0")
        best = float(np.min(y))
        ax.axhline(best, color="C3", lw=1, ls="--", label=f"best {best:.4g}")
        ax.set_xticks(x, g["system_label"], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric.upper()} (lower is better)")
        first = g.iloc[0]
        import textwrap

        subtitle = textwrap.fill(f"{emb} vs {first['reference_set']} (n_ref={first['n_reference']}); "
                                 f"bars: {CI_LEVEL:.0%} bootstrap CI", 80)
        ax.set_title(f"{metric.upper()} · {enc} · {post}\n{subtitle}", fontsize=8)
        ax.legend(fontsize=8)
        fig.tight_layout()
        slug = "__".join(re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(v)) for v in (metric, emb, enc, post))
        paths.append(save_figure(fig, fig_dir / f"{slug}.png", dpi=110))
    return paths


def _write_outputs(
    scores: pd.DataFrame, item_scores: pd.DataFrame, out_dir: Path, failures, paired: pd.DataFrame | None = None,
    *, config: ScoreConfig | None = None, training: pd.DataFrame | None = None, primary_codec: str | None = None,
    paired_controls: pd.DataFrame | None = None,
) -> ScoreOutputs:
    from sonieval.files import write_text_atomic
    from sonieval.tables import ITEM_SCORES_COLUMNS, SCORES_COLUMNS, write_table

    for c in SCORES_COLUMNS + SCORE_ROW_EXTRA:
        if c not in scores.columns:
            scores[c] = None
    for c in ("ci_low", "ci_high", "bandwidth", "scale", "value", "cross_term", "reference_term", "evaluated_term"):
        scores[c] = pd.to_numeric(scores[c], errors="coerce").astype(float)
    scores = scores[SCORES_COLUMNS + SCORE_ROW_EXTRA + [c for c in scores.columns
                                                        if c not in SCORES_COLUMNS + SCORE_ROW_EXTRA]]
    if item_scores.empty:
        item_scores = pd.DataFrame(columns=ITEM_SCORES_COLUMNS + ["direction", "error"])
    files = [
        write_table(scores, out_dir / "scores.parquet", "scores"),
        write_table(scores, out_dir / "scores.csv", "scores"),
        write_table(item_scores, out_dir / "item_scores.parquet", "item_scores"),
    ]
    from sonieval.metrics.controls import item_summary, learning_table, seed_table
    from sonieval.metrics.depth import depth_figures, depth_table

    board = build_leaderboard(scores)
    figures = dot_plots(board, out_dir / "figures")
    with_csv = board.drop(columns=["versions"], errors="ignore")
    files.append(write_table(with_csv, out_dir / "leaderboard.csv"))
    paired = paired if paired is not None else pd.DataFrame()
    files.append(write_table(paired, out_dir / "paired_kad.csv"))
    config = config or ScoreConfig()
    items = item_summary(item_scores, n_boot=config.bootstrap, seed=config.seed)
    files.append(write_table(items, out_dir / "item_summary.csv"))
    learning = learning_table(scores, items, training, primary_codec, paired_controls)
    if paired_controls is not None and not paired_controls.empty:
        files.append(write_table(paired_controls, out_dir / "paired_controls.csv"))
    if not learning.empty:
        files.append(write_table(learning, out_dir / "learning.csv"))
    seeds = seed_table(learning)
    if not seeds.empty:
        files.append(write_table(seeds, out_dir / "learning_seeds.csv"))
    depth = depth_table(learning)
    notes = _depth_notes(scores, training)
    depth_figs = depth_figures(depth, out_dir / "figures", notes)
    if not depth.empty:
        files.append(write_table(depth, out_dir / "depth.csv"))
    md_depth = depth_markdown(depth, depth_figs, out_dir, notes)
    files.append(write_text_atomic(out_dir / "leaderboard.md",
                                   leaderboard_markdown(board, scores, paired, learning, md_depth)))
    files.append(write_text_atomic(out_dir / "leaderboard.html", leaderboard_html(
        board, figures, out_dir, learning, depth_html(depth, depth_figs, out_dir, notes))))
    return ScoreOutputs(scores, item_scores, board, files + figures + depth_figs, failures, learning, depth)


# --------------------------------------------------------------------------- entry points


def audio_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("folder not found", path=folder, hint="pass a folder of audio files")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not found:
        raise DataError("no audio files (.wav/.flac/.ogg/...) in this folder", path=folder)
    return found


def _folder_set(name: str, folder: Path, reference_index: dict[str, str] | None = None) -> AudioSet:
    files = audio_files(folder)
    ids = [str(p.relative_to(folder).with_suffix("")) for p in files]
    originals = [reference_index.get(i) for i in ids] if reference_index else []
    return AudioSet(name, [str(p) for p in files], ids, originals=originals)


def score_folders(
    reference_dir: str | os.PathLike,
    systems: dict[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    config: ScoreConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ScoreOutputs:
    """Leaderboard of folders of audio against a reference folder (no protocol needed)."""
    config = config or ScoreConfig(per_class=False)
    out_dir = Path(out_dir)
    reference = _folder_set("reference", Path(reference_dir))
    index = dict(zip(reference.clip_ids, reference.paths))
    sets = [_folder_set(name, Path(d), index) for name, d in systems.items()]
    with RunLedger(out_dir / "manifest.sqlite") as manifest:
        return score_sets(
            reference, sets, out_dir, config=config, cache_dir=cache_dir or out_dir / "cache",
            reference_label=f"folder:{Path(reference_dir).resolve()}", manifest=manifest,
        )


def _resolve_path(value: str, results: Path) -> str:
    from sonieval.tables import resolve_table_path

    return str(resolve_table_path(value, results))


def protocol_sets(proto) -> tuple[AudioSet, list[AudioSet], str]:
    """The reference set and the systems of a protocol's results folder."""
    from sonieval.tables import read_table

    results = proto.results_path
    spec = proto.metrics.reference_set
    clips = read_table(results / "tables" / "clips.parquet", "clips")
    ok_clips = clips[clips["status"].astype(str) != "failed"]
    folder = proto.resolve(spec) if ("/" in spec or spec.startswith(".")) else None
    if folder is not None:
        reference = _folder_set("reference", folder)
        label = f"folder:{folder}"
    else:
        if spec == "all":
            chosen = ok_clips
        else:
            wanted = spec.split("+")
            have = sorted(ok_clips["split"].dropna().astype(str).unique())
            missing = [w for w in wanted if w not in have]
            if missing:
                raise DataError(
                    f"metrics.reference_set {spec!r}: split(s) {', '.join(missing)} not in the clips table",
                    path=results / "tables" / "clips.parquet",
                    hint=f"available: {', '.join(have) or 'none'}, 'all', 'a+b', or a folder path",
                )
            chosen = ok_clips[ok_clips["split"].astype(str).isin(wanted)]
        limit, n_all = proto.metrics.reference_clips, len(chosen)
        if limit is not None and n_all > limit:
            chosen = chosen.sample(n=limit, random_state=proto.seed).sort_values("clip_id")
        reference = AudioSet(
            "reference", [_resolve_path(p, results) for p in chosen["path"]], [str(c) for c in chosen["clip_id"]],
            [str(c) for c in chosen["category"]],
        )
        label = f"esc50:{spec}"
        if len(chosen) < n_all:
            label += f"[{len(chosen)} of {n_all} clips, seed {proto.seed}]"
        data_label = _data_label(clips)
        if data_label:
            label += f" ({data_label})"
    son = read_table(results / "tables" / "sonifications.parquet", "sonifications")
    son = son[son["status"].astype(str).isin(["done", "ok"])]
    if son.empty:
        raise DataError("no finished sonifications to score", path=results / "tables" / "sonifications.parquet",
                        hint="run `sonieval sonify PROTOCOL` first")
    orig_of = {str(c): _resolve_path(p, results) for c, p in zip(clips["clip_id"], clips["path"])}
    systems = []
    for sid, g in son.groupby("system_id", sort=True):
        g = g.sort_values("clip_id")
        random_init = bool(g["random_init"].fillna(False).astype(bool).any()) if "random_init" in g.columns else None
        systems.append(AudioSet(
            str(sid), [_resolve_path(p, results) for p in g["path"]], [str(c) for c in g["clip_id"]],
            [None if pd.isna(c) else str(c) for c in g["category"]], [orig_of.get(str(c)) for c in g["clip_id"]],
            random_init=random_init, provenance=_provenance(g),
        ))
    return reference, systems, label


def _provenance(g: pd.DataFrame) -> dict:
    """Sonify's provenance columns of one system (the same on all its rows)."""
    out = {}
    for col in ("control", "codec_label", "layer"):
        if col in g.columns and g[col].notna().any():
            out[col] = str(g[col].dropna().iloc[0])
    for col in ("encoder_random_init", "codec_random_init"):
        if col in g.columns and g[col].notna().any():
            out[col] = bool(g[col].fillna(False).astype(bool).any())
    return out


def _data_label(clips: pd.DataFrame) -> str:
    for col in ("synthetic", "dataset"):
        if col in clips.columns:
            v = clips[col].iloc[0]
            if col == "synthetic" and bool(v):
                return "SYNTHETIC clip set, not ESC-50"
            if col == "dataset" and isinstance(v, str):
                return v
    return ""


def config_from_protocol(proto, **overrides) -> ScoreConfig:
    m = proto.metrics
    cfg = ScoreConfig(
        embeddings=list(m.embeddings), metrics=list(m.metrics), bootstrap=m.bootstrap, per_class=m.per_class,
        item_metrics=list(m.item_metrics), seed=proto.seed,
        bandwidth=getattr(m, "bandwidth", None),  # a fixed sigma, once MetricsSpec has the key
    )
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, v)
    return cfg


def run_score(proto, manifest: RunLedger, *, engine=None, **overrides) -> ScoreOutputs:
    """The ``score`` stage of a protocol: writes ``<results>/scores/`` (``engine``: see score_sets)."""
    from sonieval.data.results_folder import check_sonifications

    # Missing tables and sonifications of clips not in the clips table stop here; stale WAVs are not scored.
    notes = check_sonifications(proto.results_path, proto.source)
    reference, systems, label = protocol_sets(proto)
    config = config_from_protocol(proto, **overrides)
    training_path = proto.results_path / "tables" / "training.parquet"
    training = pd.read_parquet(training_path) if training_path.is_file() else None
    outputs = score_sets(reference, systems, proto.results_path / "scores", config=config,
                         cache_dir=proto.cache_path, reference_label=label, manifest=manifest,
                         training=training, primary_codec=proto.primary_codec.name, engine=engine)
    outputs.notes = notes
    return outputs
