"""Encoder layers: expansion of `layer`, every encoder's geometry and time axis per layer, one forward
pass for many layers (and none beyond the deepest), block k = transformers' hidden_states[k], token
layouts checked against the audio, clear errors, checkpoint normalisation, cache keys."""

from __future__ import annotations

import pytest
import torch

from sonieval.errors import SonievalError, WeightsUnavailable
from sonieval.models import encoders as enc_mod
from sonieval.models.layers import (
    INPUT,
    LayerError,
    capture_layers,
    expand_layers,
    layer_cache_path,
    layer_label,
    layer_model_key,
    parse_layer_label,
)
from sonieval.protocol import EncoderSpec

SECONDS = 5

# (tokens, width) per layer for 5 s, small random configs (published-size geometry in the comments)
SHAPES = {
    "ast": {INPUT: (1212, 64), 1: (1212, 64)},  # 12 x 101 frequency-major patches (full: width 768)
    "hubert": {INPUT: (249, 64), 1: (249, 64)},  # 50 Hz frames (full: 768)
    "wav2vec2": {INPUT: (249, 64), 1: (249, 64)},
    "wavlm": {INPUT: (249, 64), 1: (249, 64), 2: (249, 64)},
    "whisper": {INPUT: (250, 64), 1: (250, 64), 2: (250, 64)},  # first 250 of 1500 frames (full: 512)
    # one block per stage; grids 16x128, 8x64, 4x32, 2x16 over 5 s (full: widths 96..768, blocks 2,2,6,2)
    "clap": {INPUT: (2048, 16), 1: (2048, 16), 2: (512, 32), 3: (128, 64), 4: (32, 128)},
}
HTSAT_S = 1000 / 1023 * 0.01  # seconds per stretched HTSAT frame (1001 log-mel frames stretched to 1024)
# (grid, hop_s, first_center_s) per layer for 5 s
AXES = {
    "ast": {INPUT: ((12, 101), 0.10, 0.0875), 1: ((12, 101), 0.10, 0.0875)},
    "hubert": {INPUT: ((1, 249), 0.02, 0.0125), 1: ((1, 249), 0.02, 0.0125)},
    "wav2vec2": {INPUT: ((1, 249), 0.02, 0.0125), 1: ((1, 249), 0.02, 0.0125)},
    "wavlm": {INPUT: ((1, 249), 0.02, 0.0125), 2: ((1, 249), 0.02, 0.0125)},
    "whisper": {INPUT: ((1, 250), 0.02, 0.0), 2: ((1, 250), 0.02, 0.0)},
    "clap": {
        INPUT: ((16, 128), 4 * HTSAT_S, 1.5 * HTSAT_S),
        2: ((8, 64), 8 * HTSAT_S, 3.5 * HTSAT_S),
        3: ((4, 32), 16 * HTSAT_S, 7.5 * HTSAT_S),
        4: ((2, 16), 32 * HTSAT_S, 15.5 * HTSAT_S),
    },
}


def spec(name, **kw):
    return EncoderSpec(**{"name": name, "model": None, "size": "small", "finetuned": None, "layer": "input", **kw})


_CACHE: dict[str, enc_mod.Encoder] = {}


def small(name: str) -> enc_mod.Encoder:
    """One small random encoder per name for the module (loaded for every layer)."""
    if name not in _CACHE:
        _CACHE[name] = enc_mod.load_encoder(spec(name, layer="all"))
    return _CACHE[name]


def clip(encoder, batch=2, seed=0):
    return torch.randn(batch, SECONDS * encoder.sample_rate, generator=torch.Generator().manual_seed(seed)) * 0.1


# ----------------------------------------------------------------------------- layer values


def test_expand_layers_forms_and_order():
    assert expand_layers("input", 12) == expand_layers(None, 12) == [INPUT]
    assert expand_layers("all", 3) == [INPUT, 1, 2, 3]
    assert expand_layers(7, 12) == [7]
    assert expand_layers([9, "input", 2], 12) == [INPUT, 2, 9]  # sorted by depth
    assert expand_layers("all", 0) == [INPUT]


