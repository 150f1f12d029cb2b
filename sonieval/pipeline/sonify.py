"""The ``sonify`` stage: trained gates turn listening-set embeddings into audio.

For every trained system (encoder, layer, variant, lr, epoch, alignment: the protocol's grid, see
:mod:`sonieval.pipeline.train`) and every listening-set clip:

    cached embedding → gate → latent → codec decoder → 44.1 kHz audio → post-processings

The decoder (the costly part: seconds per clip on CPU) runs **once** per (system, clip);
every audio-level post-processing of ``protocol.sonify.postprocess`` is derived from that one
decode (:mod:`sonieval.pipeline.postprocess`). Chains starting with ``embedding_rescale``
change the gate's input, so they share a second decode per (system, clip).

The codec's own reconstruction of each original (cached latent → decode, no gate) is the
per-clip ceiling, under the system_id ``codec/<codec>/lr0.0/e0/none/codec`` (encoder slot
``codec``, variant slot the codec's name, post-processing ``codec``; lr and epoch are 0
because no gate is trained).

Outputs: ``<results>/sonifications/<system_id>/<clip_id>.wav`` (32-bit float WAV at 44.1 kHz,
trimmed to the clip length, so no post-processing is silently clipped) and
``<results>/tables/sonifications.parquet`` (SONIFICATIONS_COLUMNS plus provenance columns).
Work is recorded in the ledger (stage ``sonify``, one item per decode, key
``<system>/<branch>/<clip_id>``); a rerun skips finished decodes, so a killed run resumes
where it stopped. ``shard=(k, N)`` takes the decodes whose key hashes to k-1 modulo N
(deterministic, disjoint). ``sonieval sonify --shard k/N`` records them in the shard's own ledger
(:mod:`sonieval.pipeline.ledgers`: no SQLite file is shared between machines) and writes no table;
the next unsharded ``sonify`` (or ``sonieval run``) merges the shard ledgers, decodes nothing they
made and writes the complete table. Called with the run's own ledger and a shard, every shard
rebuilds the table under a file lock (one machine only).

The decodes run as tasks on an engine (:mod:`sonieval.engines`: local or Ray), one task per
decode batch; the driver alone records them.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sonieval.audio import CODEC_RATE, fit_length, load_clip, write_wav
from sonieval.engines import LocalEngine, Task, attempt, resolve_device, run_tasks, worker_memo
from sonieval.errors import DataError, SonievalError
from sonieval.files import sha256_file
from sonieval.ledger import BatchResult, ItemOutcome, LedgerItem, RunLedger
from sonieval.pipeline.cache import (
    USABLE_STATUS,
    clips_table_path,
    codec_model_key,
    is_random_model_key,
    load_array,
    load_prepared_codec,
    read_prepared,
)
from sonieval.pipeline.postprocess import apply_postprocess, needs_embedding_rescale, rescale_embedding
from sonieval.pipeline.train import plan_runs
from sonieval.pipeline.trainer import checkpoint_path, load_checkpoint, time_axis_from
from sonieval.protocol import Protocol
from sonieval.tables import (
    CODEC_SLOT,
    INPUT_LAYER,
    SONIFICATIONS_COLUMNS,
    encoder_slot,
    make_system_id,
    read_table,
    resolve_table_path,
    system_parts,
    table_path_value,
    write_table,
)

STAGE = "sonify"
PLAIN, RESCALED, CODEC = "plain", "embedding_rescale", "codec"
# random_init: the system was made with a randomly initialised (small) encoder or codec, so its
# audio shows that the pipeline runs, not what the architecture learns; every later output says so.
EXTRA_COLUMNS = [
    "layer",
    "control",
    "seed",
    "codec",
    "codec_label",
    "branch",
    "checkpoint",
    "embedding_model_key",
    "codec_model_key",
    "encoder_random_init",
    "codec_random_init",
    "random_init",
    "sample_rate",
    "seconds",
]


def codec_system_id(codec_name: str) -> str:
    """The codec-reconstruction ceiling's system_id, e.g. ``codec/dac-vae/lr0.0/e0/none/codec``."""
    return make_system_id(CODEC_SLOT, codec_name, 0.0, 0, "none", "codec")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"k/N"`` (1 ≤ k ≤ N) → (k, N); one clear error otherwise."""
    if text is None:
        return None
    try:
        k, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise SonievalError(f"--shard {text!r}: expected k/N with whole numbers, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise SonievalError(f"--shard {text!r}: k must be between 1 and N (shards are numbered 1..N)")
    return k, n


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % n == k - 1


@dataclass(frozen=True)
class System:
    """A trained gate (or a control) without its post-processing; ``variant`` is the gate slot, ``layer``
    the encoder layer's label (``slot`` names both as system ids do)."""

    encoder: str
    variant: str
    lr: float
    epoch: int
    alignment: str
    codec: str = ""  # the codec this gate was trained onto (its latents are decoded by it)
    layer: str = INPUT_LAYER

    @property
    def slot(self) -> str:
        return encoder_slot(self.encoder, self.layer)

    @property
    def base(self) -> str:
        return make_system_id(self.slot, self.variant, self.lr, self.epoch, self.alignment, "x").rsplit("/", 1)[0]

    def system_id(self, postprocess: str) -> str:
        return make_system_id(self.slot, self.variant, self.lr, self.epoch, self.alignment, postprocess)


