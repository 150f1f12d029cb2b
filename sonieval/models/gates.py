"""Gating layers ("gates"): the 12 reference variants that map an encoder embedding to a codec latent.

A gate maps embeddings ``[B, T, D]`` (T embedding frames or patches, D features) to latents
``[B, C, T']`` (C latent channels, T' latent frames), for any shapes
(docs/architecture.md#encoder-and-codec-geometry; thesis §3, §4.1, §4.5). Variant names and layer lists are
the reference work's (LIN = its "v0 LNR", ..., LIN-C = v11).

**The map.** An alignment (below) turns the embedding into a one-channel image ``[B, 1, R, K]``
(R rows, K columns) and says which output image ``[R_out, K_out]`` becomes the latent. Every layer acts
on that image:

- ``Conv``: ``Conv2d`` with a 10×10 kernel and stride (2, 1) (thesis §4.1: "kernel (10, 10), stride
  [2, 1]"; clipped to the image when it is smaller), no padding: R → ⌊(R−10)/2⌋+1 rows, K → K−9 columns.
  The thesis gives no channel count: the first convolution of a pair goes 1 → 8 channels, the second
  8 → 1 (:data:`CONV_CHANNELS`); a lone convolution (LIN-C) is 1 → 1.
- ``Linear (columns)``: ``nn.Linear`` on the column axis (K → K_out), the same for every row.
- ``Linear (rows)``: ``nn.Linear`` on the row axis (R → R_out), the same for every column.
  The reference's "two linear layers" are this pair, columns first: a separable map, so a gate stays
  small at full shapes (a dense [T·D → C·T'] map would have ~2.6·10¹⁰ weights).
- ``LayerNorm``: over the column axis (K values), with per-column affine.
- ``GroupNorm``: one group over the whole one-channel map (per example), affine scale and shift.
- ``Self-attention`` (ATTN): AST's ``ASTSelfAttention`` + ``ASTSelfOutput`` with 3 heads: rows are
  tokens, the K column values are a token's vector (query/key/value/dense as in AST; when K is not a
  multiple of 3 the head size is rounded up and ``dense`` maps back to K).
- ``ReLU``, ``Dropout(p)`` elementwise.

**Alignments** (``alignment``):

- ``reshape`` — the reference work's first runs (thesis §3.0.2): the embedding as stored, rows = T
  embedding frames, columns = D features; the layers map it to a [T', C] image (rows → T' latent
  frames, columns → C channels) which is then *reshaped* (memory reinterpreted, not transposed) to
  [C, T']. Each latent row therefore mixes frames from all over the clip: the reference's misalignment,
  kept so its results can be reproduced.
- ``transpose`` — its final choice: the embedding transposed to [D, T]: rows = D features → C latent
  channels, columns = T embedding frames → T' latent frames. Time stays on the column axis throughout.
- ``grid`` — as ``transpose``, but on the encoder's real time axis. AST's 1212 tokens are a
  12 (frequency) × 101 (time) patch grid, frequency-major (token = f·101 + t): the 12 frequency rows are
  *folded* into the features (row f·D + d = feature d of frequency row f), giving [12·D, 101] on AST's
  patch times (10 Hz, first patch centred at 87.5 ms; past ~5 s AST's input is padding). Then each
  latent frame's centre time is looked up on the embedding's time axis and linearly interpolated (fixed
  weights, no parameters): embedding time becomes latent time (AST 10 Hz or HuBERT ≈50 Hz → DAC-VAE
  ≈86.13 Hz). Rows = F·D → C, columns = T' → T'. A sequence encoder (HuBERT) has F = 1.
- ``grid-pool`` — the first design of ``grid``, kept to measure what it loses: the F frequency rows are
  *averaged* into D features instead of folded. Measured on 400 real ESC-50 clips (small random AST,
  mel codec, LIN, 5 epochs): validation R² 0.74 pooled vs 0.83 folded (``transpose`` 0.75): averaging
  the frequency rows throws away what tells one band from another, so ``grid`` folds. Folding costs:
  rows grow F-fold (12× for AST), so convolutions cost ~12× more and ATTN's attention over rows grows
  144× (full-size AST ATTN + ``grid``: 9216 tokens, ~1 GB of attention weights per clip); use
  ``grid-pool`` where that does not fit.

Parameter counts (weights and biases) for AST→DAC-VAE ([1212, 768] → [64, 431]) and HuBERT→DAC-VAE
([249, 768] → [64, 431]) are in each variant's docstring and checked by tests/models; ``sonieval gates``
prints them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from sonieval.errors import SonievalError

ALIGNMENTS = ("reshape", "transpose", "grid", "grid-pool")
GRID_ALIGNMENTS = ("grid", "grid-pool")
CONV_KERNEL = (10, 10)
CONV_STRIDE = (2, 1)
CONV_CHANNELS = 8
ATTENTION_HEADS = 3
# The two reference shapes (docs/architecture.md#encoder-and-codec-geometry), for docstrings, `sonieval gates` and tests.
AST_EMBEDDING = (1212, 768)
HUBERT_EMBEDDING = (249, 768)
DAC_VAE_LATENT = (64, 431)
LATENT_HOP_S = 512 / 44100
# Where a latent frame sits in time, by default: DAC-VAE's frame j summarises samples [j·hop, (j+1)·hop),
# centre (j + ½)·hop. A codec with other frames says so (the mel codec's STFT frames are centred at j·hop:
# ``Codec.first_frame_center_s``); ``grid`` interpolates the embedding onto these centres.
LATENT_FIRST_CENTER_S = LATENT_HOP_S / 2
AST_PATCH_GRID = (12, 101)


class GateError(SonievalError):
    """A gate given the wrong input, or asked for something impossible."""


@dataclass(frozen=True)
class TimeAxis:
    """Where an embedding's frames sit in time (for ``grid``).

    ``grid``: (frequency rows, time columns) of a frequency-major patch grid, (1, T) for a plain
    sequence. ``hop_s``: seconds between frames; ``first_center_s``: centre of frame 0.
    """

    grid: tuple[int, int]
    hop_s: float
    first_center_s: float


AST_TIME_AXIS = TimeAxis(AST_PATCH_GRID, 0.10, 0.0875)  # 16-frame patches, 10-frame stride, 10 ms frames
HUBERT_TIME_AXIS = TimeAxis((1, 249), 0.02, 0.0125)  # 320-sample hop, 400-sample receptive field at 16 kHz


def default_time_axis(
    embedding_shape: tuple[int, int], latent_shape: tuple[int, int], latent_hop_s: float = LATENT_HOP_S
) -> TimeAxis:
    """The time axis assumed when the encoder gives none: AST's grid for 1212 tokens, else frames
    spread evenly over the latent's duration."""
    t = embedding_shape[0]
    if t == AST_PATCH_GRID[0] * AST_PATCH_GRID[1]:
        return AST_TIME_AXIS
    duration = latent_shape[1] * latent_hop_s
    return TimeAxis((1, t), duration / t, duration / t / 2)


