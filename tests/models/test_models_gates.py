"""Gates: every variant × alignment at the real shapes, documented parameter counts, learning, bad input."""

from __future__ import annotations

import re

import pytest
import torch

from sonieval.errors import SonievalError
from sonieval.models import gates as g
from sonieval.protocol import GATE_VARIANTS

SHAPES = {"ast": g.AST_EMBEDDING, "hubert": g.HUBERT_EMBEDDING}


def test_variant_names_match_protocol_and_reference():
    assert tuple(g.GATES) + tuple(g.CLOSED_FORM_GATES) == GATE_VARIANTS
    assert [c.reference_version for c in g.GATES.values()] == [f"v{i}" for i in range(12)]


@pytest.mark.parametrize("encoder", list(SHAPES))
@pytest.mark.parametrize("alignment", g.ALIGNMENTS)
def test_every_variant_gives_the_latent_shape_at_full_size(torch_threads, encoder, alignment):
    # Full reference shapes: the gates are small enough (largest: ATTN transpose on AST, 6.5 M parameters).
    # Except ATTN on AST's folded grid: 9216 tokens, ~1 GB of attention weights per clip (documented in
    # gates.py; its shape is checked on the meta device, which allocates nothing).
    torch.manual_seed(0)
    x = torch.randn(1, *SHAPES[encoder])
    for variant in g.GATES:
        if variant == "ATTN" and encoder == "ast" and alignment == "grid":
            with torch.device("meta"):
                y = g.build_gate(variant, SHAPES[encoder], g.DAC_VAE_LATENT, alignment)(x.to("meta"))
            assert y.shape == (1, *g.DAC_VAE_LATENT)
            continue
        gate = g.build_gate(variant, SHAPES[encoder], g.DAC_VAE_LATENT, alignment).eval()
        with torch.no_grad():
            y = gate(x)
        assert y.shape == (1, *g.DAC_VAE_LATENT), (variant, alignment)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("variant", list(g.GATES))
def test_docstring_parameter_counts_are_the_real_ones(variant):
    doc = g.GATES[variant].__doc__
    for label, encoder in (("AST→DAC-VAE", "ast"), ("HuBERT→DAC-VAE", "hubert")):
        line = re.search(
            re.escape(label) + r" (reshape [\d,]+ · transpose [\d,]+ · grid [\d,]+ · grid-pool [\d,]+)", doc
        )
        assert line, f"{variant}: no parameter line for {label}"
        documented = dict(re.findall(r"([\w-]+) ([\d,]+)", line.group(1)))
        for alignment in g.ALIGNMENTS:
            real = g.gate_parameter_count(variant, SHAPES[encoder], g.DAC_VAE_LATENT, alignment)
            assert int(documented[alignment].replace(",", "")) == real, (variant, label, alignment)


def test_parameter_count_on_meta_matches_materialised(torch_threads):
    gate = g.build_gate("CONV-LN", (40, 12), (6, 30), "transpose")
    assert g.gate_parameter_count("CONV-LN", (40, 12), (6, 30), "transpose") == sum(
        p.numel() for p in gate.parameters()
    )


@pytest.mark.parametrize("shapes", [((37, 5), (3, 11)), ((7, 300), (16, 9)), ((1, 1), (1, 1))])
def test_shape_generic(torch_threads, shapes):
    emb, lat = shapes
    for variant in g.GATES:
        for alignment in g.ALIGNMENTS:
            y = g.build_gate(variant, emb, lat, alignment).eval()(torch.randn(3, *emb))
            assert y.shape == (3, *lat)


def test_transpose_keeps_time_local_and_reshape_does_not(torch_threads):
    """A feature-wise (rows) map cannot move time in `transpose`; `reshape` scrambles it."""
    emb, lat = (20, 4), (4, 20)
    x = torch.zeros(1, *emb)
    x[0, 5] = 1.0  # only embedding frame 5 is active
    lin = g.build_gate("LIN", emb, lat, "transpose")
    with torch.no_grad():
        lin.layers[0].weight.copy_(torch.eye(20))
        lin.layers[0].bias.zero_()
        lin.layers[1].linear.weight.copy_(torch.eye(4))
        lin.layers[1].linear.bias.zero_()
        y = lin(x)[0]
    assert torch.nonzero(y.abs().sum(0)).flatten().tolist() == [5]
    rs = g.build_gate("LIN", emb, lat, "reshape")
    with torch.no_grad():
        rs.layers[0].weight.copy_(torch.eye(4))
        rs.layers[0].bias.zero_()
        rs.layers[1].linear.weight.copy_(torch.eye(20))
        rs.layers[1].linear.bias.zero_()
        y = rs(x)[0]
    assert torch.nonzero(y.abs().sum(0)).flatten().tolist() != [5]