@dataclass
class DecodeUnit:
    """One decode (system or codec, branch, clip) and the post-processings derived from it."""

    system: System | None  # None: the codec reconstruction
    branch: str
    postprocesses: list[str]
    clip_id: str
    category: str
    clip_path: str
    codec: str = ""
    embedding_path: str | None = None
    latent_path: str | None = None
    checkpoint: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        base = self.system.base if self.system else f"{CODEC_SLOT}/{self.codec}"
        return f"{base}/{self.branch}/{self.clip_id}"

    def system_id(self, postprocess: str) -> str:
        return self.system.system_id(postprocess) if self.system else codec_system_id(self.codec)


def listening_clips(proto: Protocol) -> pd.DataFrame:
    clips = read_table(clips_table_path(proto), "clips")
    if "listening" not in clips.columns:
        raise DataError(
            "clips table lacks column listening",
            path=clips_table_path(proto),
            hint=f"rerun `sonieval data splits {proto.source or 'PROTOCOL'}`",
        )
    ok = clips[clips["status"].astype(str).isin(USABLE_STATUS) & clips["listening"].fillna(False).astype(bool)]
    return ok.sort_values("clip_id").reset_index(drop=True)


def planned_systems(proto: Protocol) -> list[System]:
    primary = proto.primary_codec.name
    return [
        System(r.encoder, r.gate_slot, float(r.lr), e, r.alignment, r.codec or primary, r.layer)
        for r in plan_runs(proto)
        for e in r.snapshot_epochs
    ]


def plan_units(proto: Protocol) -> list[DecodeUnit]:
    """Every decode the protocol asks for (all shards)."""
    clips = listening_clips(proto)
    prepared = read_prepared(proto)
    done = prepared[prepared["status"] == "done"]

    def where(value: str) -> str:
        return str(resolve_table_path(value, proto.results_path))

    emb_path = {(r.model, r.layer, r.clip_id): where(r.path) for r in done[done["kind"] == "embedding"].itertuples()}
    lat_path = {(r.model, r.clip_id): where(r.path) for r in done[done["kind"] == "latent"].itertuples()}
    branches = {
        PLAIN: [p for p in proto.sonify.postprocess if not needs_embedding_rescale(p)],
        RESCALED: [p for p in proto.sonify.postprocess if needs_embedding_rescale(p)],
    }
    units = []
    for system in planned_systems(proto):
        ck = checkpoint_path(proto, system.slot, system.variant, system.lr, system.epoch, system.alignment)
        for branch, posts in branches.items():
            if not posts:
                continue
            for c in clips.itertuples():
                units.append(
                    DecodeUnit(
                        system,
                        branch,
                        posts,
                        c.clip_id,
                        str(c.category),
                        str(c.path),
                        system.codec,
                        embedding_path=emb_path.get((system.encoder, system.layer, c.clip_id)),
                        checkpoint=str(ck),
                    )
                )
    if proto.sonify.codec_reconstruction:
        for spec in proto.codecs:
            for c in clips.itertuples():
                units.append(
                    DecodeUnit(
                        None,
                        CODEC,
                        ["codec"],
                        c.clip_id,
                        str(c.category),
                        str(c.path),
                        spec.name,
                        latent_path=lat_path.get((spec.name, c.clip_id)),
                    )
                )
    return units


