"""The ``train`` stage: a sweep of gates over encoders × variants × alignments × learning rates.

Each gate maps an encoder's cached embedding ``[T, D]`` to the codec's cached latent
``[C, T']`` and is trained with the reference work's settings (thesis §3.0.3, which used the
Hugging Face ``Trainer``; reproduced here with its defaults in plain PyTorch):

- loss: MSE to the latent (optionally min-max normalised with the training set's global
  min and max, thesis eq. 4.1; sonify undoes it);
- AdamW (β 0.9/0.999, ε 1e-8, no weight decay), learning rate decayed linearly to 0 over the
  run, gradient-norm clipping at 1.0 (the Trainer's defaults);
- batch 64, evaluation batch 32, gradient accumulation 2, seed 42 (protocol.training);
- trained on split ``train``, evaluated on split ``validation`` after every epoch;
- optional Gaussian-blur augmentation of the embeddings (thesis §4.3: an embedding seen as a
  one-channel image, kernel 13 (time) × 7 (feature), σ drawn uniformly from
  [0.1, blur_sigma] per batch; hand-written separable convolution, as torchvision is not
  part of this environment).

Epoch grids (``epochs: [15, 50]``): with ``epoch_grid: prefix`` (default) one run is trained
to max(epochs) and, for each E, the checkpoint with the lowest validation loss within the
first E epochs becomes system ``e<E>``. Note that its learning-rate schedule decays over
max(epochs), so the E=15 system is not identical to a run trained for 15 epochs only; use
``epoch_grid: separate`` for one run (and schedule) per E.

Outputs per run (``<run>`` = ``<encoder>/<variant>/lr<lr>/<alignment>``, plus ``/E<E>`` for
separate runs):

- ``<results>/checkpoints/<run>/e<E>.pt``: the system checkpoints (gate weights + metadata);
- ``<results>/checkpoints/<run>/state_to_e<max>.pt``: the resume state, saved every epoch;
- ``<results>/training/<run>/losses.csv`` (step, epoch, split, loss, smoothed),
  ``loss_curves.png`` (training and validation, raw and 0.99-EMA smoothed), ``tensorboard/``.
- ``<results>/tables/training.parquet``: one row per system (best epoch and loss).

Resumable: a run already finished is skipped (manifest stage ``train``); a killed run resumes
from its last saved epoch with the same data order (the shuffle is seeded per epoch).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sonieval.errors import DataError, SonievalError
from sonieval.files import atomic_path
from sonieval.pipeline.manifest import BatchResult, ItemOutcome, ManifestItem, RunManifest, inputs_hash
from sonieval.pipeline.prepare import load_array, read_encoder_info, read_prepared, resolve_device
from sonieval.protocol import Protocol
from sonieval.tables import format_lr, resolve_table_path, write_table

STAGE = "train"
CHECKPOINT_FORMAT = "sonieval-gate/1"
BLUR_KERNEL = (13, 7)  # (time, feature) taps, thesis §4.3 kernel (7, 13)
MAX_GRAD_NORM = 1.0
SMOOTHING = 0.99  # the thesis's TensorBoard smoothing weight
TRAINING_COLUMNS = [
    "encoder", "variant", "lr", "epoch", "alignment", "checkpoint", "run_id", "best_epoch",
    "best_validation_loss", "n_train", "n_validation", "embedding_model_key", "latent_model_key", "status", "error",
]


@dataclass
class TrainRun:
    """One training run; it yields one system per epoch count in ``snapshot_epochs``."""

    encoder: str
    variant: str
    lr: float
    alignment: str
    max_epochs: int
    snapshot_epochs: list[int]
    separate: bool = False

    @property
    def run_id(self) -> str:
        base = f"{self.encoder}/{self.variant}/lr{format_lr(self.lr)}/{self.alignment}"
        return f"{base}/E{self.max_epochs}" if self.separate else base


def checkpoint_dir(proto: Protocol, encoder: str, variant: str, lr: float, alignment: str) -> Path:
    return proto.results_path / "checkpoints" / encoder / variant / f"lr{format_lr(lr)}" / alignment


def checkpoint_path(proto: Protocol, encoder: str, variant: str, lr: float, epoch: int, alignment: str) -> Path:
    """The checkpoint of system (encoder, variant, lr, epoch, alignment)."""
    return checkpoint_dir(proto, encoder, variant, lr, alignment) / f"e{int(epoch)}.pt"


def plan_runs(proto: Protocol) -> list[TrainRun]:
    t = proto.training
    epochs = sorted(set(t.epochs))
    runs = []
    for enc in proto.encoders:
        for variant in proto.gates.variants:
            for alignment in proto.gates.alignments:
                for lr in t.learning_rates:
                    if t.epoch_grid == "prefix":
                        runs.append(TrainRun(enc.name, variant, lr, alignment, max(epochs), epochs))
                    else:
                        runs += [TrainRun(enc.name, variant, lr, alignment, e, [e], True) for e in epochs]
    return runs


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
    clip_ids: dict[str, list[str]] = field(default_factory=dict)


def paired_data(proto: Protocol, encoder: str) -> PairedData:
    prepared = read_prepared(proto)
    ok = prepared[prepared["status"] == "done"]
    emb = ok[(ok["kind"] == "embedding") & (ok["model"] == encoder)]
    lat = ok[ok["kind"] == "latent"]
    if emb.empty:
        raise DataError(f"no prepared embeddings for encoder {encoder!r}",
                        path=proto.results_path / "tables" / "prepared.parquet",
                        hint="run `sonieval prepare PROTOCOL` with this encoder in the protocol")
    if lat.empty:
        raise DataError("no prepared codec latents", path=proto.results_path / "tables" / "prepared.parquet",
                        hint="run `sonieval prepare PROTOCOL`")
    merged = emb.merge(lat[["clip_id", "path", "model_key", "model"]], on="clip_id", suffixes=("", "_latent"))
    out: dict[str, dict[str, list[str]]] = {"emb": {}, "lat": {}, "ids": {}}
    for split in ("train", "validation"):
        part = merged[merged["split"] == split].sort_values("clip_id")
        if part.empty:
            raise DataError(f"no prepared {split} clips for encoder {encoder!r}",
                            hint=f"the {split} split must hold clips whose embedding and latent were prepared")
        out["emb"][split] = [str(resolve_table_path(p, proto.results_path)) for p in part["path"]]
        out["lat"][split] = [str(resolve_table_path(p, proto.results_path)) for p in part["path_latent"]]
        out["ids"][split] = part["clip_id"].tolist()
    e0 = np.load(out["emb"]["train"][0], mmap_mode="r")
    l0 = np.load(out["lat"]["train"][0], mmap_mode="r")
    data = PairedData(out["emb"], out["lat"], tuple(e0.shape), tuple(l0.shape),
                      str(merged["model_key"].iloc[0]), str(merged["model_key_latent"].iloc[0]),
                      str(merged["model_latent"].iloc[0]), clip_ids=out["ids"])
    lo, hi = math.inf, -math.inf
    for p in data.latents["train"]:
        arr = np.load(p, mmap_mode="r")
        lo, hi = min(lo, float(arr.min())), max(hi, float(arr.max()))
    data.latent_min, data.latent_max = lo, hi
    data.time_axis = read_encoder_info(Path(data.embeddings["train"][0]).parent).get("time_axis")
    return data


def _load_pairs(emb_paths: list[str], lat_paths: list[str], emb_shape: tuple, lat_shape: tuple):
    import torch

    x = np.stack([_checked(p, emb_shape, "embedding") for p in emb_paths])
    y = np.stack([_checked(p, lat_shape, "latent") for p in lat_paths])
    return torch.from_numpy(x), torch.from_numpy(y)


def _checked(path: str, shape: tuple, kind: str) -> np.ndarray:
    arr = load_array(path)
    if tuple(arr.shape) != tuple(shape):
        raise DataError(f"{kind} has shape {tuple(arr.shape)}, expected {tuple(shape)} like the other clips",
                        path=path, hint="delete the cache entry and rerun `sonieval prepare PROTOCOL`")
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


def _versions() -> dict[str, str]:
    import torch

    from sonieval import __version__

    return {"sonieval": str(__version__), "torch": str(torch.__version__)}


def ema_smooth(values: list[float] | np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
    """TensorBoard's debiased exponential moving average (the thesis's smoothing 0.99)."""
    out = np.empty(len(values))
    last, n = 0.0, 0
    for i, v in enumerate(values):
        last = last * weight + (1 - weight) * float(v)
        n += 1
        out[i] = last / (1 - weight**n)
    return out


def train_one_run(
    proto: Protocol, run: TrainRun, data: PairedData, device: str, *, fingerprint: str = "", progress: bool = True
) -> dict[str, Any]:
    """Train (or resume) one run; returns its summary (best epoch and loss per snapshot)."""
    import torch
    from tqdm.auto import tqdm

    from sonieval.models.gates import build_gate

    t = proto.training
    ckdir = checkpoint_dir(proto, run.encoder, run.variant, run.lr, run.alignment)
    state_path = ckdir / f"state_to_e{run.max_epochs}.pt"
    best_path = ckdir / f"best_to_e{run.max_epochs}.pt"
    logdir = proto.results_path / "training" / run.run_id
    logdir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(t.seed)
    gate = build_gate(run.variant, embedding_shape=data.embedding_shape, latent_shape=data.latent_shape,
                      alignment=run.alignment, time_axis=time_axis_from(data.time_axis)).to(device)
    optimizer = torch.optim.AdamW(gate.parameters(), lr=run.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    n_train = len(data.embeddings["train"])
    steps_per_epoch = math.ceil(math.ceil(n_train / t.batch_size) / t.gradient_accumulation)
    total_steps = steps_per_epoch * run.max_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / total_steps))
    history: list[dict[str, Any]] = []
    start_epoch, step, best_loss, best_epoch = 1, 0, math.inf, 0
    snapshots: dict[int, dict[str, Any]] = {}
    state = torch.load(state_path, map_location=device, weights_only=True) if state_path.exists() else None
    if state is not None and state.get("fingerprint") != fingerprint:
        clear_run(proto, run)  # settings or data changed since that state was saved: start afresh
        state = None
    if state is not None:
        gate.load_state_dict(state["gate"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        best_loss, best_epoch = float(state["best_loss"]), int(state["best_epoch"])
        history = list(state["history"])
        snapshots = {int(k): v for k, v in state["snapshots"].items()}

    norm = {"min": data.latent_min, "max": data.latent_max} if t.normalize_latents else None
    span = (data.latent_max - data.latent_min) or 1.0

    def target(y):
        return (y - data.latent_min) / span if norm else y

    x_val, y_val = _load_pairs(data.embeddings["validation"], data.latents["validation"],
                               data.embedding_shape, data.latent_shape)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(logdir / "tensorboard"), purge_step=step if step else None)
    meta = {
        "format": CHECKPOINT_FORMAT, "protocol": proto.name, "encoder": run.encoder, "variant": run.variant,
        "lr": float(run.lr), "alignment": run.alignment, "codec": data.codec,
        "embedding_model_key": data.embedding_model_key, "latent_model_key": data.latent_model_key,
        "embedding_shape": list(data.embedding_shape), "latent_shape": list(data.latent_shape),
        "latent_normalization": norm, "time_axis": data.time_axis, "n_train": n_train, "n_validation": len(data.embeddings["validation"]),
        "seed": t.seed, "batch_size": t.batch_size, "gradient_accumulation": t.gradient_accumulation,
        "gaussian_blur": t.augmentation.gaussian_blur, "run_id": run.run_id, "versions": _versions(),
    }
    bar = tqdm(range(start_epoch, run.max_epochs + 1), desc=f"train {run.run_id}", unit="epoch",
               disable=not progress, leave=False)
    try:
        for epoch in bar:
            gate.train()
            gen = torch.Generator().manual_seed(t.seed * 100_003 + epoch)  # same order on resume
            torch.manual_seed(t.seed + epoch)  # dropout masks and blur σ, reproducible on resume
            order = torch.randperm(n_train, generator=gen).tolist()
            micro = [order[i:i + t.batch_size] for i in range(0, n_train, t.batch_size)]
            optimizer.zero_grad()
            acc_loss, acc_n = 0.0, 0
            for i, idx in enumerate(micro):
                x, y = _load_pairs([data.embeddings["train"][j] for j in idx], [data.latents["train"][j] for j in idx],
                                   data.embedding_shape, data.latent_shape)
                x, y = x.to(device), target(y.to(device))
                if t.augmentation.gaussian_blur:
                    sigma = float(torch.empty(1).uniform_(0.1, max(0.1, t.augmentation.blur_sigma)))
                    x = gaussian_blur(x, sigma)
                loss = torch.nn.functional.mse_loss(gate(x), y)
                if not torch.isfinite(loss):
                    raise SonievalError(
                        f"run {run.run_id}: training loss became {loss.item()} at epoch {epoch}",
                        hint="lower the learning rate or enable training.normalize_latents",
                    )
                (loss / t.gradient_accumulation).backward()
                acc_loss += loss.item()
                acc_n += 1
                if acc_n == t.gradient_accumulation or i == len(micro) - 1:
                    torch.nn.utils.clip_grad_norm_(gate.parameters(), MAX_GRAD_NORM)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                    step += 1
                    value = acc_loss / acc_n
                    history.append({"step": step, "epoch": epoch, "split": "train", "loss": value})
                    writer.add_scalar("loss/train", value, step)
                    acc_loss, acc_n = 0.0, 0
            val_loss = evaluate(gate, x_val, target(y_val), t.eval_batch_size, device)
            if not math.isfinite(val_loss):
                raise SonievalError(f"run {run.run_id}: validation loss became {val_loss} at epoch {epoch}",
                                    hint="lower the learning rate")
            history.append({"step": step, "epoch": epoch, "split": "validation", "loss": val_loss})
            writer.add_scalar("loss/validation", val_loss, step)
            writer.flush()
            bar.set_postfix(validation_loss=f"{val_loss:.4g}")
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                _save(best_path, {"meta": {**meta, "best_epoch": epoch, "best_validation_loss": val_loss},
                                  "state_dict": gate.state_dict()})
            for e in run.snapshot_epochs:
                if e == epoch:
                    # The best within the first E epochs is the best so far at epoch E.
                    with atomic_path(checkpoint_path(proto, run.encoder, run.variant, run.lr, e, run.alignment)) as tmp:
                        ck = torch.load(best_path, map_location="cpu", weights_only=True)
                        ck["meta"].update({"epoch": e, "epochs_trained": epoch, "total_epochs": run.max_epochs})
                        torch.save(ck, tmp)
                    snapshots[e] = {"best_epoch": best_epoch, "best_validation_loss": best_loss}
            _save(state_path, {
                "gate": gate.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "step": step, "best_loss": best_loss, "best_epoch": best_epoch,
                "history": history, "snapshots": {str(k): v for k, v in snapshots.items()},
                "fingerprint": fingerprint,
            })
            write_losses(logdir, run.run_id, history)
    finally:
        writer.close()
    from sonieval.pipeline.figures import plot_loss_curves

    losses = pd.read_csv(logdir / "losses.csv")
    plot_loss_curves(losses, logdir / "loss_curves.png", title=f"{run.run_id} ({n_train} training clips)")
    return {"snapshots": snapshots, "n_train": n_train, "n_validation": meta["n_validation"]}


def evaluate(gate, x, y, batch_size: int, device: str) -> float:
    """Mean squared error over the whole evaluation set (sample-weighted over batches)."""
    import torch

    gate.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            total += torch.nn.functional.mse_loss(gate(xb), yb, reduction="sum").item()
            n += yb.numel()
    return total / max(n, 1)


def _save(path: Path, obj: dict[str, Any]) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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
        raise SonievalError("gate checkpoint not found", path=path,
                            hint="run `sonieval train PROTOCOL` for this system first")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise SonievalError(f"cannot load gate checkpoint ({type(exc).__name__})", path=path,
                            hint="delete it and rerun `sonieval train PROTOCOL`") from None
    if not isinstance(ck, dict) or ck.get("meta", {}).get("format") != CHECKPOINT_FORMAT:
        raise SonievalError(f"not a sonieval gate checkpoint (expected format {CHECKPOINT_FORMAT})", path=path)
    return ck


# ---------------------------------------------------------------------------- the stage


def run_train(proto: Protocol, manifest: RunManifest, *, device: str = "auto", progress: bool = True) -> BatchResult:
    """Train every run of the sweep not yet finished; write ``tables/training.parquet``."""
    device = resolve_device(device)
    runs = plan_runs(proto)
    data_by_encoder: dict[str, PairedData | SonievalError] = {}
    for enc in {r.encoder for r in runs}:
        try:
            data_by_encoder[enc] = paired_data(proto, enc)
        except SonievalError as exc:
            data_by_encoder[enc] = exc
    t = proto.training
    items = []
    for run in runs:
        data = data_by_encoder[run.encoder]
        inputs = {
            "run": run.run_id, "max_epochs": run.max_epochs, "snapshots": run.snapshot_epochs,
            "batch_size": t.batch_size, "eval_batch_size": t.eval_batch_size,
            "gradient_accumulation": t.gradient_accumulation, "seed": t.seed,
            "augmentation": t.augmentation.model_dump(), "normalize_latents": t.normalize_latents,
        }
        if isinstance(data, PairedData):
            inputs.update(embedding_model_key=data.embedding_model_key, latent_model_key=data.latent_model_key,
                          train_clips=data.clip_ids["train"], validation_clips=data.clip_ids["validation"])
        items.append(ManifestItem(run.run_id, inputs, payload=(run, data)))

    def fn(item: ManifestItem) -> ItemOutcome:
        run, data = item.payload
        if isinstance(data, SonievalError):
            raise data
        summary = train_one_run(proto, run, data, device, fingerprint=inputs_hash(item.inputs), progress=progress)
        last = checkpoint_path(proto, run.encoder, run.variant, run.lr, max(run.snapshot_epochs), run.alignment)
        return ItemOutcome(path=last, extra=summary)

    result = manifest.run_batch(STAGE, items, fn, desc="train sweep", progress=progress)
    write_training_table(proto, manifest, runs)
    return result


def write_training_table(proto: Protocol, manifest: RunManifest, runs: list[TrainRun]) -> Path:
    rows = []
    for run in runs:
        state = manifest.get(STAGE, run.run_id) or {}
        snaps = (state.get("extra") or {}).get("snapshots", {})
        for e in run.snapshot_epochs:
            snap = snaps.get(str(e)) or snaps.get(e) or {}
            rows.append({
                "encoder": run.encoder, "variant": run.variant, "lr": float(run.lr), "epoch": e,
                "alignment": run.alignment,
                "checkpoint": str(checkpoint_path(proto, run.encoder, run.variant, run.lr, e, run.alignment)),
                "run_id": run.run_id, "best_epoch": snap.get("best_epoch"),
                "best_validation_loss": snap.get("best_validation_loss"),
                "n_train": (state.get("extra") or {}).get("n_train"),
                "n_validation": (state.get("extra") or {}).get("n_validation"),
                "embedding_model_key": (state.get("inputs") or {}).get("embedding_model_key"),
                "latent_model_key": (state.get("inputs") or {}).get("latent_model_key"),
                "status": state.get("status", "missing"), "error": state.get("error"),
            })
    return write_table(pd.DataFrame(rows, columns=TRAINING_COLUMNS), proto.results_path / "tables" / "training.parquet")


def clear_run(proto: Protocol, run: TrainRun) -> None:
    """Forget a run's resume state (used when its inputs changed)."""
    ckdir = checkpoint_dir(proto, run.encoder, run.variant, run.lr, run.alignment)
    for name in (f"state_to_e{run.max_epochs}.pt", f"best_to_e{run.max_epochs}.pt"):
        (ckdir / name).unlink(missing_ok=True)
    shutil.rmtree(proto.results_path / "training" / run.run_id / "tensorboard", ignore_errors=True)
