"""Encoders whose input window is padded far beyond a 5 s clip: Whisper's encoder (30 s) and CLAP's
audio encoder (10 s). Every layer is cut to the frames that hold the clip; longer clips are refused.

Declared in :mod:`sonieval.models.catalogue` (whose cards name these classes: :func:`sonieval.models.encoders.encoder_class`
imports this module when one is used); layers as in :mod:`sonieval.models.encoders`:
``input`` is the cut before the transformer, block ``k`` the output of transformer block ``k``.
Geometry for a 5 s clip (published configs):

- ``whisper`` (``openai/whisper-base``, 6 blocks, d 512): WhisperFeatureExtractor pads every clip
  to 30 s → log-mel [80, 3000] (hop 10 ms, centred frames); the encoder's conv stem (k3 s1, k3 s2,
  GELU) gives 1500 frames at 50 Hz, frame j centred at 0.02·j s. ``input`` = the conv stem output
  before the sinusoidal positions; block k = ``layers[k-1]``'s output (for k = 6 without the final
  ``layer_norm``; transformers' ``hidden_states[6]`` has it). Every layer is cut to the frames whose
  centre lies in the clip: 5 s → the first 250 of 1500 ([250, 512]); the attention still sees the
  whole padded 30 s, as Whisper always does, but the 1250 frames of padding would make the gate
  learn silence and have no counterpart in the codec's 5 s latent. Time axis (1 × 250), hop 0.02 s,
  first centre 0. Clips longer than 30 s are refused.
- ``clap`` (``laion/clap-htsat-unfused``, audio tower ClapAudioModel/HTSAT, 12 Swin blocks in 4
  stages of 2, 2, 6, 2): ClapFeatureExtractor at 48 kHz, 64-bin log-mel, 10 ms hop, clips repeat-padded
  to 10 s → [1001 frames, 64]; HTSAT stretches time to 1024 frames (bicubic) and folds it into a
  256 × 256 image of 4 time chunks stacked along frequency (row = chunk·64 + mel bin); 4×4 patches
  → 64 × 64 tokens; each stage after the first merges 2 × 2 tokens. Unfolded, stage s (0..3) is a
  frequency × time grid of (16 / 2^s) × (256 / 2^s) tokens of width 96·2^s, hop 0.039·2^s s over the
  10 s window. ``input`` = the patch embeddings (stage-0 grid, 16 × 256 × 96); block k = the output of
  Swin block k (blocks 1–2 stage 0, 3–4 stage 1, 5–10 stage 2, 11–12 stage 3), before the stage's
  patch merging, on its stage's grid. sonieval re-orders the tokens frequency-major (f·T + t, as AST)
  and cuts time to the columns whose centre lies in the clip: 5 s → 16 × 128 (input, blocks 1–2,
  [2048, 96]), 8 × 64 ([512, 192]), 4 × 32 ([128, 384]), 2 × 16 ([32, 768]). The repeat-padded
  second half would repeat the clip. Exposed: every block; transformers' ``hidden_states`` hold
  only the four stage outputs (after patch merging by default; with
  ``output_hidden_states_before_downsampling`` they are blocks 2, 4, 10 and 12). Clips longer than
  10 s are refused (the extractor would crop them at random).
"""

from __future__ import annotations

import math

import torch

from sonieval.models.encoders import EncoderError, TransformersEncoder, load_feature_extractor, register_encoder
from sonieval.models.gates import TimeAxis
from sonieval.models.layers import INPUT, Layer

# ----------------------------------------------------------------------------- Whisper