def output_path(proto: Protocol, system_id: str, clip_id: str) -> Path:
    return proto.layout.sonification(system_id, clip_id)


class _GateCache:
    """Loads each system's gate once; remembers a system's loading error."""

    def __init__(self, device: str, codec_keys: dict[str, str]):
        self.device, self.codec_keys = device, codec_keys
        self._gates: dict[str, tuple[Any, dict[str, Any]] | SonievalError] = {}

    def get(self, unit: DecodeUnit) -> tuple[Any, dict[str, Any]]:
        if unit.checkpoint not in self._gates:
            try:
                self._gates[unit.checkpoint] = self._load(unit.checkpoint, self.codec_keys[unit.codec])
            except SonievalError as exc:
                self._gates[unit.checkpoint] = exc
        got = self._gates[unit.checkpoint]
        if isinstance(got, SonievalError):
            raise got
        return got

    def _load(self, path: str, codec_key: str):
        from sonieval.models.gates import build_gate

        ck = load_checkpoint(path, self.device)
        meta = ck["meta"]
        if meta["latent_model_key"] != codec_key:
            raise SonievalError(
                f"gate was trained on latents of {meta['latent_model_key']}, the protocol's codec is {codec_key}",
                path=path,
                hint="retrain with `sonieval train PROTOCOL` or use the codec it was trained for",
            )
        gate = build_gate(
            meta["variant"],
            embedding_shape=tuple(meta["embedding_shape"]),
            latent_shape=tuple(meta["latent_shape"]),
            alignment=meta["alignment"],
            time_axis=time_axis_from(meta.get("time_axis")),
            # a checkpoint from before codecs gave their frame centres was trained on the default
            latent_first_center_s=meta.get("latent_first_center_s"),
        )
        gate.load_state_dict(ck["state_dict"])
        gate.to(self.device).eval()
        return gate, meta


def _original(proto: Protocol, unit: DecodeUnit) -> np.ndarray:
    return load_clip(unit.clip_path, CODEC_RATE, proto.data.clip_seconds, proto.data.length_policy).samples


def _gate_latents(
    proto: Protocol,
    units: list[DecodeUnit],
    gates: _GateCache,
    originals: dict[str, np.ndarray],
    outcome: dict[str, Any],
    device: str,
):
    """Gate forward for units of one system; returns (units with finite latents, latents [B, C, T'])."""
    import torch

    gate, meta = gates.get(units[0])
    xs, ok = [], []
    for u in units:
        try:
            if not u.embedding_path:
                raise DataError(
                    f"no prepared embedding of clip {u.clip_id} for encoder {u.system.slot}",
                    hint="run `sonieval prepare PROTOCOL`",
                )
            if Path(u.embedding_path).parent.name != meta["embedding_model_key"]:
                raise SonievalError(
                    f"clip {u.clip_id}: the cached embedding comes from {Path(u.embedding_path).parent.name}, "
                    f"the gate was trained on {meta['embedding_model_key']}",
                    path=u.checkpoint,
                    hint="rerun `sonieval train PROTOCOL` after changing an encoder",
                )
            emb = load_array(u.embedding_path)
            if list(emb.shape) != list(meta["embedding_shape"]):
                raise DataError(
                    f"embedding of clip {u.clip_id} has shape {list(emb.shape)}, the gate expects "
                    f"{list(meta['embedding_shape'])}",
                    path=u.embedding_path,
                    hint="delete the cache entry and rerun `sonieval prepare PROTOCOL`",
                )
            if u.branch == RESCALED:
                emb = rescale_embedding(emb, originals[u.key])
            xs.append(emb)
            ok.append(u)
        except SonievalError as exc:
            outcome[u.key] = exc
    if not ok:
        return [], None
    with torch.inference_mode():
        latents = gate(torch.from_numpy(np.stack(xs)).to(device)).float()
        norm = meta.get("latent_normalization")
        if norm:  # undo the training-time min-max normalisation of the targets
            latents = latents * (norm["max"] - norm["min"] or 1.0) + norm["min"]
    finite = torch.isfinite(latents).flatten(1).all(dim=1).cpu().tolist()
    keep = []
    for i, (u, good) in enumerate(zip(ok, finite)):
        if good:
            keep.append(i)
        else:
            outcome[u.key] = SonievalError(
                f"gate produced NaN or infinite latent values for clip {u.clip_id}; not decoded",
                path=u.checkpoint,
                hint="the checkpoint diverged: retrain with a lower learning rate",
            )
    return [ok[i] for i in keep], latents[keep]


