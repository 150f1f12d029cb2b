"""Computing score rows: one system's embedding frames against a fixed reference side → rows of the
scores table (docs/results.md#tables), per-item rows, paired comparisons, and the ranked leaderboard.

Nothing here reads a ledger or writes a file: :mod:`sonieval.metrics.leaderboard` runs a board over
folders and protocols with these functions, and :mod:`sonieval.metrics.api` calls them on arrays and
files in memory, so the CLI and the Python API give the same numbers.

Per embedding, sigma and the reference kernel block (KAD) and the reference Gaussian (FAD) are
computed once (:class:`ReferenceSide`) and fixed for every system. KAD CIs resample clips (frames of one
clip are not independent) from the per-clip kernel block sums; FAD CIs are jackknife-t intervals over
the evaluated clips (the reference Gaussian fixed) that contain the plug-in value: for the population
FAD (bias-corrected) with at least as many clips as dimensions, else for the FAD at that many clips;
``ci_method`` says which (:func:`sonieval.metrics.distances.fad_interval`; a clip bootstrap's
percentile interval adds FAD's upward bias a second time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from sonieval.errors import DataError, SonievalError
from sonieval.metrics import distances as D
from sonieval.protocol import MetricsSpec
from sonieval.tables import RANDOM_CODEC_MARK, RANDOM_ENCODER_MARK, random_mark  # noqa: F401 - on the tables' floor

CI_LEVEL = 0.95
SCORE_ROW_EXTRA = [
    "category",
    "embedding_weights",
    "ci_method",
    "n_reference_frames",
    "n_evaluated_frames",
    "reference_term",
    "evaluated_term",
    "cross_term",
    "saturated",
    "n_failed",
    "error",
    "system_random_init",
    "system_control",
    "system_codec_label",
    "system_encoder_random_init",
    "system_codec_random_init",
]
# Marks in every rendered leaderboard: the audio of a † system comes from a randomly initialised codec
# (it shows that the pipeline runs, nothing more); a ‡ system's gate learned from a randomly initialised
# encoder (a random projection of the audio: the method is real and can learn, the encoder is not AST).
VERSION_PACKAGES = ("numpy", "torch", "scipy", "librosa", "transformers", "kadtk")
KAD_CONVENTION = (
    "kadtk-1.1.0 calc_kernel_audio_distance equivalent (unbiased MMD^2, Gaussian kernel, x100), "
    "except bandwidth = median pairwise distance of the REFERENCE set, fixed per leaderboard"
)
FAD_CONVENTION = "Frechet distance of Gaussians, unbiased covariance, symmetric eigen route"


# --------------------------------------------------------------------------- configuration


def _spec_default(name: str):
    """MetricsSpec's default of a field: the one home of the metrics defaults."""
    return MetricsSpec.model_fields[name].get_default(call_default_factory=True)


@dataclass
class ScoreConfig:
    """How to score: the protocol's ``metrics`` section plus the run's seed, device and progress bar."""

    embeddings: list[str] = field(default_factory=lambda: _spec_default("embeddings"))
    metrics: list[str] = field(default_factory=lambda: _spec_default("metrics"))
    bootstrap: int = field(default_factory=lambda: _spec_default("bootstrap"))
    per_class: bool = field(default_factory=lambda: _spec_default("per_class"))
    item_metrics: list[str] = field(default_factory=lambda: _spec_default("item_metrics"))
    bandwidth: float | None = field(default_factory=lambda: _spec_default("bandwidth"))
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    @classmethod
    def from_spec(cls, spec: MetricsSpec | None = None, **overrides) -> ScoreConfig:
        """The config of a protocol's ``metrics`` section; ``overrides`` that are None keep its value."""
        spec = spec or MetricsSpec()
        own = {f.name for f in fields(cls)}
        values = {k: getattr(spec, k) for k in MetricsSpec.model_fields if k in own}
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - own)
        if unknown:
            raise SonievalError(
                f"unknown score setting(s) {', '.join(unknown)}", hint=f"known: {', '.join(sorted(own))}"
            )
        return cls(**values)


def score_versions(backend) -> dict:
    """The provenance of every score row: package versions, the conventions, the embedding's version."""
    from sonieval.versions import package_versions

    out: dict = dict(package_versions(VERSION_PACKAGES))
    out["kad_convention"] = KAD_CONVENTION
    out["fad_convention"] = FAD_CONVENTION
    out.update({"embedding_version": backend.version, "embedding_params": backend.params()})
    return out