@pytest.mark.parametrize(
    "value, message",
    [
        (13, "encoders[0].layer: 13 is beyond AST's 12 blocks; allowed: input, 1..12, all"),
        (0, "encoders[0].layer: 0 is not a block (blocks count from 1; the cut before the first block is 'input')"),
        (True, "encoders[0].layer: True is not a layer; allowed: input, 1..12, all"),
        ("last", "encoders[0].layer: 'last' is not a layer"),
        ([3, 3], "encoders[0].layer: layer 3 is listed twice"),
        (["all"], "encoders[0].layer: 'all' stands alone"),
        ([], "encoders[0].layer: an empty list names no layer"),
    ],
)
def test_bad_layer_values_are_one_line(value, message):
    with pytest.raises(LayerError) as exc:
        expand_layers(value, 12, label="AST", setting="encoders[0].layer")
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_loading_a_layer_the_encoder_lacks_names_the_entry(torch_threads):
    with pytest.raises(SonievalError) as exc:
        enc_mod.load_encoder(spec("ast", layer=2), index=0)
    assert str(exc.value) == "encoders[0].layer: 2 is beyond AST (random-init)'s 1 block; allowed: input, 1, all"
    encoder = small("wavlm")  # loaded for all layers: embed() needs one named
    with pytest.raises(SonievalError, match=r"wavlm was loaded for 3 layers \(input, layer1, layer2\); name one layer"):
        encoder.embed(clip(encoder))
    with pytest.raises(SonievalError, match="wavlm was asked for 3 layers"):
        encoder.embedding_shape(80000, "all")
    with pytest.raises(SonievalError, match="beyond WavLM \\(random-init\\)'s 2 blocks"):
        encoder.embed_layers(clip(encoder), [1, 3])


def test_layer_labels_and_cache_keys():
    sha = "ab" * 32
    assert [layer_label(x) for x in (INPUT, 1, 12)] == ["input", "layer1", "layer12"]
    assert all(parse_layer_label(layer_label(x)) == x for x in (INPUT, 1, 12))
    with pytest.raises(LayerError):
        parse_layer_label("layer0")
    # input keeps the model's own key (caches from before layers stay valid); every block gets its own
    assert layer_model_key("ast-x-1234abcd-5s", INPUT) == "ast-x-1234abcd-5s"
    assert layer_model_key("ast-x-1234abcd-5s", 6) == "ast-x-1234abcd-5s@layer6"
    keys = {str(layer_cache_path("ast-x-1234abcd-5s", x, sha)) for x in (INPUT, 1, 6, 12)}
    assert len(keys) == 4 and str(layer_cache_path("k", 6, sha)) == f"k@layer6/{sha}.npy"
    with pytest.raises(LayerError, match="SHA-256"):
        layer_cache_path("k", 1, "abc")
    with pytest.raises(LayerError, match="folder name"):
        layer_model_key("a/b", 1)


