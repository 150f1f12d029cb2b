"""The documented tables through which stages talk (docs/architecture.md#tables-are-the-interfaces).

Each stage writes its table with :func:`write_table` and the next stage reads it with
:func:`read_table`, which checks the contract columns and names the file and the missing
column in one line. Extra columns are welcome; these names are the contract.

A *system* is one (encoder, layer, gate variant, learning rate, epoch, alignment, post-processing)
tuple, named everywhere by its readable ``system_id``, e.g.
``hubert/LIN-C/lr0.005/e50/transpose/minmax``.

The encoder slot (first part) names the encoder and the layer sonified (:class:`EncoderSlot`):
``ENCODER[.twin][.layer<k>]``, e.g. ``hubert`` (the ``input`` cut before the transformer: written as the
bare name, so ids made before layers existed keep their meaning), ``hubert.layer6`` (the output of
transformer block 6; see :mod:`sonieval.models.layers`) or ``crepe-tiny.twin.layer3`` (block 3 of the
*random twin* of ``crepe-tiny``: the same architecture with re-initialised weights, a control whose
``control`` column is ``twin``; protocol ``encoders[i].twin: true``). A twin's systems are in the family of
its pretrained encoder's systems (:attr:`SystemKey.family`): trained-pretrained is compared with the twin.

The gate slot (second part) names the gate, and may say more about it (:class:`GateSlot`):
``VARIANT[.CONTROL][.sSEED][@CODEC]``, e.g. ``LIN`` (a trained gate), ``LIN.shuffled`` (the control
trained on mismatched pairs), ``LIN.untrained`` (the control at its initialisation, always
``lr0.0/e0``), ``LIN.s43`` (replicate seed 43, when a protocol lists ``training.seeds``) and
``LIN@dac-vae`` (a gate onto a protocol's second codec; the first codec is implied). The codec's
own reconstruction is the system ``codec/<codec>/lr0.0/e0/none/codec`` (the ceiling).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sonieval.errors import DataError
from sonieval.files import atomic_path

SONIFICATIONS_COLUMNS = [
    "system_id",
    "encoder",
    "variant",
    "lr",
    "epoch",
    "alignment",
    "postprocess",
    "clip_id",
    "category",
    "path",
    "sha256",
    "status",
    "error",
]
SCORES_COLUMNS = [
    "system_id",
    "metric",
    "embedding",
    "reference_set",
    "n_reference",
    "n_evaluated",
    "value",
    "ci_low",
    "ci_high",
    "bandwidth",
    "scale",
    "versions",
]
ITEM_SCORES_COLUMNS = ["system_id", "clip_id", "metric", "embedding", "value"]
RATINGS_COLUMNS = [
    "study_id",
    "rater_id",
    "trial_id",
    "clip_id",
    "system_id",
    "role",
    "attribute",
    "mark",
    "submitted_at",
    "position",
    "seed",
    "mode",
]
CLIPS_COLUMNS = ["clip_id", "filename", "fold", "target", "category", "path", "split", "status", "error"]

TABLE_COLUMNS: dict[str, list[str]] = {
    "sonifications": SONIFICATIONS_COLUMNS,
    "scores": SCORES_COLUMNS,
    "item_scores": ITEM_SCORES_COLUMNS,
    "ratings": RATINGS_COLUMNS,
    "clips": CLIPS_COLUMNS,
}

RATING_ROLES = ("sonification", "reference", "anchor", "attention")

# The ``control`` column: what kind of system a row is. Trained gates are "none"; the two learning
# controls (gate controls, in the gate slot) and the random twin of a pretrained encoder (an encoder
# control, in the encoder slot) go through every stage like any system; the codec reconstruction is the ceiling.
NO_CONTROL = "none"
GATE_CONTROLS = ("untrained", "shuffled")
TWIN = "twin"
CONTROLS = (*GATE_CONTROLS, TWIN)
CEILING = "ceiling"
CONTROL_VALUES = (NO_CONTROL, *CONTROLS, CEILING)
CODEC_SLOT = "codec"  # the encoder slot of the codec-reconstruction ceiling's system_id

# Paths inside tables are absolute, or relative to the results folder (the folder that holds
# tables/), never relative to the current directory: a results folder can be moved or shared.


def table_path_value(path: str | os.PathLike, results_dir: str | os.PathLike) -> str:
    """The text to store for ``path``: relative to ``results_dir`` when inside it, else absolute."""
    p = Path(path).resolve()
    root = Path(results_dir).resolve()
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def resolve_table_path(value: str | os.PathLike, results_dir: str | os.PathLike) -> Path:
    """The file a table's path value names (see :func:`table_path_value`)."""
    p = Path(value)
    return p if p.is_absolute() else Path(results_dir) / p