def interpolation_matrix(
    axis: TimeAxis, n_out: int, out_hop_s: float, out_first_center_s: float | None = None
) -> torch.Tensor:
    """[T_grid, n_out] weights: latent frame j (centre ``out_first_center_s`` + j·hop) from the two nearest
    embedding frames. The latent's first centre is the codec's (:data:`LATENT_FIRST_CENTER_S` by default)."""
    n_in = axis.grid[1]
    first = LATENT_FIRST_CENTER_S if out_first_center_s is None else float(out_first_center_s)
    centres = first + torch.arange(n_out, dtype=torch.float64) * out_hop_s
    pos = ((centres - axis.first_center_s) / axis.hop_s).clamp(0, n_in - 1)
    lo = pos.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = pos - lo
    w = torch.zeros(n_in, n_out, dtype=torch.float64)
    cols = torch.arange(n_out)
    w[lo, cols] += 1 - frac
    w[hi, cols] += frac
    return w.float()


class Aligner(nn.Module):
    """Embedding [B, T, D] → image [B, 1, R, K]; output image [B, 1, R_out, K_out] → latent [B, C, T']."""

    def __init__(
        self,
        alignment: str,
        embedding_shape,
        latent_shape,
        time_axis: TimeAxis | None,
        latent_hop_s: float,
        latent_first_center_s: float | None = None,
    ):
        super().__init__()
        if alignment not in ALIGNMENTS:
            raise GateError(f"unknown alignment {alignment!r}; allowed: {', '.join(ALIGNMENTS)}")
        self.alignment = alignment
        t, d = embedding_shape
        c, t_out = latent_shape
        if alignment == "reshape":
            self.rows, self.cols, self.out_rows, self.out_cols = t, d, t_out, c
        elif alignment == "transpose":
            self.rows, self.cols, self.out_rows, self.out_cols = d, t, c, t_out
        else:
            axis = time_axis or default_time_axis(embedding_shape, latent_shape, latent_hop_s)
            f, tg = axis.grid
            if f * tg != t:
                raise GateError(f"{alignment} alignment: time axis grid {f}x{tg} does not cover {t} embedding frames")
            self.grid = (f, tg)
            weights = interpolation_matrix(axis, t_out, latent_hop_s, latent_first_center_s)
            self.register_buffer("time_weights", weights, persistent=False)
            rows = f * d if alignment == "grid" else d
            self.rows, self.cols, self.out_rows, self.out_cols = rows, t_out, c, t_out

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        if self.alignment == "reshape":
            return x[:, None]
        if self.alignment == "transpose":
            return x.transpose(1, 2)[:, None]
        return torch.einsum("bct,tj->bcj", self.grid_features(x), self.time_weights)[:, None]

    def grid_features(self, x: torch.Tensor) -> torch.Tensor:
        """``grid``/``grid-pool``: the features on the embedding's own time columns [B, R, T_grid], before
        they are interpolated onto the latent's frames."""
        b, t, d = x.shape
        f, tg = self.grid
        patches = x.reshape(b, f, tg, d)  # frequency-major tokens: f·tg + t
        if self.alignment == "grid":
            return patches.permute(0, 1, 3, 2).reshape(b, f * d, tg)  # row f·D + d
        return patches.mean(dim=1).transpose(1, 2)  # grid-pool: [B, D, tg]

    def to_latent(self, y: torch.Tensor) -> torch.Tensor:
        y = y[:, 0]
        if self.alignment == "reshape":
            # The reference's reshape: reinterpret [T', C] memory as [C, T'] (not a transpose).
            return y.reshape(y.shape[0], self.out_cols, self.out_rows)
        return y


