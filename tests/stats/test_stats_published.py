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
    complete_block, icc_balanced, krippendorff_alpha, ordinal_alpha_from_counts, unit_value_counts,
)

SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])

nan = np.nan
KRIPPENDORFF_2011 = np.array([  # rows: coders A-D; columns: units 1-12
    [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
    [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
])


def _long(matrix: np.ndarray) -> pd.DataFrame:
    """raters × units matrix as ratings rows (one system, units = clips)."""
    rows = []
    for r in range(matrix.shape[0]):
        for u in range(matrix.shape[1]):
            if not np.isnan(matrix[r, u]):
                rows.append({"rater_id": f"r{r}", "system_id": "s", "clip_id": f"u{u:02d}", "mark": int(matrix[r, u])})
    return pd.DataFrame(rows)


def test_shrout_fleiss_icc2_forms():
    res = icc_balanced(_long(SHROUT_FLEISS.T.astype(float)))
    assert round(res["icc2_1"], 2) == 0.29
    assert round(res["icc2_k"], 2) == 0.62
    assert res["k"] == 4 and res["n_units_balanced"] == 6 and res["note"] == ""


def test_shrout_fleiss_all_forms_through_pingouin():
    """The library call the report uses gives all six printed values."""
    import pingouin

    df = pd.DataFrame([(t, j, SHROUT_FLEISS[t, j]) for t in range(6) for j in range(4)], columns=["t", "j", "x"])
    icc = pingouin.intraclass_corr(data=df, targets="t", raters="j", ratings="x")["ICC"].round(2).tolist()
    assert icc == [0.17, 0.29, 0.71, 0.44, 0.62, 0.91]


def test_icc_uses_complete_block_and_says_so():
    m = SHROUT_FLEISS.T.astype(float)
    m = np.vstack([m, np.full((1, 6), nan)])
    m[4, :2] = [3, 4]  # a fifth judge who rated two targets only
    res = icc_balanced(_long(m))
    assert round(res["icc2_1"], 2) == 0.29  # the fifth judge is dropped, not the targets
    assert res["n_raters_balanced"] == 4 and res["n_raters_total"] == 5
    assert "4 of 5 raters" in res["note"]


@pytest.mark.parametrize("level, expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)])
def test_krippendorff_2011_levels_with_raters_by_units(level, expected):
    import krippendorff

    value = krippendorff.alpha(reliability_data=KRIPPENDORFF_2011, level_of_measurement=level)
    assert round(value, 3) == expected
    # The transposed (units × raters) matrix is a different, wrong answer: the orientation matters.
    assert round(krippendorff.alpha(reliability_data=KRIPPENDORFF_2011.T, level_of_measurement=level), 3) != expected


def test_report_alpha_is_ordinal_and_bootstrap_form_matches():
    res = krippendorff_alpha(_long(KRIPPENDORFF_2011), 1, 5, n_boot=200, seed=1)
    assert round(res["alpha"], 3) == 0.815
    assert res["n_units"] == 12 and res["n_units_pairable"] == 11  # unit 12 has one value
    assert res["ci_low"] <= res["alpha"] <= res["ci_high"]
    counts = unit_value_counts(KRIPPENDORFF_2011, np.arange(1, 6))
    assert ordinal_alpha_from_counts(counts)[0] == pytest.approx(res["alpha"], abs=1e-12)


def test_coincidence_form_matches_package_on_random_incomplete_data():
    import krippendorff

    rng = np.random.default_rng(3)
    m = rng.integers(1, 6, size=(15, 40)).astype(float)
    m[:, :20] += (np.arange(15)[:, None] % 2)  # some agreement structure
    m = np.clip(m, 1, 5)
    m[rng.random(m.shape) < 0.4] = nan
    expected = krippendorff.alpha(reliability_data=m, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
    got = ordinal_alpha_from_counts(unit_value_counts(m, np.arange(1, 6)))[0]
    assert got == pytest.approx(expected, abs=1e-12)
    # Unit weights of 2 everywhere = the data duplicated: α changes only through n (D_e's n-1).
    w = np.full((1, 40), 1.0)
    assert ordinal_alpha_from_counts(unit_value_counts(m, np.arange(1, 6)), w)[0] == pytest.approx(expected, abs=1e-12)


def test_complete_block_is_complete():
    rows, cols = complete_block(KRIPPENDORFF_2011)
    assert not np.isnan(KRIPPENDORFF_2011[np.ix_(rows, cols)]).any()
    assert len(rows) * len(cols) >= 4 * 8