@register_encoder("whisper")
class WhisperEncoder(TransformersEncoder):
    """Whisper's encoder: conv-stem features or block outputs, 50 Hz, cut to the clip ([250, 512] for 5 s)."""

    model_class_name = "WhisperModel"
    base_prefix = "encoder."

    @classmethod
    def small_config(cls):
        from transformers import WhisperConfig

        # Real front end (80 mel bins, 3000 frames, conv stem k3 s1 + k3 s2 → 1500 positions); narrow, shallow,
        # and a tiny decoder (dropped at load) whose special token ids fit its tiny vocabulary.
        return WhisperConfig(
            num_mel_bins=80,
            max_source_positions=1500,
            d_model=64,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=128,
            vocab_size=64,
            max_target_positions=16,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
            decoder_start_token_id=1,
            suppress_tokens=None,
            begin_suppress_tokens=None,
        )

    @classmethod
    def base_of(cls, model):
        return model.encoder  # the decoder is not needed (and is freed)

    @classmethod
    def feature_extractor_for(cls, config, folder):
        return load_feature_extractor("WhisperFeatureExtractor", folder, feature_size=config.num_mel_bins)

    def _keep(self, model) -> None:
        super()._keep(model)
        fe, frames = self.feature_extractor, model.config.max_source_positions * 2
        if fe.nb_max_frames != frames or fe.feature_size != model.config.num_mel_bins:
            raise EncoderError(
                f"the feature extractor gives [{fe.feature_size}, {fe.nb_max_frames}] log-mel frames, the "
                f"model takes [{model.config.num_mel_bins}, {frames}]",
                path=self.folder,
                hint="use the checkpoint's own preprocessor_config.json",
            )
        self.max_seconds = fe.n_samples / fe.sampling_rate

    @property
    def num_blocks(self) -> int:
        return int(self.config.encoder_layers)

    @property
    def frame_hop_s(self) -> float:
        return 2 * self.feature_extractor.hop_length / self.sample_rate  # conv2 has stride 2

    def _frames(self, n_samples: int) -> int:
        """Encoder frames whose centre (0.02·j s) lies in the clip."""
        hop = 2 * self.feature_extractor.hop_length
        return min(math.ceil(n_samples / hop), self.config.max_source_positions)

    def _shape(self, n_samples: int, layer: Layer) -> tuple[int, int]:
        return self._frames(n_samples), self.config.d_model

    def _axis(self, n_samples: int, layer: Layer) -> TimeAxis:
        # log-mel frame m is centred at m·10 ms (centred STFT); encoder frame j at mel frame 2j
        return TimeAxis((1, self._frames(n_samples)), self.frame_hop_s, 0.0)

    def _model_inputs(self, audio):
        feats = self.feature_extractor([a.numpy() for a in audio], sampling_rate=self.sample_rate, return_tensors="pt")
        return {"input_features": feats["input_features"].to(self.device)}

    def _input_module(self):
        return self.model.conv2

    def _input_from(self, output):
        return torch.nn.functional.gelu(output).permute(0, 2, 1)  # as WhisperEncoder.forward, before the positions

    def _blocks(self):
        return list(self.model.layers)

    def _modules_for(self, depth: int):
        mods = [self.model.conv1, self.model.conv2]
        return mods if depth == 0 else [*mods, self.model.embed_positions, *self._blocks()[:depth]]

    def _arrange(self, hidden, layer, n_samples):
        return hidden[:, : self._frames(n_samples)]


# ----------------------------------------------------------------------------- CLAP