INPUT_LAYER = "input"  # the layer label of the cut before the transformer (sonieval.models.layers.INPUT)
# The layer labels of sonieval.models.layers.layer_label (this module sits below models, so it keeps
# its own copy of the two-line grammar; a test checks they agree).
_LAYER_LABEL = re.compile(r"^(input|layer[1-9][0-9]*)$")


@dataclass(frozen=True)
class EncoderSlot:
    """The encoder slot of a system_id: ``ENCODER[.twin][.layer<k>]`` (see the module docstring)."""

    name: str
    layer: str = INPUT_LAYER  # "input" or "layer<k>"
    twin: bool = False  # the random twin of encoder ``name`` (control "twin")

    def __post_init__(self) -> None:
        if not self.name or "." in self.name or "/" in self.name:
            raise DataError(f"encoder slot: {self.name!r} is not an encoder name (no '.' or '/')")
        if not _LAYER_LABEL.match(str(self.layer)):
            raise DataError(
                f"encoder slot {self.name}.{self.layer}: unknown layer {self.layer!r} "
                "(expected ENCODER[.twin] for the input cut or ENCODER[.twin].layer<k>, k >= 1)"
            )

    @property
    def encoder(self) -> str:
        """The encoder's name as the pipeline knows it: ``name``, or ``name.twin`` for the twin."""
        return f"{self.name}.{TWIN}" if self.twin else self.name

    @property
    def text(self) -> str:
        return self.encoder if self.layer == INPUT_LAYER else f"{self.encoder}.{self.layer}"

    @property
    def pretrained(self) -> EncoderSlot:
        """The slot of the pretrained encoder a twin is the control of (itself when it is no twin)."""
        return EncoderSlot(self.name, self.layer)

    @property
    def depth(self) -> int:
        """0 for ``input``, k for ``layer<k>`` (the sort key of layers)."""
        return 0 if self.layer == INPUT_LAYER else int(self.layer[len("layer") :])


def parse_encoder_slot(text: str) -> EncoderSlot:
    """``hubert.layer6`` → EncoderSlot("hubert", "layer6"); ``hubert`` → EncoderSlot("hubert", "input");
    ``crepe-tiny.twin.layer3`` → EncoderSlot("crepe-tiny", "layer3", twin=True)."""
    name, *parts = str(text).split(".")
    twin = bool(parts) and parts[0] == TWIN
    parts = parts[1:] if twin else parts
    if not parts:
        return EncoderSlot(name, twin=twin)
    if len(parts) > 1:
        raise DataError(
            f"encoder slot {text!r}: unknown layer {'.'.join(parts)!r} (expected ENCODER[.twin][.layer<k>])"
        )
    if parts[0] == INPUT_LAYER:  # one name per system: the input cut is the bare encoder name
        bare = EncoderSlot(name, twin=twin).text
        raise DataError(f"encoder slot {text!r}: write the input layer as the bare encoder name {bare!r}")
    return EncoderSlot(name, parts[0], twin)


def encoder_slot(encoder: str, layer: str | None = None) -> str:
    """The encoder slot text of ``encoder`` (a name, or ``name.twin``) at layer label ``layer`` (None or
    ``input``: the bare name)."""
    base = parse_encoder_slot(encoder)
    if base.layer != INPUT_LAYER:
        raise DataError(f"encoder {encoder!r}: expected an encoder name (ENCODER or ENCODER.twin), not a slot")
    return EncoderSlot(base.name, layer or INPUT_LAYER, base.twin).text


@dataclass(frozen=True)
class GateSlot:
    """The gate slot of a system_id: ``VARIANT[.CONTROL][.sSEED][@CODEC]`` (see the module docstring)."""

    variant: str
    control: str = NO_CONTROL
    seed: int | None = None
    codec: str | None = None  # None: the protocol's first (primary) codec

    def __post_init__(self) -> None:
        if self.control not in (NO_CONTROL, *GATE_CONTROLS):
            raise DataError(f"unknown gate control {self.control!r}; allowed: {', '.join(GATE_CONTROLS)}")

    @property
    def text(self) -> str:
        out = self.variant
        if self.control != NO_CONTROL:
            out += f".{self.control}"
        if self.seed is not None:
            out += f".s{int(self.seed)}"
        if self.codec:
            out += f"@{self.codec}"
        return out


