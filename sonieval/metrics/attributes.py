"""What is kept: acoustic attributes of a decoded sonification measured against its own original.

These per-item measures do not look at the encoder or the gate: they ask which attributes of the
original sound survive in what a listener hears. Both clips are read at 16 kHz
(:data:`sonieval.audio.ENCODER_RATE`), the sonification fitted (padded or trimmed) to the original's
length, and analysed on one frame grid (10 ms hop, centred frames; pitch every 20 ms), so frame j of
the sonification is frame j of the original.

- Pitch (``raw_pitch_accuracy``, ``raw_chroma_accuracy``, ``voicing_recall``, ``voicing_false_alarm``):
  f0 by pYIN (Mauch & Dixon, ICASSP 2014; ``librosa.pyin``; not CREPE, so a CREPE encoder is not judged
  by itself), 64 ms frames every 20 ms, C2-C7 (65.4-2093 Hz), pitch bins of 0.2 semitone (the default
  0.1 costs several times more, bench/bench_measures.py, for a 50-cent tolerance that 20-cent bins
  resolve). The 20 ms hop (MIREX's melody hop is 10 ms) halves pYIN's cost, nearly all of which is its
  Viterbi pass over every frame: it is the costliest measure of a protocol's score stage.
  The MIREX melody definitions (Salamon et al., IEEE SPM 2014; ``mir_eval.melody``): raw pitch
  accuracy = share of the original's voiced frames where the sonification's f0 (pYIN's best guess
  in every frame, whatever its voicing decision) lies within 50 cents; chroma accuracy the same with
  octave errors forgiven; voicing recall and false-alarm rate from the two voicing decisions.
- Loudness (``loudness_correlation``): Pearson r of the two dB RMS envelopes (64 ms windows every
  10 ms), each floored 60 dB below its own loudest frame (level-invariant: a quiet sonification that
  rises and falls with the original scores high).
- Spectral envelope (``mfcc_correlation``): Pearson r of MFCC 1-12 (40 mel bands to 8 kHz; c0, the
  level, left out) over the frames where the original sounds (within 40 dB of its loudest), each
  coefficient centred over time: whether the envelope changes with the original's.
- Brightness (``centroid_distance``): mean |log2| ratio of the spectral centroids (octaves) on the
  original's sounding frames.
- Onsets (``onset_f1``): librosa's onset detector on each clip, F-measure of the sonification's onsets
  against the original's within ±50 ms (``mir_eval.onset.f_measure``, MIREX onset detection).

A measure that is not defined for a clip raises :class:`~sonieval.measures.ItemScoreError` with the
reason (fewer than 100 ms of voiced frames in the original, no onsets, a silent clip, a constant envelope): the score
stage records it and leaves the clip out. mir_eval returns 0 in those cases, so the checks come first.

Analyses are memoised by the samples' content (a bounded cache per role): the four pitch measures share
one pYIN pass per clip, and an original is analysed once for all the systems scored in one process.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from sonieval.audio import ENCODER_RATE, fit_length
from sonieval.measures import ItemScoreError, item_measure

__all__ = [
    "PitchTrack",
    "centroid_distance",
    "forget_analyses",
    "loudness_correlation",
    "mfcc_correlation",
    "onset_f1",
    "onset_times",
    "pitch_track",
    "raw_chroma_accuracy",
    "raw_pitch_accuracy",
    "voicing_false_alarm",
    "voicing_recall",
]

RATE = ENCODER_RATE
HOP = 160  # 10 ms: envelopes, spectra, onsets
PITCH_HOP = 320  # 20 ms: pYIN (see the module docstring)
FRAME = 1024  # 64 ms: two periods of the lowest f0 tracked
FMIN, FMAX = 65.41, 2093.0  # C2 to C7
PYIN_RESOLUTION = 0.2  # semitones per pitch bin (bench/bench_measures.py compares 0.1)
CENT_TOLERANCE = 50.0
ONSET_WINDOW = 0.05  # seconds
SOUNDING_DB = 40.0  # a frame of the original "sounds" when within this of its loudest frame
LOUDNESS_RANGE_DB = 60.0
N_MFCC, MFCC_BANDS = 13, 40
MIN_FRAMES = 3
# pitch needs this many voiced (or, for false alarms, unvoiced) frames of the original: 100 ms; fewer make
# the share of a few frames (a knock's one "voiced" frame scores 0 or 1 by chance)
MIN_PITCH_FRAMES = 5  # x 20 ms


class _Memo:
    """A bounded least-recently-used store of analyses keyed by (kind, content of the samples)."""

    def __init__(self, size: int):
        self.size = size
        self._store: OrderedDict = OrderedDict()

    def get(self, kind: str, audio: np.ndarray, compute: Callable):
        key = (kind, audio.shape[0], hashlib.blake2b(audio.tobytes(), digest_size=16).hexdigest())
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        value = compute(audio)
        self._store[key] = value
        if len(self._store) > self.size:
            self._store.popitem(last=False)
        return value


# originals are shared by every system scored (one per clip); a sonification is analysed for the
# measures of one item in a row
_ORIGINALS, _EVALUATED = _Memo(1024), _Memo(8)


def forget_analyses() -> None:
    """Empty the memo of analyses (benchmarks time a measure from cold)."""
    _ORIGINALS._store.clear()
    _EVALUATED._store.clear()


def _pair(evaluated: np.ndarray, original: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    orig = np.ascontiguousarray(original, dtype=np.float32)
    ev, _ = fit_length(np.ascontiguousarray(evaluated, dtype=np.float32), len(orig))
    return np.ascontiguousarray(ev), orig


def _both(kind: str, compute: Callable, evaluated: np.ndarray, original: np.ndarray):
    ev, orig = _pair(evaluated, original)
    return _EVALUATED.get(kind, ev, compute), _ORIGINALS.get(kind, orig, compute)


# --------------------------------------------------------------------------- pitch


class PitchTrack:
    """pYIN's f0 (Hz, its best guess in every frame) and voicing decision (bool) per 20 ms frame."""

    def __init__(self, f0: np.ndarray, voiced: np.ndarray):
        self.f0, self.voiced = f0, voiced

    def cents(self) -> np.ndarray:
        import mir_eval

        f0 = np.where(np.isfinite(self.f0), self.f0, 0.0)
        return mir_eval.melody.hz2cents(f0)


