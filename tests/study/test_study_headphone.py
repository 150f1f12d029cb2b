"""The headphone check's stimuli, plan and scoring (Woods et al. 2017 antiphase test)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf

from sonieval.study.headphone import (
    DEFAULT_SPEC,
    INTERVALS,
    HeadphoneCheckError,
    HeadphoneCheckSpec,
    interval_bounds,
    plan_trials,
    score_responses,
    stimulus_name,
    trial_audio,
    write_stimuli,
)

SPEC = DEFAULT_SPEC
Q = 1 / 32767  # one 16-bit step


def _rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64)))))


def _steady(bounds: tuple[int, int]) -> slice:
    ramp = int(SPEC.ramp_s * SPEC.sample_rate)
    # the steady part between the ramps (0.8 s = 160 whole periods of 200 Hz)
    start = bounds[0] + ramp
    return slice(start, start + int(round(160 * SPEC.sample_rate / SPEC.tone_hz)))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    stim = write_stimuli(tmp_path_factory.mktemp("hc"), salt="study-secret")
    read = {}
    for order, path in stim.trials.items():
        data, rate = sf.read(path, dtype="int16", always_2d=True)
        assert rate == SPEC.sample_rate and data.shape[1] == 2
        read[order] = data
    return stim, read


def test_antiphase_interval_is_the_exact_inverse_and_the_others_are_in_phase(written):
    _, read = written
    for order, data in read.items():
        left, right = data[:, 0].astype(np.int32), data[:, 1].astype(np.int32)
        for kind, (a, b) in zip(order, interval_bounds(SPEC)):
            if kind == "antiphase":
                assert np.array_equal(left[a:b], -right[a:b]) and np.abs(left[a:b]).max() > 1000
            else:
                assert np.array_equal(left[a:b], right[a:b])


def test_quiet_interval_is_6_db_below_and_antiphase_at_the_standard_level(written):
    _, read = written
    for order, data in read.items():
        x = data.astype(np.float64) / 32767
        level = {kind: [_rms_db(x[_steady(bd), ch]) for ch in (0, 1)] for kind, bd in zip(order, interval_bounds(SPEC))}
        for ch in (0, 1):
            assert level["quiet"][ch] - level["standard"][ch] == pytest.approx(-6.0, abs=0.01)
            assert level["antiphase"][ch] == pytest.approx(level["standard"][ch], abs=0.01)
            # a sine's RMS is its peak - 3.01 dB: standards at -12 dBFS peak
            assert level["standard"][ch] == pytest.approx(-12.0 - 3.0103, abs=0.01)


def test_no_clipping_silent_gaps_and_exact_durations(written):
    stim, read = written
    n_tone, n_gap = int(SPEC.tone_s * SPEC.sample_rate), int(SPEC.gap_s * SPEC.sample_rate)
    for data in read.values():
        assert len(data) == 3 * n_tone + 2 * n_gap  # 1 s tones, 0.5 s gaps: 4.0 s
        peak = np.abs(data.astype(np.int32)).max()
        assert peak <= round(SPEC.amplitude * 32767) + 1 < 32767
        b = interval_bounds(SPEC)
        assert not data[b[0][1] : b[1][0]].any() and not data[b[1][1] : b[2][0]].any()
    cal, rate = sf.read(stim.calibration, always_2d=True)
    assert len(cal) == int(SPEC.calibration_s * rate) and np.array_equal(cal[:, 0], cal[:, 1])


def test_raised_cosine_onset_and_offset_ramps(written):
    _, read = written
    data = next(iter(read.values())).astype(np.float64) / 32767
    a, b = interval_bounds(SPEC)[0]
    x = data[a:b, 0]
    n, k = len(x), int(SPEC.ramp_s * SPEC.sample_rate)
    t = np.arange(n) / SPEC.sample_rate
    carrier = np.sin(2 * np.pi * SPEC.tone_hz * t)
    peak = np.abs(x[_steady((0, n))]).max()
    env = np.ones(n)
    env[:k] = 0.5 * (1 - np.cos(np.pi * np.arange(k) / k))
    env[n - k :] = env[:k][::-1]
    assert x[0] == 0 and abs(x[-1]) < 2 * Q  # starts and ends in silence, no click
    assert np.abs(x - peak * env * carrier).max() < 2 * Q  # ramps follow the raised cosine to one 16-bit step
    # and the envelope is really ramping: 10 ms in, the tone is still below 10 % of its peak
    assert np.abs(x[: int(0.01 * SPEC.sample_rate)]).max() < 0.1 * peak


def test_plan_uses_each_order_once_in_a_seeded_shuffle():
    plan = plan_trials(7, salt="s")
    assert len(plan) == 6 and sorted(t.order for t in plan) == sorted(itertools.permutations(INTERVALS))
    assert [t.answer for t in plan].count(1) == [t.answer for t in plan].count(3) == 2
    assert plan == plan_trials(7, salt="s")
    assert any(plan_trials(s, salt="s") != plan for s in range(8, 12))
    longer = plan_trials(1, HeadphoneCheckSpec(n_trials=8, pass_min=7))
    assert len(longer) == 8


def test_file_names_do_not_reveal_the_order():
    names = {stimulus_name(SPEC, o, "secret") for o in itertools.permutations(INTERVALS)}
    assert len(names) == 6
    assert all("quiet" not in n and "anti" not in n for n in names)
    assert names.isdisjoint({stimulus_name(SPEC, o, "other") for o in itertools.permutations(INTERVALS)})


def test_scoring_passes_at_five_of_six():
    plan = plan_trials(3)
    answers = [t.answer for t in plan]
    wrong = [a % 3 + 1 for a in answers]
    five = answers[:5] + wrong[5:]
    four = answers[:4] + wrong[4:]
    assert score_responses(plan, answers, seed=3).passed
    res5 = score_responses(plan, five, seed=3)
    assert res5.n_correct == 5 and res5.passed
    res4 = score_responses(plan, four, seed=3)
    assert res4.n_correct == 4 and not res4.passed
    rec = res4.as_record()
    assert rec["check"] == "woods2017_antiphase" and rec["responses"] == ",".join(map(str, four))
    with pytest.raises(HeadphoneCheckError, match="trial 2: response 4"):
        score_responses(plan, [1, 4, 1, 1, 1, 1], seed=3)
    with pytest.raises(HeadphoneCheckError, match="5 responses for 6 trials"):
        score_responses(plan, answers[:5], seed=3)


def _quietest(left: np.ndarray, right: np.ndarray, *, loudspeakers: bool) -> int:
    """A model listener who picks the interval with the least energy at the ears.

    Headphones: each ear gets its own channel. Loudspeakers (idealised: equal paths, free field,
    200 Hz wavelength 1.7 m >> ear spacing): both ears get the sum of the channels.
    """
    levels = []
    for a, b in interval_bounds(SPEC):
        if loudspeakers:
            levels.append(np.mean(np.square(left[a:b] + right[a:b])))
        else:
            levels.append(np.mean(np.square(left[a:b])) + np.mean(np.square(right[a:b])))
    return int(np.argmin(levels)) + 1


def test_control_a_headphone_listener_passes_and_a_loudspeaker_listener_fails():
    plan = plan_trials(11)
    for loudspeakers, should_pass in ((False, True), (True, False)):
        responses = [_quietest(*trial_audio(SPEC, t.order), loudspeakers=loudspeakers) for t in plan]
        result = score_responses(plan, responses, seed=11)
        assert result.passed is should_pass
        # over loudspeakers the model picks the antiphase interval every time
        if loudspeakers:
            assert result.n_correct == 0
            assert all(t.order[r - 1] == "antiphase" for t, r in zip(plan, responses))


def test_bad_settings_are_one_clear_error():
    with pytest.raises(HeadphoneCheckError, match="quiet_db must be negative"):
        HeadphoneCheckSpec(quiet_db=3.0)
    with pytest.raises(HeadphoneCheckError, match="ramps"):
        HeadphoneCheckSpec(tone_s=0.1, ramp_s=0.1)
    with pytest.raises(HeadphoneCheckError, match="order"):
        trial_audio(SPEC, ("quiet", "quiet", "standard"))
