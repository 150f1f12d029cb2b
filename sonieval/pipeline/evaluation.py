"""How well a gate fits: its squared error on held-out pairs and R² against the train-mean latent.

Shared by the gradient-trained gates (:mod:`sonieval.pipeline.trainer`) and the closed-form ones
(:mod:`sonieval.pipeline.ridge`), below both, so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Evaluation", "evaluate"]


@dataclass
class Evaluation:
    """A gate on the validation pairs: MSE, and R² against the train-mean latent (with its clip bootstrap CI).

    R² = 1 − Σ_clips SSE / Σ_clips SST, where SST is the squared distance of each validation latent to
    the *training* mean latent: the share of the latent's variance the gate explains beyond always
    answering the average training latent (0: no better than that; < 0: worse)."""

    mse: float
    sse: np.ndarray  # per validation clip
    sst: np.ndarray  # per validation clip, against the train-mean latent

    @property
    def r2(self) -> float:
        return float(1.0 - self.sse.sum() / self.sst.sum()) if self.sst.sum() > 0 else float("nan")

    def r2_ci(self, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
        """Percentile CI from resampling validation clips."""
        if len(self.sse) < 2:
            return float("nan"), float("nan")
        idx = np.random.default_rng(seed).integers(0, len(self.sse), size=(n_boot, len(self.sse)))
        sst = self.sst[idx].sum(axis=1)
        r2 = 1.0 - self.sse[idx].sum(axis=1) / np.where(sst > 0, sst, np.nan)
        lo, hi = np.nanquantile(r2, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    def summary(self, seed: int = 0, split: str = "validation") -> dict[str, float]:
        lo, hi = self.r2_ci(seed=seed)
        return {f"{split}_mse": self.mse, f"{split}_r2": self.r2, f"{split}_r2_ci_low": lo, f"{split}_r2_ci_high": hi}


def evaluate(gate, x, y, batch_size: int, device: str, baseline=None) -> Evaluation:
    """The gate on every validation pair (per-clip squared errors; ``baseline``: the train-mean latent)."""
    import torch

    gate.eval()
    sse, sst = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            sse.append(((gate(xb) - yb) ** 2).flatten(1).sum(dim=1).double().cpu())
            if baseline is not None:
                sst.append(((yb - baseline.to(device)) ** 2).flatten(1).sum(dim=1).double().cpu())
    sse_all = torch.cat(sse).numpy() if sse else np.zeros(0)
    sst_all = torch.cat(sst).numpy() if sst else np.full(len(sse_all), np.nan)
    n = max(int(y.numel()), 1)
    return Evaluation(float(sse_all.sum() / n), sse_all, sst_all)
