"""Study design: which stimuli are rated, by whom, in which order.

A **trial** is one (original, stimulus) pair rated on one or more attributes. Its ``role`` is

- ``sonification``: a system's sonification of the clip (the thing under study);
- ``reference``: the hidden reference, the original itself presented as if it were a
  sonification (a rater who marks it low is not listening: ITU-R BS.1534 post-screening);
- ``anchor``: the low anchor, a strongly degraded original (low-pass or noise, see
  :mod:`sonieval.study.stimuli`); a rater who marks it high is not discriminating;
- ``attention``: an attention check: the original paired with itself, with the instruction
  "set the mark(s) to N" (N is 2 or 4, never the natural answer 5 for an identical pair, so a
  rater who ignores the instruction fails it). ``expected_mark`` holds N.

**Designs.** ``full``: every rater rates every trial. ``subset``: rater *r* gets K
sonification trials, taken as the *r*-th run of K from a cycle through one seeded
permutation of all sonification trials, so after R raters every trial has
⌊RK/n⌋ or ⌈RK/n⌉ ratings (balanced; at least M when R·K ≥ M·n, checked at creation). A subset
rater also rates the hidden reference and the anchor of every clip among their K trials
(as in MUSHRA, where each screen carries both) and every attention check.

**Order.** Each rater's order is a permutation drawn from ``numpy.random.default_rng(seed)``
with ``seed`` derived from the study seed and the rater id (recorded with every mark).
``joint`` mode: one step per trial, both attributes on one page (the reference work's
procedure). ``split`` mode: one block per attribute, each in its own random order, one
attribute per step (BS.1534 grades one attribute per trial); the block order alternates with
the rater's invitation index (counterbalanced). ``multi`` mode (MUSHRA, ITU-R BS.1534): one page per clip holding every
condition the rater rates for it (its sonifications, hidden reference and anchor) in the
rater's own random order, labelled A, B, C... beside the open reference R (at most
:data:`MAX_CONDITIONS` per page; a clip with more is spread over several pages); each attention
check is a page of its own. System names are never shown: the page only says "Original" (R)
and "Sonification" (A) or the condition letters.

**Blinding.** Stimuli are served from opaque copies and the page names no system. Every file
of a study has one format (one sample rate, 16-bit, each clip's files as long as its original)
and a header that depends on nothing but length and rate; each is quantised with its own dither,
so no two files share bytes (Streamlit serves media under a hash of the bytes: every file has its
own URL, the hidden reference's is not the original's) (:mod:`sonieval.study.stimuli`).

**Familiarisation.** Before the first trial a rater hears two example pairs without marking
them: the anchor ("near 1") and the hidden reference ("near 5") of a clip that is not rated,
chosen by :mod:`sonieval.study.familiarisation`. Nothing from it is stored as a rating; the time
the rater finished it is stored on the rater's row.

**Loudness.** Every stimulus and original is aligned to one programme loudness per clip with a
true-peak ceiling (:mod:`sonieval.study.loudness`), so neither the hidden reference nor a
sonification stands out by level.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.errors import DataError, ProtocolError
from sonieval.results_layout import ResultsLayout
from sonieval.study.stimuli import check_identifier, contained

REFERENCE_SYSTEM = "hidden_reference"
ATTENTION_SYSTEM = "attention_check"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
# Statuses the upstream stages write for usable rows; anything else (failed, missing) is skipped.
_UNUSABLE = {"failed", "error", "missing"}


def anchor_system_id(kind: str, cutoff_hz: float, snr_db: float) -> str:
    return f"anchor_lowpass_{cutoff_hz:g}Hz" if kind == "lowpass" else f"anchor_noise_{snr_db:g}dB"


@dataclass(frozen=True)
class StimulusSource:
    """One stimulus before the study copies it: where its audio comes from."""

    clip_id: str
    category: str
    system_id: str
    role: str
    original_path: Path
    stimulus_path: Path | None  # None: made from the original (anchor)


@dataclass
class Trial:
    """One (original, stimulus) pair as stored in the study; files are names in the study folder."""

    trial_id: str
    clip_id: str
    category: str
    system_id: str
    role: str
    original_file: str = ""
    stimulus_file: str = ""
    waveform_file: str = ""
    stimulus_seconds: float = 0.0
    instruction: str = ""
    expected_mark: int | None = None
    source_key: str = ""

    def as_row(self) -> dict:
        return asdict(self)


# Labels of a multi-stimulus page's conditions: letters, without the player's L (loop) and S (stop)
# keys and R (the open reference).
CONDITION_LABELS = "ABCDEFGHIJKMNOPQTUVWXYZ"
REFERENCE_LABEL = "R"
MAX_CONDITIONS = 12  # BS.1534 practice: at most 12 conditions beside the reference on one screen


@dataclass(frozen=True)
class PlanStep:
    """One page a rater sees: its trial(s) and the attribute(s) marked on it."""

    position: int
    trial_id: str  # the page's (first) trial
    attributes: tuple[str, ...]
    block: str  # joint | multi | the attribute's name (split mode: visual, audio, ...)
    trials: tuple[str, ...] = ()  # multi: every trial of the page, in the rater's order

    @property
    def trial_ids(self) -> tuple[str, ...]:
        return self.trials or (self.trial_id,)


def page_labels(step: PlanStep) -> list[tuple[str, str | None]]:
    """The page's sounds as (label, trial id): the open reference R (no trial), then each stimulus."""
    if step.block == "multi":
        return [(REFERENCE_LABEL, None)] + [(CONDITION_LABELS[i], t) for i, t in enumerate(step.trial_ids)]
    return [(REFERENCE_LABEL, None), ("A", step.trial_id)]


