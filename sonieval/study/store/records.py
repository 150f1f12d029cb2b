"""What the study store hands out and refuses: its errors, a study, a rater, a page, a submission.

:class:`StudyInfo` also answers what a page holds for its attributes (:meth:`StudyInfo.rating_attribute`:
the definition the study stored, else the catalogue's, :mod:`sonieval.rating_attributes`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from sonieval.errors import SonievalError
from sonieval.rating_attributes import RATING_ATTRIBUTES, SHOWS, RatingAttribute
from sonieval.study.design import DesignConfig, PlanStep, Trial
from sonieval.study.options import StudyOptions


class StudyError(SonievalError):
    """A study-level problem: bad storage URL, unknown study, refused submission."""


class SubmissionRefused(StudyError):
    """A mark that is not stored (invalid, out of order, study closed, not listened yet).

    ``reason`` says which, so the app can answer the rater in one plain sentence
    (:func:`sonieval.study.texts.refusal`): ``closed``, ``invalid`` (a mark that is not an
    integer on the scale), ``not_next`` (a page other than the rater's next one), ``listen``
    (a stimulus not played long enough yet; ``wait`` holds the seconds still to play),
    ``implausible`` (more listening time reported than the page has been open) or ``request``
    (a malformed submission: unknown page, other attributes).
    """

    def __init__(self, message: str, *, reason: str = "request", wait: float = 0.0, **kw):
        super().__init__(message, **kw)
        self.reason = reason
        self.wait = wait


class EnrolmentRefused(StudyError):
    """A public enrolment that issues no rater link; ``reason``: ``disabled`` (no such link),
    ``closed``, ``full`` (the cap is reached), ``rate`` (too many enrolments just now, or from
    one address) or ``duplicate`` (this platform participant id is already enrolled)."""

    def __init__(self, message: str, *, reason: str, **kw):
        super().__init__(message, **kw)
        self.reason = reason


def validate_mark(value: object, scale_min: int, scale_max: int, *, what: str = "mark") -> int:
    """An integer mark within the scale, or :class:`SubmissionRefused` (text, bools, 3.5, NaN...)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
            and float(value).is_integer()
        ):
            value = int(value)  # 3.0 from a JSON client is the mark 3
        else:
            raise SubmissionRefused(
                f"{what}: {value!r} is not a whole number",
                hint=f"give an integer from {scale_min} to {scale_max}",
                reason="invalid",
            )
    mark = int(value)
    if not scale_min <= mark <= scale_max:
        raise SubmissionRefused(
            f"{what}: {mark} is outside the scale",
            hint=f"give an integer from {scale_min} to {scale_max}",
            reason="invalid",
        )
    return mark


@dataclass(frozen=True)
class StudyInfo:
    study_id: str
    mode: str
    attributes: tuple[str, ...]
    design: str
    trials_per_rater: int | None
    min_ratings_per_trial: int
    scale_min: int
    scale_max: int
    seed: int
    study_dir: Path
    status: str
    min_listen_fraction: float
    familiarisation: dict
    provenance: dict
    options: StudyOptions = StudyOptions()

    @property
    def title(self) -> str:
        return self.options.title or self.study_id

    @property
    def config(self) -> DesignConfig:
        return DesignConfig(
            self.mode, self.attributes, self.design, self.trials_per_rater, self.min_ratings_per_trial, self.seed
        )

    def rating_attribute(self, name: str) -> RatingAttribute:
        """The definition of one attribute this study asks: the one stored with the study, else (a study
        made before definitions were stored) the catalogue's."""
        for a in self.options.rating_attributes:
            if a.name == name:
                return a
        if name in RATING_ATTRIBUTES:
            return RATING_ATTRIBUTES[name]
        raise StudyError(
            f"study {self.study_id!r} asks attribute {name!r} but stores no definition of it",
            hint="recreate the study with a sonieval that knows it",
        )

    @property
    def rating_attributes(self) -> tuple[RatingAttribute, ...]:
        return tuple(self.rating_attribute(a) for a in self.attributes)

    def page_shows(self, attributes: Iterable[str]) -> tuple[str, ...]:
        """What a page of these attributes shows: ``waveform`` and/or ``sound``, in that order."""
        shown = {s for a in attributes for s in self.rating_attribute(a).shows}
        return tuple(s for s in SHOWS if s in shown)

    def with_sound(self, attributes: Iterable[str]) -> bool:
        """A page of these attributes plays its sounds (and the listening rule applies)."""
        return "sound" in self.page_shows(attributes)

    def with_waveform(self, attributes: Iterable[str]) -> bool:
        """A page of these attributes shows the waveforms."""
        return "waveform" in self.page_shows(attributes)


@dataclass(frozen=True)
class Rater:
    study_id: str
    rater_id: str
    rater_index: int
    seed: int
    block_order: str
    familiarised_at: float | None


@dataclass(frozen=True)
class StepState:
    """A rater's next page: the step, its trial and how far the rater is."""

    step: PlanStep | None
    trial: Trial | None
    done: int
    total: int
    shown_at: float | None = None
    stale: bool = False  # a page already rated, still on a browser's screen (its submit gets an answer)
    trials: tuple[Trial, ...] = ()  # every trial of the page (multi mode: several)
    following: PlanStep | None = None  # the page after this one, if the rater goes on (a prefetch hint)

    @property
    def finished(self) -> bool:
        return self.step is None


@dataclass(frozen=True)
class SubmitResult:
    stored: int
    already_stored: int


def rater_of(row) -> Rater:
    """A rater from its database row (a SQLAlchemy mapping)."""
    return Rater(*(row[f.name] for f in fields(Rater)))


__all__ = [
    "StudyError",
    "SubmissionRefused",
    "EnrolmentRefused",
    "validate_mark",
    "StudyInfo",
    "Rater",
    "rater_of",
    "StepState",
    "SubmitResult",
]