# --------------------------------------------------------------------------- sets of frames


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
class EmbeddedSet:
    """One set under one embedding: its clips' frames stacked, each frame's clip id (the bootstrap's and
    the paired comparison's unit), and each embedded clip's id and category."""

    name: str
    frames: np.ndarray
    groups: np.ndarray
    clip_ids: list[str]
    categories: np.ndarray
    kept: list[int]  # positions (in the set's own list) of the clips that embedded
    n_failed: int = 0

    @property
    def n_clips(self) -> int:
        return len(self.kept)

    def clips_of(self, category) -> list[str]:
        return [self.clip_ids[i] for i in np.flatnonzero(self.categories == category)]


def stack_frames(name: str, keys: list[str], clip_ids: list[str], categories: list, frames: dict) -> EmbeddedSet:
    """The :class:`EmbeddedSet` of the items whose ``frames[key]`` exists (the others count as failed)."""
    blocks, groups, kept = [], [], []
    for i, key in enumerate(keys):
        f = frames.get(key)
        if f is None or f.shape[0] == 0:
            continue
        blocks.append(f)
        groups.append(np.full(f.shape[0], clip_ids[i], dtype=object))
        kept.append(i)
    cats = np.array([categories[i] for i in kept], dtype=object)
    ids = [clip_ids[i] for i in kept]
    if not blocks:
        return EmbeddedSet(name, np.zeros((0, 0), np.float32), np.zeros(0, object), ids, cats, kept, len(keys))
    dims = {b.shape[1] for b in blocks}
    if len(dims) > 1:
        raise DataError(f"{name}: embeddings of different dimensions {sorted(dims)}")
    return EmbeddedSet(name, np.concatenate(blocks), np.concatenate(groups), ids, cats, kept, len(keys) - len(kept))


# --------------------------------------------------------------------------- the reference side


def _attempt(make):
    try:
        return make(), None
    except D.MetricError as exc:
        return None, str(exc)


class ReferenceSide:
    """The reference under one embedding, computed once and fixed for every system: KAD's kernel block and
    bandwidth (the reference's median pairwise distance unless given), FAD's Gaussian, and the per-class
    Gaussians on demand. An error is kept as text: each system's row then carries it."""

    def __init__(
        self, ref: EmbeddedSet, config: ScoreConfig, *, label: str, embedding_id: str, weights: str, versions: dict
    ):
        if ref.n_clips < 2:
            raise DataError(
                f"reference set {label!r}: only {ref.n_clips} clip(s) could be embedded with {embedding_id}",
                hint="a reference set needs at least 2 clips",
            )
        self.ref, self.label, self.embedding_id = ref, label, embedding_id
        self.kernel, self.kernel_error = None, None
        if "kad" in config.metrics:
            self.kernel, self.kernel_error = _attempt(
                lambda: D.ReferenceKernel(ref.frames, ref.groups, bandwidth=config.bandwidth)
            )
        self.stats, self.stats_error = None, None
        if "fad" in config.metrics:
            self.stats, self.stats_error = _attempt(lambda: D.gaussian_stats(ref.frames, f"reference set {label}"))
        self._class_stats: dict = {}
        self.base = {
            "embedding": embedding_id,
            "embedding_weights": weights,
            "reference_set": label,
            "n_reference": ref.n_clips,
            "n_reference_frames": int(ref.frames.shape[0]),
            "versions": json.dumps(versions, sort_keys=True, default=str),
        }

    def categories(self, ev: EmbeddedSet, per_class: bool) -> list:
        """The classes both sets have (none unless ``per_class``)."""
        if not per_class:
            return []
        have = {c for c in ev.categories if c is not None} & {c for c in self.ref.categories if c is not None}
        return sorted(have)

    def class_stats(self, category):
        """(Gaussian of the reference's clips of one class, or None, and the error text)."""
        if category not in self._class_stats:
            mask = np.isin(self.ref.groups, self.ref.clips_of(category))
            self._class_stats[category] = _attempt(
                lambda: D.gaussian_stats(self.ref.frames[mask], f"reference class {category}")
            )
        return self._class_stats[category]


# --------------------------------------------------------------------------- rows of one system


def _row(system_id: str, metric: str, base: dict, **values) -> dict:
    row = {"system_id": system_id, "metric": metric, **base}
    row.update(values)
    return row


def common_fields(side: ReferenceSide, ev: EmbeddedSet, random_init=None, provenance: dict | None = None) -> dict:
    """The columns every row of one system under one embedding shares."""
    return {
        **side.base,
        "n_evaluated": ev.n_clips,
        "n_evaluated_frames": int(ev.frames.shape[0]),
        "n_failed": ev.n_failed,
        "system_random_init": random_init,
        **{f"system_{k}": v for k, v in (provenance or {}).items()},
    }


