"""The rules that screen raters out of a report: what the report applies (:mod:`sonieval.stats.screening`) and
what the study's admin view counts against (:mod:`sonieval.study.export`), on the ground floor below both.

The hidden-reference and anchor rules follow the post-screening of ITU-R BS.1534-3 (MUSHRA, §4.1.2) adapted
to a 1–5 scale; :mod:`sonieval.stats.screening` describes every rule and applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ScreeningRules"]


@dataclass(frozen=True)
class ScreeningRules:
    hidden_reference_max_mark: int = 3
    hidden_reference_max_fraction: float = 0.15
    anchor_min_mark: int = 4
    anchor_max_fraction: float = 0.15
    attention_max_fraction: float = 0.0  # any missed attention check excludes
    zero_variance_min_marks: int = 5
    enabled: bool = True
    headphone: bool = True  # exclude a failed headphone check (when the ratings carry one)
    thresholds_given: bool = False  # the mark thresholds were set (protocol): for_scale keeps them

    def for_scale(self, scale_min: int, scale_max: int) -> ScreeningRules:
        """These rules on the scale ``scale_min``–``scale_max``: default 1–5 thresholds mapped
        (0–100: BS.1534-3's "below 90" and "above 90"; other scales: the same relative position)."""
        from dataclasses import replace

        if self.thresholds_given or (scale_min, scale_max) == (1, 5):
            return self
        if (scale_min, scale_max) == (0, 100):
            return replace(self, hidden_reference_max_mark=89, anchor_min_mark=91)
        at = lambda mark: int(round(scale_min + (mark - 1) / 4 * (scale_max - scale_min)))  # noqa: E731
        return replace(
            self, hidden_reference_max_mark=at(self.hidden_reference_max_mark), anchor_min_mark=at(self.anchor_min_mark)
        )

    def describe(self) -> list[str]:
        return [
            f"hidden reference marked ≤ {self.hidden_reference_max_mark} on more than "
            f"{self.hidden_reference_max_fraction:.0%} of hidden-reference trials",
            f"anchor marked ≥ {self.anchor_min_mark} on more than {self.anchor_max_fraction:.0%} of anchor trials",
            f"attention checks missed (mark ≠ expected_mark) on more than {self.attention_max_fraction:.0%} of them",
            f"no variation in the sonification marks of an attribute (at least {self.zero_variance_min_marks} marks)",
        ] + (
            ["failed the headphone check (antiphase test, Woods et al. 2017), when the ratings carry its result"]
            if self.headphone
            else []
        )

    @classmethod
    def from_spec(cls, spec) -> ScreeningRules:
        """Build from a protocol ``ReportSpec`` (fields it lacks keep their defaults)."""
        kw = {}
        for name in cls.__dataclass_fields__:
            if hasattr(spec, name):
                kw[name] = getattr(spec, name)
        if hasattr(spec, "screening"):
            kw["enabled"] = bool(spec.screening)
        given = getattr(spec, "model_fields_set", set())
        kw["thresholds_given"] = bool({"hidden_reference_max_mark", "anchor_min_mark"} & set(given))
        return cls(**kw)
