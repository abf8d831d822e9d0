"""Model helpers: head initialisation, dropout overrides."""

from __future__ import annotations

import pytest


def test_only_a_new_head_starts_at_the_prior(mlm_model, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from bertkit.modeling import init_head_at_prior, new_parameters

    model, info = AutoModelForSequenceClassification.from_pretrained(str(mlm_model), num_labels=3,
                                                                     output_loading_info=True)
    # an MLM checkpoint has neither pooler nor classifier
    assert {"classifier.bias", "classifier.weight", "bert.pooler.dense.weight"} <= new_parameters(info)
    init_head_at_prior(model, new_parameters(info), [-1.0, 0.5, 0.5])
    assert model.classifier.bias.tolist() == pytest.approx([-1.0, 0.5, 0.5])
    model.save_pretrained(tmp_path / "cls")
    again, info = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "cls"), output_loading_info=True)
    assert not new_parameters(info)
    init_head_at_prior(again, new_parameters(info), [0.0, 0.0, 0.0])  # the head was loaded: kept as trained
    assert torch.equal(again.classifier.bias, model.classifier.bias)


def test_dropout_overrides_per_config_family():
    from transformers import BertConfig, DistilBertConfig, GPT2Config

    from bertkit.errors import UsageError
    from bertkit.modeling import dropout_overrides

    assert dropout_overrides(BertConfig(), None) == {}
    assert dropout_overrides(BertConfig(), 0.0) == {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    assert dropout_overrides(DistilBertConfig(), 0.2) == {"dropout": 0.2, "attention_dropout": 0.2}
    with pytest.raises(UsageError, match="--dropout 0.2: the gpt2 model config"):
        dropout_overrides(GPT2Config(), 0.2)
