"""KAD/FAD: agreement with kadtk, closed forms, bootstrap algebra, and the never-NaN contract."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from sonieval.metrics import distances as D


@pytest.fixture(scope="module")
def kadtk():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from sonieval.metrics.embeddings import import_kadtk

    import_kadtk()
    import kadtk

    return kadtk


def _sets(seed=0, n_ref=400, n_ev=300, dim=24, shift=0.3, scale=1.2):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n_ref, dim)).astype(np.float32)
    ev = (rng.standard_normal((n_ev, dim)) * scale + shift).astype(np.float32)
    return ref, ev


def test_kad_agrees_with_kadtk_given_the_same_bandwidth(kadtk, torch_threads):
    import torch

    ref, ev = _sets()
    sigma = D.median_pairwise_distance(ref)
    assert sigma == pytest.approx(kadtk.median_pairwise_distance(ref), rel=1e-5)
    ours = D.kernel_audio_distance(ref, ev, bandwidth=sigma)
    theirs = float(
        kadtk.calc_kernel_audio_distance(
            torch.from_numpy(ref), torch.from_numpy(ev), (None, None), "cpu", bandwidth=sigma
        )
    )
    assert ours.value == pytest.approx(theirs, rel=1e-5)
    # blockwise with small tiles gives the same number
    assert D.kernel_audio_distance(ref, ev, bandwidth=sigma, tile=64).value == pytest.approx(ours.value, rel=1e-6)
    # default bandwidth comes from the reference, not from the evaluated set (kadtk issue #9)
    assert D.kernel_audio_distance(ref, ev).bandwidth == pytest.approx(sigma)
    assert D.median_pairwise_distance(ev) != pytest.approx(sigma, rel=1e-3)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_fad_agrees_with_kadtk_on_well_conditioned_data(kadtk, torch_threads):
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((3000, 16))
    ev = rng.standard_normal((2500, 16)) @ np.diag(np.linspace(0.5, 1.5, 16)) + 0.2
    theirs = float(kadtk.calc_frechet_distance(ref, ev, (None, None), "cpu"))
    assert D.frechet_audio_distance(ref, ev).value == pytest.approx(theirs, rel=1e-4)


def test_fad_matches_the_closed_form_for_gaussians():
    # exact: statistics given directly
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([1.5, 1.0, 0.5])
    st1 = D.GaussianStats(mu1, 100, float(np.sum(s1**2)), cov=np.diag(s1**2))
    st2 = D.GaussianStats(mu2, 100, float(np.sum(s2**2)), cov=np.diag(s2**2))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert D.frechet_audio_distance(st1, st2).value == pytest.approx(expected, rel=1e-10)
    # sampled: a rotated full covariance, large n
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    x = rng.standard_normal((200_000, 3)) * s1 @ q.T + mu1
    y = rng.standard_normal((200_000, 3)) * s2 @ q.T + mu2
    assert D.frechet_audio_distance(x, y).value == pytest.approx(expected, rel=0.03)


def test_kad_of_two_samples_of_one_distribution_is_near_zero():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((800, 16))
    same = D.kernel_audio_distance(ref, rng.standard_normal((800, 16)))
    other = D.kernel_audio_distance(ref, rng.standard_normal((800, 16)) + 0.5)
    assert abs(same.value) < 0.05
    assert other.value > 20 * abs(same.value) and other.value > 0.2
    assert not same.saturated


def test_far_apart_sets_are_flagged_saturated():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((200, 8))
    res = D.kernel_audio_distance(ref, rng.standard_normal((200, 8)) + 50)
    assert res.saturated
    assert res.cross_term == pytest.approx(0.0, abs=1e-6)
    assert res.value == pytest.approx(res.reference_term + res.evaluated_term, rel=1e-6)


def test_group_sums_give_per_group_kad_and_exact_bootstrap_resamples():
    ref, ev = _sets(n_ref=120, n_ev=90, dim=6)
    g_ref, g_ev = np.repeat(np.arange(12), 10), np.repeat(np.arange(9), 10)
    rk = D.ReferenceKernel(ref, g_ref)
    comp = rk.compare(ev, g_ev)
    assert comp.result().value == pytest.approx(D.kernel_audio_distance(ref, ev, rk.bandwidth).value, rel=1e-6)
    sub = comp.result([0, 1, 2], [3, 4])
    direct = D.kernel_audio_distance(ref[g_ref < 3], ev[(g_ev == 3) | (g_ev == 4)], rk.bandwidth)
    assert sub.value == pytest.approx(direct.value, rel=1e-6)
    # one resample from the block sums equals the U-statistic over the drawn copies with pairs
    # between two copies of the same clip left out, computed by brute force
    rng = np.random.default_rng(0)
    cr = D._resample_counts(rng, 12, 1)
    ce = D._resample_counts(rng, 9, 1)
    from_sums = D._bootstrap_values(comp, 1, 0, cr, ce)[0]

    def drawn(x, g, counts):
        frames, copy_id = [], []
        for grp, c in enumerate(counts[0]):
            for _ in range(int(c)):
                frames.append(x[g == grp])
                copy_id += [grp] * int((g == grp).sum())
        return np.concatenate(frames), np.array(copy_id), np.repeat(np.arange(len(frames)), [len(f) for f in frames])

    def within(x, clip, copy):
        k = np.exp(-rk.gamma * ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        keep = (clip[:, None] != clip[None, :]) | ((copy[:, None] == copy[None, :]) & ~np.eye(len(x), dtype=bool))
        return k[keep].mean()

    rf, rclip, rcopy = drawn(ref, g_ref, cr)
    ef, eclip, ecopy = drawn(ev, g_ev, ce)
    cross = np.exp(-rk.gamma * ((rf[:, None, :] - ef[None, :, :]) ** 2).sum(-1)).mean()
    brute = 100 * (within(rf, rclip, rcopy) + within(ef, eclip, ecopy) - 2 * cross)
    assert from_sums == pytest.approx(brute, rel=1e-4)
    lo, hi, values = comp.bootstrap(300, seed=1)
    assert lo < comp.result().value < hi and np.all(np.isfinite(values))


def test_frame_bootstrap_and_paired_comparison():
    ref, ev = _sets(n_ref=150, n_ev=150, dim=5)
    res, lo, hi = D.kad_bootstrap(ref, ev, n_resamples=200)
    assert lo <= res.value <= hi
    # frame groups (the direct-tile path) keep the diagonal too; resamples are centred on the estimate
    ref2, ev2 = _sets(n_ref=1200, n_ev=1100, dim=16, shift=0.05, scale=1.0)
    rk = D.ReferenceKernel(ref2, np.arange(1200))
    assert rk.sums.group_diagonal.sum() == pytest.approx(rk.sums.diagonal)
    comp = rk.compare(ev2, np.arange(1100))
    lo2, hi2, values = comp.bootstrap(300, seed=2)
    value = comp.result().value
    assert lo2 < value < hi2 and abs(np.median(values) - value) < 0.25 * (hi2 - lo2)
    rk = D.ReferenceKernel(ref, np.repeat(np.arange(15), 10))
    clips = np.repeat(np.arange(15), 10)
    good = rk.compare(ref + 0.05 * np.random.default_rng(0).standard_normal(ref.shape), clips)
    bad = rk.compare(ev, clips)
    cmp = D.paired_kad_difference(good, bad, n_resamples=300)
    assert cmp.paired_clips and cmp.difference < 0 and cmp.ci_high < 0 and cmp.p_value < 0.05
    # every resample on one side: the p-value is its floor 2 / (B + 1), never 0
    far = rk.compare(ev + 3.0, clips)
    assert D.paired_kad_difference(good, far, n_resamples=300).p_value == pytest.approx(2 / 301)


def test_kad_vs_n_and_fad_infinity_are_finite():
    ref, ev = _sets(n_ref=300, n_ev=300, dim=4)
    points = D.kad_vs_n(D.ReferenceKernel(ref), ev, [50, 150, 300])
    assert [n for n, _ in points] == [50, 150, 300] and all(math.isfinite(v) for _, v in points)
    inf = D.fad_infinity(ref, ev, steps=4)
    assert math.isfinite(inf.value) and len(inf.points) == 4


@pytest.mark.parametrize(
    "ref, ev, match",
    [
        (np.ones((1, 4)), np.ones((5, 4)), "at least 2"),
        (np.zeros((5, 4)), np.zeros((5, 3)), "dimensions differ"),
        (np.full((5, 4), np.nan), np.zeros((5, 4)), "NaN or infinite"),
        (np.zeros(5), np.zeros((5, 4)), r"expected an array \[n_frames, dim\]"),
    ],
)
def test_bad_inputs_give_clear_errors(ref, ev, match):
    with pytest.raises(D.MetricError, match=match):
        D.kernel_audio_distance(ref, ev)
    with pytest.raises(D.MetricError, match=match):
        D.frechet_audio_distance(ref, ev, require_full_rank=False)


def test_constant_and_duplicate_frames_never_give_nan():
    const = np.ones((50, 4))
    with pytest.raises(D.MetricError, match="median pairwise distance is 0"):
        D.kernel_audio_distance(const, np.zeros((50, 4)))
    # with a bandwidth, KAD of constant sets is defined: 100 * (1 + 1 - 2 exp(-d^2 / 2 sigma^2))
    res = D.kernel_audio_distance(const, np.zeros((50, 4)), bandwidth=2.0)
    assert res.value == pytest.approx(100 * (2 - 2 * math.exp(-4 / 8)), rel=1e-5)
    # constant sets: FAD is the squared mean distance
    assert D.frechet_audio_distance(const, np.zeros((50, 4))).value == pytest.approx(4.0)
    # duplicated frames (half the set) keep a positive bandwidth and a finite value
    rng = np.random.default_rng(5)
    dup = np.concatenate([rng.standard_normal((30, 4)), np.repeat(rng.standard_normal((1, 4)), 20, 0)])
    assert math.isfinite(D.kernel_audio_distance(dup, rng.standard_normal((40, 4))).value)
    assert math.isfinite(D.frechet_audio_distance(dup, dup).value)
    assert D.frechet_audio_distance(dup, dup).value == pytest.approx(0.0, abs=1e-9)


def test_fad_refuses_fewer_frames_than_dimensions_unless_allowed():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((20, 32)), rng.standard_normal((25, 32))
    with pytest.raises(D.MetricError, match="20 frames for 32 dimensions"):
        D.frechet_audio_distance(x, y)
    value = D.frechet_audio_distance(x, y, require_full_rank=False).value
    assert math.isfinite(value) and value > 0


def test_bandwidth_must_be_positive():
    with pytest.raises(D.MetricError, match="bandwidth must be a positive"):
        D.kernel_audio_distance(np.zeros((3, 2)), np.zeros((3, 2)), bandwidth=0.0)


def test_import_kadtk_restores_warning_filters():
    from sonieval.metrics.embeddings import import_kadtk

    before = list(warnings.filters)
    import_kadtk()
    assert list(warnings.filters) == before