# ----------------------------------------------------------------------------- geometry per layer


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_layer_has_its_documented_shape_and_time_axis(torch_threads, name):
    encoder = small(name)
    n = SECONDS * encoder.sample_rate
    assert encoder.layers("all") == [INPUT, *range(1, encoder.num_blocks + 1)]
    out = encoder.embed_layers(clip(encoder))
    assert list(out) == encoder.layers("all")
    for layer, emb in out.items():
        assert tuple(emb.shape) == (2, *encoder.embedding_shape(n, layer)) and torch.isfinite(emb).all()
        if layer in SHAPES[name]:
            assert tuple(emb.shape[1:]) == SHAPES[name][layer], layer
        axis = encoder.time_axis(n, layer)
        assert axis.grid[0] * axis.grid[1] == emb.shape[1]
        if layer in AXES[name]:
            grid, hop, first = AXES[name][layer]
            assert (
                axis.grid == grid and axis.hop_s == pytest.approx(hop) and axis.first_center_s == pytest.approx(first)
            )
    # an integer layer alone, and the encoder loaded for it, give the same tensor as the sweep
    k = encoder.num_blocks
    assert torch.allclose(encoder.embed(clip(encoder), layer=k), out[k], atol=1e-6)
    one = enc_mod.load_encoder(spec(name, layer=k))
    assert one.loaded_layers == (k,) and torch.allclose(one.embed(clip(encoder)), out[k], atol=1e-6)
    # the input cut from the sweep is the one the plain (default) path gives
    assert torch.allclose(enc_mod.load_encoder(spec(name)).embed(clip(encoder)), out[INPUT], atol=1e-6)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_block_k_is_transformers_hidden_state_k(torch_threads, name):
    encoder = small(name)
    audio, n = clip(encoder, batch=1), SECONDS * encoder.sample_rate
    out = encoder.embed_layers(audio)
    with torch.no_grad():
        if name == "clap":  # transformers gives stage outputs: the last block of each stage, before merging
            hidden = encoder.model(
                **encoder._model_inputs(audio), output_hidden_states=True, output_hidden_states_before_downsampling=True
            ).hidden_states
            ends = [sum(encoder.config.depths[: s + 1]) for s in range(len(encoder.config.depths))]
            pairs = [(INPUT, hidden[0])] + list(zip(ends, hidden[1:]))
            pairs = [(k, h.flatten(2).transpose(1, 2)) for k, h in pairs]
        else:
            hidden = encoder.model(**encoder._model_inputs(audio), output_hidden_states=True).hidden_states
            pairs = [(k, hidden[k]) for k in range(1, encoder.num_blocks + 1)]
    for layer, ref in pairs:
        ref = encoder._arrange(ref, layer, n)
        if name == "whisper" and layer == encoder.num_blocks:
            # transformers ties Whisper's last hidden state to the final layer norm's output; ours is before it
            assert not torch.allclose(out[layer], ref, atol=1e-3)
            with torch.no_grad():
                assert torch.allclose(encoder.model.layer_norm(out[layer]), ref, atol=1e-5)
            continue
        assert torch.allclose(out[layer], ref, atol=1e-5), layer


def test_one_forward_pass_for_all_layers_and_none_beyond_the_deepest(torch_threads):
    encoder = small("clap")  # 4 blocks
    calls = {"model": 0, "blocks": [0] * encoder.num_blocks}
    hooks = [encoder.model.register_forward_pre_hook(lambda m, a: calls.__setitem__("model", calls["model"] + 1))]
    for i, block in enumerate(encoder._blocks()):
        hooks.append(
            block.register_forward_pre_hook(lambda m, a, i=i: calls["blocks"].__setitem__(i, calls["blocks"][i] + 1))
        )
    try:
        encoder.embed_layers(clip(encoder), "all")
        assert calls == {"model": 1, "blocks": [1, 1, 1, 1]}
        encoder.embed_layers(clip(encoder), [INPUT, 2])
        assert calls == {"model": 2, "blocks": [2, 2, 1, 1]}  # stopped after block 2
        encoder.embed(clip(encoder), layer=INPUT)
        assert calls == {"model": 3, "blocks": [2, 2, 1, 1]}  # the input cut runs no block
    finally:
        for h in hooks:
            h.remove()


def test_capture_reports_a_layer_the_forward_never_reached():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    skipped = torch.nn.Linear(2, 2)  # registered as a block but never called
    got = capture_layers(
        lambda: net(torch.ones(1, 2)), [INPUT, 1], input_module=net[0], input_from=lambda o: o, blocks=[net[1]]
    )
    assert set(got) == {INPUT, 1}
    with pytest.raises(LayerError, match="did not reach layer"):
        capture_layers(
            lambda: net(torch.ones(1, 2)), [2], input_module=net[0], input_from=lambda o: o, blocks=[net[1], skipped]
        )


# ----------------------------------------------------------------------------- token layouts against the audio