def test_grid_uses_frequency_major_tokens_and_real_patch_times(torch_threads):
    emb = g.AST_EMBEDDING
    x = torch.zeros(1, *emb)
    f, t = 3, 20  # patch (frequency row 3, time column 20) = token 3·101 + 20
    x[0, f * 101 + t] = 1.0
    gate = g.build_gate("LIN", emb, g.DAC_VAE_LATENT, "grid")
    image = gate.align.to_image(x)[0, 0]  # [768 features, 431 latent frames]
    active = torch.nonzero(image.abs().sum(0)).flatten()
    times = (active.double() + 0.5) * g.LATENT_HOP_S
    # patch column 20 is centred at 0.0875 + 20 · 0.1 s; its weight spreads to neighbours within one patch hop
    assert times.min() > 0.0875 + 19 * 0.1 - 1e-9 and times.max() < 0.0875 + 21 * 0.1 + 1e-9
    # weights of each latent frame sum to 1 (an interpolation, no gain)
    assert torch.allclose(gate.align.time_weights.sum(0), torch.ones(431))


def test_hubert_grid_maps_50hz_onto_latent_time(torch_threads):
    gate = g.build_gate("LIN", g.HUBERT_EMBEDDING, g.DAC_VAE_LATENT, "grid", time_axis=g.HUBERT_TIME_AXIS)
    ramp = torch.arange(249, dtype=torch.float32)[None, :, None].expand(1, 249, 768)
    image = gate.align.to_image(ramp)[0, 0, 0]  # frame index seen by each latent frame
    expected = ((torch.arange(431) + 0.5) * g.LATENT_HOP_S - 0.0125) / 0.02
    assert torch.allclose(image, expected.clamp(0, 248).float(), atol=1e-3)


@pytest.mark.parametrize("alignment", g.GRID_ALIGNMENTS)
def test_lin_on_grid_computes_its_layers_map_in_the_cheaper_order(torch_threads, alignment):
    """LIN under grid multiplies in another order (features first): the same map and gradients as its
    layers applied one after the other (the base Gate's forward)."""
    torch.manual_seed(0)
    axis = g.TimeAxis((3, 40), 0.11, 0.02)
    gate = g.build_gate("LIN", (120, 24), (16, 90), alignment, time_axis=axis, latent_first_center_s=0.0)
    x = torch.randn(3, 120, 24, dtype=torch.float64)
    gate = gate.double()
    fast, slow = gate(x), g.Gate.forward(gate, x)
    assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-12)
    grads = [torch.autograd.grad(y.square().sum(), list(gate.parameters())) for y in (gate(x), g.Gate.forward(gate, x))]
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(*grads))


def test_lin_on_grid_starts_from_a_per_frame_map(torch_threads):
    """grid puts the embedding on the latent's frames: LIN's time (column) layer starts as the identity,
    so its untrained map is per frame; under transpose the column layer maps embedding to latent frames."""
    torch.manual_seed(0)
    axis = g.TimeAxis((1, 30), 0.05, 0.0)
    grid = g.build_gate("LIN", (30, 8), (4, 50), "grid", time_axis=axis)
    assert torch.equal(grid.layers[0].weight, torch.eye(50)) and not grid.layers[0].bias.any()
    torch.manual_seed(0)
    transpose = g.build_gate("LIN", (30, 8), (4, 50), "transpose")
    assert transpose.layers[0].weight.shape == (50, 30)
    torch.manual_seed(0)
    twice = g.build_gate("LIN", (30, 8), (4, 50), "grid", time_axis=axis)  # the other layer's draw is unchanged
    assert torch.equal(grid.layers[1].linear.weight, twice.layers[1].linear.weight)


