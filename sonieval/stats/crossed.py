"""Exact REML for two crossed random intercepts: ``y ~ 0 + group + (1|A) + (1|B)``.

The report's mixed model is ``mark ~ system + (1|rater) + (1|clip)`` and its reliability model
``mark ~ 1 + (1|rater) + (1|stimulus)``: one categorical fixed factor (cell-means coding, or an
intercept) and two crossed random intercepts. Why by hand: statsmodels' ``MixedLM`` fits crossed
effects as variance components of one group and builds their design densely, so it stops
scaling at a few thousand marks; lme4 is R. This module is lme4's penalised least-squares
formulation (Bates, Mächler, Bolker & Walker 2015, "Fitting linear mixed-effects models using
lme4", *J. Stat. Softw.* 67(1), §3) specialised to this model, where everything depends on the
data only through counts and sums (computed once, O(n)):

    relative covariance factor Λ = diag(θ_A I, θ_B I),  θ = σ_A/σ, σ_B/σ
    M(θ) = [[Λ Z'Z Λ + I, Λ Z'X], [X'Z Λ, X'X]]          (random + fixed effects)
    REML criterion  d(θ) = log det M(θ) + (n − p)(1 + log(2π r²(θ)/(n − p)))

with r²(θ) the penalised residual sum of squares. ``d`` is minimised over θ ≥ 0 (L-BFGS-B with
the analytic gradient ∂d/∂θ_i = (2/θ_i)(q_i − tr M⁻¹_ii − (n − p)‖u_i‖²/r²)), then polished by
projected Newton steps (two parameters; the Hessian from differences of that gradient). Whether the
fit converged is decided at the returned θ, by the projected gradient and, for a component at 0,
by the curvature there (:class:`Convergence`), never by the optimiser's exit message: at the optimum,
roundoff decides whether L-BFGS-B's line search ends "normally", and roundoff differs between BLAS
kernels. Polished, the fits agree to ~1e-11 relative across kernels and thread counts.

Linear algebra. Z'Z of crossed intercepts is [[D_A, N], [N', D_B]] with D diagonal counts and N
the sparse A × B incidence (scipy.sparse). Eliminating the factor with more levels is exact and
creates no fill-in (its block is diagonal); what remains is the Schur complement on the factor
with fewer levels plus the fixed effects. That complement is factorised with LAPACK's dense
Cholesky (scipy.linalg) when its order is at most ``dense_limit``, else with SuperLU
(``scipy.sparse.linalg.splu`` with a fill-reducing ordering), which wins when the design is
block-structured (raters who each see one batch of clips). CHOLMOD (scikit-sparse) would do the
same elimination in the same order; it is published on PyPI only as a source package that
needs SuiteSparse and a compiler, so the toolkit does not depend on it. The cost of one
evaluation is O(n) for the sums, plus the factorisation: (m³/3) for m = fewer levels + fixed
effects (dense), i.e. cubic in the smaller random factor, as in lme4.

Inference. The asymptotic covariance of the variance parameters is 2 H⁻¹ with H the Hessian of
the REML deviance (finite differences of exact evaluations); denominator degrees of freedom for
a contrast c'β are Satterthwaite's, ν = 2 V² / (∇V' A ∇V) with V = c' Cov(β̂) c (as lmerTest,
Kuznetsova, Brockhoff & Christensen 2017, *J. Stat. Softw.* 82(13)). A variance component
estimated at zero is held fixed there (the usual boundary convention).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import optimize
from scipy.linalg import lapack
from threadpoolctl import ThreadpoolController

__all__ = [
    "Convergence",
    "CrossedFit",
    "CrossedDesign",
    "fit_crossed_reml",
    "NotFittedError",
    "SingularFitError",
    "TooLargeError",
]

# Dense Schur complement up to this order (memory 8·m² bytes, time ~ m³/3 flops per evaluation:
# ~2·10¹⁰ at 4,000, about a second on two cores). Above it, SuperLU on the sparse complement, but
# only when that complement is sparse (block-structured designs); a random design whose smaller
# random factor has more levels than this is refused with a reason rather than run for hours.
DENSE_LIMIT = 4000
SPARSE_MAX_DENSITY = 0.02
# Below this order of the dense factor, BLAS runs on one thread.
_THREADED_FROM = 400
# Up to this many entries in B0 (levels × (kept levels + fixed + 1)) it is kept dense.
_SMALL_DENSE = 1_000_000
# Bucketed cross-products are kept when their total size stays below this many entries.
_BUCKET_LIMIT = 40_000_000


class NotFittedError(ValueError):
    """The model was not fitted; the message says why in words."""


class SingularFitError(NotFittedError):
    """The model is not estimable from these data (e.g. a fixed level without observations)."""


class TooLargeError(NotFittedError):
    """An exact fit would need a factorisation too large to do here (both random factors large)."""


@dataclass
class CrossedDesign:
    """Sufficient statistics of y ~ 0 + group + (1|A) + (1|B) (counts and sums only)."""

    n: int
    p: int
    n_a: int
    n_b: int
    eliminate_a: bool  # True: A (more levels) is the diagonal block eliminated exactly
    d_g: np.ndarray  # counts of the eliminated factor
    d_h: np.ndarray  # counts of the kept factor
    n_s: np.ndarray  # counts per fixed level
    y_g: np.ndarray
    y_h: np.ndarray
    y_s: np.ndarray
    yy: float
    N: sp.csr_matrix  # eliminated × kept counts
    F_g: sp.csr_matrix  # eliminated × fixed counts
    F_h: np.ndarray  # kept × fixed counts (dense)
    cross: _Cross = field(repr=False, default=None)

    @classmethod
    def from_codes(
        cls, y, group, a, b, *, p: int | None = None, n_a: int | None = None, n_b: int | None = None
    ) -> CrossedDesign:
        y = np.asarray(y, dtype=np.float64)
        group, a, b = (np.asarray(v, dtype=np.int64) for v in (group, a, b))
        p = int(group.max()) + 1 if p is None else p
        n_a = int(a.max()) + 1 if n_a is None else n_a
        n_b = int(b.max()) + 1 if n_b is None else n_b
        eliminate_a = n_a >= n_b
        g, h = (a, b) if eliminate_a else (b, a)
        n_g, n_h = (n_a, n_b) if eliminate_a else (n_b, n_a)
        ones = np.ones(len(y))
        N = sp.csr_matrix((ones, (g, h)), shape=(n_g, n_h))
        N.sum_duplicates()
        F_g = sp.csr_matrix((ones, (g, group)), shape=(n_g, p))
        F_g.sum_duplicates()
        F_h = sp.csr_matrix((ones, (h, group)), shape=(n_h, p)).toarray()
        design = cls(
            n=len(y),
            p=p,
            n_a=n_a,
            n_b=n_b,
            eliminate_a=eliminate_a,
            d_g=np.bincount(g, minlength=n_g).astype(float),
            d_h=np.bincount(h, minlength=n_h).astype(float),
            n_s=np.bincount(group, minlength=p).astype(float),
            y_g=np.bincount(g, y, n_g),
            y_h=np.bincount(h, y, n_h),
            y_s=np.bincount(group, y, p),
            yy=float(y @ y),
            N=N,
            F_g=F_g,
            F_h=F_h,
        )
        design.cross = _Cross(design)
        return design


class _Cross:
    """T(w) = B0' diag(w) B0 for B0 = [N | F_g | y_g] (rows: levels of the eliminated factor).

    w depends on a level only through its count d_g, so the levels are bucketed by count and
    B0_k' B0_k is formed once per bucket; each evaluation is then one sparse matrix–vector
    product over the buckets instead of a sparse matrix product over all levels. When the
    buckets would be too large (many distinct counts and dense overlaps) the product is formed
    at each evaluation instead.
    """

    def __init__(self, d: CrossedDesign):
        self.m1 = d.N.shape[1] + d.p + 1
        self.B0 = sp.hstack([d.N, d.F_g, sp.csr_matrix(d.y_g[:, None])], format="csr")
        self.counts, self.bucket = np.unique(d.d_g, return_inverse=True)
        self.stacked = None
        self.dense_b0 = None
        if self.B0.shape[0] * self.m1 <= _SMALL_DENSE:  # small: a dense product per evaluation is cheapest
            self.dense_b0 = self.B0.toarray()
            return
        # Entries of the bucketed products, bounded per bucket by Σ nnz(row)² and by (m+1)².
        per_row = np.diff(self.B0.indptr).astype(float) ** 2
        bound = float(np.minimum(np.bincount(self.bucket, per_row), float(self.m1) ** 2).sum())
        if bound <= _BUCKET_LIMIT:
            rows, cols, vals, ks = [], [], [], []
            for k in range(len(self.counts)):
                part = self.B0[self.bucket == k]
                prod = (part.T @ part).tocoo()
                rows.append(prod.row)
                cols.append(prod.col)
                vals.append(prod.data)
                ks.append(np.full(prod.nnz, k))
            rows, cols, vals, ks = (np.concatenate(v) for v in (rows, cols, vals, ks))
            flat = rows.astype(np.int64) * self.m1 + cols
            if self.m1 * self.m1 <= 50_000_000:  # a dense lookup beats sorting millions of indices
                seen = np.zeros(self.m1 * self.m1, bool)
                seen[flat] = True
                self.pattern = np.flatnonzero(seen)
                del seen
                lookup = np.empty(self.m1 * self.m1, np.int64)
                lookup[self.pattern] = np.arange(len(self.pattern))
                pos = lookup[flat]
                del lookup
            else:
                self.pattern, pos = np.unique(flat, return_inverse=True)
            self.stacked = sp.csr_matrix((vals, (pos, ks)), shape=(len(self.pattern), len(self.counts)))

    def dense(self, w_counts: np.ndarray) -> np.ndarray:
        """T(w) as a dense (m+1)² array, w given per count bucket."""
        if self.dense_b0 is not None:
            return np.asfortranarray((self.dense_b0.T * w_counts[self.bucket]) @ self.dense_b0)
        out = np.zeros((self.m1, self.m1))
        if self.stacked is not None:
            out.ravel()[self.pattern] = self.stacked @ w_counts
        else:
            w = w_counts[self.bucket]
            out[:] = (self.B0.T @ self.B0.multiply(w[:, None]).tocsr()).toarray()
        return out.T  # symmetric: the transpose is the same matrix, Fortran-ordered for LAPACK

    def sparse(self, w_counts: np.ndarray) -> sp.csr_matrix:
        if self.dense_b0 is not None:
            return sp.csr_matrix(self.dense(w_counts))
        if self.stacked is not None:
            vals = self.stacked @ w_counts
            return sp.csr_matrix((vals, (self.pattern // self.m1, self.pattern % self.m1)), shape=(self.m1, self.m1))
        w = w_counts[self.bucket]
        return (self.B0.T @ self.B0.multiply(w[:, None]).tocsr()).tocsr()


@dataclass
class _Eval:
    """Everything the criterion, the estimates and the gradient need at one θ = (θ_g, θ_h)."""

    logdet: float
    r2: float
    beta: np.ndarray
    cov_beta_unscaled: np.ndarray  # (S⁻¹)_ββ
    u_g: np.ndarray | None = None
    u_h: np.ndarray | None = None
    tr_g: float | None = None  # tr (M⁻¹)_gg
    tr_h: float | None = None  # tr (M⁻¹)_hh


def _evaluate(d: CrossedDesign, tg: float, th: float, *, dense_limit: int, gradient: bool = False) -> _Eval:
    """Factorise the Schur complement S(θ) and solve for (u_h, β): log det, r², β̂, (S⁻¹)_ββ.

    With W = diag(1/(θ_g² d_g + 1)) from eliminating the diagonal block, S and the right-hand
    side are the kept factor's and the fixed effects' rows of the system minus T(w) = B0'WB0.
    """
    n_h, p = len(d.d_h), d.p
    m = n_h + p
    w_counts = 1.0 / (tg * tg * d.cross.counts + 1.0)
    dense = m <= dense_limit
    S, t_y, t_yy = (_assemble_dense if dense else _assemble_sparse)(
        d, d.cross.dense(w_counts) if dense else d.cross.sparse(w_counts), tg, th
    )
    g2 = tg * tg
    rhs = np.concatenate([th * (d.y_h - g2 * t_y[:n_h]), d.y_s - g2 * t_y[n_h:]])
    e_beta = np.zeros((m, p))
    e_beta[n_h:, :] = np.eye(p)
    factor, logdet_s, sol = (_solve_dense if dense else _solve_sparse)(S, np.column_stack([rhs, e_beta]))
    x = sol[:, 0]
    logdet_g = float(np.log(1.0 / w_counts) @ np.bincount(d.cross.bucket, minlength=len(w_counts)))
    ev = _Eval(
        logdet=logdet_g + logdet_s,
        r2=d.yy - g2 * t_yy - float(rhs @ x),
        beta=x[n_h:].copy(),
        cov_beta_unscaled=sol[n_h:, 1:].copy(),
        u_h=x[:n_h].copy(),
    )
    if gradient:
        if not dense:
            raise ValueError("analytic gradient needs the dense factorisation")
        _gradient_terms(d, ev, factor, w_counts, tg, th)
    return ev


def _assemble_dense(d: CrossedDesign, T: np.ndarray, tg: float, th: float):
    n_h = len(d.d_h)
    m = n_h + d.p
    S = np.array(T[:m, :m], order="F")  # the one copy of m² floats; every step below is in place
    S *= -tg * tg
    S[:n_h, :] *= th
    S[:, :n_h] *= th
    S[:n_h, n_h:] += th * d.F_h
    S[n_h:, :n_h] += th * d.F_h.T
    S[np.arange(n_h), np.arange(n_h)] += th * th * d.d_h + 1.0
    S[np.arange(n_h, m), np.arange(n_h, m)] += d.n_s
    return S, T[:m, m], T[m, m]


def _assemble_sparse(d: CrossedDesign, T: sp.csr_matrix, tg: float, th: float):
    n_h = len(d.d_h)
    m = n_h + d.p
    T = T.tocsr()
    scale = sp.diags(np.concatenate([np.full(n_h, th), np.ones(d.p)]))
    Fh = sp.csr_matrix(d.F_h)
    S = -tg * tg * (scale @ T[:m, :m] @ scale) + sp.bmat(
        [[sp.diags(th * th * d.d_h + 1.0), th * Fh], [th * Fh.T, sp.diags(d.n_s)]]
    )
    return S, T[:m, m].toarray().ravel(), T[m, m]


def _solve_dense(S: np.ndarray, rhs: np.ndarray):
    """LAPACK Cholesky in place (S is Fortran-ordered): (factor, log det S, S⁻¹ rhs)."""
    factor, info = lapack.dpotrf(S, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        raise SingularFitError("the fixed-effect part is not estimable (a fixed level without marks?)")
    sol, _ = lapack.dpotrs(factor, rhs, lower=1)
    return factor, 2.0 * float(np.log(np.diag(factor)).sum()), sol


def _solve_sparse(S: sp.spmatrix, rhs: np.ndarray):
    """SuperLU with a symmetric fill-reducing ordering and no pivoting (S is positive definite)."""
    from scipy.sparse.linalg import splu

    try:
        lu = splu(S.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    except RuntimeError:
        raise SingularFitError("the fixed-effect part is not estimable (a fixed level without marks?)") from None
    diag_u = lu.U.diagonal()
    if np.any(diag_u <= 0):
        raise SingularFitError("the system matrix is not positive definite (a fixed level without marks?)")
    return lu, float(np.log(diag_u).sum()), lu.solve(rhs)


def _gradient_terms(d: CrossedDesign, ev: _Eval, factor: np.ndarray, w_counts: np.ndarray, tg: float, th: float):
    """tr (M⁻¹)_gg, tr (M⁻¹)_hh and u_g, for the analytic gradient of the criterion."""
    n_h, p = len(d.d_h), d.p
    m = n_h + p
    # S⁻¹ from the factor (lower triangle; the upper one stays zero because dpotrf cleaned it).
    inv_lower, _ = lapack.dpotri(factor, lower=1, overwrite_c=1)
    diag = np.diag(inv_lower).copy()
    # (M⁻¹)_gg = W + W B S⁻¹ B' W with B = [θ_gθ_h N, θ_g F_g]: tr = Σw + Σ_ij S⁻¹_ij s_i s_j T(w²)_ij.
    T2 = d.cross.dense(w_counts**2)[:m, :m]
    scale = np.concatenate([np.full(n_h, tg * th), np.full(p, tg)])
    inv_lower *= T2
    lower_sum = float(scale @ (inv_lower @ scale))
    diag_sum = float((diag * np.diag(T2) * scale * scale).sum())
    ev.tr_g = float(w_counts @ np.bincount(d.cross.bucket, minlength=len(w_counts))) + 2 * lower_sum - diag_sum
    ev.tr_h = float(diag[:n_h].sum())
    # u_g = W (θ_g y_g − θ_gθ_h N u_h − θ_g F_g β)
    w = w_counts[d.cross.bucket]
    ev.u_g = w * (tg * d.y_g - tg * th * (d.N @ ev.u_h) - tg * (d.F_g @ ev.beta))


def _criterion(d: CrossedDesign, ev: _Eval) -> float:
    dof = d.n - d.p
    with np.errstate(divide="ignore", invalid="ignore"):  # r² = 0: an exact fit, refused after optimising
        return ev.logdet + dof * (1.0 + np.log(2.0 * np.pi * ev.r2 / dof))


@dataclass
class CrossedFit:
    """A REML fit of y ~ 0 + group + (1|A) + (1|B)."""

    beta: np.ndarray
    cov_beta: np.ndarray
    var_a: float
    var_b: float
    var_resid: float
    theta_a: float
    theta_b: float
    reml_criterion: float
    n: int
    p: int
    n_a: int
    n_b: int
    converged: bool  # decided at the returned θ (projected gradient, curvature at 0), not by the optimiser's exit
    n_evaluations: int
    message: str = ""  # the convergence verdict in words
    projected_gradient: float = float("nan")  # of the REML criterion per mark, at the returned θ
    # Asymptotic covariance of (var_a, var_b, var_resid) and ∂Cov(β̂)/∂(var_a, var_b, var_resid).
    cov_variances: np.ndarray | None = None
    cov_beta_gradient: np.ndarray | None = None
    boundary: tuple[bool, bool] = (False, False)

    @property
    def variances(self) -> np.ndarray:
        return np.array([self.var_a, self.var_b, self.var_resid])

    @property
    def information_ok(self) -> bool:
        """False when the REML information was singular (Satterthwaite df fall back to n − p)."""
        return self.cov_variances is not None and bool(np.all(np.isfinite(self.cov_variances)))

    def contrast(self, c: np.ndarray) -> tuple[float, float, float]:
        """(estimate, standard error, Satterthwaite df) of c'β."""
        c = np.asarray(c, float)
        est = float(c @ self.beta)
        v = float(c @ self.cov_beta @ c)
        se = float(np.sqrt(max(v, 0.0)))
        return est, se, self.satterthwaite_df(c, v)

    def satterthwaite_df(self, c: np.ndarray, v: float | None = None) -> float:
        v = float(c @ self.cov_beta @ c) if v is None else v
        if self.cov_variances is None or self.cov_beta_gradient is None or v <= 0:
            return float(self.n - self.p)
        grad = np.array([float(c @ g @ c) for g in self.cov_beta_gradient])
        denom = float(grad @ self.cov_variances @ grad)
        if not np.isfinite(denom) or denom <= 0:
            return float(self.n - self.p)
        return float(min(2.0 * v * v / denom, self.n - self.p))