def parse_gate_slot(text: str) -> GateSlot:
    """``LIN.shuffled.s43@dac-vae`` → GateSlot("LIN", "shuffled", 43, "dac-vae")."""
    body, _, codec = str(text).partition("@")
    variant, *extras = body.split(".")
    control, seed = NO_CONTROL, None
    for part in extras:
        if part in GATE_CONTROLS:
            control = part
        elif part.startswith("s") and part[1:].isdigit():
            seed = int(part[1:])
        else:
            raise DataError(
                f"gate slot {text!r}: unknown part {part!r} (expected VARIANT[.untrained|.shuffled][.s<seed>][@codec])"
            )
    return GateSlot(variant, control, seed, codec or None)


@dataclass(frozen=True)
class SystemKey:
    """The parts of a ``system_id``."""

    encoder: str
    variant: str  # the whole gate slot, e.g. "LIN.shuffled.s43"
    lr: float
    epoch: int
    alignment: str
    postprocess: str

    @property
    def system_id(self) -> str:
        return make_system_id(self.encoder, self.variant, self.lr, self.epoch, self.alignment, self.postprocess)

    @property
    def gate(self) -> GateSlot:
        return parse_gate_slot(self.variant) if self.encoder != CODEC_SLOT else GateSlot(self.variant)

    @property
    def control(self) -> str:
        """``ceiling`` (the codec), ``twin`` (a twin encoder's gate), else the gate slot's control."""
        if self.encoder == CODEC_SLOT:
            return CEILING
        return TWIN if self.slot.twin else self.gate.control

    @property
    def slot(self) -> EncoderSlot:
        """The encoder slot: encoder name and layer (the codec ceiling's is ``codec``, layer input)."""
        return parse_encoder_slot(self.encoder)

    @property
    def family(self) -> tuple:
        """What a system and its controls share: (encoder slot, variant, alignment, seed, codec, postprocess);
        a twin's encoder slot counts as its pretrained encoder's (the twin is that encoder's control)."""
        g = self.gate
        slot = self.encoder if self.encoder == CODEC_SLOT else self.slot.pretrained.text
        return (slot, g.variant, self.alignment, g.seed, g.codec, self.postprocess)


def system_parts(system_id: str) -> dict:
    """A system_id's parts as table columns (``variant`` is the bare gate variant, without its slot extras;
    ``encoder`` the bare encoder name and ``layer`` its layer label; the codec ceiling has no layer: None)."""
    k = parse_system_id(system_id)
    g = k.gate
    ceiling = k.encoder == CODEC_SLOT
    codec = k.variant if ceiling else g.codec
    return {
        "encoder": k.slot.name,
        "layer": None if ceiling else k.slot.layer,
        "variant": g.variant,
        "control": k.control,
        "seed": g.seed,
        "codec": codec,
        "lr": k.lr,
        "epoch": k.epoch,
        "alignment": k.alignment,
        "postprocess": k.postprocess,
    }


def control_of(system_id: str) -> str:
    """The ``control`` column of a system: ``none``, ``untrained``, ``shuffled`` or ``ceiling``; a system
    named freely (folder studies and folder scores: ``--system NAME=DIR``) is ``none``."""
    try:
        return system_parts(str(system_id))["control"]
    except DataError:
        return NO_CONTROL


def format_lr(lr: float) -> str:
    """``0.005 -> '0.005'``, ``1e-05 -> '1e-05'``: the shortest exact text of the float."""
    return repr(float(lr))


def make_system_id(encoder: str, variant: str, lr: float, epoch: int, alignment: str, postprocess: str) -> str:
    return f"{encoder}/{variant}/lr{format_lr(lr)}/e{int(epoch)}/{alignment}/{postprocess}"