def system_rows(side: ReferenceSide, ev: EmbeddedSet, config: ScoreConfig, common: dict):
    """All score rows of one system (overall, then per class; KAD then FAD) and its kernel comparison
    (None without KAD), which paired comparisons reuse."""
    if ev.n_clips == 0:
        raise DataError(f"system {ev.name}: none of its {ev.n_failed} clips could be embedded with {side.embedding_id}")
    rows, comparison = [], None
    if "kad" in config.metrics:
        kad, comparison = kad_rows(side, ev, config, common)
        rows += kad
    if "fad" in config.metrics:
        rows += fad_rows(side, ev, config, common)
    return rows, comparison


def kad_rows(side: ReferenceSide, ev: EmbeddedSet, config: ScoreConfig, common: dict):
    if side.kernel is None:
        return [
            _row(ev.name, "kad", common, category=None, value=np.nan, error=side.kernel_error, ci_method="none")
        ], None
    comp = side.kernel.compare(ev.frames, ev.groups)
    res = comp.result()
    lo = hi = np.nan
    method = "none (bootstrap: 0)"
    if config.bootstrap > 0:
        lo, hi, _ = comp.bootstrap(config.bootstrap, level=CI_LEVEL, seed=config.seed)
        method = f"percentile bootstrap over clips, {config.bootstrap} resamples, {CI_LEVEL:.0%}"
    rows = [_kad_row(ev.name, common, None, res, lo, hi, method, side.ref.n_clips, ev.n_clips)]
    for cat in side.categories(ev, config.per_class):
        rsel, esel = side.ref.clips_of(cat), ev.clips_of(cat)
        try:
            res = comp.result(rsel, esel)
        except D.MetricError as exc:
            rows.append(
                _row(
                    ev.name,
                    "kad",
                    common,
                    category=cat,
                    value=np.nan,
                    error=str(exc),
                    ci_method="none",
                    n_reference=len(rsel),
                    n_evaluated=len(esel),
                )
            )
            continue
        rows.append(
            _kad_row(
                ev.name, common, cat, res, np.nan, np.nan, "none (per-class rows have no CI)", len(rsel), len(esel)
            )
        )
    return rows, comp


def _kad_row(name, common, category, res: D.KadResult, lo, hi, method, n_ref, n_ev) -> dict:
    return _row(
        name,
        "kad",
        common,
        category=category,
        value=res.value,
        ci_low=lo,
        ci_high=hi,
        ci_method=method,
        bandwidth=res.bandwidth,
        scale=res.scale,
        n_reference=n_ref,
        n_evaluated=n_ev,
        n_reference_frames=res.n_reference,
        n_evaluated_frames=res.n_evaluated,
        reference_term=res.reference_term,
        evaluated_term=res.evaluated_term,
        cross_term=res.cross_term,
        saturated=res.saturated,
        error=None,
    )


def fad_rows(side: ReferenceSide, ev: EmbeddedSet, config: ScoreConfig, common: dict) -> list[dict]:
    rows = [
        _fad_row(
            side.stats,
            side.stats_error,
            ev,
            np.ones(len(ev.groups), bool),
            side.ref.n_clips,
            ev.n_clips,
            None,
            config,
            common,
        )
    ]
    for cat in side.categories(ev, config.per_class):
        stats, err = side.class_stats(cat)
        esel = ev.clips_of(cat)
        n_ref = int(np.sum(side.ref.categories == cat))
        rows.append(_fad_row(stats, err, ev, np.isin(ev.groups, esel), n_ref, len(esel), cat, config, common))
    return rows


def _fad_row(stats, err, ev: EmbeddedSet, mask, n_ref, n_ev, category, config, common) -> dict:
    def failed(text):
        return _row(
            ev.name,
            "fad",
            common,
            category=category,
            value=np.nan,
            error=text,
            ci_method="none",
            n_reference=n_ref,
            n_evaluated=n_ev,
        )

    if stats is None:
        return failed(err)
    try:
        res = D.frechet_audio_distance(stats, ev.frames[mask])
    except D.MetricError as exc:
        return failed(str(exc))
    value, lo, hi = res.value, np.nan, np.nan
    method = "none (per-class rows have no CI)" if category is not None else "none (bootstrap: 0)"
    if category is None and config.bootstrap > 0:
        value, lo, hi, method = _fad_interval(stats, ev, value, config.seed)
    return _row(
        ev.name,
        "fad",
        common,
        category=category,
        value=value,
        ci_low=lo,
        ci_high=hi,
        ci_method=method,
        bandwidth=np.nan,
        scale=res.scale,
        n_reference=n_ref,
        n_evaluated=n_ev,
        n_reference_frames=res.n_reference,
        n_evaluated_frames=res.n_evaluated,
        error=None,
    )


