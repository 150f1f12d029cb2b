"""The ``train`` stage: a sweep of gates over encoders × variants × alignments × learning rates.

Each gate maps an encoder's cached embedding ``[T, D]`` to the codec's cached latent
``[C, T']`` and is trained with the reference work's settings (thesis §3.0.3, which used the
Hugging Face ``Trainer``; reproduced here with its defaults in plain PyTorch):

- loss: MSE to the latent (optionally min-max normalised with the training set's global
  min and max, thesis eq. 4.1; sonify undoes it);
- AdamW (β 0.9/0.999, ε 1e-8, no weight decay), learning rate decayed linearly to 0 over the
  run, gradient-norm clipping at 1.0 (the Trainer's defaults);
- batch 64, evaluation batch 32, gradient accumulation 2, seed 42 (protocol.training);
- trained on split ``train``, evaluated on split ``validation`` after every epoch (which picks
  the best epoch); each system is then measured on the **held-out** clips (the prepared clips of
  split ``test``: the listening set), which chose nothing, so its ``heldout_r2`` is not flattered
  by the choice of epoch (the validation R² of the chosen epoch is, controls most: the shuffled
  control's best of N epochs on the same clips it is reported on);
- optional Gaussian-blur augmentation of the embeddings (thesis §4.3: an embedding seen as a
  one-channel image, kernel 13 (time) × 7 (feature), σ drawn uniformly from
  [0.1, blur_sigma] per batch; hand-written separable convolution, as torchvision is not
  part of this environment).

Epoch grids (``epochs: [15, 50]``): with ``epoch_grid: prefix`` (default) one run is trained
to max(epochs) and, for each E, the checkpoint with the lowest validation loss within the
first E epochs becomes system ``e<E>``. Note that its learning-rate schedule decays over
max(epochs), so the E=15 system is not identical to a run trained for 15 epochs only; use
``epoch_grid: separate`` for one run (and schedule) per E.

Layers: an encoder whose ``layer`` names several (a list or ``all``) gives one gate per layer, each
trained on that layer's cached embeddings (shape and time axis read per layer); the run's encoder slot
is the system id's (``hubert`` for the input cut, ``hubert.layer6`` for block 6).

Outputs per run (``<run>`` = ``<encoder slot>/<gate slot>/lr<lr>/<alignment>``, plus ``/E<E>`` for
separate runs):

- ``<results>/checkpoints/<run>/e<E>.pt``: the system checkpoints (gate weights + metadata);
- ``<results>/checkpoints/<run>/state_to_e<max>.pt``: the resume state, saved every epoch;
- ``<results>/training/<run>/losses.csv`` (step, epoch, split, loss, smoothed),
  ``loss_curves.png`` (training and validation, raw and 0.99-EMA smoothed), ``tensorboard/``.
- ``<results>/tables/training.parquet``: one row per system (best epoch and loss, validation and
  held-out R² with clip-bootstrap CIs, n of each).

Resumable: a run already finished is skipped (ledger stage ``train``); a killed run resumes
from its last saved epoch with the same data order (the shuffle is seeded per epoch).

This module is the stage: the sweep (:func:`plan_runs`), its tasks (:mod:`sonieval.pipeline.train_tasks`) and
the training table. One gate's training (its pairs, :class:`GateTrainer`, checkpoints and resume state) is
:mod:`sonieval.pipeline.trainer`, below the stage and its tasks; its names are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sonieval.errors import SonievalError
from sonieval.ledger import BatchResult, LedgerItem, RunLedger
from sonieval.pipeline.cache import encoder_layers
from sonieval.pipeline.train_tasks import train_tasks

# One gate's training lives in sonieval.pipeline.trainer (below this stage and its tasks); its names are
# re-exported here, where older code imports them from.
from sonieval.pipeline.trainer import (  # noqa: F401
    BLUR_KERNEL,
    CHECKPOINT_FORMAT,
    MAX_GRAD_NORM,
    SMOOTHING,
    TRAIN_MEMORY_BYTES,
    Evaluation,
    GateTrainer,
    PairedData,
    PairStore,
    RunState,
    TrainRun,
    checkpoint_dir,
    checkpoint_path,
    clear_run,
    ema_smooth,
    evaluate,
    gaussian_blur,
    latent_first_center,
    load_checkpoint,
    paired_data,
    run_summary,
    shuffled_partners,
    time_axis_from,
    train_one_run,
    write_losses,
)
from sonieval.protocol import Protocol, gate_choices
from sonieval.tables import NO_CONTROL, write_table

STAGE = "train"
TRAINING_COLUMNS = [
    "encoder",
    "layer",
    "variant",
    "gate_slot",
    "control",
    "seed",
    "codec",
    "lr",
    "epoch",
    "alignment",
    "checkpoint",
    "run_id",
    "best_epoch",
    "best_validation_loss",
    "validation_mse",
    "validation_r2",
    "validation_r2_ci_low",
    "validation_r2_ci_high",
    "heldout_mse",
    "heldout_r2",
    "heldout_r2_ci_low",
    "heldout_r2_ci_high",
    "n_train",
    "n_validation",
    "n_heldout",
    "embedding_model_key",
    "latent_model_key",
    "status",
    "error",
]


def plan_runs(proto: Protocol) -> list[TrainRun]:
    """Every run of the sweep: codecs × encoders × layers × variants × alignments × seeds × (controls, lrs)."""
    runs = []
    encoders = [spec for _, spec in proto.sonified_encoders()]  # each entry, and its random twin after it
    layers = {enc.system_name: encoder_layers(proto, enc) for enc in encoders}
    for i, codec in enumerate(proto.codecs):
        for enc in encoders:
            # the twin is itself a control (of the pretrained encoder): its gates are trained ones only
            controls = list(proto.gates.controls) if codec.controls and not enc.is_twin else []
            for layer in layers[enc.system_name]:
                for variant, alignment in gate_choices(proto, codec, enc):
                    for seed in proto.training.replicate_seeds:
                        common = dict(
                            control=NO_CONTROL,
                            seed=seed,
                            seed_in_id=bool(proto.training.seeds),
                            codec=codec.name if i else None,
                            layer=layer,
                        )
                        runs += _runs_of(proto, enc.system_name, variant, alignment, controls, common)
    return runs


def _runs_of(
    proto: Protocol, encoder: str, variant: str, alignment: str, controls: list[str], common: dict[str, Any]
) -> list[TrainRun]:
    from sonieval.protocol import CLOSED_FORM_VARIANTS

    t = proto.training
    epochs = sorted(set(t.epochs))
    if variant in CLOSED_FORM_VARIANTS:  # fitted once, on real and (the control) on shuffled pairs
        if alignment not in ("grid", "grid-pool"):
            return []  # a per-frame map: with the protocol's grid alignments only (protocol validation)
        kinds = [c for c in ("untrained", NO_CONTROL, "shuffled") if c == NO_CONTROL or c in controls]
        return [TrainRun(encoder, variant, 0.0, alignment, 0, [0], **{**common, "control": c}) for c in kinds]
    runs = []
    if "untrained" in controls:
        runs.append(TrainRun(encoder, variant, 0.0, alignment, 0, [0], **{**common, "control": "untrained"}))
    for control in [NO_CONTROL] + (["shuffled"] if "shuffled" in controls else []):
        kw = {**common, "control": control}
        for lr in t.learning_rates:
            if t.epoch_grid == "prefix":
                runs.append(TrainRun(encoder, variant, lr, alignment, max(epochs), epochs, **kw))
            else:
                runs += [TrainRun(encoder, variant, lr, alignment, e, [e], True, **kw) for e in epochs]
    return runs


# ---------------------------------------------------------------------------- the stage


def run_train(
    proto: Protocol, ledger: RunLedger, *, device: str = "auto", progress: bool = True, engine: Any = None
) -> BatchResult:
    """Train every run of the sweep not yet finished, gates that share their pairs together, as tasks on
    ``engine`` (default: the local engine; see sonieval.pipeline.train_tasks); write ``tables/training.parquet``."""
    from sonieval.data.results_folder import require_tables
    from sonieval.engines import LocalEngine, run_tasks

    require_tables(proto.results_path, ["clips", "prepared"], proto.source)  # else no table is written
    runs = plan_runs(proto)
    data_by_pair: dict[tuple, PairedData | SonievalError] = {}

    def pair(r: TrainRun) -> tuple:
        return r.encoder, r.codec or proto.primary_codec.name, r.layer

    for key in sorted({pair(r) for r in runs}):
        try:
            data_by_pair[key] = paired_data(proto, *key)
        except SonievalError as exc:
            data_by_pair[key] = exc
    items = [_train_item(proto, run, data_by_pair[pair(run)]) for run in runs]
    engine = engine or LocalEngine()
    tasks = train_tasks(proto, items, engine, device, progress=progress and engine.name == "local")
    result = run_tasks(ledger, STAGE, tasks, engine, desc="train sweep", progress=progress)
    write_training_table(proto, ledger, runs)
    return result


def _train_item(proto: Protocol, run: TrainRun, data: PairedData | SonievalError) -> LedgerItem:
    t = proto.training
    inputs = {
        "run": run.run_id,
        "control": run.control,
        "max_epochs": run.max_epochs,
        "snapshots": run.snapshot_epochs,
        "batch_size": t.batch_size,
        "eval_batch_size": t.eval_batch_size,
        "gradient_accumulation": t.gradient_accumulation,
        "seed": run.seed,
        "augmentation": t.augmentation.model_dump(),
        "normalize_latents": t.normalize_latents,
    }
    if isinstance(data, PairedData):
        inputs.update(
            embedding_model_key=data.embedding_model_key,
            latent_model_key=data.latent_model_key,
            train_clips=data.clip_ids["train"],
            validation_clips=data.clip_ids["validation"],
            heldout_clips=data.clip_ids.get("test", []),
        )
        from sonieval.models.gates import GRID_ALIGNMENTS

        if run.alignment in GRID_ALIGNMENTS:  # where the latent's frames sit decides a grid gate's input
            inputs["latent_first_center_s"] = data.latent_first_center_s
    return LedgerItem(run.run_id, inputs, payload=(run, data))


R2_COLUMNS = ["validation_mse", "validation_r2", "validation_r2_ci_low", "validation_r2_ci_high"]
HELDOUT_COLUMNS = ["heldout_mse", "heldout_r2", "heldout_r2_ci_low", "heldout_r2_ci_high"]


def write_training_table(proto: Protocol, ledger: RunLedger, runs: list[TrainRun]) -> Path:
    """One row per system (run × snapshot epoch): where its checkpoint is and how well it fits validation."""
    rows = []
    for run in runs:
        state = ledger.get(STAGE, run.run_id) or {}
        extra, inputs = state.get("extra") or {}, state.get("inputs") or {}
        snaps = extra.get("snapshots", {})
        for e in run.snapshot_epochs:
            snap = snaps.get(str(e)) or snaps.get(e) or {}
            rows.append(
                {
                    "encoder": run.encoder,
                    "layer": run.layer,
                    "variant": run.variant,
                    "gate_slot": run.gate_slot,
                    "control": run.control,
                    "seed": run.seed,
                    "codec": run.codec or proto.primary_codec.name,
                    "lr": float(run.lr),
                    "epoch": e,
                    "alignment": run.alignment,
                    "checkpoint": str(run.checkpoint(proto, e)),
                    "run_id": run.run_id,
                    "best_epoch": snap.get("best_epoch"),
                    "best_validation_loss": snap.get("best_validation_loss"),
                    **{c: snap.get(c) for c in R2_COLUMNS + HELDOUT_COLUMNS},
                    "n_train": extra.get("n_train"),
                    "n_validation": extra.get("n_validation"),
                    "n_heldout": extra.get("n_heldout"),
                    "embedding_model_key": inputs.get("embedding_model_key"),
                    "latent_model_key": inputs.get("latent_model_key"),
                    "status": state.get("status", "missing"),
                    "error": state.get("error"),
                }
            )
    table = pd.DataFrame(rows, columns=TRAINING_COLUMNS)
    for c in R2_COLUMNS + HELDOUT_COLUMNS + ["best_validation_loss"]:
        table[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
    return write_table(table, proto.layout.table("training"))
