"""A seeded, clearly labelled synthetic clip set in the official ESC-50 layout, large and varied enough to learn from.

Used by the demo and the tests when no ESC-50 copy is given (``data.esc50: auto`` without
``$SONIEVAL_ESC50``, or ``data.esc50: synthetic``). It is *not* ESC-50: every category is named
``synthetic_*``, the folder holds a ``SYNTHETIC.txt`` marker, and :func:`sonieval.data.esc50.open_esc50`
labels it ``SYNTHETIC`` so every output downstream can say so.

Why it looks like this (measured on the demo, issue 19). The former set (40 clips of 5 kinds: steady
tones, chirps, noise bursts, clicks and AM tones, each alone in digital silence) taught the gates
nothing: 30 training clips are 2 optimiser steps per epoch (the same generator at 400 clips reaches
validation R² 0.55); its pure tones sit on a bare floor, so the codec's own reconstruction of a tone is
4-6 log-mel units from it (of a noise burst 0.1) and the ceiling ranked below the controls; and with
30 % of its log-mel bins at the codec's floor the mean latent, which untrained gates decode, came out at
-80 dBFS, too quiet for the study to align. This set has many clips of many kinds, a noise floor under
every clip (no band at the codec's floor) and realistic levels:

- 10 classes x 40 clips (5 folds of 8 per class, as ESC-50), 5 s mono at 44.1 kHz, 16-bit PCM;
- pitched sounds with a known f0 contour (glides, vibrato, steps on a scale, an engine's drone,
  whistled syllables, a voice in a mixture) and varied spectral envelopes (sawtooth, square or pulse
  sources with breath noise under formants and tilts); inharmonic struck sounds; noise events with
  envelopes and band shapes; click trains; wind, rain and surf; a voice over a background;
- RMS drawn per clip from -30 to -15 dBFS (lower only where the peak would pass -1 dBFS), sample peaks
  at or below -1 dBFS; a pink-ish noise floor at -50 dBFS RMS under every clip; in 70 % of the clips
  the sound starts late or ends early, the noise floor alone around it;
- ``meta/synthetic_f0.parquet``: the ground truth f0 of every pitched clip on the mel codec's frame
  centres (frame j at sample j * 512), columns :data:`F0_COLUMNS`; read it with :func:`read_synthetic_f0`.

Same bytes on every machine: every clip is rounded to 16 bits, and what is summed into an oscillator's
phase (a frequency curve, where a last-bit difference would grow over 220,500 samples) is computed at
a control rate (every 32 samples) with IEEE-exact operations only (+, -, *, /, floor), then upsampled
linearly: numpy's ``exp`` and ``sin`` run CPU-specific SIMD code whose last bits differ between
machines and numpy versions (measured here: AVX-512 against AVX2), so :func:`_exp2` and :func:`_sin2pi`
are polynomials written here. Elsewhere (envelopes, spectral gains, the FFT) a last-bit difference
stays a last-bit difference of one sample and vanishes in the 16-bit rounding. Random draws come from
``numpy.random.Generator`` (PCG64), uniform draws only (its normal sampler calls ``log``). Clip ``i`` of
class ``c`` depends on ``(seed, c, i)`` alone, so one clip can be made without the others
(:func:`synthesize_clip`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sonieval.audio import CODEC_RATE, write_wav
from sonieval.files import write_text_atomic

__all__ = [
    "F0_COLUMNS",
    "F0_FILENAME",
    "PITCHED_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_MARKER",
    "SyntheticClip",
    "make_synthetic_esc50",
    "read_synthetic_f0",
    "synthesize_clip",
]

SYNTHETIC_MARKER = "SYNTHETIC.txt"
F0_FILENAME = "synthetic_f0.parquet"  # under meta/
# filename; frame j (the mel codec's frame centred at sample j * 512); its time in s; f0_hz, the pitched
# component's frequency there; voiced: whether that component sounds (within 20 dB of its own peak)
F0_COLUMNS = ("filename", "frame", "time_s", "f0_hz", "voiced")
F0_HOP = 512
GENERATOR = "2"  # recorded in the marker: a folder made by another generator is made again
PCM_SCALE = 32767  # libsndfile's float -> PCM_16 factor: a sample k / 32767 is written as k exactly
RMS_DBFS = (-30.0, -15.0)
PEAK_DBFS = -1.0
BED_DBFS = -50.0  # RMS of the noise floor under every clip (a recording's noise floor: pink-ish, -4.5 dB per octave)
ACTIVE_SHARE = 0.7  # clips whose sound starts late or ends early, the noise floor alone around it
VOICED_BELOW_PEAK = 0.1  # -20 dB: where a pitched component counts as sounding
CONTROL = 32  # samples between control points (1378 Hz at 44.1 kHz)
# src_file ids far above the official ones (< 600000) so they can never be mistaken for ESC-50's.
_SRC_BASE = 900_000


# ----------------------------------------------------------------------------- exact functions


def _exp2(x) -> np.ndarray:
    """2**x with IEEE-exact operations only: x = k + f, e**(f ln 2) by its Taylor polynomial (rel. err. < 1e-13)."""
    x = np.asarray(x, dtype=np.float64)
    k = np.floor(x)
    f = (x - k) * 0.6931471805599453
    p = np.full_like(f, _EXP_TAYLOR[0])
    for c in _EXP_TAYLOR[1:]:
        p = p * f + c
    return np.ldexp(p * f + 1.0, k.astype(np.int64))


def _sin2pi(cycles) -> np.ndarray:
    """sin(2 pi x) with IEEE-exact operations only: reduced to a quarter period, odd Taylor series to x**17."""
    r = np.asarray(cycles, dtype=np.float64)
    r = r - np.floor(r + 0.5)  # [-0.5, 0.5)
    r = np.where(r > 0.25, 0.5 - r, np.where(r < -0.25, -0.5 - r, r)) * 6.283185307179586  # |r| <= pi/2
    r2 = r * r
    p = np.full_like(r, _SIN_TAYLOR[0])
    for c in _SIN_TAYLOR[1:]:
        p = p * r2 + c
    return r * (p * r2 + 1.0)


def _factorial(k: int) -> float:
    return float(np.prod(np.arange(1, k + 1, dtype=np.float64)))


_EXP_TAYLOR = tuple(1.0 / _factorial(k) for k in range(13, 0, -1))  # 1/13!, 1/12!, ..., 1/1!
_SIN_TAYLOR = tuple((-1.0) ** k / _factorial(2 * k + 1) for k in range(8, 0, -1))  # 1/17!, -1/15!, ..., -1/3!


def _db(x: float) -> float:
    """A level in dB as a linear factor."""
    return float(_exp2(x / 20.0 * 3.321928094887362))


def _midi_hz(midi: np.ndarray) -> np.ndarray:
    return 440.0 * _exp2((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


# ----------------------------------------------------------------------------- control curves
# Curves that shape a sound over time (pitch, envelopes) are computed on control points every
# CONTROL samples (``_points(n)``) and upsampled linearly to the sample rate (``_up``).


def _points(n: int) -> np.ndarray:
    """Sample positions of the control points of a clip of n samples (the last one at or after n - 1)."""
    return np.arange(-(-n // CONTROL) + 1, dtype=np.float64) * CONTROL


def _up(curve: np.ndarray, n: int) -> np.ndarray:
    """A control curve at the sample rate, joined linearly (exact operations: np.interp may fuse a
    multiply-add on some CPUs)."""
    return (curve[:-1, None] + np.diff(curve)[:, None] * _FRACTIONS).reshape(-1)[:n]


_FRACTIONS = np.arange(CONTROL) / CONTROL


def _interp(knots, values, at: np.ndarray) -> np.ndarray:
    """The piecewise-linear curve through (knot, value) pairs at positions ``at``, flat beyond the ends."""
    xs = np.asarray(knots, dtype=np.float64)
    ys = np.asarray(values, dtype=np.float64)
    seg = np.clip(np.searchsorted(xs, at, side="right") - 1, 0, len(xs) - 2)
    w = np.clip((at - xs[seg]) / np.maximum(xs[seg + 1] - xs[seg], 1.0), 0.0, 1.0)
    return ys[seg] + (ys[seg + 1] - ys[seg]) * w


def _steps(onsets, values, at: np.ndarray) -> np.ndarray:
    """The step curve ``values[j]`` from ``onsets[j]`` on (``values[0]`` before the first) at positions ``at``."""
    j = np.searchsorted(np.asarray(onsets, dtype=np.float64), at, side="right") - 1
    return np.asarray(values, dtype=np.float64)[np.clip(j, 0, len(values) - 1)]


def _smooth_random(rng: np.random.Generator, at: np.ndarray, every: float, lo: float, hi: float) -> np.ndarray:
    """A slowly varying random curve: uniform values at knots ``every`` samples apart, joined linearly."""
    k = max(2, int(at[-1] / every) + 2)
    return _interp(np.linspace(0.0, at[-1], k), rng.uniform(lo, hi, k), at)


def _trapezoids(at: np.ndarray, starts, ends, attack: float, release: float) -> np.ndarray:
    """Sum of trapezoids: a linear attack from each start, a linear release ending at each end (samples)."""
    env = np.zeros(at.size)
    for s, e in zip(starts, ends, strict=True):
        env += np.clip((at - s) / max(attack, 1.0), 0.0, 1.0) * np.clip((e - at) / max(release, 1.0), 0.0, 1.0)
    return env


def _decays(at: np.ndarray, onsets, amps, half_life: float) -> np.ndarray:
    """Sum over onsets s_j of a_j * 2**(-(t - s_j) / h) for t >= s_j (h in samples): between two onsets
    that is 2**(-(t - s_j) / h) * C_j with C_j = a_j + C_(j-1) * 2**(-(s_j - s_(j-1)) / h)."""
    onsets = np.asarray(onsets, dtype=np.float64)
    c = np.zeros(len(onsets))
    for j, a in enumerate(amps):
        c[j] = a + (c[j - 1] * 2.0 ** (-(onsets[j] - onsets[j - 1]) / half_life) if j else 0.0)
    since = at - _steps(onsets, onsets, at)
    return np.where(since >= 0, np.exp2(-np.maximum(since, 0.0) / half_life) * _steps(onsets, c, at), 0.0)


# ----------------------------------------------------------------------------- sources and filters


def _phase(f_hz: np.ndarray, rate: int) -> np.ndarray:
    """Oscillator phase in cycles, in [0, 1): the running sum of f / rate (summed in order, the same everywhere)."""
    p = np.cumsum(f_hz / rate)
    return p - np.floor(p)


def _saw(p: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """A band-limited sawtooth at phase p (cycles) and phase step dt: the naive ramp less the polyBLEP
    residual at each wrap (Valimaki & Huovilainen, IEEE Signal Processing Magazine 2007)."""
    out = 2.0 * p - 1.0
    i = np.nonzero(p < dt)[0]
    a = p[i] / dt[i]
    out[i] -= a + a - a * a - 1.0
    i = np.nonzero(p > 1.0 - dt)[0]
    b = (p[i] - 1.0) / dt[i]
    out[i] -= b * b + b + b + 1.0
    return out


def _harmonic(f_hz: np.ndarray, rate: int, width: float) -> np.ndarray:
    """A band-limited pulse wave of duty ``width`` following ``f_hz`` (width 0: a sawtooth, every
    harmonic at 1/k; 0.5: a square, odd harmonics only; in between: notches in the harmonic series)."""
    p = _phase(f_hz, rate)
    dt = np.minimum(f_hz / rate, 0.5)
    if width <= 0.0:
        return _saw(p, dt)
    q = p + width
    return 0.5 * (_saw(p, dt) - _saw(q - np.floor(q), dt))


Gain = Callable[[np.ndarray], np.ndarray]  # a magnitude response: frequencies (Hz) -> linear gains


def _filter(x: np.ndarray, rate: int, gain: Gain) -> np.ndarray:
    """``x`` through a zero-phase magnitude response (one FFT of the whole signal; DC removed)."""
    spectrum = np.fft.rfft(x)
    g = gain(np.maximum(np.arange(spectrum.size) * (rate / x.size), 1.0))
    g[0] = 0.0
    return np.fft.irfft(spectrum * g, n=x.size)


_BLOCK = 4096  # coloured noise is made in blocks of 93 ms overlapped by half (10.8 Hz resolution)
_HALF_SINE = np.sin(np.pi * (np.arange(_BLOCK) + 0.5) / _BLOCK)


def _noise(rng: np.random.Generator, n: int, rate: int, gain: Gain) -> np.ndarray:
    """Stationary noise of magnitude spectrum ``gain``, unit RMS: random spectra of 4096-sample blocks
    (uniform real and imaginary parts), shaped, inverted in one batched FFT and overlap-added by half
    under power-complementary sine windows, so the variance is constant. Cheaper than filtering white
    noise: no forward FFT, and short FFTs."""
    hop = _BLOCK // 2
    k = -(-n // hop) + 1
    g = gain(np.maximum(np.arange(hop + 1) * (rate / _BLOCK), 1.0))
    g[0] = 0.0
    spectra = (rng.random((k, hop + 1, 2)) - 0.5).view(np.complex128)[..., 0]
    blocks = np.fft.irfft(spectra * g, n=_BLOCK, axis=1)
    blocks *= _HALF_SINE
    return _unit_rms((blocks[:-1, hop:] + blocks[1:, :hop]).reshape(-1)[:n])


def _unit_rms(x: np.ndarray) -> np.ndarray:
    r = float(np.sqrt(np.mean(x * x)))
    return x / r if r > 0 else x


def _tilt(db_per_octave: float, ref: float = 1000.0, low_cut: float = 40.0) -> Gain:
    """A spectral slope through 0 dB at ``ref``, falling 12 dB per octave below ``low_cut``."""
    return lambda hz: (hz / ref) ** (db_per_octave / 6.0206) * np.minimum(1.0, hz / low_cut) ** 2


def _band(centre: float, octaves: float) -> Gain:
    """A bump on a log-frequency axis: 0 dB at ``centre``, -12 dB at +-``octaves``/2 (Gaussian in octaves)."""
    return lambda hz: 10.0 ** (-0.6 * (np.log2(hz / centre) / (octaves / 2.0)) ** 2)


def _lowpass(cutoff: float) -> Gain:
    return lambda hz: 1.0 / np.sqrt(1.0 + (hz / cutoff) ** 2)


def _formants(rng: np.random.Generator) -> Gain:
    """A spectral envelope: 1-3 resonances of 3-18 dB (vowel-like with 2-3) on a tilt of -3 to -12 dB
    per octave above 300 Hz."""
    slope = rng.uniform(-12.0, -3.0)
    peaks = [(rng.uniform(250, 900), rng.uniform(0.3, 0.9), rng.uniform(6, 18))]
    peaks += [(rng.uniform(900, 3200), rng.uniform(0.3, 0.9), rng.uniform(3, 15)) for _ in range(rng.integers(0, 3))]

    def gain(hz: np.ndarray) -> np.ndarray:
        octave = np.log2(hz)
        db = slope * (octave - np.log2(300.0)) + 40.0 * np.log10(np.minimum(1.0, hz / 60.0))
        g = 10.0 ** (db / 20.0)
        for centre, width, boost in peaks:
            bump = 10.0 ** (-0.6 * ((octave - np.log2(centre)) / (width / 2.0)) ** 2)
            g *= 1.0 + (10.0 ** (boost / 20.0) - 1.0) * bump
        return g

    return gain


@dataclass
class _Voice:
    """A pitched component: its samples, and its frequency and amplitude envelope per sample."""

    audio: np.ndarray
    f0: np.ndarray
    envelope: np.ndarray


def _voice(midi: np.ndarray, env: np.ndarray, rng: np.random.Generator, n: int, rate: int) -> _Voice:
    """A harmonic tone with a random timbre (a sawtooth, square or pulse source with 12-30 dB of breath
    noise under it, through formants) following the control curves ``midi`` (pitch) and ``env`` (amplitude)."""
    width = (0.0, 0.0, 0.5, rng.uniform(0.08, 0.4))[int(rng.integers(0, 4))]
    f, amp = _up(_midi_hz(midi), n), _up(env, n)
    source = _unit_rms(_harmonic(f, rate, width)) + _db(-rng.uniform(12.0, 30.0)) * _white(rng, n)
    return _Voice(_filter(source * amp, rate, _formants(rng)), f, amp)


def _white(rng: np.random.Generator, n: int) -> np.ndarray:
    """White noise of unit RMS from uniform draws."""
    return (rng.random(n) - 0.5) * 3.4641016151377544


# ----------------------------------------------------------------------------- the classes
# Each takes (rng, n, rate) and returns (samples before the noise bed and the level, the pitched
# component or None). Times are drawn as fractions of the clip, so a short clip holds the same kinds.


def _phrases(rng, n):
    """One sounding phrase, or two with a gap between them: (starts, ends) in samples."""
    if rng.random() < 0.5:
        return [rng.uniform(0.0, 0.1) * n], [rng.uniform(0.85, 1.0) * n]
    gap = np.sort(rng.uniform(0.3, 0.7, 2)) * n
    return [rng.uniform(0.0, 0.1) * n, gap[1]], [gap[0], rng.uniform(0.85, 1.0) * n]


def _glide(rng, n, rate):
    """A harmonic tone gliding between 2-5 notes (110-880 Hz): holds joined by portamentos."""
    at = _points(n)
    k = int(rng.integers(2, 6))
    bounds = np.sort(rng.uniform(0.03, 0.97, 2 * k)) * n  # note j held from bounds[2j] to bounds[2j + 1]
    midi = _interp(bounds, np.repeat(rng.uniform(45.0, 81.0, k), 2), at)
    env = _trapezoids(at, *_phrases(rng, n), rng.uniform(0.02, 0.2) * rate, rng.uniform(0.05, 0.4) * rate)
    v = _voice(midi, env, rng, n, rate)
    return v.audio, v


def _vibrato(rng, n, rate):
    """1-3 sung-like notes (130-780 Hz) with vibrato (4-7 Hz, 20-100 cents, growing in over 0.4 s)."""
    at = _points(n)
    k = int(rng.integers(1, 4))
    cuts = np.sort(rng.uniform(0.1, 0.9, k - 1)) * n
    starts = np.concatenate([[rng.uniform(0.0, 0.08) * n], cuts + rng.uniform(0.03, 0.15, k - 1) * rate])
    ends = np.concatenate([cuts, [rng.uniform(0.9, 1.0) * n]])
    grow = np.clip((at - _steps(starts, starts, at)) / (0.4 * rate), 0.0, 1.0)
    lfo = rng.uniform(0.2, 1.0) * grow * _sin2pi(rng.uniform(4.0, 7.0) * at / rate + rng.random())
    midi = _steps(starts, rng.uniform(48.0, 79.0, k), at) + lfo
    env = _trapezoids(at, starts, ends, rng.uniform(0.04, 0.2) * rate, rng.uniform(0.08, 0.3) * rate)
    v = _voice(midi, env, rng, n, rate)
    return v.audio, v


_SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9))  # major, minor, pentatonic


def _melody(rng, n, rate):
    """4-12 plucked notes stepping on a scale (82-1047 Hz), each a 4 ms attack and an exponential decay
    (half-life 50-500 ms), damped when the next one starts."""
    at = _points(n)
    scale = _SCALES[int(rng.integers(0, len(_SCALES)))]
    slots = np.arange(0.02 * n, 0.92 * n, max(1.0, 0.06 * rate))
    onsets = np.sort(rng.choice(slots, min(int(rng.integers(4, 13)), len(slots)), replace=False))
    degrees = np.cumsum(rng.integers(-2, 3, len(onsets))) + int(rng.integers(0, len(scale)))
    root = int(rng.integers(45, 67))
    midi = np.clip([root + 12 * (d // len(scale)) + scale[d % len(scale)] for d in degrees], 40, 84)
    since = at - _steps(onsets, onsets, at)
    env = np.where(since >= 0, np.minimum(since / (0.004 * rate), 1.0), 0.0)
    env *= np.exp2(-np.maximum(since, 0.0) / (rng.uniform(0.05, 0.5) * rate))
    env *= np.clip((_steps(onsets, np.append(onsets[1:], n), at) - at) / (0.01 * rate), 0.0, 1.0)
    v = _voice(_steps(onsets, midi, at), env, rng, n, rate)
    return v.audio, v


def _engine(rng, n, rate):
    """A low drone (65-165 Hz) whose f0 drifts with the engine's speed: a narrow pulse wave, lowpassed,
    with mechanical noise; it may stop and start again within the clip."""
    at = _points(n)
    f = _up(_midi_hz(_smooth_random(rng, at, rng.uniform(0.8, 3.0) * rate, 36.0, 52.0)), n)
    env = _trapezoids(at, *_phrases(rng, n), rng.uniform(0.1, 0.6) * rate, rng.uniform(0.1, 0.6) * rate)
    env = _up(env * _smooth_random(rng, at, 0.5 * rate, 0.6, 1.0), n)
    tone = _unit_rms(_filter(_harmonic(f, rate, rng.uniform(0.04, 0.2)), rate, _lowpass(rng.uniform(300, 2500))))
    noise = _noise(rng, n, rate, _band(rng.uniform(200, 1500), rng.uniform(1.0, 3.0)))
    return (tone + _db(-rng.uniform(8, 20)) * noise) * env, _Voice(tone * env, f, env)


def _birdsong(rng, n, rate):
    """A motif of 1-3 whistled syllables (sweeps of 40-250 ms between 0.47 and 2.8 kHz, a weak second
    harmonic) repeated after pauses of 0.2-0.8 s."""
    motif = [
        (rng.uniform(0.04, 0.25), rng.uniform(72.0, 99.0), rng.uniform(-12.0, 12.0)) for _ in range(rng.integers(1, 4))
    ]
    onsets, durs, knots, values = [], [], [], []
    t = rng.uniform(0.0, 0.2) * n
    while t < n:
        for dur, start, sweep in motif:
            d = dur * rate * rng.uniform(0.9, 1.1)
            if t + d < n:
                onsets.append(t)
                durs.append(d)
                knots += [t, t + d]
                values += [start, float(np.clip(start + sweep, 70.0, 101.0))]
            t += d + rng.uniform(0.02, 0.12) * rate
        t += rng.uniform(0.2, 0.8) * rate
    if not onsets:  # a clip shorter than the first syllable: one syllable that fills it
        onsets, durs, knots, values = [0.0], [float(n)], [0.0, float(n)], [motif[0][1]] * 2
    at = _points(n)
    f = _up(_midi_hz(_interp(knots, values, at)), n)
    u = np.clip((at - _steps(onsets, onsets, at)) / _steps(onsets, durs, at), 0.0, 1.0)
    env = _up(np.where(at >= onsets[0], np.sin(np.pi * u) ** 2, 0.0), n)  # a raised cosine per syllable
    p = 2 * np.pi * _phase(f, rate)
    tone = (np.sin(p) + _db(-rng.uniform(15, 35)) * np.sin(2 * p)) * env
    return tone, _Voice(tone, f, env)


_PARTIAL_RATIOS = (
    (1.0, 2.756, 5.404, 8.933, 13.34),  # a free bar
    (1.0, 1.183, 1.506, 2.0, 2.514, 2.662, 3.011),  # a bell
    (1.0, 1.594, 2.136, 2.296, 2.653, 2.918),  # a membrane
)


def _struck(rng, n, rate):
    """1-6 strikes of an inharmonic resonator (a bar, bell, membrane or random partials; 150-1200 Hz):
    every partial rings from each strike, high partials decaying faster, after a short noise transient."""
    pick = int(rng.integers(0, len(_PARTIAL_RATIOS) + 1))
    ratios = _PARTIAL_RATIOS[pick] if pick < len(_PARTIAL_RATIOS) else np.sort(rng.uniform(1.0, 6.0, 5))
    base = 150.0 * _db(rng.uniform(0.0, 18.0))
    onsets = np.sort(rng.uniform(0.0, 0.8, int(rng.integers(1, 7)))) * n
    amps = rng.uniform(0.4, 1.0, len(onsets))
    half = rng.uniform(0.1, 1.2) * rate
    at, i = _points(n), np.arange(n, dtype=np.float64)
    out = np.zeros(n)
    for j, r in enumerate(ratios):
        if base * r < 0.4 * rate:
            ring = _up(_decays(at, onsets, amps, half / r**0.7), n)
            out += rng.uniform(0.3, 1.0) / (1 + j) * ring * np.sin(2 * np.pi * (base * r / rate * i + rng.random()))
    hit = _noise(rng, n, rate, _band(rng.uniform(1000, 5000), 2.0)) * _decays(i, onsets, amps, 0.002 * rate)
    return out + 0.3 * hit, None


def _noise_events(rng, n, rate):
    """2-9 noise events, each with its own band (centre 150 Hz-6 kHz, 0.5-4 octaves wide) and envelope
    (attack 1-80 ms, hold up to 0.4 s, decay half-life 20-500 ms)."""
    out = np.zeros(n)
    for _ in range(rng.integers(2, 10)):
        s = int(rng.uniform(0.0, 0.9) * n)
        attack, hold, half = rng.uniform(0.001, 0.08), rng.uniform(0.0, 0.4), rng.uniform(0.02, 0.5)
        m = min(n - s, int((attack + hold + 8 * half) * rate))
        t = np.arange(m) / rate
        env = np.minimum(t / attack, 1.0) * np.exp2(-np.maximum(t - attack - hold, 0.0) / half)
        band = _band(150.0 * _db(rng.uniform(0.0, 32.0)), rng.uniform(0.5, 4.0))
        out[s : s + m] += rng.uniform(0.3, 1.0) * env * _noise(rng, m, rate, band)
    return out, None


def _texture(rng, n, rate):
    """A continuous background: wind (two noise bands with gusts), rain (dense drops over hiss) or surf
    (lowpassed noise swelling every 8-24 s)."""
    kind = int(rng.integers(0, 3))
    at = _points(n)
    if kind == 0:
        out = np.zeros(n)
        for _ in range(2):
            band = _band(150.0 * _db(rng.uniform(0.0, 24.0)), rng.uniform(1.0, 3.0))
            gust = _up(_smooth_random(rng, at, rng.uniform(0.3, 1.2) * rate, 0.2, 1.0) ** 2, n)
            out += gust * _noise(rng, n, rate, band)
        return out, None
    if kind == 1:
        drops = np.where(rng.random(n) < rng.uniform(200, 1000) / rate, rng.random(n) ** 2, 0.0)
        hiss = _noise(rng, n, rate, _band(rng.uniform(2000, 6000), 3.0))
        return _unit_rms(_place(drops, _drop(rng, rate))) + _db(-rng.uniform(3, 10)) * hiss, None
    swell = _up(0.2 + np.sin(np.pi * (at / (rng.uniform(8.0, 24.0) * rate) + rng.random())) ** 2, n)
    return swell * _noise(rng, n, rate, _lowpass(rng.uniform(800, 4000))), None


def _drop(rng, rate):
    """One rain drop: a 0.3-1 ms damped ring at 2-7 kHz."""
    half = rng.uniform(0.0003, 0.001)
    t = np.arange(int(8 * half * rate) + 1) / rate
    return np.sin(2 * np.pi * rng.uniform(2000, 7000) * t) * np.exp2(-t / half)


def _place(impulses: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``impulses`` convolved with a short ``kernel``, one shifted copy per tap (np.convolve may use BLAS)."""
    out = np.zeros(impulses.size)
    for k, h in enumerate(kernel):
        out[k:] += h * impulses[: impulses.size - k]
    return out