class RowLinear(nn.Module):
    """``nn.Linear`` on the row axis of [B, ch, R, K] (R → R_out), the same for every column."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.transpose(-1, -2)).transpose(-1, -2)


class GroupNormMap(nn.GroupNorm):
    """``GroupNorm`` with one group: normalises each example's whole map."""


class ASTStyleSelfAttention(nn.Module):
    """AST's self-attention block (``ASTSelfAttention`` + ``ASTSelfOutput``): rows are tokens.

    Scaled dot-product attention (Vaswani et al. 2017) with ``heads`` heads; module names as in
    transformers' AST (query, key, value, dense); dropout 0 as in AST's config.
    """

    def __init__(self, dim: int, heads: int = ATTENTION_HEADS):
        super().__init__()
        self.heads = heads
        self.head_size = math.ceil(dim / heads)
        inner = self.head_size * heads
        self.query = nn.Linear(dim, inner)
        self.key = nn.Linear(dim, inner)
        self.value = nn.Linear(dim, inner)
        self.dense = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, r, k = x.shape
        h = x.reshape(b * ch, r, k)

        def split(t):
            return t.reshape(b * ch, r, self.heads, self.head_size).transpose(1, 2)

        out = nn.functional.scaled_dot_product_attention(split(self.query(h)), split(self.key(h)), split(self.value(h)))
        out = out.transpose(1, 2).reshape(b * ch, r, self.heads * self.head_size)
        return self.dense(out).reshape(b, ch, r, k)


def _conv_out(n: int, kernel: int, stride: int) -> int:
    return (n - kernel) // stride + 1


