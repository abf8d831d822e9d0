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


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_cls_only_last_layer_gives_the_same_logits_and_gradients(attn):
    import copy

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from bertkit.modeling import cls_only_last_layer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=3, attn_implementation=attn)
    full = BertForSequenceClassification(config).eval()
    fast = copy.deepcopy(full)
    assert cls_only_last_layer(fast)
    ids = torch.randint(5, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0  # padding changes [CLS]'s attention: the mask must reach the last layer
    mask[1, 7:] = 0
    labels = torch.tensor([0, 2, 1])
    a = full(input_ids=ids, attention_mask=mask, labels=labels)
    b = fast(input_ids=ids, attention_mask=mask, labels=labels)
    assert torch.allclose(a.logits, b.logits, atol=1e-6)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(full.named_parameters(), fast.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    assert list(fast.state_dict()) == list(full.state_dict())  # saves as a plain BERT classifier


def test_cls_only_last_layer_leaves_other_models_alone():
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    from bertkit.modeling import cls_only_last_layer

    small = dict(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    assert not cls_only_last_layer(BertForMaskedLM(BertConfig(**small)))
    decoder = BertForSequenceClassification(BertConfig(**small, is_decoder=True))
    assert not cls_only_last_layer(decoder)
