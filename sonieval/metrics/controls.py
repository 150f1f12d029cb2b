"""Trained systems beside their learning controls and the codec ceiling (docs/architecture.md#controls-are-systems).

A claim that a gate makes an embedding audible needs something to be measured against:

- ``untrained``: the same gate at its initialisation (same seed): what the architecture alone gives;
- ``shuffled``: the same gate trained with the same budget on (embedding, latent) pairs of
  *mismatched* training clips: what learning the average latent gives, without the embedding;
- ``twin``: the same gate on the encoder's random twin (``ENCODER.twin[.layer<k>]``, same architecture,
  re-initialised weights), where one was run: what pretraining adds;
- the codec ceiling ``codec/<codec>/…/codec``: the codec's own reconstruction of the original,
  the best any gate onto that codec can do.

:func:`learning_table` lines each trained system up with these, on every measure there is:
validation R² against the train-mean latent (from ``tables/training.parquet``), KAD/FAD against the
reference set (the scores table, with its bootstrap CIs), and the per-item measures of the decoded
audio against its own original (item_scores, mean over clips with a percentile bootstrap CI over
clips; ``n`` of ``n_items`` clips where the measure is defined). ``beats_controls`` says, per measure,
whether the trained system beats both gate controls: for KAD and the per-item measures by paired
differences (:func:`paired_item_differences`: clip by clip against every control kind, untrained,
shuffled, twin and ceiling, with a paired bootstrap CI), for R² by the trained system's 95 % CI lying
entirely on the better side of both controls' CIs (non-overlapping intervals: a conservative test).
Directions come from the measure catalogue (:mod:`sonieval.measures`).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from sonieval.measures import LOWER_IS_BETTER as CATALOGUE_DIRECTIONS
from sonieval.tables import (
    TWIN,
    GateSlot,
    control_ids,  # on the tables' floor: the gallery puts a system beside the same controls
    encoder_slot,
    make_system_id,
    parse_system_id,
    system_parts,
)

__all__ = [
    "item_summary",
    "control_ids",
    "learning_table",
    "seed_table",
    "paired_item_differences",
    "paired_difference",
    "side_of_zero",
    "LOWER_IS_BETTER",
]

# Direction of every measure the table can show: the measure catalogue's, read live.
LOWER_IS_BETTER = CATALOGUE_DIRECTIONS
LEARNING_MEASURES = ("heldout_r2", "validation_r2", "kad", "fad", "logmel_l1", "envelope_correlation", "frame_kad")


def item_summary(item_scores: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Mean of each per-item measure per (system, metric, embedding), with a percentile bootstrap CI over clips.

    ``n`` counts the clips where the measure is defined (and enters the mean), ``n_items`` every clip
    scored; ``undefined`` gives the commonest reason a clip was left out, with its count (a measure
    undefined on every clip keeps its row, with no value)."""
    cols = ["system_id", "metric", "embedding", "n", "value", "ci_low", "ci_high", "n_items", "undefined"]
    if item_scores is None or item_scores.empty:
        return pd.DataFrame(columns=cols)
    summary = _defined_means(item_scores, n_boot, seed, level)
    return _with_undefined(summary, item_scores)[cols]