# Convergence is decided by the solution, never by the optimiser's exit path: at the optimum,
# roundoff decides whether L-BFGS-B's line search ends "normally" or "abnormally", and roundoff
# differs between BLAS kernels (OpenBLAS picks them per CPU). A fit is converged when the projected
# gradient of the criterion per mark (the scale L-BFGS-B works on, O(1) whatever n) is at most
# GRADIENT_TOL at the returned θ and a component held at 0 is a minimum there.
GRADIENT_TOL = 1e-6
# Newton polishing stops below this projected gradient (one step from L-BFGS-B's end reaches ~1e-13
# on the published Penicillin fit) or after _POLISH_STEPS steps.
_POLISH_TOL = 1e-11
_POLISH_STEPS = 6


@dataclass
class Convergence:
    """Whether a fit reached the REML optimum, judged at the returned θ; ``message`` says why in words."""

    converged: bool
    projected_gradient: float  # largest |component| of the projected gradient of the criterion per mark
    message: str


class _Objective:
    """The criterion per mark, its gradient (analytic on the dense path, central differences on the
    sparse one) and its Hessian (central differences of the gradient), one evaluation cached."""

    def __init__(self, d: CrossedDesign, dense_limit: int):
        self.d, self.dense_limit = d, dense_limit
        self.analytic = len(d.d_h) + d.p <= dense_limit
        self.n_eval = 0
        self._key, self._value = None, None

    def __call__(self, x) -> tuple[float, np.ndarray | None, _Eval]:
        key = (float(x[0]), float(x[1]))
        if key != self._key:
            self.n_eval += 1
            ev = _evaluate(self.d, key[0], key[1], dense_limit=self.dense_limit, gradient=self.analytic)
            grad = self._analytic_gradient(key, ev) if self.analytic else None
            self._key, self._value = key, (_criterion(self.d, ev) / self.d.n, grad, ev)
        return self._value

    def _analytic_gradient(self, theta: tuple[float, float], ev: _Eval) -> np.ndarray:
        d, dof = self.d, self.d.n - self.d.p
        grad = np.zeros(2)
        terms = ((theta[0], len(d.d_g), ev.tr_g, ev.u_g), (theta[1], len(d.d_h), ev.tr_h, ev.u_h))
        for i, (t, q, tr, u) in enumerate(terms):
            # θ = 0: the criterion is even in each θ (Λ's sign is absorbed by u), so its slope there is 0
            if t > 0 and ev.r2 > 0:
                grad[i] = (2.0 / t) * (q - tr - dof * float(u @ u) / ev.r2)
        return grad / d.n

    @staticmethod
    def steps(x: np.ndarray) -> np.ndarray:
        return 1e-5 * np.maximum(np.abs(x), 1e-2)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        if self.analytic:
            return self(x)[1].copy()
        h = self.steps(x)
        return np.array([(self(x + h[i] * e)[0] - self(x - h[i] * e)[0]) / (2 * h[i]) for i, e in enumerate(np.eye(2))])

    def hessian(self, x: np.ndarray) -> np.ndarray:
        h = self.steps(x)
        cols = [
            (self.gradient(x + h[i] * e) - self.gradient(x - h[i] * e)) / (2 * h[i]) for i, e in enumerate(np.eye(2))
        ]
        H = np.column_stack(cols)
        return 0.5 * (H + H.T)


