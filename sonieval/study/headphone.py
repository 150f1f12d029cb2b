"""Headphone screening: the antiphase test of Woods et al. (2017), generated from its description.

Woods, K. J. P., Siegel, M. H., Traer, J., & McDermott, J. H. (2017). Headphone screening to
facilitate web-based auditory experiments. *Attention, Perception, & Psychophysics*, 79(7),
2064–2072. https://doi.org/10.3758/s13414-017-1361-2

The task is a three-interval forced choice, "which tone is quietest?", over 200 Hz pure tones:

- two intervals are *standards* at the reference level, one of them in phase across the ears
  (L = R) and one in **antiphase** (L = −R, the right channel inverted);
- the third interval, the *target*, is in phase and **6 dB** below the standards.

Over headphones each ear gets the antiphase tone at full level, so the target is the quietest.
Over loudspeakers the two channels of the antiphase tone cancel in the air at 200 Hz (the paper
measured more than 20 dB of attenuation with a head-and-torso simulator), so it sounds quietest
and a loudspeaker listener picks the wrong interval. Six trials; a listener passes with at least
five correct (the paper's criterion: 20 of 20 listeners on headphones passed, 19 of 20 on
loudspeakers failed).

Checked against the paper's text available here (abstract and results): 200 Hz, three tones, one in
antiphase, the target 6 dB down, six trials. The timing defaults are our reading of its Methods, not
checked against the text here, and are parameters (all in :class:`HeadphoneCheckSpec`): tones of
1000 ms with 100 ms raised-cosine onset and offset ramps, 500 ms of silence between the intervals,
standards at −12 dBFS peak per
channel (an absolute level of our choosing: the test needs only the relative levels, the
listener sets a comfortable volume with :func:`calibration_audio` first, and −12 dBFS keeps the
files far from clipping). The tones start at sine phase 0 under the ramp. Written as 16-bit PCM
stereo at 44.1 kHz (symmetric rounding keeps L = −R exact in the antiphase interval).

Order: the three intervals can be arranged in 3! = 6 orders; six trials use each order once,
shuffled with ``numpy.random.default_rng(seed)`` (the paper randomised the order per trial; using
every order once puts the target twice in each position, so a position bias neither passes nor
fails a listener by itself). Other trial counts cycle through fresh shuffles of the six orders.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sonieval.audio import write_stereo_wav
from sonieval.errors import SonievalError

__all__ = [
    "HeadphoneCheckError",
    "HeadphoneCheckSpec",
    "HeadphoneTrial",
    "HeadphoneResult",
    "HeadphoneStimuli",
    "INTERVALS",
    "CHECK_NAME",
    "tone",
    "trial_audio",
    "calibration_audio",
    "interval_bounds",
    "plan_trials",
    "stimulus_name",
    "write_stimuli",
    "score_responses",
]

CHECK_NAME = "woods2017_antiphase"
# The three interval kinds: in-phase standard, antiphase standard, in-phase target 6 dB down.
INTERVALS = ("standard", "antiphase", "quiet")


class HeadphoneCheckError(SonievalError):
    """A headphone-check setting or response that is not valid."""


@dataclass(frozen=True)
class HeadphoneCheckSpec:
    """The test's parameters (defaults: Woods et al. 2017; the absolute level is ours)."""

    tone_hz: float = 200.0
    tone_s: float = 1.0
    ramp_s: float = 0.1
    gap_s: float = 0.5
    quiet_db: float = -6.0
    level_dbfs: float = -12.0
    sample_rate: int = 44_100
    n_trials: int = 6
    pass_min: int = 5
    calibration_s: float = 3.0

    def __post_init__(self) -> None:
        checks = [
            (
                self.tone_hz > 0 and self.tone_hz < self.sample_rate / 2,
                "tone_hz must lie between 0 and half the sample rate",
            ),
            (
                self.tone_s > 0 and 0 <= 2 * self.ramp_s <= self.tone_s,
                "ramps (ramp_s) must fit twice into the tone (tone_s)",
            ),
            (self.gap_s >= 0, "gap_s must not be negative"),
            (self.quiet_db < 0, "quiet_db must be negative (the target is the quietest tone)"),
            (self.level_dbfs <= 0, "level_dbfs must be at most 0 dBFS (no clipping)"),
            (self.n_trials >= 1 and 0 <= self.pass_min <= self.n_trials, "pass_min must lie between 0 and n_trials"),
            (self.sample_rate >= 8000, "sample_rate must be at least 8000 Hz"),
            (self.calibration_s > 2 * self.ramp_s, "calibration_s must be longer than two ramps"),
        ]
        for ok, problem in checks:
            if not ok:
                raise HeadphoneCheckError(f"headphone check: {problem}", hint="see HeadphoneCheckSpec")

    @property
    def amplitude(self) -> float:
        """Peak amplitude of a standard tone in each channel (full scale = 1)."""
        return float(10.0 ** (self.level_dbfs / 20.0))


