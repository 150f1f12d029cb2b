"""The measure catalogue: the one place a measure is declared.

Every number sonieval ranks or compares is a :class:`Measure` here: its name (the ``metric`` column of
the scores and item_scores tables and the ``measure`` column of the learning table), its title (page
headings and figure axes), its direction (lower or higher is better), its unit, what it compares
(``scope``), whether it needs an embedding, and, for the what-is-kept measures, which
:class:`Attribute` of the sound it measures. Everything else reads it: the per-item dispatch
(:mod:`sonieval.metrics.items`), the learning table and its verdicts (:mod:`sonieval.metrics.controls`),
the page headings (:mod:`sonieval.metrics.render`), the report's metric directions
(:mod:`sonieval.stats.inputs`) and the protocol's validation of ``metrics`` and ``item_metrics``
(:mod:`sonieval.protocol`). It sits on the ground floor (it imports nothing of sonieval's but the
errors) so that the protocol and stats can read it without importing metrics.

A per-item measure's function (evaluated, original) -> float is bound to its entry with
:func:`item_measure`; adding a measure is one entry (:func:`register_measure`, or a line in
``_BUILTIN`` for sonieval's own) and its function (docs/extending.md, "Adding a measure"). A measure
that is not defined for a pair of clips raises :class:`ItemScoreError`: the score stage records the
reason and leaves the clip out, never a zero or a silent NaN.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sonieval.errors import SonievalError

__all__ = [
    "ATTRIBUTES",
    "HEADINGS",
    "LOWER_IS_BETTER",
    "MEASURES",
    "Attribute",
    "ItemScoreError",
    "Measure",
    "MeasureError",
    "attribute_measures",
    "check_item_measures",
    "direction",
    "get_measure",
    "item_function",
    "item_measure",
    "item_measure_names",
    "lower_is_better",
    "measure_names",
    "register_measure",
    "unregister_measure",
]

Direction = Literal["lower", "higher"]
# set: a set of sonifications against the reference set (KAD, FAD); item: one sonification against its
# own original, averaged over clips; learning: the gate's fit on held-out clips (validation R²)
Scope = Literal["set", "item", "learning"]


class MeasureError(SonievalError):
    """An unknown measure, or a catalogue entry that contradicts itself."""


class ItemScoreError(SonievalError):
    """A per-item measure that is not defined for this pair of clips (the reason is recorded, the clip left out)."""


@dataclass(frozen=True)
class Measure:
    """One measure (see the module docstring). ``title`` carries no parenthesis: headings append the
    direction, figure axes use it alone."""

    name: str
    title: str
    direction: Direction
    unit: str
    scope: Scope
    needs_embedding: bool = False
    attribute: str | None = None  # the Attribute a what-is-kept measure measures
    # what an audio item measure is computed on: its item_scores `embedding` value (embedding measures
    # carry the embedding's id instead)
    basis: str | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise MeasureError(f"measure name {self.name!r}: use letters, digits and '_' (it is a table value)")
        if self.direction not in ("lower", "higher"):
            raise MeasureError(f"measure {self.name}: direction {self.direction!r} is not 'lower' or 'higher'")
        if self.scope not in ("set", "item", "learning"):
            raise MeasureError(f"measure {self.name}: scope {self.scope!r} is not 'set', 'item' or 'learning'")
        if " (" in self.title:
            raise MeasureError(f"measure {self.name}: a title carries no ' (' (headings append the direction)")
        if self.scope == "item" and not self.needs_embedding and not self.basis:
            raise MeasureError(f"measure {self.name}: an audio item measure names its basis (e.g. 'waveform-16k')")

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "lower"

    @property
    def heading(self) -> str:
        """The title with its direction, as section headings show it."""
        over = "mean over clips, " if self.scope == "item" else ""
        return f"{self.title} ({over}{self.direction} is better)"


@dataclass(frozen=True)
class Attribute:
    """An attribute of a sound that a sonification may keep or lose; ``measure`` decides it in the
    explanation profile (:mod:`sonieval.metrics.profile`)."""

    name: str
    title: str
    measure: str


WAVEFORM = "waveform-16k"  # audio measures read both clips at 16 kHz (sonieval.audio.ENCODER_RATE)
PITCH_NOTE = "pYIN, a frame every 20 ms, 65.4-2093 Hz"

_BUILTIN = (
    Measure(
        "heldout_r2",
        "Held-out R² against the train-mean latent, on clips that chose nothing",
        "higher",
        "R²",
        "learning",
    ),
    # the R² on the clips that chose the epoch: flattered by that choice (controls most), shown only for
    # training tables made before held-out clips were measured
    Measure("validation_r2", "Validation R² against the train-mean latent", "higher", "R²", "learning"),
    Measure("kad", "KAD against the reference set", "lower", "KAD ×100", "set", needs_embedding=True),
    Measure("fad", "FAD against the reference set", "lower", "FAD", "set", needs_embedding=True),
    Measure(
        "frame_kad",
        "Frame KAD of each sonification against its own original",
        "lower",
        "KAD ×100",
        "item",
        needs_embedding=True,
    ),
    Measure(
        "embedding_cosine",
        "Embedding cosine distance to its own original",
        "lower",
        "1 − r",
        "item",
        needs_embedding=True,
    ),
    Measure(
        "logmel_l1",
        "Log-mel distance of each sonification to its own original",
        "lower",
        "mean |Δ ln mel|",
        "item",
        basis="logmel[weight-free]",
    ),
    Measure(
        "mrstft",
        "Multi-resolution STFT distance to its own original",
        "lower",
        "SC + mean |Δ ln magnitude|",
        "item",
        basis=WAVEFORM,
    ),
    Measure(
        "envelope_correlation",
        "Envelope correlation with its own original",
        "higher",
        "Pearson r",
        "item",
        basis=WAVEFORM,
    ),
    # what is kept (sonieval.metrics.attributes): acoustic attributes of the decoded sonification against
    # its original, independent of the encoder
    Measure(
        "raw_pitch_accuracy",
        f"Raw pitch accuracy: the original's voiced frames whose f0 the sonification matches within 50 cents, {PITCH_NOTE}",
        "higher",
        "fraction of voiced frames",
        "item",
        attribute="pitch",
        basis=WAVEFORM,
    ),
    Measure(
        "raw_chroma_accuracy",
        f"Raw chroma accuracy: as raw pitch accuracy with octave errors forgiven, {PITCH_NOTE}",
        "higher",
        "fraction of voiced frames",
        "item",
        attribute="pitch",
        basis=WAVEFORM,
    ),
    Measure(
        "voicing_recall",
        f"Voicing recall: the original's voiced frames that the sonification voices too, {PITCH_NOTE}",
        "higher",
        "fraction of voiced frames",
        "item",
        attribute="pitch",
        basis=WAVEFORM,
    ),
    Measure(
        "voicing_false_alarm",
        f"Voicing false alarm: the original's unvoiced frames that the sonification voices, {PITCH_NOTE}",
        "lower",
        "fraction of unvoiced frames",
        "item",
        attribute="pitch",
        basis=WAVEFORM,
    ),
    Measure(
        "loudness_correlation",
        "Loudness-envelope correlation: dB RMS over 64 ms every 10 ms, each clip's top 60 dB",
        "higher",
        "Pearson r",
        "item",
        attribute="loudness",
        basis=WAVEFORM,
    ),
    Measure(
        "mfcc_correlation",
        "Spectral-envelope correlation: MFCC 1-12 time courses on the original's sounding frames",
        "higher",
        "Pearson r",
        "item",
        attribute="spectral_envelope",
        basis=WAVEFORM,
    ),
    Measure(
        "centroid_distance",
        "Spectral-centroid distance: mean |log2 ratio| on the original's sounding frames",
        "lower",
        "octaves",
        "item",
        attribute="brightness",
        basis=WAVEFORM,
    ),
    Measure(
        "onset_f1",
        "Onset F-measure within ±50 ms of the original's onsets",
        "higher",
        "F1",
        "item",
        attribute="onsets",
        basis=WAVEFORM,
    ),
)

MEASURES: dict[str, Measure] = {m.name: m for m in _BUILTIN}
ATTRIBUTES: dict[str, Attribute] = {
    a.name: a
    for a in (
        Attribute("pitch", "Pitch", "raw_pitch_accuracy"),
        Attribute("loudness", "Loudness envelope", "loudness_correlation"),
        Attribute("spectral_envelope", "Spectral envelope", "mfcc_correlation"),
        Attribute("brightness", "Brightness", "centroid_distance"),
        Attribute("onsets", "Onsets", "onset_f1"),
    )
}
_FUNCTIONS: dict[str, Callable] = {}  # item measure name -> its function (bound by item_measure)


def register_measure(measure: Measure, *, attribute: Attribute | None = None) -> Measure:
    """Add ``measure`` (and a new ``attribute`` it decides) to the catalogue; registering the same entry
    again is a no-op, a different entry under a taken name is refused."""
    have = MEASURES.get(measure.name)
    if have is not None and have != measure:
        raise MeasureError(f"measure {measure.name!r} is already in the catalogue", hint="choose another name")
    if attribute is not None:
        if attribute.measure != measure.name or measure.attribute != attribute.name:
            raise MeasureError(f"attribute {attribute.name!r} and measure {measure.name!r} must name each other")
        ATTRIBUTES[attribute.name] = attribute
    elif measure.attribute is not None and measure.attribute not in ATTRIBUTES:
        raise MeasureError(
            f"measure {measure.name}: unknown attribute {measure.attribute!r}",
            hint=f"known: {', '.join(ATTRIBUTES)}; or pass attribute=Attribute(...)",
        )
    MEASURES[measure.name] = measure
    return measure


def unregister_measure(name: str) -> None:
    """Remove a measure added with :func:`register_measure` (and its function and attribute)."""
    if any(m.name == name for m in _BUILTIN):
        raise MeasureError(f"measure {name!r} is built in and cannot be removed")
    MEASURES.pop(name, None)
    _FUNCTIONS.pop(name, None)
    for key in [k for k, a in ATTRIBUTES.items() if a.measure == name]:
        del ATTRIBUTES[key]


def get_measure(name: str) -> Measure:
    """The catalogue entry of ``name``; an unknown name is one line with the closest known names."""
    got = MEASURES.get(name)
    if got is None:
        close = difflib.get_close_matches(str(name), list(MEASURES), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(MEASURES)}"
        raise MeasureError(f"unknown measure {name!r}", hint=hint)
    return got


def measure_names(scope: Scope | None = None) -> tuple[str, ...]:
    return tuple(n for n, m in MEASURES.items() if scope is None or m.scope == scope)


def item_measure_names() -> tuple[str, ...]:
    return measure_names("item")


def attribute_measures(attribute: str) -> tuple[str, ...]:
    """Every measure of one attribute, the deciding one first."""
    first = ATTRIBUTES[attribute].measure
    return (first, *(n for n, m in MEASURES.items() if m.attribute == attribute and n != first))


def check_item_measures(names: list[str]) -> list[str]:
    """``names`` if each is a per-item measure of the catalogue; else one line naming the first that is not."""
    allowed = item_measure_names()
    for n in names:
        if n not in allowed:
            close = difflib.get_close_matches(str(n), list(allowed), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ItemScoreError(f"unknown per-item metric {n!r}", hint=f"{hint}allowed: {', '.join(allowed)}")
    return names


def direction(name: str) -> Direction | None:
    """'lower' / 'higher' for a catalogue measure; None for a name the catalogue does not hold."""
    got = MEASURES.get(str(name))
    return got.direction if got is not None else None


def lower_is_better(name: str) -> bool:
    return get_measure(name).lower_is_better


class _CatalogueView(Mapping):
    """``{measure: <attribute> of it}`` read live from the catalogue (measures registered later included)."""

    def __init__(self, attribute: str) -> None:
        self._attribute = attribute

    def __getitem__(self, name: str) -> Any:
        if name not in MEASURES:
            raise KeyError(name)
        return getattr(MEASURES[name], self._attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(list(MEASURES))

    def __len__(self) -> int:
        return len(MEASURES)


LOWER_IS_BETTER: Mapping[str, bool] = _CatalogueView("lower_is_better")
HEADINGS: Mapping[str, str] = _CatalogueView("heading")  # the title with its direction


def item_measure(name: str) -> Callable[[Callable], Callable]:
    """Decorator: bind a function ``(evaluated, original) -> float`` to the per-item measure ``name`` of the
    catalogue (audio at 16 kHz, or embedding frames [T, D] when the measure needs an embedding)."""
    measure = get_measure(name)
    if measure.scope != "item":
        raise MeasureError(f"measure {name!r} is a {measure.scope} measure, not a per-item one")

    def bind(function: Callable) -> Callable:
        _FUNCTIONS[name] = function
        return function

    return bind


def item_function(name: str) -> Callable:
    """The function bound to the per-item measure ``name``."""
    check_item_measures([name])
    got = _FUNCTIONS.get(name)
    if got is None:
        raise MeasureError(
            f"per-item measure {name!r} has no function",
            hint="bind one with @sonieval.measures.item_measure (import the module that defines it first)",
        )
    return got