def test_grid_interpolates_onto_the_codecs_own_frame_centres(torch_threads):
    """The mel codec's STFT frames are centred at j·hop (center=True), DAC-VAE's at (j+½)·hop: a grid
    gate reads the embedding at the codec's centres (it once used (j+½)·hop for every codec: 5.8 ms off
    for the mel codec)."""
    from sonieval.models.codec import Codec
    from sonieval.models.mel_codec import MelCodec

    assert MelCodec.frame_center_hops == 0.0 and Codec.frame_center_hops == 0.5
    ramp = torch.arange(249, dtype=torch.float32)[None, :, None].expand(1, 249, 768)
    for first in (0.0, g.LATENT_HOP_S / 2):
        gate = g.build_gate(
            "LIN",
            g.HUBERT_EMBEDDING,
            g.DAC_VAE_LATENT,
            "grid",
            time_axis=g.HUBERT_TIME_AXIS,
            latent_first_center_s=first,
        )
        seen = gate.align.to_image(ramp)[0, 0, 0]
        expected = (first + torch.arange(431) * g.LATENT_HOP_S - 0.0125) / 0.02
        assert torch.allclose(seen, expected.clamp(0, 248).float(), atol=1e-3)
    default = g.build_gate("LIN", g.HUBERT_EMBEDDING, g.DAC_VAE_LATENT, "grid", time_axis=g.HUBERT_TIME_AXIS)
    assert torch.equal(default.align.time_weights, gate.align.time_weights)  # old checkpoints: DAC-VAE's half hop


@pytest.mark.parametrize("variant", ["LIN", "CONV", "LIN-C", "ATTN"])
def test_loss_falls_on_a_learnable_mapping(torch_threads, variant):
    torch.manual_seed(0)
    emb, lat = (48, 16), (8, 40)
    teacher = torch.nn.Sequential(torch.nn.Linear(48, 40))
    mix = torch.randn(16, 8) / 4
    x = torch.randn(64, *emb)
    with torch.no_grad():
        y = torch.einsum("btd,dc->bct", x, mix)  # features → channels
        y = teacher(y)  # embedding time → latent time
    gate = g.build_gate(variant, emb, lat, "transpose")
    opt = torch.optim.Adam(gate.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(gate(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], (variant, losses[0], losses[-1])


def test_wrong_embedding_shape_is_one_clear_error(torch_threads):
    gate = g.build_gate("CONV", g.AST_EMBEDDING, g.DAC_VAE_LATENT, "transpose")
    with pytest.raises(SonievalError) as exc:
        gate(torch.randn(1, *g.HUBERT_EMBEDDING))
    msg = str(exc.value)
    assert "\n" not in msg and "[batch, 1212, 768]" in msg and "[1, 249, 768]" in msg


def test_unknown_variant_and_alignment_are_clear_errors():
    with pytest.raises(SonievalError, match="did you mean 'CONV-LN'"):
        g.build_gate("CONV_LN", (4, 4), (4, 4))
    with pytest.raises(SonievalError, match="allowed: reshape, transpose, grid, grid-pool"):
        g.build_gate("LIN", (4, 4), (4, 4), "diagonal")


def test_gates_command_lists_every_variant_with_counts(capsys):
    from sonieval.cli import main

    assert main(["gates", "--layers"]) == 0
    out = capsys.readouterr().out
    for variant in g.GATES:
        assert f"\n{variant} " in out
    lin = next(line for line in out.splitlines() if line.startswith("LIN "))
    counts = [int(v.replace(",", "")) for v in lin.split()[2:]]
    assert counts == [
        g.gate_parameter_count("LIN", shape, g.DAC_VAE_LATENT, a)
        for shape in (g.AST_EMBEDDING, g.HUBERT_EMBEDDING)
        for a in g.ALIGNMENTS
    ]
    assert "conv 1→8 10x10/2x1" in out and "attention 3h" in out
    assert main(["gates", "--embedding", "1500x1280", "--latent", "64x431"]) == 0
    assert "1500x1280/transpose" in capsys.readouterr().out