DEFAULT_SPEC = HeadphoneCheckSpec()


@dataclass(frozen=True)
class HeadphoneTrial:
    """One trial: the interval kinds in presentation order and the right answer (1, 2 or 3)."""

    number: int
    order: tuple[str, str, str]
    audio_name: str

    @property
    def answer(self) -> int:
        return self.order.index("quiet") + 1


@dataclass
class HeadphoneResult:
    """A listener's score; ``as_record()`` is what the study stores per rater."""

    n_trials: int
    n_correct: int
    pass_min: int
    passed: bool
    responses: list[int]
    answers: list[int]
    seed: int
    check: str = CHECK_NAME

    def as_record(self) -> dict[str, object]:
        rec = asdict(self)
        rec["responses"] = ",".join(map(str, self.responses))
        rec["answers"] = ",".join(map(str, self.answers))
        return rec


@dataclass
class HeadphoneStimuli:
    """The written files: the calibration sound and one file per interval order."""

    folder: Path
    calibration: Path
    trials: dict[tuple[str, str, str], Path] = field(default_factory=dict)


def _ramped(spec: HeadphoneCheckSpec, seconds: float) -> np.ndarray:
    """A unit sine at ``tone_hz`` (phase 0 at onset) under raised-cosine onset and offset ramps."""
    n = int(round(seconds * spec.sample_rate))
    t = np.arange(n) / spec.sample_rate
    x = np.sin(2.0 * np.pi * spec.tone_hz * t)
    k = int(round(spec.ramp_s * spec.sample_rate))
    if k:
        rise = 0.5 * (1.0 - np.cos(np.pi * np.arange(k) / k))
        x[:k] *= rise
        x[n - k :] *= rise[::-1]
    return x


def tone(spec: HeadphoneCheckSpec, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) of one interval of ``kind`` (one of :data:`INTERVALS`), float64."""
    if kind not in INTERVALS:
        raise HeadphoneCheckError(f"headphone check: unknown interval kind {kind!r}", hint=f"use one of {INTERVALS}")
    gain = spec.amplitude * (10.0 ** (spec.quiet_db / 20.0) if kind == "quiet" else 1.0)
    x = gain * _ramped(spec, spec.tone_s)
    return x, (-x if kind == "antiphase" else x.copy())


def trial_audio(spec: HeadphoneCheckSpec, order: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) of a whole trial: the three intervals in ``order`` with ``gap_s`` of silence between."""
    if sorted(order) != sorted(INTERVALS):
        raise HeadphoneCheckError(f"headphone check: order {tuple(order)} must hold each of {INTERVALS} once")
    gap = np.zeros(int(round(spec.gap_s * spec.sample_rate)))
    left, right = [], []
    for i, kind in enumerate(order):
        if i:
            left.append(gap)
            right.append(gap)
        lx, rx = tone(spec, kind)
        left.append(lx)
        right.append(rx)
    return np.concatenate(left), np.concatenate(right)


