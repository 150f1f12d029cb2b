"""Which layer of an encoder is sonified: layer specs, their expansion, cache keys, one-pass capture.

A *layer* is ``"input"`` (the encoder's own cut before its transformer: AST's patch embeddings,
HuBERT's pre-encoder features, ...; what each encoder's ``input`` is, is documented on its class in
:mod:`sonieval.models.encoders`) or a block number ``k`` (1-based): the output of transformer block
``k``, i.e. the residual stream after that block, before any final layer norm of the model. In
transformers >= 5 that is ``hidden_states[k]`` for AST, HuBERT, wav2vec 2.0, WavLM and Whisper, except
Whisper's last block, whose ``hidden_states[-1]`` transformers ties to the final-layer-normed
``last_hidden_state`` (CLAP's ``hidden_states`` hold only its four Swin stage outputs; see
:mod:`sonieval.models.window_encoders`).
(Block ``0`` does not exist: transformers' ``hidden_states[0]`` is *not* ``input`` -- for HuBERT it
adds the positional convolution and a layer norm; for AST the cls/distillation tokens and position
embeddings -- so it is not offered, to keep one meaning per name.)

A protocol writes ``encoders[i].layer`` as ``input`` (the default), an integer, a list of those, or
``all`` (``input`` and every block). :func:`expand_layers` turns that into the sorted list of layers
for one encoder and refuses what the encoder does not have, in one line.

:func:`capture_layers` runs a model *once* and keeps the outputs of the modules asked for, stopping
the forward right after the deepest one (what baukit's ``Trace(stop=True)`` does): a sweep over all
layers costs one forward pass, and a single shallow layer costs only the blocks up to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any

from sonieval.errors import SonievalError

INPUT = "input"
ALL = "all"
Layer = str | int  # INPUT or a block number >= 1
LayerSpec = str | int | Sequence[str | int]  # what a protocol may write


class LayerError(SonievalError):
    """A layer an encoder does not have, or a layer value of the wrong form."""


def allowed_layers(n_blocks: int) -> str:
    """``input, 1..12, all`` (for messages)."""
    if n_blocks < 1:
        return "allowed: input"
    blocks = "1" if n_blocks == 1 else f"1..{n_blocks}"
    return f"allowed: input, {blocks}, all"


def expand_layers(
    value: LayerSpec | None, n_blocks: int, *, label: str = "the encoder", setting: str = "encoders[i].layer"
) -> list[Layer]:
    """The layers a spec value names, for an encoder with ``n_blocks`` transformer blocks.

    ``None`` and ``"input"`` give ``["input"]``; ``"all"`` gives ``["input", 1, ..., n_blocks]``;
    an integer or a list gives those layers. The result is sorted (``input`` first, then by depth).
    Anything else is one :class:`LayerError` line naming ``setting`` and what is allowed.
    """
    allowed = allowed_layers(n_blocks)
    if value is None:
        value = INPUT
    if isinstance(value, str) and value == ALL:
        return [INPUT, *range(1, n_blocks + 1)]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise LayerError(f"{setting}: an empty list names no layer; {allowed}")
    seen: list[Layer] = []
    for item in items:
        layer = _one_layer(item, n_blocks, label=label, setting=setting, allowed=allowed)
        if layer in seen:
            raise LayerError(f"{setting}: layer {item!r} is listed twice")
        seen.append(layer)
    return sorted(seen, key=layer_depth)


def _one_layer(item: Any, n_blocks: int, *, label: str, setting: str, allowed: str) -> Layer:
    if isinstance(item, str) and item == INPUT:
        return INPUT
    if isinstance(item, str) and item == ALL:
        raise LayerError(f"{setting}: 'all' stands alone, not inside a list; {allowed}")
    if isinstance(item, bool) or not isinstance(item, int):
        raise LayerError(f"{setting}: {item!r} is not a layer; {allowed}")
    if item < 1:
        raise LayerError(
            f"{setting}: {item} is not a block (blocks count from 1; the cut before the first "
            f"block is 'input'); {allowed}"
        )
    if item > n_blocks:
        blocks = "no blocks" if n_blocks == 0 else f"{n_blocks} block{'s' if n_blocks != 1 else ''}"
        raise LayerError(f"{setting}: {item} is beyond {label}'s {blocks}; {allowed}")
    return int(item)


def layer_depth(layer: Layer) -> int:
    """0 for ``input``, k for block k (the sort key of layers)."""
    return 0 if layer == INPUT else int(layer)


def layer_label(layer: Layer) -> str:
    """The name a layer goes by in keys, ids and tables: ``input`` or ``layer<k>``."""
    return INPUT if layer == INPUT else f"layer{int(layer)}"


_LABEL = re.compile(r"^(input|layer([1-9][0-9]*))$")


def parse_layer_label(label: str) -> Layer:
    """The inverse of :func:`layer_label`."""
    m = _LABEL.match(str(label))
    if not m:
        raise LayerError(f"{label!r} is not a layer label (input or layer<k>, k >= 1)")
    return INPUT if m.group(2) is None else int(m.group(2))


# --------------------------------------------------------------------------- cache keys

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def layer_model_key(model_key: str, layer: Layer) -> str:
    """The cache folder of one layer's embeddings: ``model_key`` for ``input`` (so caches written
    before layers existed stay valid: the input cut did not change), ``model_key@layer<k>`` else.

    ``model_key`` names the model (encoder, weights, random-init mark, clip length; made by the
    prepare stage). A change in what a layer *means* must change this function's output.
    """
    if not model_key or "/" in model_key or "@" in model_key:
        raise LayerError(f"model key {model_key!r} must be a non-empty folder name without '/' or '@'")
    label = layer_label(layer)
    return model_key if label == INPUT else f"{model_key}@{label}"


def layer_cache_path(model_key: str, layer: Layer, content_sha256: str) -> PurePosixPath:
    """Relative path of one cached embedding, keyed by (model, layer, clip content):
    ``<layer_model_key>/<sha256 of the audio file>.npy``."""
    if not _SHA256.match(str(content_sha256)):
        raise LayerError(f"content hash {content_sha256!r} is not a lowercase hex SHA-256")
    return PurePosixPath(layer_model_key(model_key, layer)) / f"{content_sha256}.npy"


# --------------------------------------------------------------------------- one forward pass


class _Enough(Exception):
    """Raised from a hook once the deepest asked-for output is captured (ends the forward early)."""


def _first(output: Any):
    return output[0] if isinstance(output, (tuple, list)) else output


def capture_layers(
    run: Callable[[], Any], wanted: Iterable[Layer], *, input_module, input_from: Callable[[Any], Any], blocks: Sequence
) -> dict[Layer, Any]:
    """Call ``run()`` (one forward of the model) and return the outputs of the wanted layers.

    ``input_module``'s output (through ``input_from``) is ``input``; ``blocks[k-1]``'s output (its
    first element when it returns a tuple) is block ``k``. Forward hooks record them; the forward
    stops right after the deepest wanted layer, so later blocks never run.
    """
    wanted = sorted(set(wanted), key=layer_depth)
    deepest = layer_depth(wanted[-1])
    got: dict[Layer, Any] = {}

    def keep(layer: Layer, value) -> None:
        got[layer] = value
        if layer_depth(layer) == deepest:
            raise _Enough

    handles = []
    try:
        if INPUT in wanted:
            handles.append(input_module.register_forward_hook(lambda m, a, out: keep(INPUT, input_from(out))))
        for layer in wanted:
            if layer != INPUT:
                handles.append(
                    blocks[layer - 1].register_forward_hook(lambda m, a, out, layer=layer: keep(layer, _first(out)))
                )
        try:
            run()
        except _Enough:
            pass
    finally:
        for h in handles:
            h.remove()
    missing = [w for w in wanted if w not in got]
    if missing:  # a model whose forward skips a hooked module: a bug here, not bad input
        raise LayerError(f"the forward pass did not reach layer(s) {', '.join(map(layer_label, missing))}")
    return got
