"""FAD's interval by simulation: coverage of what it is an interval for, the plug-in value inside it.

Gaussian embeddings with a known Fréchet distance: a fixed reference Gaussian (fitted once to 400
frames, as a leaderboard fixes it), an evaluated population N(mu, C) of clips (clip means spread by
half of C, frames around them by the other half, so the frames of one clip are correlated and the
population of frames is N(mu, C)), and the closed form
``|mu_r - mu|^2 + tr(C_r + C - 2 (C_r^1/2 C C_r^1/2)^1/2)`` (scipy's sqrtm, not the module's route).
With at least as many clips as dimensions (20 clips of 5 frames in 8 dimensions) the interval is for
that population FAD; with fewer (10 clips of 8 frames in 32 dimensions) for the FAD at 10 clips,
whose value (the plug-in FAD's mean over draws of 10 clips) is found by 3,000 further draws. All
draws are seeded, so the counts below are fixed numbers, not chances.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from sonieval.metrics import distances as D

LEVEL = 0.95


def _binomial_band(replicates: int, level: float = LEVEL) -> tuple[float, float]:
    """Coverage a calibrated interval shows in ``replicates`` draws, 99 % of the time (normal approximation)."""
    half = 2.576 * math.sqrt(level * (1 - level) / replicates)
    return level - half, level + half


def _closed_form_fad(mu_r, c_r, mu, c) -> float:
    root_r = scipy.linalg.sqrtm(c_r).real
    cross = scipy.linalg.sqrtm(root_r @ c @ root_r).real
    return float((mu_r - mu) @ (mu_r - mu) + np.trace(c_r + c - 2 * cross))


def _world(shift: float, spread: float, replicates: int, seed: int, dim=8, clips=20, frames=5, extra=0):
    """(reference Gaussian, population FAD, evaluated frames [R + extra, clips * frames, dim], clip labels)."""
    rng = np.random.default_rng(seed)
    reference = D.gaussian_stats(rng.standard_normal((400, dim)))
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    factor = rotation * np.linspace(1.0, spread, dim)  # C = factor @ factor.T
    mu = shift * rotation[:, 0]
    theta = _closed_form_fad(reference.mean, reference.cov, mu, factor @ factor.T)
    r = replicates + extra
    clip_means = mu + math.sqrt(0.5) * rng.standard_normal((r, clips, 1, dim)) @ factor.T
    drawn = clip_means + math.sqrt(0.5) * rng.standard_normal((r, clips, frames, dim)) @ factor.T
    return reference, theta, drawn.reshape(r, clips * frames, dim), np.repeat(np.arange(clips), frames)


def _fads(reference, mean, cov) -> np.ndarray:
    """Plug-in FAD of a batch of Gaussians (numpy, any L with C_r = L L^T gives the same spectrum)."""
    root = np.linalg.cholesky(reference.cov)
    eig = np.linalg.eigvalsh(root.T @ cov @ root)
    diff = mean - reference.mean
    return (
        (diff * diff).sum(-1) + reference.trace + np.trace(cov, axis1=-2, axis2=-1) - 2 * np.sqrt(eig.clip(0)).sum(-1)
    )


def _plug_in(reference, frames) -> np.ndarray:
    mean = frames.mean(1)
    centred = frames - mean[:, None]
    return _fads(reference, mean, centred.transpose(0, 2, 1) @ centred / (frames.shape[1] - 1))


def _percentile_bootstrap(reference, frames, groups, n_resamples=200, seed=0) -> np.ndarray:
    """The interval FAD had before (distances.fad_bootstrap until issue 20): the 2.5 and 97.5 %
    percentiles of FAD over clip resamples, the reference fixed; [R, 2], vectorised over replicates."""
    rng = np.random.default_rng(seed)
    r, n, d = frames.shape
    clips = int(groups.max()) + 1
    per_clip = frames.reshape(r, clips, n // clips, d)
    sums = per_clip.sum(2)
    scatter = np.einsum("rgfi,rgfj->rgij", per_clip, per_clip).reshape(r, clips, d * d)
    counts = rng.multinomial(clips, np.full(clips, 1 / clips), size=(r, n_resamples)).astype(float)
    m = (counts.sum(-1) * (n // clips))[..., None]
    mean = counts @ sums / m
    cov = (
        (counts @ scatter).reshape(r, n_resamples, d, d) - m[..., None] * mean[..., :, None] * mean[..., None, :]
    ) / (m[..., None] - 1)
    return np.quantile(_fads(reference, mean, cov), [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=1).T


def _jackknife_intervals(reference, frames, groups, population: bool = True) -> np.ndarray:
    """[R, 5]: plug-in value, low, high, bias-corrected estimate, standard error of
    :func:`distances.fad_interval` in every replicate, each an interval for the target named."""
    out = []
    for x in frames:
        got = D.fad_interval(reference, x, groups, level=LEVEL)
        assert got.population is population
        out.append((got.value, got.ci_low, got.ci_high, got.bias_corrected, got.standard_error))
    return np.array(out)


# A system clearly away from the reference: the plug-in FAD's bias is ~0.9 of its standard deviation.
SEPARATED = dict(shift=2.0, spread=2.0, replicates=1000, seed=20)
# A system close to the reference at 20 clips: the bias is ~2.3 standard deviations.
CLOSE = dict(shift=0.3, spread=1.2, replicates=400, seed=21)


def test_fad_interval_covers_the_population_fad_at_95_percent_and_contains_its_value(torch_threads):
    reference, theta, frames, groups = _world(**SEPARATED)
    value, low, high, _, _ = _jackknife_intervals(reference, frames, groups).T
    assert np.all((low <= value) & (value <= high))  # the reported FAD lies inside its own interval
    covered = np.mean((low <= theta) & (theta <= high))
    band = _binomial_band(SEPARATED["replicates"])
    assert band[0] <= covered <= band[1], (covered, band)
    # the plug-in value is biased upwards: the interval is not centred on it
    assert np.mean(value) > theta + 0.5 * np.std(value)
    assert np.mean(high - value) < np.mean(value - low)


def test_the_percentile_bootstrap_it_replaces_fails_the_same_check():
    # the control for the test above: on the same draws, the old interval covers far too rarely,
    # because its resamples add the plug-in's upward bias a second time
    reference, theta, frames, groups = _world(**SEPARATED)
    low, high = _percentile_bootstrap(reference, frames[:400], groups).T  # 400 draws show it plainly
    covered = np.mean((low <= theta) & (theta <= high))
    assert covered < _binomial_band(400)[0] - 0.15, covered


def test_close_to_the_reference_the_interval_is_conservative_never_short(torch_threads):
    # Where the bias exceeds ~1.5 standard errors the jackknife over-states the spread (Efron & Stein
    # 1981): coverage is at least 95 %, and the interval still holds the reported value; the
    # percentile bootstrap here almost never covers.
    reference, theta, frames, groups = _world(**CLOSE)
    value, low, high, _, _ = _jackknife_intervals(reference, frames, groups).T
    assert np.all((low <= value) & (value <= high))
    covered = np.mean((low <= theta) & (theta <= high))
    assert covered >= _binomial_band(CLOSE["replicates"])[0], covered
    assert np.mean(value) > theta + 2 * np.std(value)
    p_low, p_high = _percentile_bootstrap(reference, frames, groups).T
    assert np.mean((p_low <= theta) & (theta <= p_high)) < 0.2


# Fewer clips than dimensions (the demo has 20 clips of 64 log-mel dimensions).
FEW_CLIPS = dict(shift=2.0, spread=1.5, replicates=600, seed=22, dim=32, clips=10, frames=8)


def _population_interval(reference, frames, groups) -> tuple[float, float]:
    """The bias-corrected (population) interval fad_interval refuses to give with fewer clips than dimensions."""
    blocks, _ = D._jackknife_blocks(len(frames), groups, D.FAD_JACKKNIFE_MAX_GROUPS, 0)
    value = D.frechet_audio_distance(reference, frames).value
    left_out = D._leave_one_out_fads(reference, frames, blocks)
    return D._jackknife_t_interval(value, left_out, LEVEL, bias_corrected=True)[2:]


def test_with_fewer_clips_than_dimensions_the_interval_is_for_the_fad_at_that_many_clips(torch_threads):
    reference, theta, frames, groups = _world(**FEW_CLIPS, extra=3000)
    at_n = float(np.mean(_plug_in(reference, frames[600:])))  # the FAD at 10 clips, by 3,000 other draws
    value, low, high, _, _ = _jackknife_intervals(reference, frames[:600], groups, population=False).T
    assert np.all((low <= value) & (value <= high))
    covered = np.mean((low <= at_n) & (at_n <= high))
    band = _binomial_band(600)
    assert band[0] <= covered <= band[1], (covered, band)
    # ... which is not the population FAD (its ci_method says so): the plug-in sits far above it ...
    assert at_n > theta + 5 * np.std(value) and np.mean((low <= theta) & (theta <= high)) < 0.05
    # ... and why: here the bias-corrected interval misses the population FAD far too often
    population = np.array([_population_interval(reference, x, groups) for x in frames[:300]])
    assert np.mean((population[:, 0] <= theta) & (theta <= population[:, 1])) < _binomial_band(300)[0] - 0.05
    got = D.fad_interval(reference, frames[0], groups)
    assert "for the FAD at 10 clips" in got.method and "not for the population FAD" in got.method


def test_left_out_fads_from_group_moments_equal_refitting_the_frames(monkeypatch, torch_threads):
    # the leave-one-clip-out Gaussians come from the set's and the clips' sums and scatter (centred on
    # the set's mean): they must equal FAD refitted from the remaining frames, also far from the origin
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((12 * 9, 8)) * rng.uniform(0.5, 3, 8) + 50
    groups = np.repeat(np.arange(12), 9)
    ref = D.gaussian_stats(rng.standard_normal((400, 8)))
    blocks, n_clips = D._jackknife_blocks(len(frames), groups, D.FAD_JACKKNIFE_MAX_GROUPS, 0)
    fast = D._leave_one_out_fads(ref, frames.astype(np.float32), blocks)
    slow = [D.frechet_audio_distance(ref, frames.astype(np.float32)[groups != g]).value for g in range(12)]
    assert n_clips == 12 and np.allclose(fast, slow, rtol=1e-9, atol=0)
    monkeypatch.setattr(D, "FAD_JACKKNIFE_BATCH_BYTES", 1)  # one clip per batch: the same values
    assert np.array_equal(D._leave_one_out_fads(ref, frames.astype(np.float32), blocks), fast)
    got = D.fad_interval(ref, frames, groups)
    assert got.value == D.frechet_audio_distance(ref, frames).value
    assert got.n_groups == 12 and "delete-1 over 12 clips" in got.method and "95%" in got.method


def test_many_clips_are_dealt_into_random_groups_each_clip_in_one(torch_threads):
    rng = np.random.default_rng(4)
    frames = rng.standard_normal((300, 3))
    blocks, n_clips = D._jackknife_blocks(300, None, 40, seed=7)  # no labels: every frame its own clip
    assert n_clips == 300 and len(blocks) == 40 and {len(b) for b in blocks} == {7, 8}
    assert np.array_equal(np.sort(np.concatenate(blocks)), np.arange(300))
    again, _ = D._jackknife_blocks(300, None, 40, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(blocks, again))
    got = D.fad_interval(D.gaussian_stats(rng.standard_normal((200, 3))), frames, max_groups=40, seed=7)
    assert got.n_groups == 40 and "40 random groups of 300 clips" in got.method
    assert got.ci_low <= got.value <= got.ci_high


def test_intervals_that_cannot_be_computed_say_why():
    rng = np.random.default_rng(5)
    ref = D.gaussian_stats(rng.standard_normal((100, 4)))
    with pytest.raises(D.MetricError, match="one clip; an interval over clips needs at least 2"):
        D.fad_interval(ref, rng.standard_normal((30, 4)), np.zeros(30))
    # 3 clips of 2 frames in 4 dimensions: 6 frames make a FAD, the 4 left after one clip do not
    with pytest.raises(D.MetricError, match="leaves 4 frames for 4 dimensions"):
        D.fad_interval(ref, rng.standard_normal((6, 4)), np.repeat(np.arange(3), 2))
    with pytest.raises(D.MetricError, match="level must be between 0 and 1"):
        D.fad_interval(ref, rng.standard_normal((30, 4)), level=95)


def test_a_fad_score_row_holds_its_value_inside_its_interval_and_names_the_method(torch_threads):
    from sonieval.metrics import fad

    rate = 16000
    t = np.arange(rate // 2) / rate
    rng = np.random.default_rng(6)
    reference = np.stack([0.4 * np.sin(2 * np.pi * f * t) for f in (220, 330, 440, 550, 660)])
    evaluated = reference + 0.1 * rng.standard_normal(reference.shape)
    got = fad(reference, evaluated, sample_rate=rate, bootstrap=1)
    assert got.ci_low <= got.value <= got.ci_high and got.ci_low < got.ci_high
    assert "jackknife" in got.ci_method and "delete-1 over 5 clips" in got.ci_method
    assert np.isnan(fad(reference, evaluated, sample_rate=rate).ci_low)  # no interval asked, none given