def _defined_means(item_scores: pd.DataFrame, n_boot: int, seed: int, level: float) -> pd.DataFrame:
    """Mean and bootstrap CI over the clips where each measure is defined (one generator, groups in order)."""
    cols = ["system_id", "metric", "embedding", "n", "value", "ci_low", "ci_high"]
    rows = []
    rng = np.random.default_rng(seed)
    finite = item_scores[np.isfinite(pd.to_numeric(item_scores["value"], errors="coerce").astype(float))]
    for (sid, metric, emb), g in finite.groupby(["system_id", "metric", "embedding"], sort=True):
        v = g["value"].to_numpy(float)
        lo = hi = np.nan
        if len(v) >= 2 and n_boot > 0:
            means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
            lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        rows.append(
            {
                "system_id": sid,
                "metric": metric,
                "embedding": emb,
                "n": len(v),
                "value": float(v.mean()),
                "ci_low": float(lo),
                "ci_high": float(hi),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _with_undefined(summary: pd.DataFrame, item_scores: pd.DataFrame) -> pd.DataFrame:
    """Add ``n_items`` and ``undefined`` ("k: reason" of the commonest reason) per (system, metric, embedding)."""
    keys = ["system_id", "metric", "embedding"]
    values = pd.to_numeric(item_scores["value"], errors="coerce").astype(float)
    errors = item_scores["error"] if "error" in item_scores.columns else pd.Series(None, index=item_scores.index)
    frame = item_scores[keys].assign(_defined=np.isfinite(values), _error=errors)
    rows = []
    for key, g in frame.groupby(keys, sort=True):
        left_out = g.loc[~g["_defined"], "_error"].fillna("no value recorded").astype(str)
        reason = ""
        if len(left_out):
            counts = left_out.value_counts()
            reason = f"{len(left_out)} of {len(g)} left out; commonest ({counts.iloc[0]}): {counts.index[0]}"
        rows.append((*key, len(g), reason))
    counts = pd.DataFrame(rows, columns=[*keys, "n_items", "undefined"])
    out = counts.merge(summary, on=keys, how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    return out


def _measure_values(scores: pd.DataFrame, items: pd.DataFrame, training: pd.DataFrame | None) -> pd.DataFrame:
    """One long table: system_id, measure, embedding, value, ci_low, ci_high."""
    parts = []
    if scores is not None and not scores.empty:
        overall = scores[scores["category"].isna()] if "category" in scores.columns else scores
        parts.append(
            overall[["system_id", "metric", "embedding", "value", "ci_low", "ci_high"]].rename(
                columns={"metric": "measure"}
            )
        )
    if items is not None and not items.empty:
        parts.append(
            items[["system_id", "metric", "embedding", "value", "ci_low", "ci_high"]].rename(
                columns={"metric": "measure"}
            )
        )
    if training is not None and not training.empty:
        parts.append(_r2_rows(training, set(pd.concat(parts)["system_id"]) if parts else set()))
    if not parts:
        return pd.DataFrame(columns=["system_id", "measure", "embedding", "value", "ci_low", "ci_high"])
    return pd.concat(parts, ignore_index=True)


def _r2_rows(training: pd.DataFrame, system_ids: set[str]) -> pd.DataFrame:
    """R² of the gate behind every scored system (any post-processing of it): on the held-out clips,
    which chose nothing (``heldout_r2``); the validation R² of the chosen epoch (flattered by that
    choice) only for a training table made before held-out clips were measured."""
    measure = "heldout_r2" if _has_heldout(training) else "validation_r2"
    by_base = {}
    for r in training.to_dict("records"):
        layer = r.get("layer")  # absent in training tables made before layers: the input cut
        slot = encoder_slot(r["encoder"], layer if isinstance(layer, str) else None)
        base = make_system_id(slot, r["gate_slot"], r["lr"], r["epoch"], r["alignment"], "x").rsplit("/", 1)[0]
        by_base[base] = (r[measure], r[f"{measure}_ci_low"], r[f"{measure}_ci_high"])
    rows = []
    for sid in sorted(system_ids):
        got = by_base.get(sid.rsplit("/", 1)[0])
        if got is not None:
            rows.append(
                {
                    "system_id": sid,
                    "measure": measure,
                    "embedding": "latent",
                    "value": got[0],
                    "ci_low": got[1],
                    "ci_high": got[2],
                }
            )
    return pd.DataFrame(rows, columns=["system_id", "measure", "embedding", "value", "ci_low", "ci_high"])


def _has_heldout(training: pd.DataFrame) -> bool:
    return "heldout_r2" in training.columns and bool(
        pd.to_numeric(training["heldout_r2"], errors="coerce").notna().any()
    )


def _beats(sys_row, ctrl_row, lower: bool) -> bool | None:
    """True when the system's CI lies entirely on the better side of the control's CI; None if unknown."""
    if sys_row is None or ctrl_row is None:
        return None
    vals = [sys_row["ci_low"], sys_row["ci_high"], ctrl_row["ci_low"], ctrl_row["ci_high"]]
    if not all(np.isfinite(float(v)) for v in vals):
        return None
    return bool(sys_row["ci_high"] < ctrl_row["ci_low"]) if lower else bool(sys_row["ci_low"] > ctrl_row["ci_high"])


def learning_table(
    scores: pd.DataFrame,
    item_scores_summary: pd.DataFrame,
    training: pd.DataFrame | None = None,
    primary_codec: str | None = None,
    paired_controls: pd.DataFrame | None = None,
    paired_items: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Each trained system beside its controls and ceiling, one row per (system, measure, embedding).

    Columns: system_id, encoder, layer, measure, embedding, lower_is_better, then value/ci_low/ci_high for ``system``,
    ``shuffled``, ``untrained``, ``ceiling`` (NaN where that control was not run), and
    ``beats_shuffled``, ``beats_untrained``, ``beats_controls`` (None when a control or a CI is missing).

    ``paired_controls`` (score's paired bootstrap of KAD(trained) − KAD(control), one row per system, control
    and embedding) decides the KAD verdicts: beaten when the difference's CI lies entirely below 0
    (``verdict`` = ``paired``); ``paired_items`` (:func:`paired_item_differences`) decides the per-item
    measures' verdicts the same way, on the better side of 0 by the measure's direction; every other
    measure compares the two CIs (``verdict`` = ``intervals``).
    """
    values = _measure_values(scores, item_scores_summary, training)
    paired = _paired_index(paired_controls, paired_items)
    index = {(r["system_id"], r["measure"], r["embedding"]): r for _, r in values.iterrows()}
    rows = []
    for sid in sorted(values["system_id"].unique()):
        ctrl = control_ids(sid, primary_codec)
        if ctrl is None or not any(c in set(values["system_id"]) for c in ctrl.values()):
            continue
        if ctrl[TWIN] not in set(values["system_id"]):  # twin columns only where a twin was run
            ctrl.pop(TWIN)
        for (_s, measure, emb), r in [(k, v) for k, v in index.items() if k[0] == sid]:
            if measure not in LOWER_IS_BETTER:
                continue
            rows.append(_learning_row(sid, measure, emb, r, ctrl, index, paired))
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {m: i for i, m in enumerate(LEARNING_MEASURES)}
    table["_o"] = table["measure"].map(lambda m: order.get(m, len(order)))
    return table.sort_values(["_o", "embedding", "system_id"]).drop(columns="_o").reset_index(drop=True)


def _paired_index(paired: pd.DataFrame | None, paired_items: pd.DataFrame | None = None) -> dict:
    """(system_id, control, measure, embedding) -> (difference, ci_low, ci_high) of the paired comparisons:
    KAD's (score's kernel bootstrap) and the per-item measures' (:func:`paired_item_differences`)."""
    out = {}
    if paired is not None and not paired.empty and "ci_high" in paired.columns:
        for r in paired[paired["ci_high"].notna()].itertuples(index=False):
            out[(r.system_id, r.control, "kad", r.embedding)] = (r.kad_difference, r.ci_low, r.ci_high)
    if paired_items is not None and not paired_items.empty:
        for r in paired_items[paired_items["ci_high"].notna()].itertuples(index=False):
            out[(r.system_id, r.control, r.metric, r.embedding)] = (r.difference, r.ci_low, r.ci_high)
    return out


def _learning_row(sid: str, measure: str, emb: str, r, ctrl: dict[str, str], index: dict, paired: dict) -> dict:
    lower = LOWER_IS_BETTER[measure]
    parts = system_parts(sid)
    row = {
        "system_id": sid,
        "encoder": parts["encoder"],
        "layer": parts["layer"],
        "measure": measure,
        "embedding": emb,
        "lower_is_better": lower,
    }
    for name, value in (("system", r), *((k, index.get((v, measure, emb))) for k, v in ctrl.items())):
        for part in ("value", "ci_low", "ci_high"):
            row[f"{name}_{part}"] = float(value[part]) if value is not None else np.nan
    row["verdict"] = "intervals"
    for control in ("shuffled", "untrained", *([TWIN] if TWIN in ctrl else [])):  # beats_twin: pretraining helped
        row[f"beats_{control}"] = _beats(r, index.get((ctrl[control], measure, emb)), lower)
        got = paired.get((sid, control, measure, emb))
        row[f"{control}_paired_difference"] = got[0] if got else np.nan
        if got is not None and np.isfinite(got[1]) and np.isfinite(got[2]):
            row[f"beats_{control}"] = bool(got[2] < 0) if lower else bool(got[1] > 0)
            row["verdict"] = "paired"
    known = [row["beats_shuffled"], row["beats_untrained"]]
    row["beats_controls"] = None if any(b is None for b in known) else all(known)
    return row


SEED_SIDES = ("system", "shuffled", "untrained")


def seed_table(learning: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """The learning table over replicate seeds: one row per (system without its seed, measure, embedding)
    that was trained with two seeds or more.

    Per side (trained ``system``, ``shuffled``, ``untrained``): the mean over seeds and a t interval over
    seeds (``<side>_value``, ``_ci_low``, ``_ci_high``; n − 1 degrees of freedom: with 3 seeds the interval
    is ±4.30 standard errors); the ceiling (one per codec) as it is. ``seeds_beating_both`` counts the seeds
    whose own per-clip CIs beat both controls; ``beats_controls`` says whether the trained seed interval
    lies entirely on the better side of both controls' seed intervals.
    """
    from scipy import stats

    if learning is None or learning.empty:
        return pd.DataFrame()
    frame = learning.copy()
    frame["system"] = [_without_seed(s) for s in frame["system_id"]]
    rows = []
    for (system, measure, emb), g in frame.groupby(["system", "measure", "embedding"], sort=False):
        if len(g) < 2:
            continue
        lower = bool(g["lower_is_better"].iloc[0])
        row = {
            "system": system,
            "encoder": g["encoder"].iloc[0],
            "layer": g["layer"].iloc[0],
            "measure": measure,
            "embedding": emb,
            "lower_is_better": lower,
            "n_seeds": len(g),
        }
        for side in SEED_SIDES:
            v = g[f"{side}_value"].to_numpy(float)
            v = v[np.isfinite(v)]
            mean = float(v.mean()) if len(v) else np.nan
            half = np.nan
            if len(v) >= 2:
                half = float(stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
            row.update({f"{side}_value": mean, f"{side}_ci_low": mean - half, f"{side}_ci_high": mean + half})
        for part in ("value", "ci_low", "ci_high"):
            row[f"ceiling_{part}"] = float(g[f"ceiling_{part}"].iloc[0]) if f"ceiling_{part}" in g else np.nan
        row["seeds_beating_both"] = int((g["beats_controls"] == True).sum())  # noqa: E712 - None stays apart
        sides = {side: {k: row[f"{side}_{k}"] for k in ("ci_low", "ci_high")} for side in SEED_SIDES}
        verdicts = [_beats(sides["system"], sides[c], lower) for c in ("shuffled", "untrained")]
        row["beats_controls"] = None if any(b is None for b in verdicts) else all(verdicts)
        rows.append(row)
    return pd.DataFrame(rows)


def _without_seed(system_id: str) -> str:
    """``ast/LIN.s43/...`` → ``ast/LIN/...``: the system a replicate seed belongs to."""
    key = parse_system_id(system_id)
    gate = key.gate
    slot = GateSlot(gate.variant, gate.control, None, gate.codec).text
    return make_system_id(key.encoder, slot, key.lr, key.epoch, key.alignment, key.postprocess)


# --------------------------------------------------------------------------- paired per-item differences

PAIRED_ITEM_COLUMNS = [
    "system_id",
    "control",
    "control_id",
    "metric",
    "embedding",
    "lower_is_better",
    "n_pairs",
    "difference",
    "ci_low",
    "ci_high",
    "better",
]


def paired_difference(
    system: pd.Series, control: pd.Series, n_boot: int, seed_key: str, seed: int = 0, level: float = 0.95
) -> tuple[int, float, float, float]:
    """(n clips, mean of system − control, CI low, CI high) over the clips where both are defined: a percentile
    bootstrap over those clips (both sides of a clip drawn together), seeded by ``seed`` and ``seed_key`` so one
    comparison's interval does not depend on which others were made."""
    both = pd.concat([system.rename("s"), control.rename("c")], axis=1, join="inner").dropna()
    d = (both["s"] - both["c"]).to_numpy(float)
    if len(d) == 0:
        return 0, np.nan, np.nan, np.nan
    lo = hi = np.nan
    if len(d) >= 2 and n_boot > 0:
        rng = np.random.default_rng([seed, zlib.crc32(seed_key.encode())])
        means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return len(d), float(d.mean()), float(lo), float(hi)


def side_of_zero(lo: float, hi: float, lower: bool) -> bool | None:
    """True when a difference's CI (system − other) lies on the system's better side of 0, False when on the
    other's, None when it holds 0 or is missing."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 <= hi:
        return None
    return (hi < 0) if lower else (lo > 0)


def paired_item_differences(
    item_scores: pd.DataFrame,
    primary_codec: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Each trained system against each of its controls that was scored (``untrained``, ``shuffled``, ``twin``
    and the ``ceiling``), per per-item measure and embedding: the mean over shared clips of system − control
    with its paired bootstrap CI (:func:`paired_difference`). ``better`` says on whose side of 0 the CI lies
    (:func:`side_of_zero`; True: the trained system is better). Clips where either side is undefined are left
    out of that pair (``n_pairs`` counts the rest)."""
    if item_scores is None or item_scores.empty:
        return pd.DataFrame(columns=PAIRED_ITEM_COLUMNS)
    values = item_scores.assign(value=pd.to_numeric(item_scores["value"], errors="coerce").astype(float))
    rows = []
    for (metric, emb), g in values.groupby(["metric", "embedding"], sort=True):
        wide = g.pivot_table(index="clip_id", columns="system_id", values="value", aggfunc="first")
        lower = bool(LOWER_IS_BETTER[metric]) if metric in LOWER_IS_BETTER else None
        if lower is None:
            continue
        for sid in wide.columns:
            for control, cid in (control_ids(sid, primary_codec) or {}).items():
                if cid not in wide.columns:
                    continue
                n, diff, lo, hi = paired_difference(
                    wide[sid], wide[cid], n_boot, f"{sid}|{cid}|{metric}|{emb}", seed, level
                )
                rows.append([sid, control, cid, metric, emb, lower, n, diff, lo, hi, side_of_zero(lo, hi, lower)])
    return pd.DataFrame(rows, columns=PAIRED_ITEM_COLUMNS)
