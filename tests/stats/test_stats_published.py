"""Published worked examples, reproduced to their printed precision.

- Shrout & Fleiss (1979), "Intraclass correlations: uses in assessing rater reliability",
  Psychol. Bull. 86(2):420-428, Table 2 (6 targets × 4 judges) and Table 4: ICC(2,1) = .29,
  ICC(2,4) = .62 (and ICC(1,1) = .17, ICC(3,1) = .71, ICC(1,4) = .44, ICC(3,4) = .91).
- Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 coders × 12 units
  example with missing values: nominal .743, ordinal .815, interval .849, ratio .797.
"""

import numpy as np
import pandas as pd
import pytest

from sonieval.stats.reliability import (
    alpha_from_counts,
    complete_block,
    icc_complete_block,
    icc_variance_components,
    krippendorff_alpha,
    ordinal_alpha_from_counts,
    unit_value_counts,
)

SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])

nan = np.nan
KRIPPENDORFF_2011 = np.array(
    [  # rows: coders A-D; columns: units 1-12
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
)


def _long(matrix: np.ndarray) -> pd.DataFrame:
    """raters × units matrix as ratings rows (one system, units = clips)."""
    rows = []
    for r in range(matrix.shape[0]):
        for u in range(matrix.shape[1]):
            if not np.isnan(matrix[r, u]):
                rows.append({"rater_id": f"r{r}", "system_id": "s", "clip_id": f"u{u:02d}", "mark": int(matrix[r, u])})
    return pd.DataFrame(rows)


def _pingouin_icc(matrix: np.ndarray) -> pd.DataFrame:
    import pingouin

    df = pd.DataFrame(
        [(t, j, matrix[t, j]) for t in range(matrix.shape[0]) for j in range(matrix.shape[1])], columns=["t", "j", "x"]
    )
    return pingouin.intraclass_corr(data=df, targets="t", raters="j", ratings="x").set_index("Type")


FORMS = {"icc_a1": "ICC(A,1)", "icc_ak": "ICC(A,k)", "icc_c1": "ICC(C,1)", "icc_ck": "ICC(C,k)"}


def test_shrout_fleiss_icc_forms_from_variance_components():
    """REML variance components on a complete design reproduce the ANOVA ICCs (printed: .29 .62 .71 .91)."""
    res = icc_variance_components(_long(SHROUT_FLEISS.T.astype(float)))
    assert [round(res[f], 2) for f in FORMS] == [0.29, 0.62, 0.71, 0.91]
    ref = _pingouin_icc(SHROUT_FLEISS)
    for form, name in FORMS.items():
        assert res[form] == pytest.approx(ref.loc[name, "ICC"], abs=1e-6)
        lo, hi = res[f"{form}_ci95"]
        assert lo < res[form] < hi
    assert res["k_hat"] == 4 and res["n_marks"] == 24 and res["note"] == ""


def test_shrout_fleiss_complete_block_matches_pingouin_without_rounding():
    res = icc_complete_block(_long(SHROUT_FLEISS.T.astype(float)))
    ref = _pingouin_icc(SHROUT_FLEISS)
    for form, name in FORMS.items():
        assert res[form] == pytest.approx(ref.loc[name, "ICC"], abs=1e-12)
        # pingouin rounds its CI to 2 decimals; the same formulas unrounded agree to that rounding
        assert np.allclose(res[f"{form}_ci95"], ref.loc[name, "CI95"], atol=0.005 + 1e-12)
    assert res["icc_a1_ci95"][0] != round(res["icc_a1_ci95"][0], 2)
    assert res["share_of_marks"] == 1.0 and res["note"] == ""


def test_shrout_fleiss_all_forms_through_pingouin():
    """The library's own values, as printed (the reference the hand-written forms are held to)."""
    icc = _pingouin_icc(SHROUT_FLEISS)["ICC"].round(2).tolist()
    assert icc == [0.17, 0.29, 0.71, 0.44, 0.62, 0.91]


def test_incomplete_rater_counts_for_the_mixed_model_icc_and_not_for_the_block():
    m = SHROUT_FLEISS.T.astype(float)
    m = np.vstack([m, np.full((1, 6), nan)])
    m[4, :2] = [3, 4]  # a fifth judge who rated two targets only
    block = icc_complete_block(_long(m))
    assert round(block["icc_a1"], 2) == 0.29  # the fifth judge is dropped from the block, not the targets
    assert block["n_raters_block"] == 4 and block["n_raters_total"] == 5
    assert block["share_of_marks"] == pytest.approx(24 / 26) and "24 of 26 marks" in block["note"]
    full = icc_variance_components(_long(m))
    assert full["n_marks"] == 26 and full["icc_a1"] != pytest.approx(block["icc_a1"], abs=1e-3)
    assert full["k_hat"] == pytest.approx(6 / (2 / 5 + 4 / 4))  # harmonic mean of 5, 5, 4, 4, 4, 4 raters


@pytest.mark.parametrize(
    "level, expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_krippendorff_2011_levels_with_raters_by_units(level, expected):
    import krippendorff

    value = krippendorff.alpha(reliability_data=KRIPPENDORFF_2011, level_of_measurement=level)
    assert round(value, 3) == expected
    # The transposed (units × raters) matrix is a different, wrong answer: the orientation matters.
    assert round(krippendorff.alpha(reliability_data=KRIPPENDORFF_2011.T, level_of_measurement=level), 3) != expected


def test_report_alpha_is_ordinal_and_interval_and_bootstrap_form_matches():
    res = krippendorff_alpha(_long(KRIPPENDORFF_2011), 1, 5, n_boot=200, seed=1)
    assert round(res["alpha"], 3) == 0.815
    assert round(res["alpha_interval"], 3) == 0.849
    assert res["n_units"] == 12 and res["n_units_pairable"] == 11  # unit 12 has one value
    assert res["ci_low"] <= res["alpha"] <= res["ci_high"]
    assert res["interval_ci_low"] <= res["alpha_interval"] <= res["interval_ci_high"]
    counts = unit_value_counts(KRIPPENDORFF_2011, np.arange(1, 6))
    assert ordinal_alpha_from_counts(counts)[0] == pytest.approx(res["alpha"], abs=1e-12)


def test_coincidence_form_matches_package_on_random_incomplete_data():
    import krippendorff

    rng = np.random.default_rng(3)
    m = rng.integers(1, 6, size=(15, 40)).astype(float)
    m[:, :20] += np.arange(15)[:, None] % 2  # some agreement structure
    m = np.clip(m, 1, 5)
    m[rng.random(m.shape) < 0.4] = nan
    expected = krippendorff.alpha(reliability_data=m, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
    got = ordinal_alpha_from_counts(unit_value_counts(m, np.arange(1, 6)))[0]
    assert got == pytest.approx(expected, abs=1e-12)
    interval = krippendorff.alpha(reliability_data=m, level_of_measurement="interval")
    got = alpha_from_counts(unit_value_counts(m, np.arange(1, 6)), np.arange(1.0, 6.0), "interval")[0]
    assert got == pytest.approx(interval, abs=1e-12)
    # Unit weights of 2 everywhere = the data duplicated: α changes only through n (D_e's n-1).
    w = np.full((1, 40), 1.0)
    assert ordinal_alpha_from_counts(unit_value_counts(m, np.arange(1, 6)), w)[0] == pytest.approx(expected, abs=1e-12)


def test_complete_block_is_complete():
    rows, cols = complete_block(KRIPPENDORFF_2011)
    assert not np.isnan(KRIPPENDORFF_2011[np.ix_(rows, cols)]).any()
    assert len(rows) * len(cols) >= 4 * 8