def _clicks(rng, n, rate):
    """A click train (4-25 clicks per second: steady, jittered, or speeding up or slowing down; accented
    every 1-4 clicks) of damped rings (600 Hz-6 kHz, half-life 1-6 ms) on a body resonance (150-800 Hz)."""
    r0 = 4.0 * _db(rng.uniform(0.0, 16.0))
    r1 = float(np.clip(r0 * _db((0.0, rng.uniform(-8.0, 8.0))[int(rng.integers(0, 2))]), 2.0, 30.0))
    jitter = (0.0, rng.uniform(0.02, 0.2))[int(rng.integers(0, 2))]
    accent = int(rng.integers(1, 5))
    kernels = [_click(rng, rate) for _ in range(2)]
    out = np.zeros(n)
    t, j = rng.uniform(0.0, 0.3) * rate, 0
    while t < n:
        kernel = kernels[j % 2 if accent == 2 else 0] * (1.0 if j % accent == 0 else 0.5)
        s = int(t)
        m = min(kernel.size, n - s)
        out[s : s + m] += kernel[:m] * rng.uniform(0.8, 1.0)
        t += rate / (r0 + (r1 - r0) * t / n) * (1.0 + jitter * rng.uniform(-1.0, 1.0))
        j += 1
    return out, None


def _click(rng, rate):
    """One click: a damped ring and a longer, quieter body resonance."""
    half, body = rng.uniform(0.001, 0.006), rng.uniform(0.005, 0.03)
    t = np.arange(int(10 * body * rate) + 1) / rate
    ring = np.sin(2 * np.pi * rng.uniform(600, 6000) * t) * np.exp2(-t / half)
    return ring + _db(-rng.uniform(6, 14)) * np.sin(2 * np.pi * rng.uniform(150, 800) * t) * np.exp2(-t / body)


