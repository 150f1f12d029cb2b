"""The familiarisation examples: what the two ends of the scale sound and look like, from a clip no one rates.

Before the first page a rater hears two example pairs without marking them: "near the bottom"
is a low anchor (BS.1534's degraded original) and "near the top" the hidden reference (the
original itself), both of **one clip that is not rated** (:func:`spare_clips`: an original the
study has but no system sonified, or a clip outside the study's listening set). So no example
is a rated system's output (which would prime raters against that system), and no example file
or URL reappears on a rating page. The example files are written like every stimulus (the
study's format and loudness, their own names and dither): :meth:`StimulusWriter.familiarisation_files`.

Among a few unrated clips (a seeded choice of at most :data:`CANDIDATES`) the one whose anchor is
farthest from its original is taken: a low-pass anchor of a clip with little energy above the
cutoff sounds like its original and would teach the wrong end of the scale. **Measure**:
``logmel_l1`` (:func:`sonieval.metrics.items.logmel_l1`, 64-band log-mel at 16 kHz, frame by
frame) on the loudness-aligned samples, so a level difference does not count as distance; the
measure and both values are stored with the examples. A study without an unrated clip has no
examples (the creation says so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MEASURE = "logmel_l1"
CANDIDATES = 4
_RATE = 16_000  # the rate logmel_l1 compares at


def distance(a: np.ndarray, b: np.ndarray, rate: int) -> float:
    """``logmel_l1`` of ``a`` against ``b`` (both at ``rate``)."""
    from sonieval.audio import resample
    from sonieval.logmel import logmel_l1

    return logmel_l1(resample(a, rate, _RATE), resample(b, rate, _RATE))


def spare_clips(originals: dict[str, Path], rated: set[str], seed: int) -> dict[str, Path]:
    """At most :data:`CANDIDATES` originals that are not rated, in a seeded order."""
    spare = sorted(c for c in originals if c not in rated)
    order = np.random.default_rng(seed).permutation(len(spare))
    return {spare[i]: originals[spare[i]] for i in order[:CANDIDATES]}


def choose_examples(writer, spare: dict[str, Path], anchor) -> tuple[dict, dict[str, dict]]:
    """``({"low": example, "high": example}, levels by file)`` from the unrated clip whose anchor is
    farthest from its original; ``({}, {})`` without an unrated clip. ``writer``: the study's
    :class:`~sonieval.study.prepare.StimulusWriter`; ``anchor``: its AnchorSettings."""
    from sonieval.audio import read_audio
    from sonieval.loudness import apply_gain, clip_level, measure_stimulus

    rate, far = writer.fmt.sample_rate, {}
    for clip_id, path in spare.items():
        try:
            original = writer.load(path)
        except Exception:  # noqa: BLE001 - an unreadable spare clip is simply not a candidate
            continue
        m = measure_stimulus(original, rate)
        level = clip_level(m, writer.spec)
        low = writer.anchor_of(original, anchor)
        aligned = [apply_gain(x, measure_stimulus(x, rate), writer.spec, level)[0] for x in (low, original)]
        far[clip_id] = distance(*aligned, rate)
    if not far:
        return {}, {}
    clip_id = max(sorted(far), key=lambda c: far[c])
    files = writer.familiarisation_files(clip_id, spare[clip_id], anchor)
    audio = writer.audio_dir
    heard = {part: read_audio(audio / files[part])[0] for part in ("original", "low", "high")}
    examples = {
        end: {
            "original_file": files["original"],
            "stimulus_file": files[end],
            "waveform_file": files[f"{end}_waveform"],
            "role": role,
            "clip_id": clip_id,
            "measure": MEASURE,
            "distance": round(distance(heard[end], heard["original"], rate), 6),
        }
        for end, role in (("low", "anchor"), ("high", "reference"))
    }
    return examples, files["levels"]


__all__ = ["MEASURE", "CANDIDATES", "choose_examples", "spare_clips", "distance"]