class _Builder:
    """Appends layers while tracking the image size [channels, rows, cols]."""

    def __init__(self, rows: int, cols: int):
        self.ch, self.rows, self.cols = 1, rows, cols
        self.layers: OrderedDict[str, nn.Module] = OrderedDict()

    def add(self, name: str, module: nn.Module) -> _Builder:
        self.layers[f"{len(self.layers)}_{name}"] = module
        return self

    def conv(self, out_ch: int) -> _Builder:
        kr, kc = min(CONV_KERNEL[0], self.rows), min(CONV_KERNEL[1], self.cols)
        self.add("conv", nn.Conv2d(self.ch, out_ch, (kr, kc), stride=CONV_STRIDE))
        self.ch, self.rows, self.cols = (
            out_ch,
            _conv_out(self.rows, kr, CONV_STRIDE[0]),
            _conv_out(self.cols, kc, CONV_STRIDE[1]),
        )
        return self

    def linear_cols(self, n_out: int) -> _Builder:
        self.add("linear_cols", nn.Linear(self.cols, n_out))
        self.cols = n_out
        return self

    def linear_rows(self, n_out: int) -> _Builder:
        self.add("linear_rows", RowLinear(self.rows, n_out))
        self.rows = n_out
        return self

    def relu(self) -> _Builder:
        return self.add("relu", nn.ReLU())

    def dropout(self, p: float) -> _Builder:
        return self.add("dropout", nn.Dropout(p))

    def layer_norm(self) -> _Builder:
        return self.add("layernorm", nn.LayerNorm(self.cols))

    def group_norm(self) -> _Builder:
        return self.add("groupnorm", GroupNormMap(1, self.ch))

    def attention(self) -> _Builder:
        return self.add("attention", ASTStyleSelfAttention(self.cols))

    def head(self, out_rows: int, out_cols: int) -> _Builder:
        """The reference's closing "Linear, Linear": columns, then rows."""
        return self.linear_cols(out_cols).linear_rows(out_rows)


class Gate(nn.Module):
    """Base: alignment in, layers, alignment out. Subclasses list their layers in ``layers_for``."""

    variant: str = ""
    reference_version: str = ""
    closed_form: bool = False  # fitted by sonieval.pipeline.ridge, not trained

    def __init__(
        self,
        embedding_shape: tuple[int, int],
        latent_shape: tuple[int, int],
        alignment: str = "transpose",
        *,
        time_axis: TimeAxis | None = None,
        latent_hop_s: float = LATENT_HOP_S,
        latent_first_center_s: float | None = None,
    ):
        super().__init__()
        embedding_shape = tuple(int(v) for v in embedding_shape)
        latent_shape = tuple(int(v) for v in latent_shape)
        if len(embedding_shape) != 2 or len(latent_shape) != 2 or min(embedding_shape + latent_shape) < 1:
            raise GateError(
                f"gate {self.variant}: embedding_shape (T, D) and latent_shape (C, T') must be two "
                f"positive sizes each, got {embedding_shape} and {latent_shape}"
            )
        self.embedding_shape = embedding_shape
        self.latent_shape = latent_shape
        self.alignment = alignment
        self.align = Aligner(alignment, embedding_shape, latent_shape, time_axis, latent_hop_s, latent_first_center_s)
        b = _Builder(self.align.rows, self.align.cols)
        self.layers_for(b, self.align.out_rows, self.align.out_cols)
        if b.ch != 1 or (b.rows, b.cols) != (self.align.out_rows, self.align.out_cols):
            raise GateError(
                f"gate {self.variant}: layers end at {b.ch}x{b.rows}x{b.cols}, expected "
                f"1x{self.align.out_rows}x{self.align.out_cols}"
            )  # a bug here, not bad input
        self.layers = nn.Sequential(b.layers)

    def layers_for(self, b: _Builder, out_rows: int, out_cols: int) -> None:
        raise NotImplementedError

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        self.check_input(embedding)
        return self.align.to_latent(self.layers(self.align.to_image(embedding)))

    def check_input(self, embedding: torch.Tensor) -> None:
        if embedding.ndim != 3 or tuple(embedding.shape[1:]) != self.embedding_shape:
            t, d = self.embedding_shape
            raise GateError(
                f"gate {self.variant} ({self.alignment}) expects embeddings [batch, {t}, {d}], "
                f"got {list(embedding.shape)}",
                hint="was it trained for another encoder or clip length? use the encoder it was trained on",
            )


