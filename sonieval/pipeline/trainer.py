"""Training one gate: its pairs from the cache, its optimiser and schedule, checkpoints and resume state.

What :mod:`sonieval.pipeline.train` (the stage: the sweep, its tasks, the training table) and
:mod:`sonieval.pipeline.train_tasks` (gates trained in lockstep) run for each gate; the recipe (the
reference work's settings, thesis §3.0.3) is described in the stage's docstring. The pairs come from the
prepared cache's read side (:mod:`sonieval.pipeline.cache`); the fit is measured by
:mod:`sonieval.pipeline.evaluation`; closed-form gates are fitted by :mod:`sonieval.pipeline.ridge`.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from sonieval.errors import DataError, SonievalError
from sonieval.files import atomic_path
from sonieval.pipeline.cache import load_array, read_codec_info, read_encoder_info, read_prepared
from sonieval.pipeline.evaluation import Evaluation, evaluate
from sonieval.protocol import Protocol
from sonieval.tables import INPUT_LAYER, NO_CONTROL, GateSlot, encoder_slot, format_lr, resolve_table_path
from sonieval.versions import package_versions

CHECKPOINT_FORMAT = "sonieval-gate/1"
BLUR_KERNEL = (13, 7)  # (time, feature) taps, thesis §4.3 kernel (7, 13)
MAX_GRAD_NORM = 1.0
SMOOTHING = 0.99  # the thesis's TensorBoard smoothing weight


@dataclass
class TrainRun:
    """One training run; it yields one system per epoch count in ``snapshot_epochs``.

    ``control``: "none" (a gate trained on its real pairs), "shuffled" (trained on mismatched pairs,
    same budget) or "untrained" (no training: the gate at its initialisation, ``lr`` 0, epoch 0).
    ``codec``: None for the protocol's primary codec, else the codec's name (see tables.GateSlot).
    ``layer``: the encoder layer's label (``input``, ``layer<k>``); ``slot`` names both as system ids do.
    """

    encoder: str
    variant: str
    lr: float
    alignment: str
    max_epochs: int
    snapshot_epochs: list[int]
    separate: bool = False
    control: str = NO_CONTROL
    seed: int = 42
    seed_in_id: bool = False
    codec: str | None = None
    layer: str = INPUT_LAYER

    @property
    def slot(self) -> str:
        """The system_id's encoder slot, e.g. ``hubert`` (input) or ``hubert.layer6``."""
        return encoder_slot(self.encoder, self.layer)

    @property
    def gate_slot(self) -> str:
        """The system_id's gate slot, e.g. ``LIN``, ``LIN.shuffled.s43``, ``LIN@dac-vae``."""
        return GateSlot(self.variant, self.control, self.seed if self.seed_in_id else None, self.codec).text

    @property
    def run_id(self) -> str:
        base = f"{self.slot}/{self.gate_slot}/lr{format_lr(self.lr)}/{self.alignment}"
        return f"{base}/E{self.max_epochs}" if self.separate else base

    def checkpoint(self, proto: Protocol, epoch: int) -> Path:
        return checkpoint_path(proto, self.slot, self.gate_slot, self.lr, epoch, self.alignment)

    @property
    def fitted_once(self) -> bool:
        """No epochs: the untrained control, or a closed-form gate (``lr`` 0, epoch 0)."""
        return self.max_epochs == 0


def checkpoint_dir(proto: Protocol, encoder: str, variant: str, lr: float, alignment: str) -> Path:
    """``encoder`` and ``variant`` are the system_id's encoder and gate slots (e.g. ``hubert.layer6``, ``LIN.shuffled``)."""
    return proto.layout.checkpoint_dir(encoder, variant, format_lr(lr), alignment)


def checkpoint_path(proto: Protocol, encoder: str, variant: str, lr: float, epoch: int, alignment: str) -> Path:
    """The checkpoint of system (encoder, gate slot, lr, epoch, alignment)."""
    return checkpoint_dir(proto, encoder, variant, lr, alignment) / f"e{int(epoch)}.pt"


# ---------------------------------------------------------------------------- data


