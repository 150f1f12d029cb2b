"""The exact crossed-random-intercept REML fit (sonieval.stats.crossed) against published values,
statsmodels, closed-form degrees of freedom, and its own two linear-algebra paths.

Penicillin (lme4's data set ``Penicillin``; Davies & Goldsmith 1972, *Statistical Methods in
Research and Production*, 4th ed., §6.6): 6 penicillin samples × 24 assay plates, the diameter
(mm) of the zone of inhibition; plate and sample are crossed random intercepts. Published REML
fit of ``diameter ~ 1 + (1|plate) + (1|sample)``, lme4 reference page
(https://lme4.github.io/lme4/reference/Penicillin.html; Bates 2010, *lme4: Mixed-effects modeling
with R*, ch. 2, model fm03): REML criterion 330.8606, variances plate 0.7169, sample 3.7311,
residual 0.3024, intercept 22.9722 (SE 0.8086). The same fit to six significant digits as
checked against lme4 and SPSS (REML 330.860589) in Metida.jl's validation suite
(PharmCat/Metida.jl, test/test.jl and test/lme4.jl): 0.716908, 3.73092, 0.302415, SE 0.808573.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from sonieval.stats.crossed import SingularFitError, TooLargeError, fit_crossed_reml

# Rows: plates a–x; columns: samples A–F (lme4's Penicillin, 144 diameters in mm).
PENICILLIN = np.array(
    [
        [27, 23, 26, 23, 23, 21],
        [27, 23, 26, 23, 23, 21],
        [25, 21, 25, 24, 24, 20],
        [26, 23, 25, 23, 23, 20],
        [25, 22, 26, 22, 23, 20],
        [24, 22, 25, 23, 22, 19],
        [24, 20, 23, 21, 22, 19],
        [26, 22, 26, 24, 24, 21],
        [24, 21, 24, 22, 22, 20],
        [24, 21, 24, 23, 22, 19],
        [26, 23, 26, 24, 24, 21],
        [25, 22, 26, 24, 24, 20],
        [26, 24, 26, 24, 25, 22],
        [26, 23, 26, 23, 23, 20],
        [26, 23, 25, 24, 24, 22],
        [25, 22, 25, 23, 23, 20],
        [25, 21, 24, 23, 23, 20],
        [25, 22, 24, 23, 23, 19],
        [24, 21, 23, 21, 21, 19],
        [26, 23, 26, 24, 24, 21],
        [25, 21, 24, 22, 22, 18],
        [25, 22, 25, 22, 22, 20],
        [24, 21, 24, 22, 24, 19],
        [24, 21, 24, 22, 21, 18],
    ],
    dtype=float,
)


def _penicillin_fit(**kw):
    plate = np.repeat(np.arange(24), 6)
    sample = np.tile(np.arange(6), 24)
    return fit_crossed_reml(PENICILLIN.ravel(), np.zeros(144, dtype=int), plate, sample, **kw)


def test_penicillin_matches_the_published_lme4_fit():
    fit = _penicillin_fit()
    assert fit.converged
    assert fit.reml_criterion == pytest.approx(330.860589, rel=1e-7)
    # lme4's printed fit and the six-digit values: variance components and fixed effect to 1e-4 relative.
    # (lme4 stops its optimiser a little early on this flat direction: 3.7311 vs the optimum 3.73092.)
    for got, printed, six in (
        (fit.var_a, 0.7169, 0.716908),
        (fit.var_b, 3.7311, 3.73092),
        (fit.var_resid, 0.3024, 0.302415),
        (fit.beta[0], 22.9722, 22.9722),
        (np.sqrt(fit.cov_beta[0, 0]), 0.8086, 0.808573),
    ):
        assert got == pytest.approx(printed, rel=1e-4)
        assert got == pytest.approx(six, rel=1e-5)
    assert fit.theta_a == pytest.approx(1.5397, rel=1e-4) and fit.theta_b == pytest.approx(3.5125, rel=1e-4)
    assert fit.message.startswith("converged: projected gradient") and fit.projected_gradient < 1e-9


def test_a_fit_that_stops_short_is_not_converged_and_says_why():
    fit = _penicillin_fit(max_iterations=1)
    assert not fit.converged and fit.projected_gradient > 1e-6
    assert fit.message.startswith("not converged: the REML criterion still falls")
    assert "stopped after 1 iterations" in fit.message and "\n" not in fit.message


def test_the_report_of_the_penicillin_fit_says_converged():
    """The report's mixed model (mark ~ 0 + system + (1|rater) + (1|clip)) on Penicillin as a study:
    plates as raters, samples as clips, one system."""
    from sonieval.stats.models import mixed_model

    part = pd.DataFrame(
        {
            "mark": PENICILLIN.ravel(),
            "system_id": "penicillin",
            "rater_id": [f"plate{i:02d}" for i in np.repeat(np.arange(24), 6)],
            "clip_id": [f"sample{j}" for j in np.tile(np.arange(6), 24)],
        }
    )
    table, info, fit = mixed_model(part)
    assert info["converged"] and "converged" not in info["note"]
    assert info["rater_variance"] == pytest.approx(0.716908, rel=1e-5)
    assert info["clip_variance"] == pytest.approx(3.73092, rel=1e-5)
    assert table["estimate"].iloc[0] == pytest.approx(22.9722, rel=1e-5)


def _incomplete(seed=3, n_raters=24, n_clips=16, p=4, share=0.3):
    rng = np.random.default_rng(seed)
    cells = [(r, c, s) for r in range(n_raters) for c in range(n_clips) for s in range(p) if rng.random() < share]
    a, b, s = (np.array(v) for v in zip(*cells))
    y = 3 + 0.3 * s + rng.normal(0, 0.5, n_raters)[a] + rng.normal(0, 0.4, n_clips)[b] + rng.normal(0, 0.8, len(a))
    return np.clip(np.round(y), 1, 5), s, a, b


def test_matches_statsmodels_mixedlm_on_small_incomplete_data():
    import statsmodels.formula.api as smf

    y, s, a, b = _incomplete()
    fit = fit_crossed_reml(y, s, a, b)
    df = pd.DataFrame({"mark": y, "system": s, "rater": a, "clip": b, "one": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smf.mixedlm(
            "mark ~ 0 + C(system)",
            df,
            groups="one",
            re_formula="0",
            vc_formula={"rater": "0 + C(rater)", "clip": "0 + C(clip)"},
        ).fit(reml=True, method=["bfgs"], gtol=1e-10, maxiter=2000)
    vc = dict(zip(ref.model.exog_vc.names, ref.vcomp))
    assert fit.var_a == pytest.approx(vc["rater"], rel=1e-4)
    assert fit.var_b == pytest.approx(vc["clip"], rel=1e-4)
    assert fit.var_resid == pytest.approx(ref.scale, rel=1e-4)
    assert fit.reml_criterion == pytest.approx(-2 * ref.llf, rel=1e-7)
    np.testing.assert_allclose(fit.beta, ref.fe_params.to_numpy(), rtol=1e-4)
    # Cov(β̂) = (X'V⁻¹X)⁻¹ with V = σ²_r Z_rZ_r' + σ²_c Z_cZ_c' + σ² I built densely (statsmodels' own bse
    # come from its joint Hessian, a different approximation).
    Zr, Zc, X = (np.eye(v.max() + 1)[v] for v in (a, b, s))
    V = fit.var_a * Zr @ Zr.T + fit.var_b * Zc @ Zc.T + fit.var_resid * np.eye(len(y))
    cov = np.linalg.inv(X.T @ np.linalg.solve(V, X))
    np.testing.assert_allclose(fit.cov_beta, cov, rtol=1e-8)
    np.testing.assert_allclose(fit.beta, cov @ X.T @ np.linalg.solve(V, y), rtol=1e-8)


def test_dense_and_sparse_paths_agree_on_a_batched_design():
    """Raters who each mark one batch of clips: the sparse (SuperLU) path is used and agrees."""
    rng = np.random.default_rng(0)
    batches, per_batch, raters_per_batch = 80, 8, 4
    rows = []
    for k in range(batches):
        for r in range(raters_per_batch):
            for c in range(per_batch):
                rows.append((k * raters_per_batch + r, k * per_batch + c))
    a, b = (np.array(v) for v in zip(*rows))
    s = rng.integers(0, 3, len(a))
    y = 0.2 * s + rng.normal(0, 0.5, a.max() + 1)[a] + rng.normal(0, 0.7, b.max() + 1)[b] + rng.normal(0, 1, len(a))
    dense = fit_crossed_reml(y, s, a, b)
    sparse = fit_crossed_reml(y, s, a, b, dense_limit=50)
    assert sparse.reml_criterion == pytest.approx(dense.reml_criterion, rel=1e-9)
    for attr in ("var_a", "var_b", "var_resid"):
        assert getattr(sparse, attr) == pytest.approx(getattr(dense, attr), rel=1e-4)
    np.testing.assert_allclose(sparse.beta, dense.beta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse.cov_beta, dense.cov_beta, rtol=1e-4)


def test_satterthwaite_df_match_the_anova_strata_of_balanced_designs():
    rng = np.random.default_rng(7)
    n_r, n_c, p = 12, 10, 3
    # Crossed: every rater marks every clip with every system; contrasts live in the residual stratum.
    a, b, s = (g.ravel() for g in np.meshgrid(np.arange(n_r), np.arange(n_c), np.arange(p), indexing="ij"))
    y = 0.3 * s + rng.normal(0, 0.5, n_r)[a] + rng.normal(0, 0.6, n_c)[b] + rng.normal(0, 1, len(a))
    fit = fit_crossed_reml(y, s, a, b)
    _, _, df = fit.contrast(np.array([1.0, -1.0, 0.0]))
    assert df == pytest.approx(len(y) - p - (n_r - 1) - (n_c - 1), rel=1e-3)
    # Nested: each system has its own 6 clips, every rater marks every clip; contrasts live in the
    # clip-within-system stratum, p(c − 1) df.
    per = 6
    a, b = (g.ravel() for g in np.meshgrid(np.arange(n_r), np.arange(p * per), indexing="ij"))
    s = b // per
    y = 0.3 * s + rng.normal(0, 0.5, n_r)[a] + rng.normal(0, 0.6, p * per)[b] + rng.normal(0, 1, len(a))
    fit = fit_crossed_reml(y, s, a, b)
    _, se, df = fit.contrast(np.array([0.0, 1.0, -1.0]))
    assert df == pytest.approx(p * (per - 1), rel=1e-3)
    ms_clip = (
        n_r * np.var([y[b == c].mean() - y[s == c // per].mean() for c in range(p * per)]) * p * per / (p * (per - 1))
    )
    assert se == pytest.approx(np.sqrt(2 * ms_clip / (n_r * per)), rel=1e-4)  # the classical nested-ANOVA SE


def test_not_estimable_models_say_why():
    y, s, a, b = _incomplete()
    with pytest.raises(SingularFitError, match=r"fixed level\(s\) \[4\] have no observations"):
        fit_crossed_reml(y, s, a, b, p=5)
    with pytest.raises(SingularFitError, match="residual variance is zero"):
        fit_crossed_reml(3 + 0.5 * s, s, a, b)  # marks explained by the system alone
    rng = np.random.default_rng(1)
    a2, b2 = rng.integers(0, 300, 3000), rng.integers(0, 300, 3000)
    with pytest.raises(TooLargeError, match="both random factors are large"):
        fit_crossed_reml(rng.normal(size=3000), np.zeros(3000, int), a2, b2, dense_limit=100)


def test_zero_variance_component_is_a_boundary_fit():
    rng = np.random.default_rng(5)
    a = np.repeat(np.arange(30), 10)
    b = rng.integers(0, 12, len(a))
    y = rng.normal(0, 0.6, 30)[a] + rng.normal(0, 1, len(a))  # no clip effect planted
    fit = fit_crossed_reml(y, np.zeros(len(a), int), a, b)
    assert fit.var_a > 0.1
    if fit.boundary[1]:
        assert fit.var_b == 0 and fit.cov_variances[1, 1] == 0
    else:
        assert fit.var_b < 0.05
