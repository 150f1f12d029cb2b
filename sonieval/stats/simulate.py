"""SIMULATED ratings and scores with a planted structure, clearly labelled as such.

For tests, the benchmark and the demo (so a new user sees what a report looks like before
running a study). Nothing here is a result: every ratings row carries ``simulated=True`` and
``study_id="SIMULATED"``, and a report built from them says "SIMULATED" on every page and file.

Planted model (per attribute): ``latent = quality[system] + bias[rater] + effect[clip] +
offset[attribute] + noise``; the mark is the latent rounded and clipped to the scale. Hidden
references sit near the top of the scale, anchors near the bottom. Careless raters come in two
kinds: ``random`` (uniform marks on every trial, misses attention checks) and ``constant``
(the same mark on everything).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.errors import SonievalError
from sonieval.rating_attributes import RATING_ATTRIBUTES
from sonieval.tables import RATING_ROLES

__all__ = [
    "SIMULATED_LABEL",
    "PlantedStudy",
    "simulate_ratings",
    "simulate_incomplete_ratings",
    "simulate_scores",
    "simulate_item_scores",
    "write_simulated_report",
]

SIMULATED_LABEL = "SIMULATED"


@dataclass
class PlantedStudy:
    """What was planted, so tests and the report can compare recovered against planted."""

    quality: dict[str, float]
    rater_bias: dict[str, float]
    careless: dict[str, str] = field(default_factory=dict)  # rater_id -> kind
    clip_effect: dict[str, float] = field(default_factory=dict)


def simulate_ratings(
    systems: list[str] | None = None,
    *,
    quality: list[float] | np.ndarray | None = None,
    n_systems: int = 5,
    n_raters: int = 20,
    n_clips: int = 30,
    rater_bias_sd: float = 0.4,
    clip_sd: float = 0.5,
    noise_sd: float = 0.6,
    attributes: tuple[str, ...] | None = None,
    attribute_offset: dict[str, float] | None = None,
    n_reference: int = 6,
    n_anchor: int = 6,
    n_attention: int = 2,
    careless: dict[str, int] | None = None,
    scale: tuple[int, int] = (1, 5),
    clips: list[str] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, PlantedStudy]:
    """Return a SIMULATED ratings table (RATINGS_COLUMNS + simulated, expected_mark) and the plant.

    Every rater rates every (system, clip) pair once per attribute, plus ``n_reference`` hidden
    references, ``n_anchor`` anchors and ``n_attention`` attention checks. ``careless`` is e.g.
    ``{"random": 2, "constant": 1}``: that many extra raters of each kind. ``clips``: clip ids to
    use (e.g. a real listening set), else ``n_clips`` made-up ones. ``attributes``: the rating attributes
    marked (default: the catalogue's), shifted by ``attribute_offset`` (default visual +0.15, audio -0.15).
    """
    rng = np.random.default_rng(seed)
    lo, hi = scale
    if systems is None:
        n = len(quality) if quality is not None else n_systems
        systems = [f"sim/S{i + 1}/lr0.001/e1/transpose/minmax" for i in range(n)]
    systems = [str(s) for s in systems]
    if quality is None:
        quality = np.linspace(lo + 0.3 * (hi - lo), lo + 0.8 * (hi - lo), len(systems))[::-1]
    quality = np.asarray(quality, float)
    if len(quality) != len(systems):
        raise SonievalError(
            f"{len(quality)} quality values for {len(systems)} systems",
            path="simulate_ratings",
            hint="give one quality value per system",
        )
    offsets = attribute_offset or {"visual": 0.15, "audio": -0.15}
    careless = careless or {}
    good = [f"rater{i + 1:03d}" for i in range(n_raters)]
    kinds = {f"careless_{kind}{i + 1:02d}": kind for kind, k in careless.items() for i in range(k)}
    raters = good + list(kinds)
    clips = [str(c) for c in clips] if clips is not None else [f"clip{j + 1:04d}" for j in range(n_clips)]
    n_clips = len(clips)
    bias = rng.normal(0, rater_bias_sd, len(raters))
    clip_eff = rng.normal(0, clip_sd, n_clips)

    s_idx, c_idx = np.meshgrid(np.arange(len(systems)), np.arange(n_clips), indexing="ij")
    design = _Design(
        systems,
        quality,
        clips,
        clip_eff,
        s_idx.ravel(),
        c_idx.ravel(),
        tuple(RATING_ATTRIBUTES) if attributes is None else tuple(attributes),
        offsets,
        noise_sd,
        scale,
        (n_reference, n_anchor, n_attention),
        seed,
    )
    frames = [
        frame for r, rid in enumerate(raters) for frame in _rater_frames(rng, design, rid, kinds.get(rid), bias[r])
    ]
    table = pd.concat(frames, ignore_index=True)
    table["simulated"] = True
    plant = PlantedStudy(
        quality=dict(zip(systems, quality.tolist())),
        rater_bias=dict(zip(raters, bias.tolist())),
        careless=kinds,
        clip_effect=dict(zip(clips, clip_eff.tolist())),
    )
    return table, plant


@dataclass
class _Design:
    """What every simulated rater sees: the stimuli, their planted effects, the check trials."""

    systems: list[str]
    quality: np.ndarray
    clips: list[str]
    clip_eff: np.ndarray
    s_idx: np.ndarray  # system of each sonification trial
    c_idx: np.ndarray  # clip of each sonification trial
    attributes: tuple[str, ...]
    offsets: dict[str, float]
    noise_sd: float
    scale: tuple[int, int]
    n_checks: tuple[int, int, int]  # hidden references, anchors, attention checks
    seed: int


def _rater_frames(rng: np.random.Generator, d: _Design, rid: str, kind: str | None, bias: float) -> list[pd.DataFrame]:
    """One rater's rows, one frame per attribute (marks from the planted model, or careless ones)."""
    lo, hi = d.scale
    n_reference, n_anchor, n_attention = d.n_checks
    n_son = len(d.s_idx)
    son, reference, anchor, attention = RATING_ROLES
    role = np.array([son] * n_son + [reference] * n_reference + [anchor] * n_anchor + [attention] * n_attention)
    sys_col = np.array(
        [d.systems[i] for i in d.s_idx]
        + ["[hidden reference]"] * n_reference
        + ["[anchor]"] * n_anchor
        + ["[attention]"] * n_attention,
        dtype=object,
    )
    extra_clips = rng.integers(0, len(d.clips), n_reference + n_anchor + n_attention)
    clip_col = np.array([d.clips[i] for i in np.r_[d.c_idx, extra_clips]], dtype=object)
    expected = np.full(len(role), np.nan)
    expected[role == attention] = rng.integers(lo, hi + 1, n_attention)
    order = rng.permutation(len(role))
    frames = []
    for attribute in d.attributes:
        latent = np.r_[
            d.quality[d.s_idx] + d.clip_eff[d.c_idx],
            np.full(n_reference, hi + 0.5),
            np.full(n_anchor, lo - 0.5),
            np.zeros(n_attention),
        ]
        latent = latent + bias + d.offsets.get(attribute, 0.0) + rng.normal(0, d.noise_sd, len(latent))
        mark = np.clip(np.round(latent), lo, hi)
        att = role == attention
        mark[att] = expected[att]
        if kind == "random":
            mark = rng.integers(lo, hi + 1, len(mark)).astype(float)
        elif kind == "constant":
            mark = np.full(len(mark), float((lo + hi) // 2))
        frames.append(
            pd.DataFrame(
                {
                    "study_id": SIMULATED_LABEL,
                    "rater_id": rid,
                    "trial_id": [f"{rid}-t{k:05d}" for k in range(len(role))],
                    "clip_id": clip_col,
                    "system_id": sys_col,
                    "role": role,
                    "attribute": attribute,
                    "mark": mark.astype(int),
                    "submitted_at": pd.Timestamp("2026-01-01") + pd.to_timedelta(order, unit="s"),
                    "position": order,
                    "seed": d.seed,
                    "mode": "simulated",
                    "expected_mark": expected,
                }
            )
        )
    return frames


def simulate_incomplete_ratings(
    *,
    quality: list[float] | np.ndarray,
    n_raters: int,
    n_clips: int,
    per_rater: int | tuple[int, int],
    nested: bool = False,
    rater_bias_sd: float = 0.4,
    clip_sd: float = 0.5,
    noise_sd: float = 0.7,
    attributes: tuple[str, ...] = ("visual",),
    scale: tuple[int, int] | None = (1, 5),
    seed: int = 0,
) -> tuple[pd.DataFrame, PlantedStudy]:
    """SIMULATED sonification marks of an incomplete design (the study's ``design: subset``,
    crowdsourcing): each rater marks a random subset of stimuli.

    ``nested``: each clip belongs to one system (clip ``c`` to system ``c mod S``, as in data sets
    whose items come in groups), else every system sonifies every clip and a stimulus is a
    (system, clip) pair. ``per_rater``: marks per rater per attribute, or a (low, high) range
    drawn per rater (unbalanced). ``scale=None`` keeps continuous marks. Vectorised: 800,000
    marks in about a second.
    """
    rng = np.random.default_rng(seed)
    quality = np.asarray(quality, float)
    n_sys = len(quality)
    systems = np.array([f"sim/S{i + 1}/lr0.001/e1/transpose/minmax" for i in range(n_sys)], dtype=object)
    raters = np.array([f"rater{i + 1:05d}" for i in range(n_raters)], dtype=object)
    clips = np.array([f"clip{j + 1:05d}" for j in range(n_clips)], dtype=object)
    bias = rng.normal(0, rater_bias_sd, n_raters)
    clip_eff = rng.normal(0, clip_sd, n_clips)
    n_stimuli = n_clips if nested else n_clips * n_sys
    counts = (
        np.full(n_raters, per_rater)
        if np.isscalar(per_rater)
        else rng.integers(per_rater[0], per_rater[1] + 1, n_raters)
    )
    counts = np.minimum(counts, n_stimuli)
    r_idx = np.repeat(np.arange(n_raters), counts)
    # Distinct stimuli per rater.
    stim = np.concatenate([rng.choice(n_stimuli, k, replace=False) for k in counts])
    c_idx = stim if nested else stim % n_clips
    s_idx = stim % n_sys if nested else stim // n_clips
    frames = []
    for attribute in attributes:
        latent = quality[s_idx] + bias[r_idx] + clip_eff[c_idx] + rng.normal(0, noise_sd, len(r_idx))
        mark = latent if scale is None else np.clip(np.round(latent), scale[0], scale[1]).astype(np.int64)
        trial = np.arange(len(r_idx)) - np.repeat(np.cumsum(counts) - counts, counts)
        frames.append(
            pd.DataFrame(
                {
                    "study_id": SIMULATED_LABEL,
                    "rater_id": raters[r_idx],
                    "trial_id": pd.Series(raters[r_idx]).str.cat(trial.astype(str), sep="-t").to_numpy(),
                    "clip_id": clips[c_idx],
                    "system_id": systems[s_idx],
                    "role": RATING_ROLES[0],  # sonification
                    "attribute": attribute,
                    "mark": mark,
                    "submitted_at": pd.Timestamp("2026-01-01"),
                    "position": trial,
                    "seed": seed,
                    "mode": "simulated",
                    "simulated": True,
                }
            )
        )
    plant = PlantedStudy(
        quality=dict(zip(systems.tolist(), quality.tolist())),
        rater_bias=dict(zip(raters.tolist(), bias.tolist())),
        clip_effect=dict(zip(clips.tolist(), clip_eff.tolist())),
    )
    return pd.concat(frames, ignore_index=True), plant


def simulate_scores(
    plant: PlantedStudy, *, metrics: dict[str, tuple[str, float]] | None = None, seed: int = 0
) -> pd.DataFrame:
    """SIMULATED system scores: each metric = planted agreement with the planted quality + noise.

    ``metrics`` maps a metric name to (direction, planted correlation with quality), e.g.
    ``{"kad": ("lower", 0.9)}``; a lower-is-better metric is generated decreasing in quality.
    """
    metrics = metrics or {"kad": ("lower", 0.9), "fad": ("lower", 0.5), "envelope_correlation": ("higher", 0.3)}
    rng = np.random.default_rng(seed + 1)
    systems = list(plant.quality)
    q = np.array([plant.quality[s] for s in systems])
    z = (q - q.mean()) / (q.std() or 1.0)
    rows = []
    for metric, (direction, rho) in metrics.items():
        noise = rng.normal(0, 1, len(systems))
        good = rho * z + np.sqrt(max(0.0, 1 - rho**2)) * noise
        value = (5.0 - good) if direction == "lower" else (0.5 + 0.1 * good)
        for sid, v in zip(systems, value):
            rows.append(
                {
                    "system_id": sid,
                    "metric": metric,
                    "embedding": "simulated",
                    "reference_set": "simulated",
                    "n_reference": 0,
                    "n_evaluated": 0,
                    "value": float(v),
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "bandwidth": np.nan,
                    "scale": 100.0 if metric == "kad" else 1.0,
                    "versions": "SIMULATED scores",
                    "category": "",
                    "simulated": True,
                }
            )
    return pd.DataFrame(rows)


def simulate_item_scores(
    plant: PlantedStudy, *, rho: float = 0.6, seed: int = 0, metric: str = "embedding_distance"
) -> pd.DataFrame:
    """SIMULATED per-item distances (lower = better) tied to planted item quality by ``rho``."""
    rng = np.random.default_rng(seed + 2)
    rows = []
    for sid, q in plant.quality.items():
        for cid, c in plant.clip_effect.items():
            good = q + c
            rows.append((sid, cid, float(3.0 - rho * good + np.sqrt(1 - rho**2) * rng.normal(0, 0.7))))
    df = pd.DataFrame(rows, columns=["system_id", "clip_id", "value"])
    df["metric"] = metric
    df["embedding"] = "simulated"
    df["simulated"] = True
    return df[["system_id", "clip_id", "metric", "embedding", "value", "simulated"]]


def _planted_quality_from_scores(systems: list[str], scores: pd.DataFrame, planted_rho: float, seed: int) -> np.ndarray:
    """Planted human quality for the demo: follows the real primary metric's ordering with noise."""
    from sonieval.stats.correlation import orient
    from sonieval.stats.inputs import check_scores

    checked = check_scores(scores)
    overall = checked.overall
    metric = "kad" if "kad" in set(overall["metric"]) else overall["metric_key"].iloc[0]
    s = overall[overall["metric"] == metric].drop_duplicates("system_id").set_index("system_id")
    rng = np.random.default_rng(seed)
    good = np.array(
        [orient([s.loc[sid, "value"]], s.loc[sid, "direction"])[0] if sid in s.index else np.nan for sid in systems]
    )
    finite = np.isfinite(good)
    z = np.zeros(len(systems))
    if finite.sum() > 1 and np.nanstd(good) > 0:
        z[finite] = (good[finite] - np.nanmean(good)) / np.nanstd(good)
    z = planted_rho * z + np.sqrt(1 - planted_rho**2) * rng.normal(0, 1, len(systems))
    return 3.0 + 0.8 * z


def write_simulated_report(
    out_dir: str | os.PathLike,
    *,
    systems: list[str] | None = None,
    scores: pd.DataFrame | None = None,
    item_scores: pd.DataFrame | None = None,
    n_raters: int = 12,
    n_clips: int = 20,
    planted_rho: float = 0.7,
    n_boot: int = 1000,
    seed: int = 0,
    clips_path: str | os.PathLike | None = None,
    attributes: tuple[str, ...] | None = None,
):
    """Write a report on SIMULATED ratings (for the demo); returns the ReportResult.

    ``systems``/``scores``: the demo's real system_ids and its real scores table; the marks are
    simulated around a planted quality that follows the scores' primary metric (KAD when
    present) with planted agreement ``planted_rho``. ``item_scores``: the real per-item scores;
    the simulated marks then use their clip ids (up to ``n_clips``) so item-level agreement can
    be shown. ``clips_path``: the clips table (``tables/clips.parquet``), for per-class rows.
    ``attributes``: the rating attributes to simulate marks of (a protocol's study asks them; default:
    the catalogue's, visual and audio).
    Without scores, systems and scores are simulated too. Inputs are written to
    ``out_dir/inputs/`` so the report can hash them.
    """
    from sonieval.stats.reporting import ReportOptions, build_report
    from sonieval.tables import write_table

    out_dir = Path(out_dir)
    if scores is not None and systems is None:
        systems = sorted(scores["system_id"].astype(str).unique())
    quality = _planted_quality_from_scores(systems, scores, planted_rho, seed) if scores is not None else None
    clips = None
    if item_scores is not None and len(item_scores):
        clips = sorted(item_scores["clip_id"].astype(str).unique())[:n_clips]
    ratings, plant = simulate_ratings(
        systems,
        quality=quality,
        n_raters=n_raters,
        n_clips=n_clips,
        clips=clips,
        careless={"random": 1, "constant": 1},
        seed=seed,
        attributes=attributes,
    )
    if scores is None:
        scores = simulate_scores(plant, seed=seed)
        if item_scores is None:
            item_scores = simulate_item_scores(plant, seed=seed)
    inputs = out_dir / "inputs"
    ratings_path = write_table(ratings, inputs / "ratings_SIMULATED.csv")
    scores_path = write_table(scores, inputs / "scores.csv")
    item_path = write_table(item_scores, inputs / "item_scores.csv") if item_scores is not None else None
    options = ReportOptions(
        n_boot=n_boot,
        seed=seed,
        attributes=attributes,
        simulated=True,
        simulated_note=(
            f"marks generated by sonieval.stats.simulate from a planted model "
            f"(planted agreement with the primary metric ρ≈{planted_rho}); "
            "any agreement shown was planted, not measured"
        ),
    )
    return build_report(
        ratings_path, scores_path, out_dir, item_scores_path=item_path, clips_path=clips_path, options=options
    )