def test_whisper_frame_j_is_centred_at_20_ms_times_j(torch_threads):
    """Silence for the first 2.5 s, noise after: frames whose receptive field ends before 2.5 s are the
    same silent frame; frames centred after it are not."""
    encoder = small("whisper")
    audio = torch.zeros(1, 5 * 16000)
    audio[0, 40000:] = torch.randn(40000, generator=torch.Generator().manual_seed(1)) * 0.1
    emb = encoder.embed(audio, layer=INPUT)[0]
    axis = encoder.time_axis(audio.shape[-1], INPUT)
    centres = [axis.first_center_s + j * axis.hop_s for j in range(axis.grid[1])]
    # receptive field: ±2 log-mel frames (±20 ms) of 25 ms windows around the centre
    silent = [j for j, c in enumerate(centres) if 0.05 < c < 2.5 - 0.035]
    sounding = [j for j, c in enumerate(centres) if c > 2.5 + 0.035]
    ref = emb[silent[0]]
    assert all(torch.allclose(emb[j], ref, atol=1e-5) for j in silent)
    assert not any(torch.allclose(emb[j], ref, atol=1e-3) for j in sounding)


def test_clap_input_tokens_are_frequency_major_on_the_unfolded_grid(torch_threads):
    """A change in the lowest 4 mel bins at 3.0-3.4 s changes only frequency row 0, at those times."""
    encoder = small("clap")
    inputs = encoder._model_inputs(clip(encoder, batch=1))
    n = SECONDS * encoder.sample_rate

    def tokens(feats):
        got = capture_layers(
            lambda: encoder.model(input_features=feats),
            [INPUT],
            input_module=encoder._input_module(),
            input_from=encoder._input_from,
            blocks=encoder._blocks(),
        )
        return encoder._arrange(got[INPUT], INPUT, n)[0]

    base = inputs["input_features"]
    changed = base.clone()
    changed[0, 0, 300:340, 0:4] += 5.0  # log-mel frames (10 ms) 300..339, mel bins 0..3
    with torch.no_grad():
        diff = (tokens(changed) - tokens(base)).abs().sum(-1)
    axis = encoder.time_axis(n, INPUT)
    f_rows, t_cols = axis.grid
    hit = torch.nonzero(diff.reshape(f_rows, t_cols) > 1e-4).tolist()
    assert hit and {f for f, _ in hit} == {0}
    times = [axis.first_center_s + t * axis.hop_s for _, t in hit]
    assert min(times) > 2.9 and max(times) < 3.5  # the bicubic stretch spreads by about a column


def test_clap_arrangement_unfolds_each_stage():
    """Row-major tokens of the folded image (row = chunk·F + f, col = w) → frequency-major f·T + (chunk·W + w)."""
    encoder = small("clap")
    enc = encoder.audio_encoder
    n = 10 * encoder.sample_rate  # the whole window: nothing cut
    for layer in [INPUT, 2, 3, 4]:
        stage = encoder._stage(layer)
        rows, cols = enc.input_resolutions[stage]
        f_rows = rows // enc.freq_ratio
        r, w = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        chunk, f = r // f_rows, r % f_rows
        code = torch.stack([f, chunk * cols + w], -1).reshape(1, rows * cols, 2).float()
        out = encoder._arrange(code, layer, n)[0]
        t_cols = enc.freq_ratio * cols
        expect = torch.stack(torch.meshgrid(torch.arange(f_rows), torch.arange(t_cols), indexing="ij"), -1)
        assert torch.equal(out, expect.reshape(-1, 2).float()), layer


# ----------------------------------------------------------------------------- loading and inputs


@pytest.mark.parametrize("name", ["hubert", "wav2vec2", "wavlm"])
def test_frame_encoders_normalise_as_the_checkpoint_says(torch_threads, tmp_path, name):
    """The same rule for every frame encoder: the folder's preprocessor config decides; the class default
    applies only without one."""
    import transformers

    cls = enc_mod.encoder_class(name)
    model = getattr(transformers, cls.model_class_name)(cls.small_config())
    audio = clip(small("hubert"), batch=1) * 7 + 0.3
    for flag in (True, False):
        folder = tmp_path / f"{name}-{flag}"
        model.save_pretrained(folder)
        transformers.Wav2Vec2FeatureExtractor(do_normalize=flag).save_pretrained(folder)
        encoder = enc_mod.load_encoder(spec(name, size="full", model=str(folder), layer=1))
        assert encoder.describe()["do_normalize"] is flag
        values = encoder._model_inputs(audio)["input_values"]
        if flag:
            assert abs(float(values.mean())) < 1e-4 and float(values.std()) == pytest.approx(1.0, abs=1e-3)
        else:
            assert torch.equal(values, audio)
    assert small(name).describe()["do_normalize"] is cls.default_do_normalize


