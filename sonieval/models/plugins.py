"""Your own encoder, without editing sonieval: a plug-in the protocol names by ``module:function``.

::

    encoders:
      - name: plugin
        callable: "mypkg.encoders:make_encoder"   # importable where sonieval runs (installed or on PYTHONPATH)
        options: {n_bands: 32}                     # keyword arguments the function is called with
        id: bands                                  # its name in system ids (default: the function's name)
        layer: all

The function returns the encoder: any object (or a dict) with

- ``sample_rate``: the rate, in Hz, of the audio it takes (sonieval resamples each clip to it);
- ``embed(audio)``: one clip (a float32 NumPy array ``[n]`` at ``sample_rate``) → one ``[T, D]`` array
  (frames × features: the layer ``input``) or a dict of them, ``{"input": ..., 1: ..., ..., N: ...}``
  (the layer names of the built-in encoders: ``input`` and blocks 1..N; ``"layer<k>"`` keys work too);
- its frame times: ``frame_rate`` (frames per second; frame k is centred at ``first_center_s + k /
  frame_rate``, ``first_center_s`` optional, default 0), or ``time_axis(n_samples)`` returning a
  :class:`sonieval.models.gates.TimeAxis` (for a frequency × time token grid, frequency-major);
- optionally ``name`` (for messages).

It is checked as a built-in encoder is, each problem one line naming ``encoders[i].callable``: the module
must import, the function exist and return those attributes, and ``embed`` give finite 2-D arrays with
the same layers for every clip, the same shape for clips of the same length, and frame times that fit
the clip. Loading runs ``embed`` once on a 1 s probe (seeded low-level noise); the shapes for another
clip length come from a probe of that length. docs/extending.md has a complete example.

A plug-in's weights are its own business: sonieval cannot re-initialise them, so it has no random twin
(``twin``/``weights: random`` are refused by the protocol); its cache key is the callable and its options.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sonieval.models.encoders import Encoder, EncoderError, register_encoder
from sonieval.models.gates import TimeAxis
from sonieval.models.layers import INPUT, Layer, layer_label

__all__ = ["PluginEncoder", "load_callable"]

PROBE_SECONDS = 1.0
_LAYER_KEY = re.compile(r"^layer([1-9][0-9]*)$")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def load_callable(target: str, *, setting: str) -> Callable[..., Any]:
    """Import ``module:function`` (one :class:`EncoderError` line naming ``setting`` when it cannot)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise EncoderError(f"{setting}: {target!r} is not module:function (e.g. mypkg.encoders:make_encoder)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any error while importing user code is the user's line to read
        raise EncoderError(
            f"{setting}: cannot import module {module_name!r} ({_first_line(exc)})",
            hint="install the package that holds it, or put its folder on PYTHONPATH",
        ) from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        what = "has no" if fn is None else "has a non-callable"
        raise EncoderError(f"{setting}: module {module_name!r} {what} {attr!r}")
    return fn


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


@register_encoder("plugin")
class PluginEncoder(Encoder):
    """An encoder of your own behind the Encoder interface (module docstring)."""

    def __init__(self, impl: Any, target: str, options: dict[str, Any], *, setting: str, device="cpu"):
        super().__init__(target, False, device)
        self.setting = setting
        self.options = dict(options)
        self._embed_fn = _get(impl, "embed")
        self._frame_rate = _get(impl, "frame_rate")
        self._first_center = _get(impl, "first_center_s") or 0.0
        self._time_axis_fn = _get(impl, "time_axis")
        self.display_name = str(_get(impl, "name") or target)
        self.sample_rate = self._checked_rate(_get(impl, "sample_rate"))
        self._check_interface()
        self._probes: dict[int, dict[Layer, np.ndarray]] = {}
        self._depth = max((k for k in self._probe(round(PROBE_SECONDS * self.sample_rate)) if k != INPUT), default=0)

    @classmethod
    def load(cls, spec, device: str = "cpu", *, prefix: str = "encoders[i]") -> PluginEncoder:
        setting = f"{prefix}.callable"
        factory = load_callable(spec.callable, setting=setting)
        try:
            impl = factory(**spec.options)
        except Exception as exc:  # noqa: BLE001 - user code: its error, one line
            raise EncoderError(f"{setting}: {spec.callable}(**options) raised {_first_line(exc)}") from None
        if impl is None:
            raise EncoderError(f"{setting}: {spec.callable} returned None; it must return the encoder (see its docs)")
        enc = cls(impl, spec.callable, spec.options, setting=setting, device=device)
        enc.prefix = prefix
        enc.set_layers(spec.layer)
        enc._axis(round(PROBE_SECONDS * enc.sample_rate), INPUT)  # the frame times, checked on the probe
        return enc

    # ------------------------------------------------------------------ the interface, checked
    def _checked_rate(self, rate: Any) -> int:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0 or rate != int(rate):
            raise EncoderError(
                f"{self.setting}: the encoder's sample_rate must be a whole number of Hz, got {rate!r}",
                hint="docs/extending.md, 'Adding an encoder'",
            )
        return int(rate)

    def _check_interface(self) -> None:
        if not callable(self._embed_fn):
            raise EncoderError(
                f"{self.setting}: the encoder has no embed(audio) method", hint="docs/extending.md, 'Adding an encoder'"
            )
        if self._time_axis_fn is None and self._frame_rate is None:
            raise EncoderError(
                f"{self.setting}: the encoder says no frame times: give it frame_rate (Hz) or time_axis(n_samples)",
                hint="docs/extending.md, 'Adding an encoder'",
            )
        if self._time_axis_fn is None:
            rate = self._frame_rate
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
                raise EncoderError(
                    f"{self.setting}: frame_rate must be a number of frames per second > 0, got {rate!r}"
                )

    @property
    def num_blocks(self) -> int:
        return self._depth

    @property
    def cache_ident(self) -> str:
        return f"{self.model_id}|{json.dumps(self.options, sort_keys=True, default=str)}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "callable": self.model_id, "options": self.options}

    # ------------------------------------------------------------------ outputs, checked
    def _layers_of(self, out: Any, seconds: float) -> dict[Layer, np.ndarray]:
        """One call's output as ``{layer: [T, D] float32}``; one line for anything else."""
        if not isinstance(out, dict):
            out = {INPUT: out}
        layers: dict[Layer, np.ndarray] = {}
        for key, value in out.items():
            layer = self._layer_key(key)
            layers[layer] = self._array(value, layer, seconds)
        blocks = sorted(k for k in layers if k != INPUT)
        if INPUT not in layers or blocks != list(range(1, len(blocks) + 1)):
            got = ", ".join(layer_label(k) for k in [*([INPUT] if INPUT in layers else []), *blocks])
            raise EncoderError(
                f"{self.setting}: embed gave layers {got}; expected input, then blocks 1..N without gaps"
            )
        return layers

    def _layer_key(self, key: Any) -> Layer:
        if key == INPUT:
            return INPUT
        if isinstance(key, int) and not isinstance(key, bool) and key >= 1:
            return key
        m = _LAYER_KEY.match(str(key))
        if m:
            return int(m.group(1))
        raise EncoderError(f"{self.setting}: embed gave a layer named {key!r}; name layers 'input', 1, 2, ...")

    def _array(self, value: Any, layer: Layer, seconds: float) -> np.ndarray:
        what = f"{self.setting}: embed gave layer {layer_label(layer)}"
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        try:
            arr = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise EncoderError(f"{what} as {type(value).__name__}, not an array of numbers") from None
        if arr.ndim != 2 or 0 in arr.shape:
            raise EncoderError(
                f"{what} of shape {tuple(arr.shape)} for a {seconds:g} s clip; expected [T, D] (frames × features)"
            )
        if not np.all(np.isfinite(arr)):
            raise EncoderError(f"{what} with NaN or infinite values for a {seconds:g} s clip")
        return arr

    def _call(self, clip: np.ndarray) -> dict[Layer, np.ndarray]:
        seconds = len(clip) / self.sample_rate
        try:
            out = self._embed_fn(clip)
        except Exception as exc:  # noqa: BLE001 - user code: its error, one line
            raise EncoderError(f"{self.setting}: embed raised {_first_line(exc)} on a {seconds:g} s clip") from None
        return self._layers_of(out, seconds)

    def _probe(self, n_samples: int) -> dict[Layer, np.ndarray]:
        """The outputs for seeded low-level noise of ``n_samples``: the shapes clips of that length must have."""
        if n_samples not in self._probes:
            noise = np.random.default_rng(0).standard_normal(n_samples).astype(np.float32) * 0.05
            self._probes[n_samples] = self._call(noise)
        return self._probes[n_samples]

    # ------------------------------------------------------------------ geometry
    def _shape(self, n_samples: int, layer: Layer) -> tuple[int, int]:
        return tuple(self._probe(n_samples)[layer].shape)

    def _axis(self, n_samples: int, layer: Layer) -> TimeAxis:
        t = self._probe(n_samples)[layer].shape[0]
        if self._time_axis_fn is not None:
            axis = self._time_axis_fn(n_samples)
            grid = tuple(getattr(axis, "grid", ()))
            if len(grid) != 2 or math.prod(grid) != t:
                raise EncoderError(
                    f"{self.setting}: time_axis({n_samples}) gives grid {grid or axis!r} for {t} frames; "
                    "its grid (rows, columns) must multiply to the frame count"
                )
            axis = TimeAxis((int(grid[0]), int(grid[1])), float(axis.hop_s), float(axis.first_center_s))
        else:
            axis = TimeAxis((1, t), 1.0 / float(self._frame_rate), float(self._first_center))
        self._check_span(axis, n_samples)
        return axis

    def _check_span(self, axis: TimeAxis, n_samples: int) -> None:
        seconds = n_samples / self.sample_rate
        last = axis.first_center_s + (axis.grid[1] - 1) * axis.hop_s
        if axis.grid[1] > 1 and not (seconds / 2 - axis.hop_s <= last <= 2 * seconds + axis.hop_s):
            raise EncoderError(
                f"{self.setting}: {axis.grid[1]} frames at {1 / axis.hop_s:g} per second end at {last:g} s "
                f"for a {seconds:g} s clip: check frame_rate (or time_axis)"
            )

    # ------------------------------------------------------------------ forward
    def _embed_layers(self, audio: torch.Tensor, layers: list[Layer]) -> dict[Layer, torch.Tensor]:
        n = audio.shape[-1]
        expected = self._probe(n)
        per_clip = []
        for clip in audio.numpy():
            got = self._call(np.ascontiguousarray(clip, dtype=np.float32))
            for layer in layers:
                if layer not in got or got[layer].shape != expected[layer].shape:
                    shape = tuple(got[layer].shape) if layer in got else "nothing"
                    raise EncoderError(
                        f"{self.setting}: embed gave {shape} at layer {layer_label(layer)} for a clip, "
                        f"{tuple(expected[layer].shape)} for another of the same length: shapes must follow the length"
                    )
            per_clip.append(got)
        return {layer: torch.from_numpy(np.stack([g[layer] for g in per_clip])) for layer in layers}