def interval_bounds(spec: HeadphoneCheckSpec) -> list[tuple[int, int]]:
    """Sample ranges [start, stop) of the three tones within a trial's audio."""
    n_tone = int(round(spec.tone_s * spec.sample_rate))
    n_gap = int(round(spec.gap_s * spec.sample_rate))
    return [(i * (n_tone + n_gap), i * (n_tone + n_gap) + n_tone) for i in range(3)]


def calibration_audio(spec: HeadphoneCheckSpec) -> tuple[np.ndarray, np.ndarray]:
    """An in-phase tone at the standards' level, for setting a comfortable volume before the trials."""
    x = spec.amplitude * _ramped(spec, spec.calibration_s)
    return x, x.copy()


def plan_trials(seed: int, spec: HeadphoneCheckSpec = DEFAULT_SPEC, salt: str = "") -> list[HeadphoneTrial]:
    """The listener's trials: every interval order once per six trials, in a seeded shuffle."""
    rng = np.random.default_rng(seed)
    orders = list(itertools.permutations(INTERVALS))
    picked: list[tuple[str, str, str]] = []
    while len(picked) < spec.n_trials:
        picked += [orders[i] for i in rng.permutation(len(orders))]
    return [HeadphoneTrial(i + 1, o, stimulus_name(spec, o, salt)) for i, o in enumerate(picked[: spec.n_trials])]


def stimulus_name(spec: HeadphoneCheckSpec, order: Sequence[str], salt: str = "") -> str:
    """A file name that does not reveal the order (a salted hash; pass a per-study secret as ``salt``)."""
    key = f"{CHECK_NAME}\x00{salt}\x00{asdict(spec)}\x00{','.join(order)}"
    return "hc_" + hashlib.sha256(key.encode()).hexdigest()[:20] + ".wav"


def write_stimuli(
    folder: str | os.PathLike, spec: HeadphoneCheckSpec = DEFAULT_SPEC, salt: str = ""
) -> HeadphoneStimuli:
    """Write the calibration sound and the six trial files (stereo 16-bit WAV) into ``folder``, atomically.

    Files already present under their (content-determining) names are kept, so reruns are cheap.
    """
    folder = Path(folder)
    cal = folder / stimulus_name(spec, ("calibration",), salt)
    if not cal.exists():
        write_stereo_wav(cal, *calibration_audio(spec), spec.sample_rate)
    out = HeadphoneStimuli(folder=folder, calibration=cal)
    for order in itertools.permutations(INTERVALS):
        path = folder / stimulus_name(spec, order, salt)
        if not path.exists():
            write_stereo_wav(path, *trial_audio(spec, order), spec.sample_rate)
        out.trials[order] = path
    return out


def score_responses(
    trials: Sequence[HeadphoneTrial], responses: Sequence[object], *, seed: int, spec: HeadphoneCheckSpec = DEFAULT_SPEC
) -> HeadphoneResult:
    """Score one listener: ``responses[i]`` is the interval (1, 2 or 3) chosen as quietest in trial i."""
    if len(responses) != len(trials):
        raise HeadphoneCheckError(
            f"headphone check: {len(responses)} responses for {len(trials)} trials", hint="answer every trial once"
        )
    chosen = []
    for trial, r in zip(trials, responses):
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= int(r) <= 3:
            raise HeadphoneCheckError(f"headphone check: trial {trial.number}: response {r!r} is not 1, 2 or 3")
        chosen.append(int(r))
    answers = [t.answer for t in trials]
    n_correct = sum(c == a for c, a in zip(chosen, answers))
    return HeadphoneResult(
        n_trials=len(trials),
        n_correct=n_correct,
        pass_min=spec.pass_min,
        passed=n_correct >= spec.pass_min,
        responses=chosen,
        answers=answers,
        seed=int(seed),
    )