@dataclass
class PairedData:
    """Paths of cached (embedding, latent) pairs for one encoder, by split."""

    embeddings: dict[str, list[str]]
    latents: dict[str, list[str]]
    embedding_shape: tuple[int, int]
    latent_shape: tuple[int, int]
    embedding_model_key: str
    latent_model_key: str
    codec: str
    latent_min: float = 0.0
    latent_max: float = 1.0
    time_axis: dict[str, Any] | None = None  # the encoder's (grid alignment), from prepare
    latent_first_center_s: float | None = None  # the codec's first frame centre (grid alignment), from prepare
    clip_ids: dict[str, list[str]] = field(default_factory=dict)
    _stores: dict[str, PairStore] = field(default_factory=dict, repr=False)

    def store(self, split: str) -> PairStore:
        """The split's pairs, loaded once and shared by every run of this (encoder, codec); ``test`` holds
        the held-out clips (see :meth:`has_heldout`)."""
        if split not in self._stores:
            self._stores[split] = PairStore(
                self.embeddings[split], self.latents[split], self.embedding_shape, self.latent_shape
            )
        return self._stores[split]

    @property
    def has_heldout(self) -> bool:
        return bool(self.embeddings.get("test"))

    def train_mean_latent(self):
        """The mean training latent [C, T']: the baseline the validation R² is measured against."""
        import torch

        store = self.store("train")
        return torch.stack([store.pairs([i])[1][0] for i in range(len(store))]).mean(dim=0)


TRAIN_MEMORY_BYTES = int(float(os.environ.get("SONIEVAL_TRAIN_MEMORY_GB", "8")) * 2**30)


class PairStore:
    """The (embedding, latent) pairs of one split: in memory when they fit in ``SONIEVAL_TRAIN_MEMORY_GB``
    (embeddings stay float16, as cached), else read from the cache per batch.

    Every gate of an (encoder, codec) reads the same pairs, so a sweep reads the cache once instead of
    once per batch of every epoch of every system."""

    def __init__(self, emb_paths: list[str], lat_paths: list[str], emb_shape: tuple, lat_shape: tuple):
        self.emb_paths, self.lat_paths = list(emb_paths), list(lat_paths)
        self.emb_shape, self.lat_shape = tuple(emb_shape), tuple(lat_shape)
        need = len(self.emb_paths) * (math.prod(self.emb_shape) * 2 + math.prod(self.lat_shape) * 4)
        self._x = self._y = None
        if need <= TRAIN_MEMORY_BYTES:
            import torch

            self._x = torch.from_numpy(
                np.stack([_checked(p, emb_shape, "embedding").astype(np.float16) for p in self.emb_paths])
            )
            self._y = torch.from_numpy(np.stack([_checked(p, lat_shape, "latent") for p in self.lat_paths]))

    def __len__(self) -> int:
        return len(self.emb_paths)

    def pairs(self, idx: list[int], latent_idx: list[int] | None = None):
        """Embeddings of clips ``idx`` (float32) with the latents of ``latent_idx`` (default: the same clips)."""
        latent_idx = idx if latent_idx is None else latent_idx
        if self._x is not None:
            return self._x[idx].float(), self._y[latent_idx]
        return _load_pairs(
            [self.emb_paths[i] for i in idx], [self.lat_paths[i] for i in latent_idx], self.emb_shape, self.lat_shape
        )


