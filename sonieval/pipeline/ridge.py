"""The RIDGE gate's closed-form fit: the exact linear least-squares map from embedding to latent frames.

A reference system beside the trained gates (issue: the trained LIN gate on CREPE-tiny reached a
validation R² of 0.483 where a ridge map on the same data reached 0.547, so "how well can a linear map
do here" needs a number of its own). Every latent frame j of every training clip is one sample: its
features are the ``grid`` alignment's column j (the embedding interpolated onto the codec's frame
times, F·D values), its target the latent's column j (C values). With centred X and Y,

    W(λ) = (XᵀX + λI)⁻¹ XᵀY,   b = ȳ − x̄ W   (Hoerl & Kennard 1970, *Technometrics* 12(1))

λ is chosen on the validation clips, as the trained gates' epochs are: every candidate λ is scored by
its validation MSE, which needs only the validation set's second moments (Σvv, Σvy, Σyy), so with the
eigendecomposition XᵀX = V diag(s) Vᵀ each candidate costs O(d²·C) instead of a pass over the frames.
The candidates are λ = α · mean(s) for α on a log grid from 1e-6 to 1e2. Everything is accumulated in
float64 from the cached pairs in one pass per split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sonieval.errors import SonievalError

__all__ = ["RIDGE_ALPHAS", "RIDGE_MAX_FEATURES", "FrameMoments", "fit_ridge", "ridge_snapshot"]

RIDGE_ALPHAS = np.logspace(-6, 2, 17)
# The closed form accumulates XᵀX over every training frame (n·d² flops) and eigendecomposes it (d³):
# measured on two loaded cores, eigh takes 15 s at d = 2048 and 75 s at 4096, and the accumulation over
# 120,000 frames ~1e12 flops at 2048; CREPE-tiny's first block (16,384) would take hours.
RIDGE_MAX_FEATURES = 4096


@dataclass
class FrameMoments:
    """Sums over frames: n, Σx, Σy, ΣxxᵀΣ, Σxyᵀ, Σ‖y‖² (x: aligned embedding column, y: latent column)."""

    n: int
    sx: np.ndarray
    sy: np.ndarray
    sxx: np.ndarray
    sxy: np.ndarray
    syy: float

    @classmethod
    def of(cls, batches, interpolation: np.ndarray) -> FrameMoments:
        """From (features on the embedding's own frames [B, R, T], targets [B, C, K]) batches and the
        grid's interpolation [T, K] onto the latent's frames (X = F·W per clip).

        Exact, and cheaper than summing over the K interpolated frames: Σ XXᵀ = Σ F (W Wᵀ) Fᵀ costs
        R²·T per clip instead of R²·K (CREPE at 72 frames onto 431: 6x fewer operations)."""
        w = np.asarray(interpolation, dtype=np.float64)
        gram, ones = w @ w.T, w.sum(axis=1)
        acc = None
        for feats, target in batches:
            f, y = feats.astype(np.float64), target.astype(np.float64)
            sxx = np.einsum("brt,ts,bqs->rq", f, gram, f, optimize=True)
            sxy = np.einsum("brt,tk,bck->rc", f, w, y, optimize=True)
            part = cls(
                len(f) * w.shape[1], np.einsum("brt,t->r", f, ones), y.sum((0, 2)), sxx, sxy, float((y * y).sum())
            )
            acc = part if acc is None else acc + part
        if acc is None:
            raise SonievalError("RIDGE: no frames to fit on")
        return acc

    def __add__(self, other: FrameMoments) -> FrameMoments:
        return FrameMoments(
            self.n + other.n,
            self.sx + other.sx,
            self.sy + other.sy,
            self.sxx + other.sxx,
            self.sxy + other.sxy,
            self.syy + other.syy,
        )

    def centred(self, mx: np.ndarray, my: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Σ(x−mx)(x−mx)ᵀ, Σ(x−mx)(y−my)ᵀ, Σ‖y−my‖² about the given means (the training set's)."""
        cxx = self.sxx - np.outer(self.sx, mx) - np.outer(mx, self.sx) + self.n * np.outer(mx, mx)
        cxy = self.sxy - np.outer(self.sx, my) - np.outer(mx, self.sy) + self.n * np.outer(mx, my)
        cyy = self.syy - 2 * float(self.sy @ my) + self.n * float(my @ my)
        return cxx, cxy, cyy


def fit_ridge(train: FrameMoments, validation: FrameMoments) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """(W [R, C], b [C], λ, {λ: validation MSE per value}) with λ chosen on ``validation``."""
    mx, my = train.sx / train.n, train.sy / train.n
    cxx, cxy, _ = train.centred(mx, my)
    s, V = np.linalg.eigh(cxx)
    s = np.maximum(s, 0.0)
    B = V.T @ cxy  # [d, C]
    vxx, vxy, vyy = validation.centred(mx, my)
    G, H = V.T @ vxx @ V, V.T @ vxy
    scale = max(float(s.mean()), 1e-12)
    scores = {}
    for alpha in RIDGE_ALPHAS:
        lam = float(alpha * scale)
        DB = B / (s + lam)[:, None]  # W in the eigenbasis
        sse = float(np.einsum("ic,ij,jc->", DB, G, DB)) - 2 * float(np.einsum("ic,ic->", DB, H)) + vyy
        scores[lam] = sse / (validation.n * len(my))
    lam = min(scores, key=scores.get)
    W = V @ (B / (s + lam)[:, None])
    return W, my - mx @ W, lam, scores


def _batches(trainer: Any, store, partners: list[int] | None, size: int = 16):
    """(grid features on the embedding's frames, targets) of a pair store as numpy, in batches (targets as
    the gate learns them)."""
    for i in range(0, len(store), size):
        idx = list(range(i, min(i + size, len(store))))
        x, y = store.pairs(idx, [partners[j] for j in idx] if partners else None)
        yield from _held(trainer, x, trainer.target(y))


def _held(trainer: Any, x, y):
    import torch

    with torch.no_grad():
        feats = trainer.gate.align.grid_features(x.to(trainer.device))
    return [(feats.double().cpu().numpy(), y.double().cpu().numpy())]


def ridge_snapshot(trainer: Any) -> dict[str, Any]:
    """Fit the trainer's RIDGE gate (on its real or, for the shuffled control, mismatched pairs), set its
    weights, evaluate it as a trained gate is (validation and held-out R²) and save it as epoch 0."""
    import torch

    from sonieval.pipeline.evaluation import evaluate

    features = trainer.gate.align.rows
    if features > RIDGE_MAX_FEATURES:
        raise SonievalError(
            f"RIDGE: {features:,} features per frame; the closed form needs a {features:,}² eigendecomposition "
            f"(limit {RIDGE_MAX_FEATURES:,})",
            hint="use RIDGE on a narrower layer or alignment grid-pool, or the trained LIN gate here",
        )
    w = trainer.gate.align.time_weights.double().cpu().numpy()
    train = FrameMoments.of(_batches(trainer, trainer.train, trainer.partners), w)
    validation = FrameMoments.of(_held(trainer, trainer.x_val, trainer.y_val), w)
    W, b, lam, scores = fit_ridge(train, validation)
    layer = trainer.gate.layers[0].linear
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W.T).to(layer.weight))
        layer.bias.copy_(torch.from_numpy(b).to(layer.bias))
    ev = evaluate(
        trainer.gate, trainer.x_val, trainer.y_val, trainer.t.eval_batch_size, trainer.device, trainer.baseline
    )
    return {
        "best_epoch": 0,
        "best_validation_loss": ev.mse,
        "ridge_lambda": lam,
        "ridge_frames": train.n,
        **ev.summary(seed=trainer.run.seed),
        **trainer.heldout_summary(),
    }