def pitch_track(audio: np.ndarray) -> PitchTrack:
    import librosa

    x = np.asarray(audio, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns on frames shorter than two periods of fmin
        f0, voiced, _ = librosa.pyin(
            x,
            fmin=FMIN,
            fmax=FMAX,
            sr=RATE,
            frame_length=FRAME,
            hop_length=PITCH_HOP,
            resolution=PYIN_RESOLUTION,
            fill_na=None,  # the best guess in unvoiced frames: MIREX raw accuracies ignore voicing
        )
    return PitchTrack(np.asarray(f0, float), np.asarray(voiced, bool))


def _pitch(evaluated: np.ndarray, original: np.ndarray, name: str, need: str):
    """(ref voicing, ref cents, est voicing, est cents) on one frame grid; undefined when the original has
    fewer than :data:`MIN_PITCH_FRAMES` voiced (``need='voiced'``) or unvoiced (``need='unvoiced'``) frames."""
    est, ref = _both("pitch", pitch_track, evaluated, original)
    n_voiced = int(ref.voiced.sum())
    if need == "voiced" and n_voiced < MIN_PITCH_FRAMES:
        raise ItemScoreError(
            f"{name}: the original has {n_voiced} voiced frames (pYIN; fewer than {MIN_PITCH_FRAMES}, 100 ms); "
            "pitch is undefined for this clip"
        )
    if need == "unvoiced" and ref.voiced.size - n_voiced < MIN_PITCH_FRAMES:
        raise ItemScoreError(
            f"{name}: the original has fewer than {MIN_PITCH_FRAMES} unvoiced frames (pYIN); false alarms are undefined"
        )
    return ref.voiced.astype(float), ref.cents(), est.voiced.astype(float), est.cents()


def _melody(function: str, *args, **kwargs) -> float:
    """A ``mir_eval.melody`` measure; its warnings (e.g. "no voiced frames" in the sonification, where the
    measure is defined and 0) are not the user's business: undefined cases were refused before."""
    import mir_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(getattr(mir_eval.melody, function)(*args, **kwargs))


@item_measure("raw_pitch_accuracy")
def raw_pitch_accuracy(evaluated: np.ndarray, original: np.ndarray) -> float:
    ref_v, ref_c, est_v, est_c = _pitch(evaluated, original, "raw_pitch_accuracy", "voiced")
    return _melody("raw_pitch_accuracy", ref_v, ref_c, est_v, est_c, cent_tolerance=CENT_TOLERANCE)


@item_measure("raw_chroma_accuracy")
def raw_chroma_accuracy(evaluated: np.ndarray, original: np.ndarray) -> float:
    ref_v, ref_c, est_v, est_c = _pitch(evaluated, original, "raw_chroma_accuracy", "voiced")
    return _melody("raw_chroma_accuracy", ref_v, ref_c, est_v, est_c, cent_tolerance=CENT_TOLERANCE)


@item_measure("voicing_recall")
def voicing_recall(evaluated: np.ndarray, original: np.ndarray) -> float:
    ref_v, _, est_v, _ = _pitch(evaluated, original, "voicing_recall", "voiced")
    return _melody("voicing_recall", ref_v, est_v)


@item_measure("voicing_false_alarm")
def voicing_false_alarm(evaluated: np.ndarray, original: np.ndarray) -> float:
    ref_v, _, est_v, _ = _pitch(evaluated, original, "voicing_false_alarm", "unvoiced")
    return _melody("voicing_false_alarm", ref_v, est_v)


# --------------------------------------------------------------------------- loudness and spectrum


class _Spectral:
    """One clip's frame-wise dB RMS, MFCC 1-12 and spectral centroid on the shared grid."""

    def __init__(self, audio: np.ndarray):
        import librosa

        x = np.asarray(audio, dtype=np.float32)
        rms = librosa.feature.rms(y=x, frame_length=FRAME, hop_length=HOP, center=True)[0].astype(float)
        self.silent = not np.any(rms > 0)
        self.db = 20 * np.log10(np.maximum(rms, 1e-10))
        mfcc = librosa.feature.mfcc(
            y=x, sr=RATE, n_mfcc=N_MFCC, n_fft=FRAME, hop_length=HOP, n_mels=MFCC_BANDS, fmax=RATE / 2
        )
        self.mfcc = mfcc[1:N_MFCC].astype(float)
        self.centroid = librosa.feature.spectral_centroid(y=x, sr=RATE, n_fft=FRAME, hop_length=HOP)[0].astype(float)

    def sounding(self) -> np.ndarray:
        return self.db >= self.db.max() - SOUNDING_DB


def _spectral(evaluated: np.ndarray, original: np.ndarray, name: str) -> tuple[_Spectral, _Spectral]:
    ev, orig = _both("spectral", _Spectral, evaluated, original)
    if orig.silent:
        raise ItemScoreError(f"{name}: the original is silent; the measure is undefined for this clip")
    return ev, orig


def _pearson(a: np.ndarray, b: np.ndarray, name: str, what: str) -> float:
    """Pearson r of two centred arrays; undefined when either does not vary."""
    na, nb = float(np.sum(a * a)), float(np.sum(b * b))
    if nb == 0.0:
        raise ItemScoreError(f"{name}: the original's {what} is constant; correlation is undefined")
    if na == 0.0:
        raise ItemScoreError(f"{name}: the sonification's {what} is constant (silent?); correlation is undefined")
    return float(np.clip(np.sum(a * b) / np.sqrt(na * nb), -1.0, 1.0))


@item_measure("loudness_correlation")
def loudness_correlation(evaluated: np.ndarray, original: np.ndarray) -> float:
    ev, orig = _spectral(evaluated, original, "loudness_correlation")
    a, b = (np.maximum(s.db, s.db.max() - LOUDNESS_RANGE_DB) for s in (ev, orig))
    return _pearson(a - a.mean(), b - b.mean(), "loudness_correlation", "loudness envelope")


@item_measure("mfcc_correlation")
def mfcc_correlation(evaluated: np.ndarray, original: np.ndarray) -> float:
    ev, orig = _spectral(evaluated, original, "mfcc_correlation")
    frames = orig.sounding()
    if frames.sum() < MIN_FRAMES:
        raise ItemScoreError(f"mfcc_correlation: the original sounds in fewer than {MIN_FRAMES} frames")
    a, b = ev.mfcc[:, frames], orig.mfcc[:, frames]
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return _pearson(a, b, "mfcc_correlation", "spectral envelope (MFCC 1-12)")


@item_measure("centroid_distance")
def centroid_distance(evaluated: np.ndarray, original: np.ndarray) -> float:
    ev, orig = _spectral(evaluated, original, "centroid_distance")
    # a frame of digital silence has no centroid (librosa gives 0): left out with the frames where the original is quiet
    frames = orig.sounding() & (ev.centroid > 0) & (orig.centroid > 0)
    if frames.sum() < MIN_FRAMES:
        raise ItemScoreError(
            f"centroid_distance: fewer than {MIN_FRAMES} frames where the original sounds and the sonification is not silent"
        )
    return float(np.mean(np.abs(np.log2(ev.centroid[frames] / orig.centroid[frames]))))


# --------------------------------------------------------------------------- onsets


def onset_times(audio: np.ndarray) -> np.ndarray:
    """Onset times (s) by librosa's spectral-flux detector with its default peak picking, 10 ms hop."""
    import librosa

    x = np.asarray(audio, dtype=np.float32)
    if not np.any(x):
        return np.zeros(0)
    return np.asarray(librosa.onset.onset_detect(y=x, sr=RATE, hop_length=HOP, units="time"), float)


@item_measure("onset_f1")
def onset_f1(evaluated: np.ndarray, original: np.ndarray) -> float:
    import mir_eval

    est, ref = _both("onsets", onset_times, evaluated, original)
    if ref.size == 0:
        raise ItemScoreError("onset_f1: no onsets detected in the original; the onset F-measure is undefined")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns when the sonification has no onsets: F = 0 then, as defined
        return float(mir_eval.onset.f_measure(ref, est, window=ONSET_WINDOW)[0])