@pytest.mark.parametrize("name, top_class", [("whisper", "WhisperForConditionalGeneration"), ("clap", "ClapModel")])
def test_published_checkpoint_formats_load_and_keep_only_the_audio_encoder(torch_threads, tmp_path, name, top_class):
    import transformers

    cls = enc_mod.encoder_class(name)
    torch.manual_seed(1)
    top = getattr(transformers, top_class)(cls.small_config()).eval()
    top.save_pretrained(tmp_path / name)
    encoder = enc_mod.load_encoder(spec(name, size="full", model=str(tmp_path / name), layer="all"))
    assert not encoder.random_init
    audio = clip(encoder, batch=1)
    with torch.no_grad():
        reference = top.model.encoder if name == "whisper" else top.audio_model
        hidden = reference(**encoder._model_inputs(audio), output_hidden_states=True).hidden_states
    if name == "whisper":
        assert torch.allclose(encoder.embed(audio, layer=1), hidden[1][:, :250], atol=1e-5)
    else:  # stage 0's output after merging is not a block output; compare the input cut
        assert torch.allclose(
            encoder.embed(audio, layer=INPUT),
            encoder._arrange(hidden[0].flatten(2).transpose(1, 2), INPUT, audio.shape[-1]),
            atol=1e-5,
        )
    kept = {n for n, _ in encoder.model.named_modules()}
    assert not any(part in n for n in kept for part in ("decoder", "text_model"))


def test_missing_block_weights_are_refused_for_that_layer_only(torch_threads, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import WavLMModel

    folder = tmp_path / "wavlm"
    WavLMModel(enc_mod.WavLMEncoder.small_config()).save_pretrained(folder)
    weights_file = next(folder.glob("*.safetensors"))
    state = {k: v for k, v in load_file(weights_file).items() if not k.startswith("encoder.layers.1.")}
    save_file(state, weights_file, metadata={"format": "pt"})
    encoder = enc_mod.load_encoder(spec("wavlm", size="full", model=str(folder), layer=1))  # blocks 1 is there
    audio = clip(encoder, batch=1)
    assert encoder.embed(audio).shape == (1, 249, 64)
    with pytest.raises(SonievalError) as exc:
        encoder.embed(audio, layer=2)
    assert "embedding up to layer2" in str(exc.value) and "encoder.layers.1." in str(exc.value)
    with pytest.raises(SonievalError, match="encoder.layers.1."):
        enc_mod.load_encoder(spec("wavlm", size="full", model=str(folder), layer="all"))


@pytest.mark.parametrize("name, seconds, window", [("whisper", 31, "30 s"), ("clap", 11, "10 s")])
def test_clips_longer_than_the_input_window_are_refused(torch_threads, name, seconds, window):
    encoder = small(name)
    with pytest.raises(SonievalError) as exc:
        encoder.embed(torch.zeros(1, seconds * encoder.sample_rate), layer=INPUT)
    assert "longer than" in str(exc.value) and window in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(SonievalError, match="clip_seconds"):
        encoder.time_axis(seconds * encoder.sample_rate, INPUT)


@pytest.mark.parametrize(
    "name, hub_id",
    [("wavlm", "microsoft/wavlm-base-plus"), ("whisper", "openai/whisper-base"), ("clap", "laion/clap-htsat-unfused")],
)
def test_new_encoders_offline_without_weights_are_one_clear_line(monkeypatch, name, hub_id):
    import huggingface_hub

    def refuse(*a, **k):
        raise huggingface_hub.errors.LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(WeightsUnavailable) as exc:
        enc_mod.load_encoder(spec(name, size="full"), index=2)
    msg = str(exc.value)
    assert "\n" not in msg and hub_id in msg and "encoders[2].model: /local/dir" in msg