def paired_data(proto: Protocol, encoder: str, codec: str | None = None, layer: str = INPUT_LAYER) -> PairedData:
    """The prepared pairs of ``encoder`` at ``layer`` and ``codec`` (None: the protocol's primary codec)."""
    prepared = read_prepared(proto)
    ok = prepared[prepared["status"] == "done"]
    emb = ok[(ok["kind"] == "embedding") & (ok["model"] == encoder) & (ok["layer"] == layer)]
    what = encoder if layer == INPUT_LAYER else f"{encoder!r} at {layer}"
    lat = ok[ok["kind"] == "latent"]
    codec = codec or proto.primary_codec.name
    lat = lat[lat["model"] == codec]
    if emb.empty:
        raise DataError(
            f"no prepared embeddings for encoder {what}",
            path=proto.layout.table("prepared"),
            hint="run `sonieval prepare PROTOCOL` with this encoder in the protocol",
        )
    if lat.empty:
        raise DataError(
            f"no prepared latents of codec {codec!r}",
            path=proto.layout.table("prepared"),
            hint="run `sonieval prepare PROTOCOL`",
        )
    merged = emb.merge(lat[["clip_id", "path", "model_key", "model"]], on="clip_id", suffixes=("", "_latent"))
    out: dict[str, dict[str, list[str]]] = {"emb": {}, "lat": {}, "ids": {}}
    for split in ("train", "validation", "test"):
        part = merged[merged["split"] == split].sort_values("clip_id")
        if part.empty and split == "test":
            continue  # no held-out clips prepared: the training table says n_heldout 0
        if part.empty:
            raise DataError(
                f"no prepared {split} clips for encoder {what}",
                hint=f"the {split} split must hold clips whose embedding and latent were prepared",
            )
        out["emb"][split] = [str(resolve_table_path(p, proto.results_path)) for p in part["path"]]
        out["lat"][split] = [str(resolve_table_path(p, proto.results_path)) for p in part["path_latent"]]
        out["ids"][split] = part["clip_id"].tolist()
    e0 = np.load(out["emb"]["train"][0], mmap_mode="r")
    l0 = np.load(out["lat"]["train"][0], mmap_mode="r")
    data = PairedData(
        out["emb"],
        out["lat"],
        tuple(e0.shape),
        tuple(l0.shape),
        str(merged["model_key"].iloc[0]),
        str(merged["model_key_latent"].iloc[0]),
        str(merged["model_latent"].iloc[0]),
        clip_ids=out["ids"],
    )
    lo, hi = math.inf, -math.inf
    for p in data.latents["train"]:
        arr = np.load(p, mmap_mode="r")
        lo, hi = min(lo, float(arr.min())), max(hi, float(arr.max()))
    data.latent_min, data.latent_max = lo, hi
    data.time_axis = read_encoder_info(Path(data.embeddings["train"][0]).parent).get("time_axis")
    data.latent_first_center_s = latent_first_center(read_codec_info(Path(data.latents["train"][0]).parent), data.codec)
    return data


def _load_pairs(emb_paths: list[str], lat_paths: list[str], emb_shape: tuple, lat_shape: tuple):
    import torch

    x = np.stack([_checked(p, emb_shape, "embedding") for p in emb_paths])
    y = np.stack([_checked(p, lat_shape, "latent") for p in lat_paths])
    return torch.from_numpy(x), torch.from_numpy(y)


def _checked(path: str, shape: tuple, kind: str) -> np.ndarray:
    arr = load_array(path)
    if tuple(arr.shape) != tuple(shape):
        raise DataError(
            f"{kind} has shape {tuple(arr.shape)}, expected {tuple(shape)} like the other clips",
            path=path,
            hint="delete the cache entry and rerun `sonieval prepare PROTOCOL`",
        )
    return arr


def gaussian_blur(x, sigma: float, kernel: tuple[int, int] = BLUR_KERNEL):
    """Separable Gaussian blur of a batch of embeddings ``[B, T, D]`` (reflect padding)."""
    import torch
    import torch.nn.functional as F

    out = x.unsqueeze(1)
    for axis, taps in ((2, kernel[0]), (3, kernel[1])):
        half = taps // 2
        grid = torch.arange(taps, dtype=x.dtype, device=x.device) - half
        w = torch.exp(-(grid**2) / (2 * sigma**2))
        w = w / w.sum()
        shape = [1, 1, 1, 1]
        shape[axis] = taps
        pad = [0, 0, 0, 0]
        pad_idx = 2 if axis == 2 else 0
        pad[pad_idx], pad[pad_idx + 1] = half, half
        if out.shape[axis] > half:
            out = F.pad(out, pad, mode="reflect")
        else:
            out = F.pad(out, pad, mode="replicate")
        out = F.conv2d(out, w.view(shape))
    return out.squeeze(1)


# ---------------------------------------------------------------------------- training


def _versions() -> dict[str, str | None]:
    return package_versions(["torch"])


