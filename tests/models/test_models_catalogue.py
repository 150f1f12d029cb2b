"""One catalogue declares each encoder (sonieval.models.catalogue): the encoder registry, the metric
embeddings, the fine-tuning heads and the CLI read its cards, and no other module restates a hub id."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sonieval.models.catalogue import CARDS, encoder_names, finetune_heads, metric_embedding_names

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", encoder_names())
def test_every_card_names_the_class_that_registers_under_it(name):
    from sonieval.models.encoders import encoder_class

    card = CARDS[name]
    cls = encoder_class(name)
    assert f"{cls.__module__}:{cls.__name__}" == card.implementation
    assert cls.card is card and cls.display_name == card.display_name and cls.default_model_id == (card.hub_id or "")


def test_hub_ids_are_written_once():
    """The hub ids live on the cards; the encoder classes and the metric embeddings read them there."""
    for path in ("models/encoders.py", "models/window_encoders.py", "metrics/embeddings.py", "pipeline/finetune.py"):
        text = (ROOT / "sonieval" / path).read_text()
        restated = [c.hub_id for c in CARDS.values() if c.hub_id and f'"{c.hub_id}"' in text]
        assert not restated, f"{path} restates {restated}"


def test_metric_embeddings_are_the_cards_that_say_so():
    from sonieval.metrics import embeddings

    transformers_backends = {
        name for name, cls in embeddings._REGISTRY.items() if issubclass(cls, embeddings.TransformersEmbedding)
    }
    assert transformers_backends == set(metric_embedding_names())
    for name in metric_embedding_names():
        assert embeddings.load_embedding(name).hub_id == CARDS[name].hub_id


def test_finetune_heads_and_cli_choices_come_from_the_cards():
    from sonieval.commands import finetune as finetune_cmd
    from sonieval.commands import score as score_cmd
    from sonieval.pipeline.finetune import CLASSIFIERS

    assert (
        CLASSIFIERS
        == finetune_heads()
        == {
            "ast": "ASTForAudioClassification",
            "hubert": "HubertForSequenceClassification",
            "wav2vec2": "Wav2Vec2ForSequenceClassification",
        }
    )
    assert finetune_cmd.FINETUNABLE == list(finetune_heads())
    assert f"others: {', '.join(metric_embedding_names())} (transformers" in score_cmd.DESCRIPTION


def test_the_cli_reads_the_catalogue_without_importing_torch():
    code = "import sys, sonieval.commands.finetune, sonieval.commands.score; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