class LIN(Gate):
    """LIN (reference v0 "LNR"): Linear, Linear.

    Layers: Linear (columns: K → K_out), Linear (rows: R → R_out). With ``transpose``/``grid`` the
    first acts on time, the second on features; with ``reshape`` the reverse.

    Parameters: AST→DAC-VAE reshape 572,019 · transpose 572,019 · grid 776,080 · grid-pool 235,408;
    HuBERT→DAC-VAE reshape 156,966 · transpose 156,966 · grid 235,408 · grid-pool 235,408.
    """

    variant, reference_version = "LIN", "v0"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.align.alignment in GRID_ALIGNMENTS:
            # grid has put the embedding on the latent's frames already: the column (time) map starts as
            # the identity, so training begins from a per-frame map (RIDGE's form) instead of a random
            # mixing of all 431 frames that smears time (measured on CREPE-tiny: pitch kept 0.07 of the
            # voiced frames after 8 epochs from a random start, RIDGE 0.22). Drawn first as before, so the
            # random state the other layers see is unchanged.
            cols = self.layers[0]
            with torch.no_grad():
                cols.weight.copy_(torch.eye(cols.weight.shape[0], dtype=cols.weight.dtype))
                cols.bias.zero_()

    def layers_for(self, b, out_rows, out_cols):
        b.head(out_rows, out_cols)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Under ``grid`` the same map in a cheaper order: both layers and the time interpolation are
        linear, so Wr·(X·Wt·Wcᵀ + 1·bcᵀ) + br·1ᵀ = (Wr·X)·(Wt·Wcᵀ) + (Wr·1)·bcᵀ + br·1ᵀ. With R rows
        (features), T embedding frames and K latent frames that is C·R·T + T·K² multiply-adds per clip
        instead of R·T·K + R·K² (CREPE-tiny's first block: R = 16,384, T = 72, K = 431: 38x fewer)."""
        if self.align.alignment not in GRID_ALIGNMENTS:
            return super().forward(embedding)
        self.check_input(embedding)
        cols, rows = self.layers[0], self.layers[1].linear
        left = torch.einsum("cr,brt->bct", rows.weight, self.align.grid_features(embedding))
        right = self.align.time_weights @ cols.weight.T  # [T, K]: interpolation, then the column map
        bias = rows.weight.sum(dim=1)[:, None] * cols.bias[None, :] + rows.bias[:, None]
        return self.align.to_latent((left @ right + bias)[:, None])  # the output image's one channel


class CONV(Gate):
    """CONV (reference v1): Conv(10×10, stride [2, 1]), Conv, ReLU, Linear, Linear.

    Layers: Conv2d 1→8 and Conv2d 8→1 on the (rows, columns) image (stride 2 on rows), ReLU,
    Linear (columns), Linear (rows).

    Parameters: AST→DAC-VAE reshape 178,111 · transpose 528,622 · grid 327,179 · grid-pool 192,011;
    HuBERT→DAC-VAE reshape 74,240 · transpose 113,569 · grid 192,011 · grid-pool 192,011.
    """

    variant, reference_version = "CONV", "v1"

    def layers_for(self, b, out_rows, out_cols):
        b.conv(CONV_CHANNELS).conv(1).relu().head(out_rows, out_cols)


class ATTN(Gate):
    """ATTN (reference v2): AST-style self-attention (3 heads), Linear, Linear.

    Layers: self-attention with rows as tokens and the column values as each token's vector
    (``transpose``: tokens = features, vectors over time; ``reshape``: tokens = frames, vectors over
    features), then Linear (columns), Linear (rows).

    Parameters: AST→DAC-VAE reshape 2,934,387 · transpose 6,452,643 · grid 1,522,575 · grid-pool 981,903;
    HuBERT→DAC-VAE reshape 2,519,334 · transpose 405,966 · grid 981,903 · grid-pool 981,903.
    """

    variant, reference_version = "ATTN", "v2"

    def layers_for(self, b, out_rows, out_cols):
        b.attention().head(out_rows, out_cols)


class CONV_R(Gate):
    """CONV-R (reference v3): Conv, ReLU, Conv, ReLU, Linear, Linear.

    Layers: Conv2d 1→8, ReLU, Conv2d 8→1, ReLU on the image; Linear (columns), Linear (rows).

    Parameters: AST→DAC-VAE reshape 178,111 · transpose 528,622 · grid 327,179 · grid-pool 192,011;
    HuBERT→DAC-VAE reshape 74,240 · transpose 113,569 · grid 192,011 · grid-pool 192,011.
    """

    variant, reference_version = "CONV-R", "v3"

    def layers_for(self, b, out_rows, out_cols):
        b.conv(CONV_CHANNELS).relu().conv(1).relu().head(out_rows, out_cols)


class CONV_D(Gate):
    """CONV-D (reference v4): Conv, Conv, ReLU, Dropout(0.2), Linear, Linear.

    Layers: Conv2d 1→8, Conv2d 8→1, ReLU, Dropout 0.2 (elementwise) on the image; Linear (columns),
    Linear (rows).

    Parameters: AST→DAC-VAE reshape 178,111 · transpose 528,622 · grid 327,179 · grid-pool 192,011;
    HuBERT→DAC-VAE reshape 74,240 · transpose 113,569 · grid 192,011 · grid-pool 192,011.
    """

    variant, reference_version = "CONV-D", "v4"

    def layers_for(self, b, out_rows, out_cols):
        b.conv(CONV_CHANNELS).conv(1).relu().dropout(0.2).head(out_rows, out_cols)


class CONV_RDD(Gate):
    """CONV-RDD (reference v5): Conv, ReLU, Dropout(0.1), Conv, ReLU, Dropout(0.1), Linear, Linear.

    Layers: Conv2d 1→8, ReLU, Dropout 0.1, Conv2d 8→1, ReLU, Dropout 0.1 on the image; Linear
    (columns), Linear (rows).

    Parameters: AST→DAC-VAE reshape 178,111 · transpose 528,622 · grid 327,179 · grid-pool 192,011;
    HuBERT→DAC-VAE reshape 74,240 · transpose 113,569 · grid 192,011 · grid-pool 192,011.
    """

    variant, reference_version = "CONV-RDD", "v5"

    def layers_for(self, b, out_rows, out_cols):
        b.conv(CONV_CHANNELS).relu().dropout(0.1).conv(1).relu().dropout(0.1).head(out_rows, out_cols)


class CONV_LN(Gate):
    """CONV-LN (reference v6): Conv, Conv, ReLU, LayerNorm, Linear, Linear.

    Layers: Conv2d 1→8, Conv2d 8→1, ReLU, LayerNorm over the column axis; Linear (columns), Linear (rows).

    Parameters: AST→DAC-VAE reshape 179,611 · transpose 531,010 · grid 328,005 · grid-pool 192,837;
    HuBERT→DAC-VAE reshape 75,740 · transpose 114,031 · grid 192,837 · grid-pool 192,837.
    """

    variant, reference_version = "CONV-LN", "v6"

    def layers_for(self, b, out_rows, out_cols):
        b.conv(CONV_CHANNELS).conv(1).relu().layer_norm().head(out_rows, out_cols)


class CONV_GN(Gate):
    """CONV-GN (reference v7): Conv, Conv, ReLU, GroupNorm, Linear, Linear.

    Layers: Conv2d 1→8, Conv2d 8→1, ReLU, GroupNorm (one group: the whole map of each example);
    Linear (columns), Linear (rows).

    Parameters: AST→DAC-VAE reshape 178,113 · transpose 528,624 · grid 327,181 · grid-pool 192,013;
    HuBERT→DAC-VAE reshape 74,242 · transpose 113,571 · grid 192,013 · grid-pool 192,013.
    """

    variant, reference_version = "CONV-GN", "v7"

    def layers_for(self, b, out_rows, out_cols):
        b.conv(CONV_CHANNELS).conv(1).relu().group_norm().head(out_rows, out_cols)


class CONV_RDN(Gate):
    """CONV-RDN (reference v8): Conv, ReLU, Dropout(0.1), Conv, ReLU, Dropout(0.1), LayerNorm, Linear, Linear.

    Layers: Conv2d 1→8, ReLU, Dropout 0.1, Conv2d 8→1, ReLU, Dropout 0.1, LayerNorm over the column
    axis; Linear (columns), Linear (rows).

    Parameters: AST→DAC-VAE reshape 179,611 · transpose 531,010 · grid 328,005 · grid-pool 192,837;
    HuBERT→DAC-VAE reshape 75,740 · transpose 114,031 · grid 192,837 · grid-pool 192,837.
    """

    variant, reference_version = "CONV-RDN", "v8"

    def layers_for(self, b, out_rows, out_cols):
        b.conv(CONV_CHANNELS).relu().dropout(0.1).conv(1).relu().dropout(0.1).layer_norm().head(out_rows, out_cols)


class LIN_D(Gate):
    """LIN-D (reference v9): Linear, Dropout(0.2), Linear.

    Layers: Linear (columns), Dropout 0.2 (elementwise), Linear (rows).

    Parameters: AST→DAC-VAE reshape 572,019 · transpose 572,019 · grid 776,080 · grid-pool 235,408;
    HuBERT→DAC-VAE reshape 156,966 · transpose 156,966 · grid 235,408 · grid-pool 235,408.
    """

    variant, reference_version = "LIN-D", "v9"

    def layers_for(self, b, out_rows, out_cols):
        b.linear_cols(out_cols).dropout(0.2).linear_rows(out_rows)


class LIN_R(Gate):
    """LIN-R (reference v10): Linear, Linear, ReLU.

    Layers: Linear (columns), Linear (rows), ReLU. As in the reference the ReLU is last, so this gate
    cannot produce negative latent values.

    Parameters: AST→DAC-VAE reshape 572,019 · transpose 572,019 · grid 776,080 · grid-pool 235,408;
    HuBERT→DAC-VAE reshape 156,966 · transpose 156,966 · grid 235,408 · grid-pool 235,408.
    """

    variant, reference_version = "LIN-R", "v10"

    def layers_for(self, b, out_rows, out_cols):
        b.head(out_rows, out_cols).relu()


class LIN_C(Gate):
    """LIN-C (reference v11): Linear, Conv, ReLU, Linear, Linear.

    Layers: Linear (columns: K → K_out), Conv2d 1→1 (10×10, stride [2, 1]), ReLU; Linear (columns),
    Linear (rows).

    Parameters: AST→DAC-VAE reshape 312,794 · transpose 729,601 · grid 663,326 · grid-pool 392,990;
    HuBERT→DAC-VAE reshape 105,052 · transpose 314,548 · grid 392,990 · grid-pool 392,990.
    """

    variant, reference_version = "LIN-C", "v11"

    def layers_for(self, b, out_rows, out_cols):
        b.linear_cols(out_cols).conv(1).relu().head(out_rows, out_cols)


class RIDGE(Gate):
    """RIDGE (not in the reference work): the exact linear least-squares map, a reference for the trained gates.

    One layer, Linear (rows: R → R_out), applied to each latent frame on its own: latent frame j =
    W · (embedding features at frame j's time) + b. Needs a ``grid`` alignment (the embedding is
    interpolated onto the codec's frame times, so columns are already latent frames). Fitted in
    closed form, not trained (:func:`sonieval.pipeline.ridge.fit_ridge`): W minimises the squared error
    over every training frame plus λ‖W‖² (Hoerl & Kennard 1970), λ chosen on the validation clips; a
    system ``RIDGE/lr0.0/e0``. LIN on ``grid`` can represent the same map (its column layer as the
    identity), so a trained LIN should reach RIDGE's held-out R²; where it does not, its optimiser fell
    short, and where it exceeds it, the time mixing helped.

    Parameters: AST→DAC-VAE grid 589,888 · grid-pool 49,216; HuBERT→DAC-VAE grid 49,216 · grid-pool 49,216.
    """

    variant = "RIDGE"
    closed_form = True

    def layers_for(self, b, out_rows, out_cols):
        if b.cols != out_cols:
            raise GateError(
                f"gate RIDGE maps each latent frame on its own and needs alignment grid or grid-pool, not {self.alignment!r}"
            )
        b.linear_rows(out_rows)


GATES: dict[str, type[Gate]] = {
    cls.variant: cls
    for cls in (LIN, CONV, ATTN, CONV_R, CONV_D, CONV_RDD, CONV_LN, CONV_GN, CONV_RDN, LIN_D, LIN_R, LIN_C)
}
# Fitted in closed form, not trained (no learning rate, no epochs).
CLOSED_FORM_GATES: dict[str, type[Gate]] = {RIDGE.variant: RIDGE}


def gate_class(variant: str) -> type[Gate]:
    known = {**GATES, **CLOSED_FORM_GATES}
    try:
        return known[variant]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(variant, known, n=1)
        did = f" (did you mean {close[0]!r}?)" if close else ""
        raise GateError(f"unknown gate variant {variant!r}{did}; allowed: {', '.join(known)}") from None


def build_gate(
    variant: str,
    embedding_shape: tuple[int, int],
    latent_shape: tuple[int, int],
    alignment: str = "transpose",
    *,
    time_axis: TimeAxis | None = None,
    latent_hop_s: float = LATENT_HOP_S,
    latent_first_center_s: float | None = None,
) -> Gate:
    """A gate mapping ``[B, T, D]`` embeddings to ``[B, C, T']`` latents (see the module docstring).

    ``time_axis`` (``grid`` only): where the embedding's frames sit in time; an encoder gives it as
    ``Encoder.time_axis(n_samples)``; by default AST's patch grid for 1212 tokens, else frames spread
    evenly over the clip. ``latent_first_center_s`` (``grid`` only): the centre of latent frame 0, the
    codec's (``Codec.first_frame_center_s``; default :data:`LATENT_FIRST_CENTER_S`, DAC-VAE's).
    """
    return gate_class(variant)(
        embedding_shape,
        latent_shape,
        alignment,
        time_axis=time_axis,
        latent_hop_s=latent_hop_s,
        latent_first_center_s=latent_first_center_s,
    )


def gate_parameter_count(
    variant: str,
    embedding_shape: tuple[int, int] = AST_EMBEDDING,
    latent_shape: tuple[int, int] = DAC_VAE_LATENT,
    alignment: str = "transpose",
    *,
    time_axis: TimeAxis | None = None,
) -> int:
    """Number of trainable parameters, counted on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        gate = build_gate(variant, embedding_shape, latent_shape, alignment, time_axis=time_axis)
    return sum(p.numel() for p in gate.parameters() if p.requires_grad)


def layer_summary(gate: Gate) -> str:
    """Layer list as text, e.g. ``conv 1→8 10x10/2x1 · relu · linear_cols 1194→431``."""
    parts = []
    for name, m in gate.layers.named_children():
        kind = name.split("_", 1)[1]
        if isinstance(m, nn.Conv2d):
            k, st = m.kernel_size, m.stride
            parts.append(f"conv {m.in_channels}→{m.out_channels} {k[0]}x{k[1]}/{st[0]}x{st[1]}")
        elif isinstance(m, nn.Dropout):
            parts.append(f"dropout {m.p:g}")
        elif isinstance(m, nn.LayerNorm):
            parts.append(f"layernorm(cols {m.normalized_shape[0]})")
        elif isinstance(m, RowLinear):
            parts.append(f"linear_rows {m.linear.in_features}→{m.linear.out_features}")
        elif isinstance(m, nn.Linear):
            parts.append(f"linear_cols {m.in_features}→{m.out_features}")
        elif isinstance(m, ASTStyleSelfAttention):
            parts.append(f"attention {m.heads}h×{m.head_size}")
        else:
            parts.append(kind)
    return " · ".join(parts)
