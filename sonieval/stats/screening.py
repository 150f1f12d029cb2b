"""Rater screening: hidden reference, anchor, attention checks, straight-lining.

The hidden-reference and anchor rules follow the post-screening of ITU-R BS.1534-3 (MUSHRA,
§4.1.2: exclude an assessor who rates the hidden reference below 90 for more than 15 % of the
test items, or the mid-range anchor above 90 for more than 15 %) adapted to a 1–5 scale:
by default a rater is excluded who marks the hidden reference ≤ 3 on more than 15 % of those
trials, or the anchor ≥ 4 on more than 15 %. Attention checks carry the mark the rater was
told to give (an ``expected_mark`` column); a rater who misses more than the allowed fraction
is excluded. A rater whose sonification marks for an attribute never vary (over at least
``zero_variance_min_marks`` marks) is excluded as straight-lining. A rater whose ratings carry a failed headphone check
(``headphone_passed`` false: the antiphase test of Woods et al. 2017, sonieval.study.headphone)
is excluded by its own rule; raters without a check result are not.

On another scale the 1–5 thresholds are mapped (:meth:`ScreeningRules.for_scale`) unless the
protocol set them: on 0–100 (MUSHRA) BS.1534-3's own values (hidden reference below 90, anchor
above 90), on any other scale the same relative positions.

Every rule is configurable (:class:`ScreeningRules`, from the protocol's ``report`` section);
the report lists each excluded rater with the reasons, and shows the main results with and
without screening.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

# The rules are shared with the study's admin view (sonieval.study.export), so they stand below both.
from sonieval.screening_rules import ScreeningRules
from sonieval.tables import RATING_ROLES

__all__ = ["ScreeningRules", "ScreeningResult", "screen_raters"]


@dataclass
class ScreeningResult:
    rules: ScreeningRules
    per_rater: pd.DataFrame  # one row per rater: counts, fractions, excluded, reasons
    notes: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[str]:
        return self.per_rater.loc[~self.per_rater["excluded"], "rater_id"].tolist()

    @property
    def excluded(self) -> pd.DataFrame:
        return self.per_rater.loc[self.per_rater["excluded"], ["rater_id", "reasons"]]

    def as_dict(self) -> dict:
        return {"rules": asdict(self.rules), "n_raters": int(len(self.per_rater)), "n_kept": len(self.kept)}


_SON, _REFERENCE, _ANCHOR, _ATTENTION = RATING_ROLES  # the order sonieval.tables lists them in


def screen_raters(ratings: pd.DataFrame, rules: ScreeningRules = ScreeningRules()) -> ScreeningResult:
    """Apply the screening rules to a checked ratings table; one row per rater in the result.

    A rule that a rater cannot be checked against (no hidden-reference trials, say) does not
    exclude them; the table shows ``n_reference = 0`` and the notes say the rule was not applied.
    """
    df = ratings
    raters = pd.Index(sorted(df["rater_id"].astype(str).unique()), name="rater_id")
    out = pd.DataFrame(index=raters)
    out["n_marks"] = df.groupby("rater_id").size().reindex(raters).fillna(0).astype(int)
    notes: list[str] = []
    _check_trials(df, out, rules, notes)
    out["zero_variance_attributes"] = _flat_attributes(df, raters, rules)
    checked = _headphone_columns(df, out)
    failed = out["headphone_passed"].eq(False).fillna(False).to_numpy(bool) if checked else np.zeros(len(out), bool)
    out["reasons"] = _reasons(out, rules, failed, checked) if rules.enabled else ""
    # Why a fraction is empty: the rater had no trials of that kind (or no expected marks).
    out["note"] = _join(
        [
            _words(out, out["n_reference"] == 0, "no hidden-reference trials"),
            _words(out, out["n_anchor"] == 0, "no anchor trials"),
            _words(out, out["n_attention"] == 0, "no attention trials"),
            _words(
                out,
                (out["n_attention"] > 0) & out["attention_missed_fraction"].isna(),
                "attention trials without expected_mark",
            ),
            _words(
                out,
                out["headphone_passed"].isna().to_numpy(bool) if checked else np.zeros(len(out), bool),
                "no headphone check result",
            ),
        ]
    )
    out["excluded"] = out["reasons"] != ""
    notes += _rule_notes(out, rules)
    return ScreeningResult(rules=rules, per_rater=out.reset_index(), notes=notes)


def _check_trials(df: pd.DataFrame, out: pd.DataFrame, rules: ScreeningRules, notes: list[str]) -> None:
    """Per rater: hidden-reference, anchor and attention trials and the share failing each rule."""
    raters = out.index
    ref = df[df["role"] == _REFERENCE]
    out["n_reference"] = ref.groupby("rater_id").size().reindex(raters).fillna(0).astype(int)
    low = (ref["mark"] <= rules.hidden_reference_max_mark).groupby(ref["rater_id"]).mean()
    out["reference_low_fraction"] = low.reindex(raters)

    anc = df[df["role"] == _ANCHOR]
    out["n_anchor"] = anc.groupby("rater_id").size().reindex(raters).fillna(0).astype(int)
    high = (anc["mark"] >= rules.anchor_min_mark).groupby(anc["rater_id"]).mean()
    out["anchor_high_fraction"] = high.reindex(raters)

    att = df[df["role"] == _ATTENTION]
    out["n_attention"] = att.groupby("rater_id").size().reindex(raters).fillna(0).astype(int)
    if len(att) and "expected_mark" in att.columns:
        expected = pd.to_numeric(att["expected_mark"], errors="coerce")
        missed = (att["mark"] != expected) & expected.notna()
        out["attention_missed_fraction"] = missed.groupby(att["rater_id"]).mean().reindex(raters)
    else:
        out["attention_missed_fraction"] = np.nan
        if len(att):
            notes.append(
                "attention trials present but the ratings have no expected_mark column: attention rule not applied"
            )


def _flat_attributes(df: pd.DataFrame, raters: pd.Index, rules: ScreeningRules) -> list[str]:
    """Per rater, the attributes whose sonification marks never vary (comma-separated)."""
    son = df[df["role"] == _SON]
    stats = son.groupby(["rater_id", "attribute"])["mark"].agg(["size", "nunique"])
    flat = stats[(stats["size"] >= rules.zero_variance_min_marks) & (stats["nunique"] == 1)]
    flat_attrs: dict[str, list[str]] = {}
    for rid, attr in flat.index:
        flat_attrs.setdefault(str(rid), []).append(str(attr))
    return [",".join(sorted(flat_attrs.get(str(r), []))) for r in raters]


def _headphone_columns(df: pd.DataFrame, out: pd.DataFrame) -> bool:
    """headphone_passed/headphone_score per rater when the ratings carry the check (the study export's
    columns: one result per rater, on each row); False when they do not."""
    if "headphone_passed" not in df.columns:
        return False
    cols = [c for c in ("headphone_passed", "headphone_correct", "headphone_trials") if c in df.columns]
    first = df.groupby("rater_id")[cols].first().reindex(out.index)
    out["headphone_passed"] = first["headphone_passed"].astype("boolean")
    if {"headphone_correct", "headphone_trials"} <= set(cols):
        score = (
            first["headphone_correct"].astype("Int64").astype(str)
            + "/"
            + first["headphone_trials"].astype("Int64").astype(str)
        )
    else:
        score = pd.Series("", index=out.index)
    out["headphone_score"] = score.where(first["headphone_passed"].notna(), "")
    return True


# Reasons and notes built column-wise (a loop over rows took seconds at 32,000 raters).
def _words(out: pd.DataFrame, mask, texts) -> pd.Series:
    return pd.Series(np.where(mask, texts, ""), index=out.index)


def _join(parts: list[pd.Series]) -> pd.Series:
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.str.cat(part, sep="; ")
    return joined.str.replace(r"^(; )+|(; )+$", "", regex=True).str.replace(r"(; ){2,}", "; ", regex=True)


def _pct(v: pd.Series) -> pd.Series:
    return (np.nan_to_num(v.to_numpy(float)) * 100).round().astype(int).astype(str) + "%"


def _reasons(out: pd.DataFrame, rules: ScreeningRules, failed_check: np.ndarray, checked: bool) -> pd.Series:
    """Each rater's reasons for exclusion, "; "-joined ("" = kept)."""
    return _join(
        [
            _words(
                out,
                (out["n_reference"] > 0) & (out["reference_low_fraction"] > rules.hidden_reference_max_fraction),
                f"hidden reference ≤ {rules.hidden_reference_max_mark} on "
                + _pct(out["reference_low_fraction"])
                + " of "
                + out["n_reference"].astype(str)
                + " trials",
            ),
            _words(
                out,
                (out["n_anchor"] > 0) & (out["anchor_high_fraction"] > rules.anchor_max_fraction),
                f"anchor ≥ {rules.anchor_min_mark} on "
                + _pct(out["anchor_high_fraction"])
                + " of "
                + out["n_anchor"].astype(str)
                + " trials",
            ),
            _words(
                out,
                (out["n_attention"] > 0) & (out["attention_missed_fraction"].fillna(-1) > rules.attention_max_fraction),
                "missed "
                + _pct(out["attention_missed_fraction"])
                + " of "
                + out["n_attention"].astype(str)
                + " attention checks",
            ),
            _words(
                out,
                out["zero_variance_attributes"] != "",
                "same mark on every sonification (" + out["zero_variance_attributes"] + ")",
            ),
            _words(
                out,
                rules.headphone & failed_check,
                "failed the headphone check (" + (out["headphone_score"] if checked else "") + " correct)",
            ),
        ]
    )


def _rule_notes(out: pd.DataFrame, rules: ScreeningRules) -> list[str]:
    if not rules.enabled:
        return ["screening disabled: every rater kept"]
    notes = []
    if (out["n_reference"] == 0).all():
        notes.append("no hidden-reference trials: hidden-reference rule not applied")
    if (out["n_anchor"] == 0).all():
        notes.append("no anchor trials: anchor rule not applied")
    if out["excluded"].all():
        notes.append("screening would exclude every rater: results are shown without screening; check the rules")
    return notes