def parse_system_id(system_id: str) -> SystemKey:
    parts = system_id.split("/")
    if len(parts) != 6 or not parts[2].startswith("lr") or not parts[3].startswith("e"):
        raise DataError(
            f"system_id {system_id!r} is not of the form encoder/variant/lr<float>/e<int>/alignment/postprocess"
        )
    try:
        key = SystemKey(parts[0], parts[1], float(parts[2][2:]), int(parts[3][1:]), parts[4], parts[5])
    except ValueError as exc:
        raise DataError(f"system_id {system_id!r}: {exc}") from None
    try:
        slot = key.slot  # the encoder slot must parse: ENCODER[.twin][.layer<k>]
        gate = key.gate
    except DataError as exc:
        raise DataError(f"system_id {system_id!r}: {exc}") from None
    if slot.twin and gate.control != NO_CONTROL:  # the twin is itself a control: its gates are trained ones
        raise DataError(f"system_id {system_id!r}: a twin's gate has no control of its own ({gate.control!r})")
    return key


def control_ids(system_id: str, primary_codec: str | None = None) -> dict[str, str] | None:
    """The system_ids of a trained system's controls and ceiling; None when it is itself a control or not a gate.

    On the tables' floor because the leaderboard's learning table, the explanation profile and the listening
    gallery all put a system beside the same controls."""
    try:
        key = parse_system_id(system_id)
        gate = key.gate
    except DataError:
        return None
    if key.encoder == CODEC_SLOT or key.control != NO_CONTROL:
        return None
    shuffled = GateSlot(gate.variant, "shuffled", gate.seed, gate.codec).text
    untrained = GateSlot(gate.variant, "untrained", gate.seed, gate.codec).text
    codec = gate.codec or primary_codec
    twin = EncoderSlot(key.slot.name, key.slot.layer, twin=True).text  # the same gate on the random twin
    out = {
        "shuffled": make_system_id(key.encoder, shuffled, key.lr, key.epoch, key.alignment, key.postprocess),
        "untrained": make_system_id(key.encoder, untrained, 0.0, 0, key.alignment, key.postprocess),
        TWIN: make_system_id(twin, key.variant, key.lr, key.epoch, key.alignment, key.postprocess),
    }
    if codec:
        out[CEILING] = make_system_id(CODEC_SLOT, codec, 0.0, 0, "none", "codec")
    return out


# Marks of systems made with randomly initialised models, as every page shows them (the leaderboard, the
# report's figures, the gallery): the audio of a random codec shows only that the pipeline runs.
RANDOM_CODEC_MARK, RANDOM_ENCODER_MARK = "†", "‡"


def _flag(row, column: str) -> bool:
    value = row.get(column) if hasattr(row, "get") else None
    return bool(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else False


def random_mark(row) -> str:
    """† (random codec: the audio shows only that the pipeline runs) or ‡ (random encoder only) or ''."""
    has_detail = "system_codec_random_init" in row and pd.notna(row.get("system_codec_random_init"))
    if has_detail:
        if _flag(row, "system_codec_random_init"):
            return RANDOM_CODEC_MARK
        return RANDOM_ENCODER_MARK if _flag(row, "system_encoder_random_init") else ""
    return RANDOM_CODEC_MARK if _flag(row, "system_random_init") else ""


def read_table(path: str | os.PathLike, kind: str, required: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet/CSV table and check it has the contract columns of ``kind`` (or ``required``)."""
    path = Path(path)
    if not path.exists():
        raise DataError("table not found", path=path, hint=f"expected a {kind} table (.parquet or .csv)")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix in (".csv", ".tsv"):
            df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        else:
            raise DataError(f"unknown table format {path.suffix!r}", path=path, hint="use .parquet or .csv")
    except DataError:
        raise
    except Exception as exc:  # pyarrow/pandas parse errors
        raise DataError(f"cannot read table: {type(exc).__name__}: {exc}", path=path) from None
    check_columns(df, kind, path, required)
    return df


def check_columns(
    df: pd.DataFrame, kind: str, path: str | os.PathLike | None = None, required: list[str] | None = None
) -> None:
    required = TABLE_COLUMNS[kind] if required is None else required
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{kind} table lacks column(s) {', '.join(missing)}",
            path=path,
            hint=f"required: {', '.join(required)}",
        )


def write_table(df: pd.DataFrame, path: str | os.PathLike, kind: str | None = None) -> Path:
    """Write a table atomically as Parquet or CSV (by the file extension)."""
    path = Path(path)
    if kind is not None:
        check_columns(df, kind, path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise DataError(f"unknown table format {path.suffix!r}", path=path, hint="use .parquet or .csv")
    return path
