"""Post-processing properties (thesis §4.4 definitions, sonieval/pipeline/postprocess.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sonieval.errors import SonievalError
from sonieval.pipeline.postprocess import (
    apply_postprocess,
    needs_embedding_rescale,
    rescale_embedding,
    squared_filter,
    threshold_filter,
)

RNG = np.random.default_rng(7)
DECODED = (0.3 * RNG.standard_normal(4000)).clip(-0.4, 0.4).astype(np.float32)  # thesis: decodes in [-0.4, 0.4]
ORIGINAL = np.concatenate([np.linspace(-0.8, 0.95, 2000), np.zeros(2000)]).astype(np.float32)
SILENT = np.zeros(4000, dtype=np.float32)


def test_minmax_spans_exactly_the_original_range():
    out = apply_postprocess("minmax", DECODED, ORIGINAL)
    assert out.min() == pytest.approx(ORIGINAL.min(), abs=1e-6)
    assert out.max() == pytest.approx(ORIGINAL.max(), abs=1e-6)
    # affine: the waveform's shape is kept (correlation 1 with the decode)
    assert np.corrcoef(out, DECODED)[0, 1] == pytest.approx(1.0, abs=1e-6)


def test_peak_hits_plus_or_minus_one():
    out = apply_postprocess("peak", DECODED, ORIGINAL)
    assert np.max(np.abs(out)) == pytest.approx(1.0, abs=1e-6)
    neg = apply_postprocess("peak", -np.abs(DECODED), ORIGINAL)
    assert neg.min() == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize(
    "name",
    [
        "none",
        "peak",
        "minmax",
        "squared",
        "threshold10",
        "wiener",
        "minmax+squared",
        "minmax+wiener",
        "embedding_rescale+minmax+threshold5",
    ],
)
@pytest.mark.parametrize(
    "decoded,original",
    [(SILENT, SILENT), (SILENT, ORIGINAL), (DECODED, SILENT), (np.full(4000, 0.25, np.float32), ORIGINAL)],
)
def test_silent_or_constant_input_stays_finite(name, decoded, original):
    out = apply_postprocess(name, decoded, original)
    assert out.dtype == np.float32 and out.shape == decoded.shape
    assert np.all(np.isfinite(out))


def test_silence_stays_silent():
    for name in ("peak", "squared", "threshold10", "wiener", "minmax"):
        assert not np.any(apply_postprocess(name, SILENT, SILENT)), name


def test_threshold_zeroes_exactly_what_is_below_p_percent_of_peak():
    x = np.array([0.5, -0.04, 0.06, -0.5, 0.049, -1.0, 0.1, -0.099], dtype=np.float32)
    out = threshold_filter(x, 10)  # peak 1.0 → threshold 0.1
    assert out.tolist() == pytest.approx([0.5, 0, 0, -0.5, 0, -1.0, 0.1, 0])
    out7 = apply_postprocess("threshold7", x, x)
    assert out7.tolist() == pytest.approx([0.5, 0, 0, -0.5, 0, -1.0, 0.1, -0.099])


def test_squared_keeps_sign_and_order():
    x = np.linspace(-1, 1, 101)
    y = squared_filter(x)
    assert np.array_equal(np.sign(y), np.sign(x))
    assert y == pytest.approx(x * np.abs(x))
    assert np.all(np.diff(y) >= 0)  # monotone: the waveform's shape is kept
    # after min-max, small values shrink more than large ones (the thesis's noise-lowering intent)
    out = apply_postprocess("minmax+squared", DECODED, ORIGINAL)
    assert np.max(np.abs(out)) <= max(abs(ORIGINAL.min()), ORIGINAL.max()) ** 2 + 1e-6


def test_wiener_is_scipy_and_chains_apply_left_to_right():
    from scipy.signal import wiener

    mm = apply_postprocess("minmax", DECODED, ORIGINAL)
    with np.errstate(invalid="ignore", divide="ignore"):  # scipy's 0/0 on flat runs, replaced by it
        expected = wiener(mm.astype(np.float64))
    assert apply_postprocess("minmax+wiener", DECODED, ORIGINAL) == pytest.approx(expected, abs=1e-6)
    assert apply_postprocess("minmax+squared", DECODED, ORIGINAL) == pytest.approx(squared_filter(mm), abs=1e-6)


def test_embedding_rescale_is_a_pre_gate_step():
    emb = RNG.standard_normal((12, 8)).astype(np.float32) * 5
    out = rescale_embedding(emb, ORIGINAL)
    assert out.min() == pytest.approx(ORIGINAL.min(), abs=1e-5) and out.max() == pytest.approx(ORIGINAL.max(), abs=1e-5)
    assert needs_embedding_rescale("embedding_rescale+minmax") and not needs_embedding_rescale("minmax")
    # at audio level it is a no-op
    assert apply_postprocess("embedding_rescale", DECODED, ORIGINAL) == pytest.approx(DECODED)
    with pytest.raises(SonievalError, match="must be the first step"):
        apply_postprocess("minmax+embedding_rescale", DECODED, ORIGINAL)


def test_unknown_step_is_one_clear_line():
    with pytest.raises(SonievalError) as info:
        apply_postprocess("minmax+cubed", DECODED, ORIGINAL)
    msg = str(info.value)
    assert "'cubed'" in msg and "allowed" in msg and "\n" not in msg