def _mixture(rng, n, rate):
    """A voice (a glide or vibrato) 0-15 dB above a background (a texture, noise events or clicks)."""
    voice = (_glide, _vibrato)[int(rng.integers(0, 2))](rng, n, rate)[1]
    back = (_texture, _noise_events, _clicks)[int(rng.integers(0, 3))](rng, n, rate)[0]
    gain = _db(rng.uniform(0.0, 15.0)) / float(np.sqrt(np.mean(voice.audio**2)))
    return voice.audio * gain + _unit_rms(back), _Voice(voice.audio * gain, voice.f0, voice.envelope)


_MAKERS = {
    "synthetic_glide": _glide,
    "synthetic_vibrato": _vibrato,
    "synthetic_melody": _melody,
    "synthetic_engine": _engine,
    "synthetic_birdsong": _birdsong,
    "synthetic_struck": _struck,
    "synthetic_noise_events": _noise_events,
    "synthetic_texture": _texture,
    "synthetic_clicks": _clicks,
    "synthetic_mixture": _mixture,
}
SYNTHETIC_CATEGORIES = tuple(_MAKERS)
# the classes with a pitched component, whose f0 is in meta/synthetic_f0.parquet
PITCHED_CATEGORIES = (
    "synthetic_glide",
    "synthetic_vibrato",
    "synthetic_melody",
    "synthetic_engine",
    "synthetic_birdsong",
    "synthetic_mixture",
)