@dataclass
class DesignConfig:
    """What the plan needs from the study (stored with the study, so invites made later agree)."""

    mode: str = "joint"
    attributes: tuple[str, ...] = ("visual", "audio")
    design: str = "full"
    trials_per_rater: int | None = None
    min_ratings_per_trial: int = 1
    seed: int = 42
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- sources


def _usable(status: object) -> bool:
    return not (isinstance(status, str) and status.strip().lower() in _UNUSABLE)


def sources_from_tables(
    results_dir: Path,
    *,
    systems: list[str] | None = None,
    clips: list[str] | None = None,
) -> tuple[list[StimulusSource], list[str]]:
    """Stimuli from ``<results>/tables/{clips,sonifications}.parquet``; returns (sources, notes).

    Clips: ``clips`` if given, else the listening set (``listening`` true), skipping failed
    clips. Sonification paths must lie inside the results folder (no path traversal through
    a table); relative ones are taken relative to it.
    """
    from sonieval.tables import read_table

    results_dir = Path(results_dir)
    layout = ResultsLayout(results_dir)
    clips_path = layout.table("clips")
    son_path = layout.table("sonifications")
    clip_df = read_table(clips_path, "clips")
    son_df = read_table(son_path, "sonifications")
    notes: list[str] = []
    clip_df = clip_df[clip_df["status"].map(_usable)]
    if clips is not None:
        for c in clips:
            check_identifier(c, "study.clips entry")
        unknown = sorted(set(clips) - set(clip_df["clip_id"].astype(str)))
        if unknown:
            raise ProtocolError(
                f"study.clips: {len(unknown)} clip id(s) not in {clips_path} (e.g. {unknown[0]!r})",
                hint="use clip ids from the clips table",
            )
        clip_df = clip_df[clip_df["clip_id"].astype(str).isin(clips)]
    else:
        if "listening" not in clip_df.columns:
            raise DataError(
                "clips table lacks column listening",
                path=clips_path,
                hint="rerun sonieval prepare, or list study.clips",
            )
        clip_df = clip_df[clip_df["listening"].astype(bool)]
    if clip_df.empty:
        raise DataError("no usable listening-set clips", path=clips_path, hint="run sonieval prepare first")
    son_df = son_df[son_df["status"].map(_usable) & son_df["clip_id"].astype(str).isin(clip_df["clip_id"].astype(str))]
    if systems is not None:
        for s in systems:
            if not isinstance(s, str) or not s:
                raise ProtocolError(f"study.systems entry {s!r} is not a system id")
        unknown = sorted(set(systems) - set(son_df["system_id"].astype(str)))
        if unknown:
            raise ProtocolError(
                f"study.systems: {len(unknown)} system id(s) have no usable sonification in {son_path} (e.g. {unknown[0]!r})",
                hint="use system ids from the sonifications table",
            )
        son_df = son_df[son_df["system_id"].astype(str).isin(systems)]
    if son_df.empty:
        raise DataError(
            "no usable sonifications for the study's clips", path=son_path, hint="run sonieval sonify first"
        )
    out: list[StimulusSource] = []
    originals: dict[str, tuple[Path, str]] = {}
    for row in clip_df.itertuples(index=False):
        cid = check_identifier(str(row.clip_id), "clip_id")
        originals[cid] = (Path(str(row.path)), str(row.category))
    for row in son_df.sort_values(["system_id", "clip_id"]).itertuples(index=False):
        cid = str(row.clip_id)
        p = Path(str(row.path))
        try:
            stim = contained(p, results_dir)  # a relative path is taken relative to the results folder
        except Exception as exc:
            raise DataError(
                f"sonification path refused: {exc}",
                path=son_path,
                hint="sonification paths must lie inside the results folder",
            ) from None
        orig, cat = originals[cid]
        out.append(StimulusSource(cid, cat, str(row.system_id), "sonification", orig, stim))
    return _with_screening(out, originals), notes


