"""The rating-attribute catalogue: the questions a listening study asks about each stimulus.

A **rating attribute** is one question a rater answers with a mark on the study's scale.

- ``name`` is what the tables hold: the ``attribute`` column of the study database's ``ratings``
  table and of the exported ratings table (the column the report, the gallery and a spreadsheet read
  the marks by), the block of a ``split`` study, and the per-trial progress columns ``n_<name>`` and
  ``mean_<name>``. At most 10 lowercase letters, digits or ``_`` (the width of the database's
  ``ratings.attribute`` column, which PostgreSQL enforces), and a study's names joined by commas fit
  in 40 characters (``studies.attributes``, ``plan.attributes``).
- ``question``: the full wording, the label of the mark; ``short``: under a rating panel's slider.
- ``low`` and ``high``: what the scale's lowest and highest marks mean (the caption under the
  question); ``low_short`` and ``high_short`` label those marks on one line.
- ``shows``: what the page holds for it: ``waveform`` (the original above the stimulus, as pictures)
  and/or ``sound`` (the A/B player; the listening rule applies, sonieval.study.session).

The numeric scale is the study's (``study.scale_min``..``scale_max``, ``study.rating_scale``) and
every attribute shares it, so that every mark fits the one scale the database checks; an attribute
says what the ends mean. A rating panel (``mode: multi`` with sound) shows one pair of ends, so its
attributes (at most two) share them.

sonieval ships the reference work's two attributes, ``visual`` and ``audio`` (its wording: "from 1 to
5 (1 = very low quality / totally different from the original, 5 = high quality)", with "the same as
the original" added to the top end). A protocol asks others by defining them in ``study.attributes``
(:func:`resolve_rating_attributes`); a study stores the definitions it asks with its options, so the
app, the export and a later sonieval show the wording the raters saw. None needs a change of the
database schema. docs/extending.md, "Adding a study question", walks through one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from sonieval.errors import SonievalError

__all__ = [
    "HIGH_END",
    "HIGH_SHORT",
    "LOW_END",
    "LOW_SHORT",
    "RATING_ATTRIBUTES",
    "SHOWS",
    "RatingAttribute",
    "RatingAttributeError",
    "resolve_rating_attribute",
    "resolve_rating_attributes",
]

# The reference work's scale ends (similarity to the original), the default of every attribute.
LOW_END = "very low quality / totally different from the original"
HIGH_END = "high quality / the same as the original"
LOW_SHORT = "totally different"
HIGH_SHORT = "the same"

SHOWS = ("waveform", "sound")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,9}$")
NAMES_WIDTH = 40  # studies.attributes and plan.attributes: the names joined by commas
# Block names of a study's plan besides its attributes' own (sonieval.study.design.PlanStep.block), and
# the rating panel's intro key: an attribute of that name would be mistaken for them.
RESERVED = ("joint", "multi", "panel")


class RatingAttributeError(SonievalError, ValueError):
    """A rating attribute that is not in the catalogue, or a definition that is not valid (a
    ValueError too, so that the protocol's validation reports it as one line naming the field)."""


@dataclass(frozen=True)
class RatingAttribute:
    """One question of a study (see the module docstring)."""

    name: str
    question: str
    short: str = ""  # default: the name
    low: str = LOW_END
    high: str = HIGH_END
    low_short: str = ""  # default: LOW_SHORT for the default ends, else ``low``
    high_short: str = ""
    shows: tuple[str, ...] = ("sound",)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise RatingAttributeError(
                f"attribute name {self.name!r} is not valid",
                hint="1-10 lowercase letters, digits or '_', starting with a letter: it is a table value",
            )
        if self.name in RESERVED:
            raise RatingAttributeError(f"attribute name {self.name!r} is taken by the study's pages", hint="rename it")
        for f in ("question", "short", "low", "high", "low_short", "high_short"):
            value, required = getattr(self, f), f in ("question", "low", "high")
            if not isinstance(value, str) or (required and not value.strip()):
                raise RatingAttributeError(
                    f"attribute {self.name}: {f} must be {'a non-empty' if required else 'a'} text"
                )
        shows = (self.shows,) if isinstance(self.shows, str) else tuple(self.shows)
        if not shows or any(s not in SHOWS for s in shows) or len(set(shows)) != len(shows):
            raise RatingAttributeError(
                f"attribute {self.name}: shows {list(shows)!r} is not valid", hint="one or both of waveform, sound"
            )
        # frozen: fill in the defaults that depend on other fields
        object.__setattr__(self, "shows", tuple(s for s in SHOWS if s in shows))
        object.__setattr__(self, "short", self.short or self.name)
        object.__setattr__(self, "low_short", self.low_short or (LOW_SHORT if self.low == LOW_END else self.low))
        object.__setattr__(self, "high_short", self.high_short or (HIGH_SHORT if self.high == HIGH_END else self.high))

    @property
    def with_sound(self) -> bool:
        """The page plays the sounds (and the listening rule applies)."""
        return "sound" in self.shows

    @property
    def with_waveform(self) -> bool:
        return "waveform" in self.shows

    @property
    def ends(self) -> tuple[str, str]:
        return self.low, self.high

    def as_dict(self) -> dict[str, Any]:
        """The definition as plain values (JSON: the study's stored options)."""
        out = asdict(self)
        out["shows"] = list(self.shows)
        return out


RATING_ATTRIBUTES: dict[str, RatingAttribute] = {
    a.name: a
    for a in (
        RatingAttribute(
            "visual",
            "Waveform: how similar is the shape of the sonification's waveform (bottom) to the original's (top)?",
            short="shape",
            shows=("waveform",),
        ),
        RatingAttribute(
            "audio", "Audio: how similar does the sonification sound to the original?", short="sound", shows=("sound",)
        ),
    )
}

_FIELDS = tuple(f.name for f in fields(RatingAttribute))


def resolve_rating_attribute(entry: str | Mapping[str, Any] | RatingAttribute) -> RatingAttribute:
    """One attribute from a catalogue name, a definition (a mapping of :class:`RatingAttribute`'s
    fields; for a catalogue name, the fields it leaves out are the catalogue entry's, so a study may
    reword ``audio``) or an attribute itself."""
    if isinstance(entry, RatingAttribute):
        return entry
    if isinstance(entry, str):
        known = RATING_ATTRIBUTES.get(entry)
        if known is None:
            close = difflib.get_close_matches(entry, list(RATING_ATTRIBUTES), n=1)
            did = f"did you mean {close[0]}? " if close else ""
            raise RatingAttributeError(
                f"unknown attribute {entry!r}",
                hint=f"{did}known: {', '.join(RATING_ATTRIBUTES)}; or define it with name and question",
            )
        return known
    if not isinstance(entry, Mapping):
        raise RatingAttributeError(f"attribute {entry!r} is neither a name nor a mapping with name and question")
    unknown = [k for k in entry if k not in _FIELDS]
    if unknown:
        raise RatingAttributeError(f"attribute: unknown key {unknown[0]!r}", hint=f"allowed: {', '.join(_FIELDS)}")
    name = entry.get("name")
    base = RATING_ATTRIBUTES.get(name) if isinstance(name, str) else None
    given = {k: v for k, v in entry.items() if v is not None}
    if base is None and "question" not in given:
        raise RatingAttributeError(
            f"attribute {name!r}: a new attribute needs a question", hint="give its name and question"
        )
    if base is not None:  # a reworded catalogue entry; the end labels follow its (new) ends
        kept = {k: v for k, v in base.as_dict().items() if k not in ("low_short", "high_short")}
        given = {**kept, **given}
    return RatingAttribute(**given)


def resolve_rating_attributes(
    entries: Iterable[str | Mapping[str, Any] | RatingAttribute],
) -> tuple[RatingAttribute, ...]:
    """A study's attributes (:func:`resolve_rating_attribute` each): at least one, each name once, the
    names together within the database's width."""
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(resolve_rating_attribute(entry))
        except RatingAttributeError as exc:
            raise RatingAttributeError(f"[{i}] {exc}") from None
    names = [a.name for a in out]
    if not names:
        raise RatingAttributeError("at least one attribute is needed")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RatingAttributeError(f"attribute {twice[0]!r} is asked twice")
    if len(",".join(names)) > NAMES_WIDTH:
        raise RatingAttributeError(
            f"the attribute names {','.join(names)!r} are longer than {NAMES_WIDTH} characters together",
            hint="use shorter names or fewer attributes",
        )
    return tuple(out)