def _decode(codec: Any, latents, n_samples: int) -> np.ndarray:
    import torch

    with torch.inference_mode():
        audio = codec.decode(latents).float().cpu().numpy()
    audio = audio.reshape(audio.shape[0], -1)
    return np.stack([fit_length(a, n_samples)[0] for a in audio])


def _write_outputs(proto: Protocol, unit: DecodeUnit, value: Any, original: np.ndarray | None) -> ItemOutcome:
    if isinstance(value, BaseException):
        raise value
    outputs = []
    for post in unit.postprocesses:
        system_id = unit.system_id(post)
        audio = value if post == "codec" else apply_postprocess(post, value, original)
        path = write_wav(output_path(proto, system_id, unit.clip_id), audio, CODEC_RATE, subtype="FLOAT")
        outputs.append({"system_id": system_id, "postprocess": post, "path": str(path), "sha256": sha256_file(path)})
    return ItemOutcome(path=outputs[0]["path"], sha256=outputs[0]["sha256"], extra={"outputs": outputs})


def _outputs_exist(ledger: RunLedger, unit: DecodeUnit) -> bool:
    if not ledger.is_done(STAGE, unit.key, unit.inputs):
        return False
    outs = (ledger.get(STAGE, unit.key) or {}).get("extra", {}).get("outputs", [])
    return len(outs) == len(unit.postprocesses) and all(Path(o["path"]).exists() for o in outs)


@dataclass
class SonifyResult:
    batch: BatchResult
    table: pd.DataFrame
    shard: tuple[int, int] | None
    n_units: int

    def summary(self) -> str:
        where = f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else ""
        return f"{self.batch.summary('decodes')}{where}; table: {len(self.table)} rows"