def _projected_gradient(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The gradient with the components that push against the bound θ ≥ 0 removed."""
    return np.where((x <= 0) & (g >= 0), 0.0, g)


def _optimise(d: CrossedDesign, start: tuple[float, float], dense_limit: int, maxiter: int = 200):
    """Minimise the profiled REML criterion over θ ≥ 0; returns (θ, evaluation there, count, Convergence)."""
    obj = _Objective(d, dense_limit)
    # The criterion per mark: its gradient is O(1) whatever n, so one gradient tolerance means the
    # same precision at 144 and at 800,000 marks.
    options = {"ftol": 1e-12, "gtol": 1e-8, "maxiter": maxiter}
    if not obj.analytic:
        options.update(gtol=1e-7, eps=1e-6)
    res = optimize.minimize(
        lambda x: obj(x)[0],
        np.asarray(start, float),
        jac=(lambda x: obj(x)[1]) if obj.analytic else None,
        method="L-BFGS-B",
        bounds=[(0.0, None), (0.0, None)],
        options=options,
    )
    x = _polish(obj, np.maximum(res.x, 0.0)) if res.nit < maxiter else np.maximum(res.x, 0.0)
    verdict = _convergence(obj, x, res.nit >= maxiter, maxiter)
    return x, obj(x)[2], obj.n_eval, verdict


def _polish(obj: _Objective, x: np.ndarray) -> np.ndarray:
    """Projected Newton steps from L-BFGS-B's end (two parameters: the Hessian is cheap), each kept
    only when the criterion does not rise beyond roundoff and the projected gradient shrinks."""
    for _ in range(_POLISH_STEPS):
        f, g = obj(x)[0], obj.gradient(x)
        pg = _projected_gradient(x, g)
        if np.max(np.abs(pg)) <= _POLISH_TOL:
            break
        free = pg != 0
        H = obj.hessian(x)[np.ix_(free, free)]
        if np.any(np.linalg.eigvalsh(H) <= 0):
            break  # not locally convex here: Newton would not head for a minimum; the verdict says so
        step = np.zeros(2)
        step[free] = -np.linalg.solve(H, g[free])
        moved = _backtrack(obj, x, f, pg, step)
        if moved is None:
            break
        x = moved
    return x


def _backtrack(obj: _Objective, x: np.ndarray, f: float, pg: np.ndarray, step: np.ndarray) -> np.ndarray | None:
    # Near the optimum a Newton step lowers the criterion by ½ g'H⁻¹g (~1e-15 per mark on Penicillin),
    # below the roundoff of its evaluation (log-determinants and sums of n terms: ~1e-12 relative
    # measured): the criterion only guards against a real rise, the gradient judges the step.
    roundoff = 1e-10 * max(abs(f), 1.0)
    for t in (1.0, 0.5, 0.25, 0.125):
        cand = np.maximum(x + t * step, 0.0)
        if obj(cand)[0] <= f + roundoff and np.max(np.abs(_projected_gradient(cand, obj.gradient(cand)))) < np.max(
            np.abs(pg)
        ):
            return cand
    return None


def _convergence(obj: _Objective, x: np.ndarray, out_of_iterations: bool, maxiter: int) -> Convergence:
    """The verdict at θ = x, from the projected gradient and, for a component at 0, its curvature."""
    pg = float(np.max(np.abs(_projected_gradient(x, obj.gradient(x)))))
    names = ("the first", "the second") if obj.d.eliminate_a else ("the second", "the first")
    if pg > GRADIENT_TOL:
        why = (
            f"the optimiser stopped after {maxiter} iterations" if out_of_iterations else "the optimiser stopped short"
        )
        return Convergence(
            False,
            pg,
            f"not converged: the REML criterion still falls at the returned variance ratios (projected gradient "
            f"{pg:.1e} per mark, tolerance {GRADIENT_TOL:.0e}): {why}, so the variance components are not their "
            "REML estimates",
        )
    at_zero = [i for i in range(2) if x[i] <= 0]
    if at_zero:
        H = obj.hessian(np.where(x <= 0, 0.0, x))
        falling = [i for i in at_zero if H[i, i] < -1e-8]
        if falling:
            which = " and ".join(f"{names[i]} random factor's" for i in falling)
            return Convergence(
                False,
                pg,
                f"not converged: {which} variance is held at 0, but the REML criterion falls as it grows from 0 "
                "(0 is not a minimum there)",
            )
    return Convergence(
        True,
        pg,
        f"converged: projected gradient {pg:.1e} per mark at the returned variance ratios (tolerance {GRADIENT_TOL:.0e})",
    )


def _start(d: CrossedDesign) -> tuple[float, float]:
    """Moment-style start: θ from the spread of each factor's level means, net of their noise."""
    var_y = max(d.yy / d.n - (d.y_s.sum() / d.n) ** 2, 1e-12)
    out = []
    for y, c in ((d.y_g, d.d_g), (d.y_h, d.d_h)):
        ok = c > 0
        spread = float(np.var(y[ok] / c[ok])) - var_y / max(float(np.mean(c[ok])), 1.0)
        out.append(np.sqrt(max(spread, 0.05 * var_y) / var_y))
    return out[0], out[1]


def _hessian_and_gradients(d: CrossedDesign, center: _Eval, tg: float, th: float, sigma2: float, dense_limit: int):
    """Finite-difference Hessian of the REML deviance in ψ = (θ_g, θ_h, σ²) and ∂Cov(β̂)/∂ψ.

    Deviance D(θ, σ²) = log det M(θ) + (n−p) log(2πσ²) + r²(θ)/σ²; the σ² derivatives are exact.
    Components on the boundary (θ = 0) are held fixed (returned as not free).
    """
    dof = d.n - d.p
    free = [tg > 1e-6, th > 1e-6]
    theta = np.array([tg, th])
    steps = np.array([max(1e-4, 1e-3 * t) for t in theta])

    def at(x):
        ev = _evaluate(d, x[0], x[1], dense_limit=dense_limit)
        return ev

    f0 = center.logdet + center.r2 / sigma2
    H = np.zeros((3, 3))
    dcov = np.zeros((3, d.p, d.p))
    evals = {}
    for i in range(2):
        if not free[i]:
            continue
        for sgn in (1, -1):
            x = theta.copy()
            x[i] += sgn * steps[i]
            evals[(i, sgn)] = at(x)
        fp = evals[(i, 1)].logdet + evals[(i, 1)].r2 / sigma2
        fm = evals[(i, -1)].logdet + evals[(i, -1)].r2 / sigma2
        H[i, i] = (fp - 2 * f0 + fm) / steps[i] ** 2
        dr2 = (evals[(i, 1)].r2 - evals[(i, -1)].r2) / (2 * steps[i])
        H[i, 2] = H[2, i] = -dr2 / sigma2**2
        dcov[i] = sigma2 * (evals[(i, 1)].cov_beta_unscaled - evals[(i, -1)].cov_beta_unscaled) / (2 * steps[i])
    if all(free):  # cross term from one more point (O(h) error, h = 10⁻³θ: ample for df and intervals)
        ev = at(theta + steps)
        f11 = ev.logdet + ev.r2 / sigma2
        f10 = evals[(0, 1)].logdet + evals[(0, 1)].r2 / sigma2
        f01 = evals[(1, 1)].logdet + evals[(1, 1)].r2 / sigma2
        H[0, 1] = H[1, 0] = (f11 - f10 - f01 + f0) / (steps[0] * steps[1])
    H[2, 2] = -dof / sigma2**2 + 2 * center.r2 / sigma2**3
    dcov[2] = center.cov_beta_unscaled
    return H, dcov, np.array(free + [True])


def fit_crossed_reml(
    y,
    group,
    a,
    b,
    *,
    p: int | None = None,
    n_a: int | None = None,
    n_b: int | None = None,
    dense_limit: int = DENSE_LIMIT,
    inference: bool = True,
    max_iterations: int = 200,
) -> CrossedFit:
    """REML fit of y ~ 0 + group + (1|a) + (1|b) from integer codes (0..levels-1).

    ``group``: fixed factor codes (all zeros for an intercept-only model). ``inference``: also
    compute the asymptotic covariance of the variance components and ∂Cov(β̂) (Satterthwaite df,
    ICC intervals). ``max_iterations``: of L-BFGS-B. ``fit.converged`` is decided at the returned θ
    (see :class:`Convergence`), ``fit.message`` says why in words. Raises :class:`SingularFitError`
    with a reason when the model is not estimable.
    """
    y = np.asarray(y, float)
    d = CrossedDesign.from_codes(y, group, a, b, p=p, n_a=n_a, n_b=n_b)
    empty = np.flatnonzero(d.n_s == 0)
    if len(empty):
        raise SingularFitError(f"fixed level(s) {empty.tolist()} have no observations: their means are not estimable")
    if d.n <= d.p:
        raise SingularFitError(f"{d.n} observations for {d.p} fixed means: no residual degrees of freedom")
    _check_size(d, dense_limit)
    # Small problems run single-threaded: BLAS threads cost more than they save below a few
    # hundred levels. So do all problems on a machine whose cores are already busy: OpenBLAS
    # threads wait for each other by spinning, and a two-thread fit of 75,000 marks measured
    # 26 s against 3.6 s on one thread at load 9 on 2 cores.
    small = len(d.d_h) + d.p < _THREADED_FROM
    if not (small or _machine_busy()):
        return _fit(d, dense_limit, inference, max_iterations)
    with _blas_controller().limit(limits=1, user_api="blas"):
        return _fit(d, dense_limit, inference, max_iterations)


def _machine_busy() -> bool:
    try:
        return os.getloadavg()[0] >= (os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        return False


_CONTROLLER: list = []


def _blas_controller() -> ThreadpoolController:
    """One controller per process: building one scans the loaded libraries (milliseconds)."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def _check_size(d: CrossedDesign, dense_limit: int) -> None:
    m = len(d.d_h) + d.p
    if m <= dense_limit:
        return
    n_h = len(d.d_h)
    if d.cross.dense_b0 is not None:
        block = d.cross.dense_b0[:, :n_h] != 0
        nnz = int(((block.T.astype(float) @ block.astype(float)) != 0).sum())
    elif d.cross.stacked is not None:  # the random block of the complement (the fixed rows are dense anyway)
        rows, cols = np.divmod(d.cross.pattern, d.cross.m1)
        nnz = int(((rows < n_h) & (cols < n_h)).sum())
    else:  # bound: each level of the eliminated factor links its kept levels pairwise
        nnz = float((np.diff(d.N.indptr).astype(float) ** 2).sum())
    density = min(nnz / float(n_h) ** 2, 1.0)
    if density > SPARSE_MAX_DENSITY:
        raise TooLargeError(
            f"both random factors are large ({d.n_a:,} and {d.n_b:,} levels): an exact fit needs a factorisation of "
            f"order {m:,} that is {density:.0%} dense (limit: dense up to {dense_limit:,}, sparse up to "
            f"{SPARSE_MAX_DENSITY:.0%} dense), so it is not fitted"
        )


def _fit(d: CrossedDesign, dense_limit: int, inference: bool, max_iterations: int) -> CrossedFit:
    x, ev, n_eval, verdict = _optimise(d, _start(d), dense_limit, max_iterations)
    dof = d.n - d.p
    sigma2 = ev.r2 / dof
    if not np.isfinite(sigma2) or sigma2 <= 1e-14 * max(d.yy / d.n, 1e-300):
        raise SingularFitError("the residual variance is zero: every observation is fitted exactly (no replication)")
    tg, th = float(x[0]), float(x[1])
    ta, tb = (tg, th) if d.eliminate_a else (th, tg)
    fit = CrossedFit(
        beta=ev.beta,
        cov_beta=sigma2 * ev.cov_beta_unscaled,
        var_a=ta * ta * sigma2,
        var_b=tb * tb * sigma2,
        var_resid=sigma2,
        theta_a=ta,
        theta_b=tb,
        reml_criterion=float(_criterion(d, ev)),
        n=d.n,
        p=d.p,
        n_a=d.n_a,
        n_b=d.n_b,
        converged=verdict.converged,
        n_evaluations=n_eval,
        message=verdict.message,
        projected_gradient=verdict.projected_gradient,
        boundary=(ta <= 1e-6, tb <= 1e-6),
    )
    if inference:
        fit.cov_variances, fit.cov_beta_gradient, extra = _inference(d, ev, tg, th, sigma2, dense_limit)
        fit.n_evaluations = n_eval + extra
    return fit


def _inference(d: CrossedDesign, ev: _Eval, tg: float, th: float, sigma2: float, dense_limit: int):
    """Asymptotic Cov of (var_a, var_b, σ²) = 2 H⁻¹ and ∂Cov(β̂)/∂(var_a, var_b, σ²);
    NaN when H is singular."""
    H, dcov, free = _hessian_and_gradients(d, ev, tg, th, sigma2, dense_limit)
    # ψ = (θ_g, θ_h, σ²) → φ = (var_g, var_h, σ²): J = ∂φ/∂ψ.
    J = np.array([[2 * tg * sigma2, 0, tg * tg], [0, 2 * th * sigma2, th * th], [0, 0, 1.0]])
    idx = np.flatnonzero(free)
    cov_psi = np.zeros((3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cov_psi[np.ix_(idx, idx)] = 2.0 * np.linalg.inv(H[np.ix_(idx, idx)])
        except np.linalg.LinAlgError:
            cov_psi[:] = np.nan
    cov_phi = J @ cov_psi @ J.T
    # ∂Cov/∂φ = ∂Cov/∂ψ · J⁻¹ over the free parameters (those on the boundary are held fixed).
    inv = np.linalg.inv(J[np.ix_(idx, idx)])
    dcov_phi = np.zeros_like(dcov)
    for k_out, k in enumerate(idx):
        dcov_phi[k] = sum(dcov[j] * inv[jj, k_out] for jj, j in enumerate(idx))
    order = [0, 1, 2] if d.eliminate_a else [1, 0, 2]
    extra = 2 * int(sum(free[:2])) + (1 if all(free[:2]) else 0)
    return cov_phi[np.ix_(order, order)], dcov_phi[order], extra


def codes(values) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and the sorted levels of a column (strings)."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        # the checked ratings are categorical: reuse their codes (text conversion costs ~0.2 s per 400k)
        cat = values.cat.remove_unused_categories()
        names = np.asarray(cat.cat.categories.astype(str), dtype=object)
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank[cat.cat.codes.to_numpy()], pd.Index(names[order])
    text = values.astype(str) if isinstance(values, pd.Series) else pd.Series(np.asarray(values)).astype(str)
    found, levels = pd.factorize(text, sort=True)
    return found.astype(np.int64), pd.Index(levels)