def _absolute(path: str | os.PathLike) -> Path:
    """Absolute against the working directory, symlinks kept (they are followed when read)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _audio_files(folder: Path) -> dict[str, Path]:
    """``{clip id: file}`` of a folder given by the organiser.

    Files may be symlinks to audio elsewhere (a folder of links into an ESC-50 copy): the
    organiser chose them, and the study only ever serves its own re-written copies (the
    traversal rule, :func:`sonieval.study.stimuli.study_file`). A link to something that is
    not audio fails its trials with the reader's message, naming the file.
    """
    found: dict[str, Path] = {}
    for p in sorted(_absolute(folder).iterdir()):
        if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."):
            found[check_identifier(p.stem, "clip id (file name)")] = p
    return found


def sources_from_folders(
    originals_dir: Path, systems: dict[str, Path], *, clips: list[str] | None = None
) -> tuple[list[StimulusSource], list[str]]:
    """Stimuli from plain folders: ``originals_dir/<clip>.wav`` and ``<system dir>/<clip>.wav``.

    A clip id is a file stem; a system's file for a clip has the same stem. Files a system
    lacks are skipped (listed in the notes).
    """
    originals_dir = _absolute(originals_dir)
    if not originals_dir.is_dir():
        raise DataError("originals folder not found", path=originals_dir)
    originals = _audio_files(originals_dir)
    if clips is not None:
        missing = sorted(set(clips) - set(originals))
        if missing:
            raise DataError(f"clip(s) not in the originals folder (e.g. {missing[0]!r})", path=originals_dir)
        originals = {c: originals[c] for c in clips}
    if not originals:
        raise DataError("no audio files (.wav, .flac, .ogg) in the originals folder", path=originals_dir)
    if not systems:
        raise DataError("no system folders given", hint="pass --system NAME=DIR at least once")
    out: list[StimulusSource] = []
    notes: list[str] = []
    for name, folder in systems.items():
        if not isinstance(name, str) or not name.strip() or "\x00" in name:
            raise DataError(f"system name {name!r} is empty", hint="use --system NAME=DIR")
        folder = _absolute(folder)
        if not folder.is_dir():
            raise DataError(f"folder of system {name!r} not found", path=folder)
        files = _audio_files(folder)
        # an original no system has is not rated (it may serve the familiarisation): not a gap of this system
        absent = sorted((set(originals) - set(files)) & set().union(*(_stems(f) for f in systems.values())))
        if absent:
            notes.append(f"system {name}: {len(absent)} clip(s) without a file, skipped (e.g. {absent[0]})")
        for cid in sorted(set(originals) & set(files)):
            out.append(StimulusSource(cid, "", name, "sonification", originals[cid], files[cid]))
    if not out:
        raise DataError("no file in any system folder matches an original by name", path=originals_dir)
    return _with_screening(out, {c: (p, "") for c, p in originals.items()}), notes


def _stems(folder: Path) -> set[str]:
    folder = _absolute(folder)
    if not folder.is_dir():
        return set()
    return {p.stem for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")}


def originals_in_folder(originals_dir: Path) -> dict[str, Path]:
    """``{clip id: file}`` of every original in a folder (rated or not)."""
    return _audio_files(_absolute(originals_dir))


def originals_from_tables(results_dir: Path) -> dict[str, Path]:
    """``{clip id: file}`` of every usable clip of the clips table (the listening set and the rest)."""
    from sonieval.tables import read_table

    clip_df = read_table(ResultsLayout(Path(results_dir)).table("clips"), "clips")
    clip_df = clip_df[clip_df["status"].map(_usable)]
    return {str(r.clip_id): Path(str(r.path)) for r in clip_df.itertuples(index=False)}


def sources_from_audio_dir(audio_dir: Path, clips: list[str] | None = None) -> tuple[list[StimulusSource], list[str]]:
    """``study.audio_dir`` layout: ``originals/`` plus one sub-folder per system."""
    audio_dir = _absolute(audio_dir)
    orig = audio_dir / "originals"
    if not orig.is_dir():
        raise ProtocolError(
            f"study.audio_dir {audio_dir} has no originals/ folder",
            hint="put the originals in <audio_dir>/originals and each system in <audio_dir>/<system>",
        )
    systems = {
        p.name: p
        for p in sorted(audio_dir.iterdir())
        if p.is_dir() and p.name != "originals" and not p.name.startswith(".")
    }
    return sources_from_folders(orig, systems, clips=clips)


def _with_screening(
    sonifications: list[StimulusSource], originals: dict[str, tuple[Path, str]]
) -> list[StimulusSource]:
    """Add a hidden reference and an anchor source for every clip that has a sonification."""
    cats = {s.clip_id: s.category for s in sonifications}
    out = list(sonifications)
    for cid in sorted(cats):
        orig = originals[cid][0]
        out.append(StimulusSource(cid, cats[cid], REFERENCE_SYSTEM, "reference", orig, orig))
        out.append(StimulusSource(cid, cats[cid], "", "anchor", orig, None))
    return out


# ----------------------------------------------------------------------------- trials


def build_trials(
    sources: Iterable[StimulusSource],
    *,
    hidden_reference: bool,
    anchor_system: str | None,
    attention_checks: int,
    scale_min: int,
    scale_max: int,
    joint: bool,
    seed: int,
    n_marks: int = 2,
) -> list[Trial]:
    """The study's trials, with ids that reveal nothing (a seeded shuffle of t0001, t0002, ...).
    ``joint``: a page takes every attribute, ``n_marks`` of them (an attention check's instruction names them)."""
    trials: list[Trial] = []
    for s in sources:
        if s.role == "reference" and not hidden_reference:
            continue
        if s.role == "anchor":
            if anchor_system is None:
                continue
            s = StimulusSource(s.clip_id, s.category, anchor_system, "anchor", s.original_path, None)
        trials.append(Trial("", s.clip_id, s.category, s.system_id, s.role, source_key=_source_key(s)))
    clip_ids = sorted({t.clip_id for t in trials})
    rng = np.random.default_rng(seed)
    if scale_max - scale_min > 10:  # a slider (0-100): marks a rater can set without fiddling
        step = int(round(0.2 * (scale_max - scale_min), -1 if scale_max - scale_min >= 50 else 0))
        targets = [scale_min + step, scale_max - step]
    else:
        targets = [min(scale_max, scale_min + 1), max(scale_min, scale_max - 1)]
    for i in range(attention_checks):
        cid = clip_ids[int(rng.integers(len(clip_ids)))]
        cat = next(t.category for t in trials if t.clip_id == cid)
        expected = targets[i % 2]
        what = "the mark" if not joint or n_marks == 1 else "both marks" if n_marks == 2 else "every mark"
        trials.append(
            Trial(
                "",
                cid,
                cat,
                ATTENTION_SYSTEM,
                "attention",
                instruction=f"Attention check: whatever you hear and see, set {what} to {expected}.",
                expected_mark=expected,
                source_key=f"attention/{i}/{cid}",
            )
        )
    order = rng.permutation(len(trials))
    width = max(4, len(str(len(trials))))
    for number, idx in enumerate(order, start=1):
        trials[idx].trial_id = f"t{number:0{width}d}"
    return sorted(trials, key=lambda t: t.trial_id)


def _source_key(s: StimulusSource) -> str:
    return f"{s.role}/{s.system_id}/{s.clip_id}"


# ----------------------------------------------------------------------------- plans


def rater_seed(study_seed: int, rater_id: str) -> int:
    digest = hashlib.sha256(f"{study_seed}:{rater_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def assigned_trials(trials: list[Trial], config: DesignConfig, rater_index: int) -> list[Trial]:
    """The trials rater number ``rater_index`` (0-based, invitation order) rates."""
    if config.design == "full":
        return list(trials)
    k = int(config.trials_per_rater or 0)
    son = [t for t in trials if t.role == "sonification"]
    if not son:
        return list(trials)
    k = min(k, len(son))
    cycle = np.random.default_rng(config.seed).permutation(len(son))
    start = rater_index * k
    picked = [son[cycle[(start + j) % len(son)]] for j in range(k)]
    clips = {t.clip_id for t in picked}
    screening = [t for t in trials if t.role in ("reference", "anchor") and t.clip_id in clips]
    attention = [t for t in trials if t.role == "attention"]
    return picked + screening + attention


def check_subset_balance(n_sonification: int, config: DesignConfig, n_raters: int) -> None:
    """A subset design must be able to give every sonification trial at least M ratings."""
    if config.design != "subset":
        return
    k = min(int(config.trials_per_rater or 0), n_sonification)
    need = config.min_ratings_per_trial * n_sonification
    if n_raters * k < need:
        raise ProtocolError(
            f"study: {n_raters} rater(s) x {k} trials = {n_raters * k} ratings cannot give "
            f"{n_sonification} trials {config.min_ratings_per_trial} rating(s) each ({need} needed)",
            hint=f"raise study.n_raters to {-(-need // max(k, 1))} or study.trials_per_rater",
        )


def rater_plan(trials: list[Trial], config: DesignConfig, rater_index: int, seed: int) -> list[PlanStep]:
    """The pages rater ``rater_index`` sees, in order (see the module docstring)."""
    mine = assigned_trials(trials, config, rater_index)
    rng = np.random.default_rng(seed)
    steps: list[PlanStep] = []
    if config.mode == "multi":
        pages = multi_pages(mine, rng)
        for idx in rng.permutation(len(pages)):
            steps.append(PlanStep(len(steps), pages[idx][0], tuple(config.attributes), "multi", tuple(pages[idx])))
        return steps
    if config.mode == "joint" or len(config.attributes) == 1:
        block = "joint" if len(config.attributes) > 1 else config.attributes[0]
        for idx in rng.permutation(len(mine)):
            steps.append(PlanStep(len(steps), mine[idx].trial_id, tuple(config.attributes), block))
        return steps
    blocks = list(config.attributes) if rater_index % 2 == 0 else list(reversed(config.attributes))
    for attribute in blocks:
        for idx in rng.permutation(len(mine)):
            steps.append(PlanStep(len(steps), mine[idx].trial_id, (attribute,), attribute))
    return steps


def multi_pages(mine: list[Trial], rng: np.random.Generator) -> list[list[str]]:
    """The multi-stimulus pages of one rater: per clip, its conditions in a random order (chunks of
    at most :data:`MAX_CONDITIONS`); each attention check alone."""
    by_clip: dict[str, list[Trial]] = {}
    pages: list[list[str]] = []
    for t in mine:
        if t.role == "attention":
            pages.append([t.trial_id])
        else:
            by_clip.setdefault(t.clip_id, []).append(t)
    for clip in sorted(by_clip):
        group = by_clip[clip]
        order = [group[i].trial_id for i in rng.permutation(len(group))]
        n_pages = -(-len(order) // MAX_CONDITIONS)
        size = -(-len(order) // n_pages)  # equal chunks: 13 conditions give 7 + 6, not 12 + 1
        pages += [order[k : k + size] for k in range(0, len(order), size)]
    return pages


def trials_frame(trials: list[Trial]) -> pd.DataFrame:
    return pd.DataFrame([t.as_row() for t in trials])


__all__ = [
    "REFERENCE_SYSTEM",
    "ATTENTION_SYSTEM",
    "StimulusSource",
    "Trial",
    "PlanStep",
    "DesignConfig",
    "sources_from_tables",
    "sources_from_folders",
    "sources_from_audio_dir",
    "build_trials",
    "rater_seed",
    "assigned_trials",
    "check_subset_balance",
    "rater_plan",
    "trials_frame",
    "anchor_system_id",
    "multi_pages",
    "originals_in_folder",
    "originals_from_tables",
    "page_labels",
    "CONDITION_LABELS",
    "REFERENCE_LABEL",
    "MAX_CONDITIONS",
]