def run_sonify(
    proto: Protocol,
    ledger: RunLedger,
    shard: tuple[int, int] | None = None,
    *,
    device: str = "auto",
    progress: bool = True,
    engine: Any = None,
    write_table: bool = True,
) -> SonifyResult:
    """Sonify every (system, listening clip) of this shard as tasks on ``engine`` (default: local), one per decode
    batch; then rebuild the sonifications table (``write_table=False`` with a shard: it has its own ledger)."""
    from sonieval.data.results_folder import require_tables

    require_tables(proto.results_path, ["clips", "prepared"], proto.source)  # the first missing one, named
    device_option, device = device, resolve_device(device)
    if shard is None:  # the run's ledger takes what --shard runs recorded in their own (sonieval.pipeline.ledgers)
        from sonieval.pipeline.ledgers import merge_shard_ledgers

        merge_shard_ledgers(ledger, proto.results_path, STAGE)
    codecs = {spec.name: load_prepared_codec(proto, spec.name, device=device) for spec in proto.codecs}
    codec_keys = {name: codec_model_key(proto, c) for name, c in codecs.items()}
    all_units = plan_units(proto)
    units = [u for u in all_units if in_shard(u.key, shard)]
    _set_inputs(proto, units, codec_keys)
    total = BatchResult()
    pending = []
    for u in units:
        (total.skipped.append(u.key) if _outputs_exist(ledger, u) else pending.append(u))
    engine = engine or LocalEngine()
    if engine.name == "local":  # the tasks run here: they reuse the codecs just loaded
        for name, codec in codecs.items():
            worker_memo(("codec", str(proto.results_path), name, device), lambda codec=codec: codec)
    proto_ref, resources = engine.put(proto), engine.device_resources()
    tasks = [
        Task(
            f"sonify {group[0].key} +{len(group) - 1}",
            sonify_group,
            [LedgerItem(u.key, u.inputs, system_id=u.system_id(u.postprocesses[0]), payload=u) for u in group],
            (proto_ref, device_option),
            resources,
        )
        for group in _groups(pending, proto.sonify.batch_size)
    ]  # one task per decode batch (one gate)
    res = run_tasks(ledger, STAGE, tasks, engine, desc="sonify", progress=progress, skip_done=False)
    total.done += res.done
    total.failed.update(res.failed)
    if shard is not None and not write_table:  # a shard's own ledger: the merge (an unsharded sonify) writes it
        return SonifyResult(total, pd.DataFrame(columns=SONIFICATIONS_COLUMNS), shard, len(units))
    table = write_sonifications_table(proto, ledger, all_units, codecs, codec_keys)
    return SonifyResult(total, table, shard, len(units))


def sonify_group(items: list[LedgerItem], proto: Protocol, device: str = "auto") -> dict[str, Any]:
    """The task: decode one batch of units (one gate or the codec) and write their post-processed WAVs.

    Runs in a worker (engines): the codec is loaded once per worker process; nothing touches the ledger."""

    device = resolve_device(device)
    units: list[DecodeUnit] = [it.payload for it in items]
    name = units[0].codec
    codec = worker_memo(
        ("codec", str(proto.results_path), name, device), lambda: load_prepared_codec(proto, name, device=device)
    )
    gates = _GateCache(device, {name: codec_model_key(proto, codec)})
    outcome, originals = _decode_group(proto, units, codec, gates, device)
    return {u.key: attempt(_write_outputs, proto, u, outcome.get(u.key), originals.get(u.key)) for u in units}


def _set_inputs(proto: Protocol, units: list[DecodeUnit], codec_keys: dict[str, str]) -> None:
    """What a decode depends on (a change redoes it): embedding, latent, checkpoint content, codec."""
    ck_hash: dict[str, str | None] = {}
    for u in units:
        if u.checkpoint and u.checkpoint not in ck_hash:
            ck_hash[u.checkpoint] = sha256_file(u.checkpoint) if Path(u.checkpoint).exists() else None
        u.inputs = {
            "postprocesses": u.postprocesses,
            "embedding": u.embedding_path,
            "latent": u.latent_path,
            "checkpoint_sha256": ck_hash.get(u.checkpoint) if u.checkpoint else None,
            "codec_model_key": codec_keys[u.codec],
            "clip_seconds": proto.data.clip_seconds,
        }


def _decode_group(proto: Protocol, group: list[DecodeUnit], codec: Any, gates: _GateCache, device: str):
    """Latents for one group (cached latents for the ceiling, else the gate's), decoded in one batch.

    Returns ({unit key: audio or the exception that stopped it}, {unit key: original audio})."""
    outcome: dict[str, Any] = {}
    originals: dict[str, np.ndarray] = {}
    for u in group:
        try:
            originals[u.key] = _original(proto, u)
        except SonievalError as exc:
            outcome[u.key] = exc
    ready = [u for u in group if u.key in originals]
    try:
        if ready and ready[0].system is None:
            ready, latents = _cached_latents(ready, outcome, device)
        elif ready:
            try:
                ready, latents = _gate_latents(proto, ready, gates, originals, outcome, device)
            except SonievalError as exc:
                for u in ready:
                    outcome[u.key] = exc
                ready, latents = [], None
        if ready:
            audio = _decode(codec, latents, int(round(proto.data.clip_seconds * CODEC_RATE)))
            outcome.update({u.key: a for u, a in zip(ready, audio)})
    except Exception as exc:  # noqa: BLE001 - a failed batch fails its items, the run goes on
        for u in ready:
            outcome.setdefault(u.key, exc)
    return outcome, originals