def _fad_interval(stats, ev: EmbeddedSet, value: float, seed: int = 0):
    """(value, low, high, ci_method): the interval's own plug-in value, which it contains to the last bit
    (the same number as ``value`` unless BLAS rounds the copied frames differently)."""
    try:
        got = D.fad_interval(stats, ev.frames, ev.groups, level=CI_LEVEL, seed=seed)
    except D.MetricError as exc:
        return value, np.nan, np.nan, f"none ({exc.problem})"
    return got.value, got.ci_low, got.ci_high, got.method


# --------------------------------------------------------------------------- per-item rows


def embedding_item_rows(s: AudioSet, ev: EmbeddedSet, frames: dict, metrics: list[str], emb_id: str) -> list[dict]:
    """Frame measures of each sonification against its own original, under one embedding."""
    from sonieval.measures import get_measure

    wanted = [m for m in metrics if get_measure(m).needs_embedding]
    rows = []
    for i in ev.kept:
        orig = s.originals[i]
        if not orig:
            continue
        for m in wanted:
            rows.append(_item_row(s.name, s.clip_ids[i], m, emb_id, frames[s.paths[i]], frames.get(orig)))
    return rows


def _item_row(system_id, clip_id, metric, emb_id, ev_frames, orig_frames) -> dict:
    from sonieval.measures import direction
    from sonieval.metrics.items import ItemScoreError, score_item

    if orig_frames is None:
        value, err = np.nan, f"{metric}: the original clip could not be embedded"
    else:
        got = score_item([metric], evaluated_frames=ev_frames, original_frames=orig_frames)[metric]
        value, err = (np.nan, str(got)) if isinstance(got, ItemScoreError) else (float(got), None)
    return {
        "system_id": system_id,
        "clip_id": clip_id,
        "metric": metric,
        "embedding": emb_id,
        "value": value,
        "direction": direction(metric),
        "error": err,
    }


def audio_item_rows(s: AudioSet, wanted: list[str]) -> list[dict]:
    """Audio measures (embedding-free) of each sonification against its own original."""
    from sonieval.audio import ENCODER_RATE, read_audio

    originals: dict[str, np.ndarray | SonievalError] = {}
    rows = []
    for path, clip_id, orig in zip(s.paths, s.clip_ids, s.originals):
        if not orig:
            continue
        if orig not in originals:
            originals[orig] = _read_or_error(read_audio, orig, ENCODER_RATE)
        ev = _read_or_error(read_audio, path, ENCODER_RATE)
        for m in wanted:
            rows.append(_audio_item_row(s.name, clip_id, m, ev, originals[orig]))
    return rows


def _read_or_error(read_audio, path, rate):
    try:
        return read_audio(path, rate)[0]
    except SonievalError as exc:
        return exc


def _audio_item_row(system_id, clip_id, metric, ev, orig) -> dict:
    from sonieval.measures import get_measure
    from sonieval.metrics.items import ItemScoreError, score_item

    bad = next((x for x in (orig, ev) if isinstance(x, SonievalError)), None)
    if bad is not None:
        value, err = np.nan, f"{metric}: {bad}"
    else:
        got = score_item([metric], evaluated_audio=ev, original_audio=orig)[metric]
        value, err = (np.nan, str(got)) if isinstance(got, ItemScoreError) else (float(got), None)
    measure = get_measure(metric)
    return {
        "system_id": system_id,
        "clip_id": clip_id,
        "metric": metric,
        "embedding": measure.basis,
        "value": value,
        "direction": measure.direction,
        "error": err,
    }


# --------------------------------------------------------------------------- paired comparisons


def _paired_row(better, other, config: ScoreConfig) -> dict:
    try:
        cmp = D.paired_kad_difference(better, other, n_resamples=config.bootstrap, level=CI_LEVEL, seed=config.seed)
    except D.MetricError as exc:
        return {"error": str(exc)}
    return {
        "kad_difference": cmp.difference,
        "ci_low": cmp.ci_low,
        "ci_high": cmp.ci_high,
        "p_value": cmp.p_value,
        "paired_clips": cmp.paired_clips,
        "n_resamples": cmp.n_resamples,
        "error": None,
    }