@register_encoder("clap")
class ClapEncoder(TransformersEncoder):
    """CLAP's audio encoder (HTSAT Swin): patch embeddings or Swin block outputs, each on its stage's
    frequency × time grid, frequency-major, cut to the clip (see the module docstring)."""

    model_class_name = "ClapModel"
    base_prefix = "audio_model."
    sample_rate = 48_000

    @classmethod
    def small_config(cls):
        from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

        # Real front end and grids (64 mel bins, spec_size 256, 4×4 patches, four stages, window 8); one block
        # per stage, narrow. The text tower (dropped at load) is tiny.
        audio = ClapAudioConfig(
            spec_size=256,
            num_mel_bins=64,
            patch_size=4,
            patch_stride=(4, 4),
            window_size=8,
            depths=[1, 1, 1, 1],
            num_attention_heads=[1, 2, 2, 4],
            patch_embeds_hidden_size=16,
            hidden_size=128,
            projection_dim=16,
            projection_hidden_size=32,
        )
        text = ClapTextConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=1,
            intermediate_size=16,
            projection_dim=16,
            vocab_size=64,
        )
        return ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)

    @classmethod
    def base_of(cls, model):
        return model.audio_model  # ClapAudioModel; the text tower and projections are freed

    @classmethod
    def feature_extractor_for(cls, config, folder):
        audio = getattr(config, "audio_config", config)
        # laion/clap-htsat-unfused's own config: one crop ("rand_trunc"), repeat-padding to 10 s
        return load_feature_extractor(
            "ClapFeatureExtractor",
            folder,
            feature_size=audio.num_mel_bins,
            truncation="fusion" if audio.enable_fusion else "rand_trunc",
            padding="repeatpad",
        )

    def _keep(self, model) -> None:
        super()._keep(model)
        enc = model.audio_encoder
        self.audio_encoder = enc
        self.stage_of_block = [s for s, stage in enumerate(enc.layers) for _ in stage.blocks]
        fe = self.feature_extractor
        self.max_seconds = fe.nb_max_samples / fe.sampling_rate
        self.sample_rate = int(fe.sampling_rate)

    @property
    def num_blocks(self) -> int:
        return int(sum(self.config.depths))

    # ------------------------------------------------------------------ geometry
    def _stage(self, layer: Layer) -> int:
        return 0 if layer == INPUT else self.stage_of_block[int(layer) - 1]

    def _grid(self, stage: int) -> tuple[int, int, int]:
        """(frequency rows, time columns over the whole window, width) of a stage's tokens."""
        enc = self.audio_encoder
        rows, cols = enc.input_resolutions[stage]
        return rows // enc.freq_ratio, cols * enc.freq_ratio, int(self.config.patch_embeds_hidden_size * 2**stage)

    def _column_s(self, stage: int) -> tuple[float, float]:
        """(hop, first centre) in seconds of a stage's time columns."""
        enc, fe = self.audio_encoder, self.feature_extractor
        stretched = enc.spec_size * enc.freq_ratio  # time frames after the bicubic stretch (1024)
        frames = fe.nb_max_samples // fe.hop_length + 1  # log-mel frames of the window (1001, centred)
        per = (frames - 1) / (stretched - 1) * fe.hop_length / fe.sampling_rate  # s per stretched frame
        width = enc.patch_stride[1] * 2**stage  # stretched frames per column
        return width * per, (width - 1) / 2 * per

    def _columns(self, n_samples: int, stage: int) -> int:
        """Time columns whose centre lies in the clip."""
        hop, first = self._column_s(stage)
        return max(1, min(self._grid(stage)[1], math.ceil((n_samples / self.sample_rate - first) / hop)))

    def _shape(self, n_samples: int, layer: Layer) -> tuple[int, int]:
        stage = self._stage(layer)
        f, _, width = self._grid(stage)
        return f * self._columns(n_samples, stage), width

    def _axis(self, n_samples: int, layer: Layer) -> TimeAxis:
        stage = self._stage(layer)
        hop, first = self._column_s(stage)
        return TimeAxis((self._grid(stage)[0], self._columns(n_samples, stage)), hop, first)

    # ------------------------------------------------------------------ forward
    def _model_inputs(self, audio):
        feats = self.feature_extractor([a.numpy() for a in audio], sampling_rate=self.sample_rate, return_tensors="pt")
        out = {"input_features": feats["input_features"].to(self.device)}
        if self.config.enable_fusion:
            out["is_longer"] = feats["is_longer"].to(self.device)
        return out

    def _input_module(self):
        return self.audio_encoder.patch_embed

    def _blocks(self):
        return [block for stage in self.audio_encoder.layers for block in stage.blocks]

    def _modules_for(self, depth: int):
        enc = self.audio_encoder
        mods = [enc.batch_norm, enc.patch_embed]
        if depth > 0:
            stage = self._stage(depth)
            mods += self._blocks()[:depth] + [enc.layers[s].downsample for s in range(stage)]
        return mods

    def _arrange(self, hidden, layer, n_samples):
        """[B, rows·cols, C] row-major over the folded image (row = chunk·F + f) → frequency-major [B, F·T, C]."""
        stage = self._stage(layer)
        enc = self.audio_encoder
        f, _, _ = self._grid(stage)
        b, _, c = hidden.shape
        cols = enc.input_resolutions[stage][1]
        grid = (
            hidden.reshape(b, enc.freq_ratio, f, cols, c).permute(0, 2, 1, 3, 4).reshape(b, f, enc.freq_ratio * cols, c)
        )
        keep = self._columns(n_samples, stage)
        return grid[:, :, :keep].reshape(b, f * keep, c)