def _cached_latents(units: list[DecodeUnit], outcome: dict[str, Any], device: str):
    """The codec ceiling's input: each clip's own prepared latent."""
    import torch

    keep = []
    for u in units:
        try:
            if not u.latent_path:
                raise DataError(
                    f"no prepared {u.codec} latent of clip {u.clip_id}", hint="run `sonieval prepare PROTOCOL`"
                )
            keep.append((u, load_array(u.latent_path)))
        except SonievalError as exc:
            outcome[u.key] = exc
    latents = torch.from_numpy(np.stack([a for _, a in keep])).to(device) if keep else None
    return [u for u, _ in keep], latents


def _groups(units: list[DecodeUnit], batch_size: int) -> Iterator[list[DecodeUnit]]:
    """Batches of at most ``batch_size`` decodes sharing one gate (or the codec) and branch."""
    by: dict[tuple, list[DecodeUnit]] = {}
    for u in units:
        by.setdefault((u.codec, u.checkpoint, u.branch), []).append(u)
    for group in by.values():
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


@contextlib.contextmanager
def _table_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_sonifications_table(
    proto: Protocol, ledger: RunLedger, units: list[DecodeUnit], codecs: dict[str, Any], codec_keys: dict[str, str]
) -> pd.DataFrame:
    """Rebuild ``tables/sonifications.parquet`` from the ledger (all shards' rows)."""
    path = proto.layout.table("sonifications")
    with _table_lock(path.with_name(".sonifications.lock")):
        rows = []
        for u in units:
            state = ledger.get(STAGE, u.key)
            if state is None or state["status"] == "running":
                continue  # not made yet (another shard, or a run in flight)
            outs = {o["postprocess"]: o for o in state["extra"].get("outputs", [])} if state["status"] == "done" else {}
            for post in u.postprocesses:
                rows.append(_table_row(proto, u, post, outs.get(post), state, codecs[u.codec], codec_keys[u.codec]))
        table = pd.DataFrame(rows, columns=SONIFICATIONS_COLUMNS + EXTRA_COLUMNS)
        table["lr"] = table["lr"].astype(float)
        table["epoch"] = table["epoch"].astype("int64")
        write_table(table, path, "sonifications")
    return table


def _table_row(
    proto: Protocol, u: DecodeUnit, post: str, out: dict | None, state: dict, codec: Any, codec_key: str
) -> dict[str, Any]:
    system_id = u.system_id(post)
    parts = system_parts(system_id)
    emb_key = Path(u.embedding_path).parent.name if u.embedding_path else None
    encoder_random = is_random_model_key(emb_key)
    return {
        "system_id": system_id,
        "encoder": parts["encoder"],
        "variant": parts["variant"],
        "lr": parts["lr"],
        "epoch": parts["epoch"],
        "alignment": parts["alignment"],
        "postprocess": post,
        "clip_id": u.clip_id,
        "category": u.category,
        "layer": parts["layer"],
        "path": table_path_value(out["path"], proto.results_path) if out else None,
        "sha256": out["sha256"] if out else None,
        "status": "done" if out else "failed",
        "error": None if out else (state.get("error") or "output missing"),
        "control": parts["control"],
        "seed": parts["seed"],
        "codec": u.codec,
        "codec_label": codec.label,
        "branch": u.branch,
        "checkpoint": u.checkpoint,
        "embedding_model_key": emb_key,
        "codec_model_key": codec_key,
        "encoder_random_init": encoder_random,
        "codec_random_init": bool(codec.random_init),
        "random_init": encoder_random or bool(codec.random_init),
        "sample_rate": CODEC_RATE,
        "seconds": proto.data.clip_seconds,
    }