def paired_with_best(comps: dict, config: ScoreConfig, base: dict) -> list[dict]:
    """KAD(best) - KAD(other) for every other system: paired bootstrap over shared clips."""
    if len(comps) < 2:
        return []
    values = {sid: c.result().value for sid, c in comps.items()}
    best = min(values, key=values.get)
    return [
        {**base, "best_system": best, "system_id": sid, **_paired_row(comps[best], comp, config)}
        for sid, comp in sorted(comps.items())
        if sid != best
    ]


def paired_with_controls(comps: dict, config: ScoreConfig, base: dict, primary_codec: str | None) -> list[dict]:
    """KAD(trained) - KAD(control) for every trained system and each of its controls that was scored:
    a paired bootstrap (one reference resample for both, the same clip draws), the test the learning
    table's KAD verdict uses. Two CIs side by side would be far too conservative here: most of each
    KAD CI's width is the shared reference set's resampling, which a difference cancels."""
    from sonieval.tables import CEILING, control_ids

    rows = []
    for sid, comp in sorted(comps.items()):
        for control, cid in (control_ids(sid, primary_codec) or {}).items():
            if control == CEILING or cid not in comps:
                continue
            got = _paired_row(comp, comps[cid], config)
            got.pop("n_resamples", None)
            rows.append({**base, "system_id": sid, "control": control, "control_id": cid, **got})
    return rows


# --------------------------------------------------------------------------- the ranked board


def _system_parts(sid: str) -> tuple:
    from sonieval.tables import CODEC_SLOT, INPUT_LAYER, NO_CONTROL, parse_system_id

    try:
        k = parse_system_id(sid)
    except SonievalError:
        return "folders", None, "-", sid, NO_CONTROL
    at = "" if k.slot.layer == INPUT_LAYER else f"{k.slot.layer}/"
    at = f"twin/{at}" if k.slot.twin else at  # the random twin plots beside its encoder, told apart
    # one figure per encoder: its layers side by side
    return (
        k.slot.name,
        k.slot.layer if k.encoder != CODEC_SLOT else None,
        k.postprocess,
        f"{at}{k.variant}/lr{k.lr:g}/e{k.epoch}/{k.alignment}",
        k.control,
    )


def _with_system_parts(df: pd.DataFrame) -> pd.DataFrame:
    parts = [_system_parts(sid) for sid in df["system_id"]]
    out = df.copy()
    for j, col in enumerate(("encoder", "layer", "postprocess", "system_label", "control")):
        out[col] = [p[j] for p in parts]
    return out


BOARD_COLUMNS = [
    "embedding",
    "metric",
    "rank",
    "system_id",
    "control",
    "system_random_init",
    "system_codec_label",
    "system_encoder_random_init",
    "system_codec_random_init",
    "value",
    "ci_low",
    "ci_high",
    "n_evaluated",
    "n_failed",
    "reference_set",
    "n_reference",
    "bandwidth",
    "scale",
    "saturated",
    "cross_term",
    "embedding_weights",
    "ci_method",
    "error",
    "encoder",
    "layer",
    "postprocess",
    "system_label",
    "versions",
]


def build_leaderboard(scores: pd.DataFrame) -> pd.DataFrame:
    """Overall rows ranked per (embedding, metric), best (lowest) first."""
    if scores.empty:
        return pd.DataFrame()
    overall = _with_system_parts(scores[scores["category"].isna()].copy())
    overall["rank"] = overall.groupby(["embedding", "metric"])["value"].rank(method="min", na_option="bottom")
    overall = overall[[c for c in BOARD_COLUMNS if c in overall.columns]]
    return overall.sort_values(["embedding", "metric", "rank", "system_id"]).reset_index(drop=True)


def tidy_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """The scores table's contract columns first (docs/results.md#tables), numbers as floats, every row's extras after."""
    from sonieval.tables import SCORES_COLUMNS

    scores = scores.copy()
    for c in SCORES_COLUMNS + SCORE_ROW_EXTRA:
        if c not in scores.columns:
            scores[c] = None
    for c in ("ci_low", "ci_high", "bandwidth", "scale", "value", "cross_term", "reference_term", "evaluated_term"):
        scores[c] = pd.to_numeric(scores[c], errors="coerce").astype(float)
    first = SCORES_COLUMNS + SCORE_ROW_EXTRA
    return scores[first + [c for c in scores.columns if c not in first]]