def ema_smooth(values: list[float] | np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
    """TensorBoard's debiased exponential moving average (the thesis's smoothing 0.99)."""
    out = np.empty(len(values))
    last, n = 0.0, 0
    for i, v in enumerate(values):
        last = last * weight + (1 - weight) * float(v)
        n += 1
        out[i] = last / (1 - weight**n)
    return out


def shuffled_partners(n: int, seed: int) -> list[int]:
    """A seeded derangement of 0..n-1: clip i is paired with the latent of clip partner[i] ≠ i."""
    if n < 2:
        raise DataError("the shuffled control needs at least 2 training clips")
    order = np.random.default_rng(seed + 7919).permutation(n)
    partner = np.empty(n, dtype=int)
    partner[order] = np.roll(order, -1)  # each clip takes the latent of the next one in a random cycle
    return partner.tolist()


@dataclass
class RunState:
    """What a run carries from epoch to epoch (and saves to resume)."""

    epoch: int = 0
    step: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    best_eval: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)


class GateTrainer:
    """One run's gate, optimiser and schedule, in short named steps (``run_epoch``, ``validate``, ``save``)."""

    def __init__(self, proto: Protocol, run: TrainRun, data: PairedData, device: str, fingerprint: str):
        import torch

        from sonieval.models.gates import build_gate

        self.proto, self.run, self.data, self.device, self.fingerprint = proto, run, data, device, fingerprint
        self.t = proto.training
        torch.manual_seed(run.seed)
        self.gate = build_gate(
            run.variant,
            embedding_shape=data.embedding_shape,
            latent_shape=data.latent_shape,
            alignment=run.alignment,
            time_axis=time_axis_from(data.time_axis),
            latent_first_center_s=data.latent_first_center_s,
        ).to(device)
        self.train = data.store("train")
        self.partners = shuffled_partners(len(self.train), run.seed) if run.control == "shuffled" else None
        steps_per_epoch = math.ceil(math.ceil(len(self.train) / self.t.batch_size) / self.t.gradient_accumulation)
        total = max(steps_per_epoch * run.max_epochs, 1)
        self.optimizer = torch.optim.AdamW(
            self.gate.parameters(), lr=run.lr or 1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: max(0.0, 1.0 - s / total))
        self.norm = {"min": data.latent_min, "max": data.latent_max} if self.t.normalize_latents else None
        self.span = (data.latent_max - data.latent_min) or 1.0
        val = data.store("validation")
        x_val, y_val = val.pairs(list(range(len(val))))
        self.x_val, self.y_val = x_val, self.target(y_val)
        self.x_heldout = self.y_heldout = None
        if data.has_heldout:
            held = data.store("test")
            x_held, y_held = held.pairs(list(range(len(held))))
            self.x_heldout, self.y_heldout = x_held, self.target(y_held)
        self.baseline = self.target(data.train_mean_latent())
        self.state = RunState()
        self.ckdir = checkpoint_dir(proto, run.slot, run.gate_slot, run.lr, run.alignment)
        self.state_path = self.ckdir / f"state_to_e{run.max_epochs}.pt"
        self.best_path = self.ckdir / f"best_to_e{run.max_epochs}.pt"

    def target(self, y):
        return (y - self.data.latent_min) / self.span if self.norm else y

    @property
    def n_heldout(self) -> int:
        return 0 if self.x_heldout is None else len(self.x_heldout)

    def heldout_summary(self, state_dict: dict | None = None) -> dict[str, float]:
        """The gate (or the weights ``state_dict``) on the held-out clips, which chose nothing: MSE, R²
        and its clip-bootstrap CI as ``heldout_*``; empty when no held-out clips were prepared."""
        import copy

        if self.x_heldout is None:
            return {}
        gate = self.gate
        if state_dict is not None:
            gate = copy.deepcopy(self.gate)
            gate.load_state_dict(state_dict)
        ev = evaluate(gate, self.x_heldout, self.y_heldout, self.t.eval_batch_size, self.device, self.baseline)
        return ev.summary(seed=self.run.seed, split="heldout")

    def meta(self) -> dict[str, Any]:
        run, data, t = self.run, self.data, self.t
        return {
            "format": CHECKPOINT_FORMAT,
            "protocol": self.proto.name,
            "encoder": run.encoder,
            "layer": run.layer,
            "encoder_slot": run.slot,
            "variant": run.variant,
            "gate_slot": run.gate_slot,
            "control": run.control,
            "seed": run.seed,
            "codec_slot": run.codec,
            "lr": float(run.lr),
            "alignment": run.alignment,
            "codec": data.codec,
            "embedding_model_key": data.embedding_model_key,
            "latent_model_key": data.latent_model_key,
            "embedding_shape": list(data.embedding_shape),
            "latent_shape": list(data.latent_shape),
            "latent_normalization": self.norm,
            "time_axis": data.time_axis,
            "latent_first_center_s": data.latent_first_center_s,
            "n_train": len(self.train),
            "n_validation": len(self.x_val),
            "n_heldout": self.n_heldout,
            "batch_size": t.batch_size,
            "gradient_accumulation": t.gradient_accumulation,
            "gaussian_blur": t.augmentation.gaussian_blur,
            "run_id": run.run_id,
            "versions": _versions(),
        }

    # --- resume
    def resume(self) -> None:
        import torch

        saved = (
            torch.load(self.state_path, map_location=self.device, weights_only=True)
            if self.state_path.exists()
            else None
        )
        if saved is not None and saved.get("fingerprint") != self.fingerprint:
            clear_run(self.proto, self.run)  # settings or data changed since that state was saved: start afresh
            saved = None
        if saved is None:
            return
        self.gate.load_state_dict(saved["gate"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = RunState(
            int(saved["epoch"]),
            int(saved["step"]),
            float(saved["best_loss"]),
            int(saved["best_epoch"]),
            dict(saved.get("best_eval", {})),
            list(saved["history"]),
            {int(k): v for k, v in saved["snapshots"].items()},
        )

    # --- steps
    def run_epoch(self, epoch: int, writer) -> None:
        import torch

        self.gate.train()
        gen = torch.Generator().manual_seed(self.run.seed * 100_003 + epoch)  # same order on resume
        torch.manual_seed(self.run.seed + epoch)  # dropout masks and blur σ, reproducible on resume
        order = torch.randperm(len(self.train), generator=gen).tolist()
        micro = [order[i : i + self.t.batch_size] for i in range(0, len(order), self.t.batch_size)]
        self.optimizer.zero_grad()
        acc_loss, acc_n = 0.0, 0
        for i, idx in enumerate(micro):
            acc_loss += self.micro_step(idx, epoch)
            acc_n += 1
            if acc_n == self.t.gradient_accumulation or i == len(micro) - 1:
                self.optimizer_step(acc_loss / acc_n, epoch, writer)
                acc_loss, acc_n = 0.0, 0

    def micro_step(self, idx: list[int], epoch: int) -> float:
        latent_idx = [self.partners[j] for j in idx] if self.partners else None
        x, y = self.train.pairs(idx, latent_idx)
        return self.step_on(x, y, epoch)

    def step_on(self, x, y, epoch: int) -> float:
        """One micro step on a loaded batch (train_tasks feeds one batch to several gates)."""
        import torch

        x, y = x.to(self.device), self.target(y.to(self.device))
        if self.t.augmentation.gaussian_blur:
            sigma = float(torch.empty(1).uniform_(0.1, max(0.1, self.t.augmentation.blur_sigma)))
            x = gaussian_blur(x, sigma)
        loss = torch.nn.functional.mse_loss(self.gate(x), y)
        if not torch.isfinite(loss):
            raise SonievalError(
                f"run {self.run.run_id}: training loss became {loss.item()} at epoch {epoch}",
                hint="lower the learning rate or enable training.normalize_latents",
            )
        (loss / self.t.gradient_accumulation).backward()
        return loss.item()

    def optimizer_step(self, loss: float, epoch: int, writer) -> None:
        import torch

        torch.nn.utils.clip_grad_norm_(self.gate.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.state.step += 1
        self.state.history.append({"step": self.state.step, "epoch": epoch, "split": "train", "loss": loss})
        writer.add_scalar("loss/train", loss, self.state.step)

    def validate(self, epoch: int, writer) -> Evaluation:
        ev = evaluate(self.gate, self.x_val, self.y_val, self.t.eval_batch_size, self.device, self.baseline)
        if not math.isfinite(ev.mse):
            raise SonievalError(
                f"run {self.run.run_id}: validation loss became {ev.mse} at epoch {epoch}",
                hint="lower the learning rate",
            )
        st = self.state
        st.history.append({"step": st.step, "epoch": epoch, "split": "validation", "loss": ev.mse})
        writer.add_scalar("loss/validation", ev.mse, st.step)
        writer.add_scalar("r2/validation", ev.r2, st.step)
        if ev.mse < st.best_loss:
            st.best_loss, st.best_epoch, st.best_eval = ev.mse, epoch, ev.summary(seed=self.run.seed)
            _save(
                self.best_path,
                {
                    "meta": {**self.meta(), "best_epoch": epoch, "best_validation_loss": ev.mse, **st.best_eval},
                    "state_dict": self.gate.state_dict(),
                },
            )
        return ev

    def save_snapshots(self, epoch: int) -> None:
        """The best within the first E epochs is the best so far at epoch E."""
        import torch

        for e in self.run.snapshot_epochs:
            if e != epoch:
                continue
            ck = torch.load(self.best_path, map_location="cpu", weights_only=True)
            heldout = self.heldout_summary(ck["state_dict"])
            ck["meta"].update({"epoch": e, "epochs_trained": epoch, "total_epochs": self.run.max_epochs, **heldout})
            _save(self.run.checkpoint(self.proto, e), ck)
            self.state.snapshots[e] = {
                "best_epoch": self.state.best_epoch,
                "best_validation_loss": self.state.best_loss,
                **self.state.best_eval,
                **heldout,
            }

    def save_state(self, epoch: int) -> None:
        st = self.state
        _save(
            self.state_path,
            {
                "gate": self.gate.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "epoch": epoch,
                "step": st.step,
                "best_loss": st.best_loss,
                "best_epoch": st.best_epoch,
                "best_eval": st.best_eval,
                "history": st.history,
                "snapshots": {str(k): v for k, v in st.snapshots.items()},
                "fingerprint": self.fingerprint,
            },
        )


def train_one_run(
    proto: Protocol, run: TrainRun, data: PairedData, device: str, *, fingerprint: str = "", progress: bool = True
) -> dict[str, Any]:
    """Train (or resume) one run; returns its summary (best epoch, loss and R² per snapshot)."""
    from tqdm.auto import tqdm

    trainer = GateTrainer(proto, run, data, device, fingerprint)
    if run.fitted_once:
        return _snapshot_at_zero(trainer)
    trainer.resume()
    logdir = proto.layout.training_run(run.run_id)
    logdir.mkdir(parents=True, exist_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    step = trainer.state.step
    writer = SummaryWriter(log_dir=str(logdir / "tensorboard"), purge_step=step if step else None)
    bar = tqdm(
        range(trainer.state.epoch + 1, run.max_epochs + 1),
        desc=f"train {run.run_id}",
        unit="epoch",
        disable=not progress,
        leave=False,
    )
    try:
        for epoch in bar:
            trainer.run_epoch(epoch, writer)
            ev = trainer.validate(epoch, writer)
            writer.flush()
            bar.set_postfix(validation_loss=f"{ev.mse:.4g}", r2=f"{ev.r2:.3f}")
            trainer.save_snapshots(epoch)
            trainer.save_state(epoch)
            write_losses(logdir, run.run_id, trainer.state.history)
    finally:
        writer.close()
    from sonieval.pipeline.figures import plot_loss_curves

    losses = pd.read_csv(logdir / "losses.csv")
    title = (
        f"{run.run_id} ({len(trainer.train)} training clips{', SHUFFLED pairs (control)' if trainer.partners else ''})"
    )
    plot_loss_curves(losses, logdir / "loss_curves.png", title=title)
    return run_summary(trainer)


def run_summary(trainer: GateTrainer) -> dict[str, Any]:
    """What a finished run reports to the ledger: its snapshots and the clip counts they rest on."""
    return {
        "snapshots": trainer.state.snapshots,
        "n_train": len(trainer.train),
        "n_validation": len(trainer.x_val),
        "n_heldout": trainer.n_heldout,
    }


def _snapshot_at_zero(trainer: GateTrainer) -> dict[str, Any]:
    """A system without epochs, evaluated and saved as epoch 0: the untrained control (the gate at its
    initialisation) or a closed-form gate (RIDGE, fitted by sonieval.pipeline.ridge)."""
    if trainer.gate.closed_form and trainer.run.control != "untrained":  # untrained: the map at initialisation
        from sonieval.pipeline.ridge import ridge_snapshot

        summary = ridge_snapshot(trainer)
    else:
        ev = evaluate(
            trainer.gate, trainer.x_val, trainer.y_val, trainer.t.eval_batch_size, trainer.device, trainer.baseline
        )
        summary = {
            "best_epoch": 0,
            "best_validation_loss": ev.mse,
            **ev.summary(seed=trainer.run.seed),
            **trainer.heldout_summary(),
        }
    _save(
        trainer.run.checkpoint(trainer.proto, 0),
        {
            "meta": {**trainer.meta(), **summary, "epoch": 0, "epochs_trained": 0, "total_epochs": 0},
            "state_dict": trainer.gate.state_dict(),
        },
    )
    trainer.state.snapshots = {0: summary}
    return run_summary(trainer)


class _ValuePickler(pickle.Pickler):
    """A pickler whose bytes depend on the values alone: without a memo, a string or dict shared by two parts of
    the object is written twice, as an unshared one is (a resumed run's history comes from a file, its keys are
    not the code's own string objects, yet it must pickle as the uninterrupted run's). No state is recursive."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fast = True


_VALUE_PICKLE = SimpleNamespace(Pickler=_ValuePickler, __name__="sonieval.pipeline.trainer._VALUE_PICKLE")


def _save(path: Path, obj: dict[str, Any]) -> None:
    import torch

    # through a file object: torch.save names the archive's records after a path it is given (here the temporary
    # file's random name), so two saves of the same weights would differ in bytes
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh, pickle_module=_VALUE_PICKLE)


def write_losses(logdir: Path, run_id: str, history: list[dict[str, Any]]) -> Path:
    df = pd.DataFrame(history, columns=["step", "epoch", "split", "loss"])
    df.insert(0, "run_id", run_id)
    df["smoothed"] = np.nan
    for split in ("train", "validation"):
        mask = df["split"] == split
        if mask.any():
            df.loc[mask, "smoothed"] = ema_smooth(df.loc[mask, "loss"].to_numpy())
    path = logdir / "losses.csv"
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def latent_first_center(codec_info: dict[str, Any], codec: str) -> float | None:
    """The centre of latent frame 0 from the codec's cache info; a cache written before codecs said so:
    the mel codec's centred frames (0 s), else the gates' default (DAC-VAE's half hop)."""
    if "first_frame_center_s" in codec_info:
        return float(codec_info["first_frame_center_s"])
    return 0.0 if codec == "mel" else None


def time_axis_from(info: dict[str, Any] | None):
    """The gates' TimeAxis from its JSON form (None: the gate's default)."""
    if not info:
        return None
    from sonieval.models.gates import TimeAxis

    return TimeAxis(tuple(int(v) for v in info["grid"]), float(info["hop_s"]), float(info["first_center_s"]))


def load_checkpoint(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """A system checkpoint (``meta`` + ``state_dict``); one clear error when missing or foreign."""
    import torch

    path = Path(path)
    if not path.exists():
        raise SonievalError(
            "gate checkpoint not found", path=path, hint="run `sonieval train PROTOCOL` for this system first"
        )
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise SonievalError(
            f"cannot load gate checkpoint ({type(exc).__name__})",
            path=path,
            hint="delete it and rerun `sonieval train PROTOCOL`",
        ) from None
    if not isinstance(ck, dict) or ck.get("meta", {}).get("format") != CHECKPOINT_FORMAT:
        raise SonievalError(f"not a sonieval gate checkpoint (expected format {CHECKPOINT_FORMAT})", path=path)
    return ck


def clear_run(proto: Protocol, run: TrainRun) -> None:
    """Forget a run's resume state (used when its inputs changed)."""
    ckdir = checkpoint_dir(proto, run.slot, run.gate_slot, run.lr, run.alignment)
    for name in (f"state_to_e{run.max_epochs}.pt", f"best_to_e{run.max_epochs}.pt"):
        (ckdir / name).unlink(missing_ok=True)
    shutil.rmtree(proto.layout.training_run(run.run_id) / "tensorboard", ignore_errors=True)
