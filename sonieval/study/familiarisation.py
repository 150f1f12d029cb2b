"""The familiarisation examples: what "near 1" and "near 5" sound and look like, measured.

Before the first trial a rater sees two example pairs without marking them. The "near 5"
(high) example is a hidden reference: the original itself. The "near 1" (low) example must
*be* far from its original, or the block teaches the wrong end of the scale (a low-pass anchor
of a clip with little energy above the cutoff looks and sounds like its original). So the low
example is the stimulus measured farthest from its original among every sonification and
anchor whose clip has a hidden reference (the anchor only when it is the farthest), and the
high example is that clip's hidden reference.

**Measure**: ``logmel_l1`` (:func:`sonieval.metrics.items.logmel_l1`), the mean absolute
difference of the 64-band log-mel spectrograms at 16 kHz, frame by frame. It is computed on
the study's own (loudness-aligned) files, so a level difference does not count as distance;
the hidden reference measures 0 against its original (the same samples). The measure and both
values are stored with the examples.
"""

from __future__ import annotations

from pathlib import Path

from sonieval.study.design import Trial

MEASURE = "logmel_l1"
_RATE = 16_000  # the rate logmel_l1 compares at


def distance_to_original(trial: Trial, audio_dir: Path) -> float:
    """``logmel_l1`` between a trial's stimulus and its original (study files)."""
    from sonieval.audio import read_audio
    from sonieval.metrics.items import logmel_l1

    stimulus = read_audio(Path(audio_dir) / trial.stimulus_file, _RATE)[0]
    original = read_audio(Path(audio_dir) / trial.original_file, _RATE)[0]
    return logmel_l1(stimulus, original)


def _example(trial: Trial, distance: float) -> dict:
    return {
        "original_file": trial.original_file,
        "stimulus_file": trial.stimulus_file,
        "waveform_file": trial.waveform_file,
        "role": trial.role,
        "measure": MEASURE,
        "distance": round(float(distance), 6),
    }


def choose_examples(trials: list[Trial], audio_dir: Path) -> dict:
    """``{"low": example, "high": example}`` (see the module docstring); ``{}`` without a hidden reference."""
    references = {t.clip_id: t for t in trials if t.role == "reference"}
    candidates = [t for t in trials if t.role in ("sonification", "anchor") and t.clip_id in references]
    if not candidates:
        return {}
    distances = {t.trial_id: distance_to_original(t, audio_dir) for t in candidates}
    # ties (equal distances) go to a sonification, then to the first trial id: deterministic
    low = max(
        sorted(candidates, key=lambda t: t.trial_id), key=lambda t: (distances[t.trial_id], t.role == "sonification")
    )
    high = references[low.clip_id]
    return {
        "low": _example(low, distances[low.trial_id]),
        "high": _example(high, distance_to_original(high, audio_dir)),
    }


__all__ = ["MEASURE", "choose_examples", "distance_to_original"]