# ----------------------------------------------------------------------------- one clip


@dataclass(frozen=True)
class SyntheticClip:
    """One generated clip: its 16-bit samples (exactly what its WAV file holds) and, for a pitched clip,
    the ground truth f0 and voicing on the mel codec's frame centres (frame j at sample j * 512)."""

    pcm: np.ndarray  # int16
    f0_hz: np.ndarray | None  # per frame: the pitched component's frequency
    voiced: np.ndarray | None  # per frame: the pitched component sounds within 20 dB of its own peak

    @property
    def samples(self) -> np.ndarray:
        """Float samples that :func:`sonieval.audio.write_wav` writes as ``pcm`` exactly."""
        return self.pcm / PCM_SCALE


def _level(x: np.ndarray, rng: np.random.Generator, seed: int, rate: int) -> np.ndarray:
    """At an RMS drawn from RMS_DBFS, below the level where its peak would pass PEAK_DBFS once the noise
    floor is added (0.4 dB of room); the noise floor at BED_DBFS under it; 5 ms fades."""
    x = _unit_rms(x)
    crest_db = 20.0 * float(np.log10(max(float(np.max(np.abs(x))), 1e-12)))
    top = min(RMS_DBFS[1], PEAK_DBFS - 0.4 - crest_db)
    x = x * _db(rng.uniform(min(RMS_DBFS[0], top), top))
    bed = _bed(seed, rate, x.size)
    start = int(rng.integers(0, bed.size - x.size + 1))
    x += bed[start : start + x.size]
    k = min(int(0.005 * rate), x.size // 2)
    ramp = (np.arange(k) + 0.5) / k
    x[:k] *= ramp
    x[x.size - k :] *= ramp[::-1]
    return x


_BEDS: dict[tuple[int, int, int], np.ndarray] = {}


def _bed(seed: int, rate: int, n: int) -> np.ndarray:
    """The noise floor, pink-ish (-4.5 dB per octave, nothing below 40 Hz) at BED_DBFS: 20 s of it (or a
    clip's length, if longer) made once per seed and rate, each clip taking a stretch at a random offset
    (making it per clip was a quarter of a clip's cost)."""
    key = (seed, rate, max(20 * rate, n))
    if key not in _BEDS:
        _BEDS[key] = _db(BED_DBFS) * _noise(np.random.default_rng([seed, 1_000_003]), key[2], rate, _tilt(-4.5))
    return _BEDS[key]


def _activity(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """Where the sound is: in 70 % of clips it starts after up to 35 % of the clip and ends in its last
    35 % (fades of 10-150 ms), the noise floor alone around it, as in field recordings."""
    if rng.random() >= ACTIVE_SHARE:
        return np.ones(n)
    fade = rng.uniform(0.01, 0.15) * rate
    return _up(_trapezoids(_points(n), [rng.uniform(0.0, 0.35) * n], [rng.uniform(0.65, 1.0) * n], fade, fade), n)


def synthesize_clip(
    category: str, target: int, index: int, *, seed: int = 0, seconds: float = 5.0, rate: int = CODEC_RATE
) -> SyntheticClip:
    """Clip ``index`` of class ``category`` (class number ``target``): the same samples on every machine."""
    if category not in _MAKERS:
        raise ValueError(f"unknown synthetic category {category!r}; known: {', '.join(SYNTHETIC_CATEGORIES)}")
    n = int(round(seconds * rate))
    rng = np.random.default_rng([seed, target, index])
    x, voice = _MAKERS[category](rng, n, rate)
    active = _activity(rng, n, rate)
    if np.sum((x * active) ** 2) < 0.25 * np.sum(x**2):  # the span missed most of the sound: keep it whole
        active = np.ones(n)
    pcm = np.round(_level(x * active, rng, seed, rate) * PCM_SCALE).astype(np.int16)
    if voice is None:
        return SyntheticClip(pcm, None, None)
    at = np.minimum(np.arange(-(-n // F0_HOP)) * F0_HOP, n - 1)
    env = voice.envelope * active
    return SyntheticClip(pcm, voice.f0[at], env[at] >= VOICED_BELOW_PEAK * float(np.max(env)))


# ----------------------------------------------------------------------------- the set


def make_synthetic_esc50(
    folder: str | os.PathLike,
    *,
    n_classes: int = len(SYNTHETIC_CATEGORIES),
    clips_per_class: int = 40,
    seconds: float = 5.0,
    seed: int = 0,
) -> Path:
    """Write the synthetic clip set under ``folder`` (``meta/esc50.csv``, ``meta/synthetic_f0.parquet``,
    ``audio/*.wav``, the ``SYNTHETIC.txt`` marker); returns ``folder``.

    Filenames follow the official pattern ``{fold}-{src_file}-{take}-{target}.wav``; clip ``i`` of a
    class goes to fold ``1 + i % 5``. Reuses an existing set made with the same parameters (the marker
    records them), so calling it twice costs nothing; a set made with other parameters is replaced.
    """
    import pandas as pd

    if not 1 <= n_classes <= len(SYNTHETIC_CATEGORIES):
        raise ValueError(f"n_classes must be 1..{len(SYNTHETIC_CATEGORIES)}")
    folder = Path(folder)
    params = (
        f"generator={GENERATOR} n_classes={n_classes} clips_per_class={clips_per_class} seconds={seconds} "
        f"seed={seed} rate={CODEC_RATE}"
    )
    marker = folder / SYNTHETIC_MARKER
    meta_path = folder / "meta" / "esc50.csv"
    if marker.is_file() and meta_path.is_file():
        if f"Parameters: {params}\n" in marker.read_text(encoding="utf-8"):
            return folder
        _remove_listed_audio(folder, meta_path)  # our own earlier set (the marker says so), not a user's copy
    rows, f0_parts = [], []
    for target, category in enumerate(SYNTHETIC_CATEGORIES[:n_classes]):
        for i in range(clips_per_class):
            clip = synthesize_clip(category, target, i, seed=seed, seconds=seconds)
            fold, src = 1 + i % 5, _SRC_BASE + target * 1000 + i
            filename = f"{fold}-{src}-A-{target}.wav"
            write_wav(folder / "audio" / filename, clip.samples, CODEC_RATE)
            rows.append(
                {
                    "filename": filename,
                    "fold": fold,
                    "target": target,
                    "category": category,
                    "esc10": False,
                    "src_file": src,
                    "take": "A",
                }
            )
            if clip.f0_hz is not None:
                f0_parts.append(_f0_rows(filename, clip))
    write_text_atomic(meta_path, pd.DataFrame(rows).sort_values("filename").to_csv(index=False))
    _write_f0(folder / "meta" / F0_FILENAME, f0_parts)
    write_text_atomic(
        marker,
        "SYNTHETIC clip set made by sonieval (sonieval.data.synthetic). NOT ESC-50: no result computed on it\n"
        "says anything about ESC-50 or real sounds. Ground truth f0 of its pitched clips: meta/"
        f"{F0_FILENAME}.\nParameters: {params}\n",
    )
    return folder


def _remove_listed_audio(folder: Path, meta_path: Path) -> None:
    import pandas as pd

    for name in pd.read_csv(meta_path)["filename"]:
        (folder / "audio" / str(name)).unlink(missing_ok=True)


def _f0_rows(filename: str, clip: SyntheticClip):
    import pandas as pd

    frames = np.arange(clip.f0_hz.size)
    return pd.DataFrame(
        {
            "filename": filename,
            "frame": frames.astype(np.int32),
            "time_s": frames * (F0_HOP / CODEC_RATE),
            "f0_hz": clip.f0_hz.astype(np.float32),
            "voiced": clip.voiced,
        }
    )


def _write_f0(path: Path, parts: list) -> None:
    import pandas as pd

    from sonieval.files import atomic_path

    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(F0_COLUMNS))
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def read_synthetic_f0(folder: str | os.PathLike):
    """The ground truth f0 table of a synthetic set (columns :data:`F0_COLUMNS`, one row per clip and frame)."""
    import pandas as pd

    from sonieval.errors import DataError

    path = Path(folder) / "meta" / F0_FILENAME
    if not path.is_file():
        raise DataError(
            "no ground truth f0 table here",
            path=path,
            hint="it comes with the synthetic set: sonieval data synthetic FOLDER",
        )
    return pd.read_parquet(path)
