"""Models: size presets, local checkpoint checks, and the sparse-prediction MLM model.

:class:`SparseBertForMaskedLM` has exactly the parameters of ``transformers.BertForMaskedLM``; it
only runs the MLM head (transform + vocabulary decoder) on the positions that carry a label,
which is ~15% of tokens, instead of all of them (as Cramming, MosaicBERT and NVIDIA's BERT do).
It saves as ``BertForMaskedLM`` so ``pipeline("fill-mask")`` loads the output unchanged.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from .errors import UsageError
from .loading import load_model, open_checkpoint
from .schemas import PRESETS


def preset_config(model_cfg, vocab_size: int, pad_token_id: int) -> BertConfig:
    if model_cfg.preset not in PRESETS:
        raise UsageError(f"--preset {model_cfg.preset}: unknown; choose one of {', '.join(PRESETS)}")
    p = PRESETS[model_cfg.preset]
    hidden = model_cfg.hidden_size or p["hidden_size"]
    layers = model_cfg.num_layers or p["num_layers"]
    heads = model_cfg.num_heads or max(2, hidden // 64)
    if hidden % heads:
        raise UsageError(f"model.hidden_size {hidden} is not divisible by model.num_heads {heads}")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=model_cfg.intermediate_size or 4 * hidden,
        max_position_embeddings=model_cfg.max_position_embeddings,
        hidden_dropout_prob=model_cfg.dropout,
        attention_probs_dropout_prob=model_cfg.dropout,
        pad_token_id=pad_token_id,
        type_vocab_size=2,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _DecoderCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T + bias`` against ``target`` (the sparse MLM loss).

    The log-probabilities are turned in place into the gradient of the loss with respect to the
    scores, ``(softmax - onehot) / n``, and kept for the backward pass, which is then two matrix
    products and a sum: no zero-filled one-hot gradient, no log-softmax backward, two ``[n, vocab]``
    buffers instead of four.  Same value and gradients as
    ``cross_entropy(linear(hidden, weight, bias), target)`` up to float rounding.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target):
        scores = torch.addmm(bias, hidden, weight.t()) if bias is not None else torch.mm(hidden, weight.t())
        n = scores.size(0)
        rows = torch.arange(n, device=scores.device)
        logp = torch.log_softmax(scores, dim=1)
        del scores
        loss = -logp[rows, target].sum() / n
        # softmax / n = exp(log p - log n), written over the log-probabilities
        grad_scores = logp.sub_(math.log(n)).exp_()
        grad_scores[rows, target] -= 1.0 / n
        ctx.save_for_backward(hidden, weight, grad_scores)
        ctx.has_bias = bias is not None
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, grad_scores = ctx.saved_tensors
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_hidden = torch.mm(grad_scores, weight).mul_(grad_loss)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.mm(grad_scores.t(), hidden).mul_(grad_loss)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_scores.sum(0).mul_(grad_loss)
        return grad_hidden, grad_weight, grad_bias, None


class SparseBertForMaskedLM(BertForMaskedLM):
    """BertForMaskedLM whose training/eval loss runs the MLM head only where ``labels != -100``.

    Without labels it behaves exactly like the parent (full logits).  With labels it returns the
    loss and, in eval mode, as ``logits`` the argmax prediction at each masked position (``-100``
    elsewhere), from which the evaluation loop counts masked-token accuracy.
    """

    # The loss is a mean over this batch's masked tokens; let the Trainer handle accumulation.
    accepts_loss_kwargs = False

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, **kwargs):
        if labels is None:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs)
        kwargs.pop("num_items_in_batch", None)
        outputs = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs)
        hidden = outputs[0]
        flat_labels = labels.reshape(-1)
        idx = (flat_labels != -100).nonzero(as_tuple=True)[0]
        picked = hidden.reshape(-1, hidden.size(-1)).index_select(0, idx)
        target = flat_labels.index_select(0, idx)
        head = self.cls.predictions
        decoder = head.decoder
        if (self.training and idx.numel() > 0 and torch.is_grad_enabled() and picked.dtype == torch.float32
                and decoder.weight.dtype == torch.float32 and not torch.is_autocast_enabled(picked.device.type)
                and type(decoder) is nn.Linear):
            # training in float32: decoder + loss fused, the [n, vocab] scores are never kept twice
            loss = _DecoderCrossEntropy.apply(head.transform(picked), decoder.weight, decoder.bias, target)
            return MaskedLMOutput(loss=loss, logits=None)
        scores = self.cls(picked)
        if idx.numel() == 0:
            loss = scores.sum() * 0.0 + hidden.sum() * 0.0
        else:
            loss = nn.functional.cross_entropy(scores.float(), target)
        preds = None
        if not self.training:
            # per-position predicted ids (-100 where unmasked): shaped like the batch, so the
            # Trainer can gather it across processes; no vocabulary-sized logits are kept
            preds = torch.full_like(flat_labels, -100)
            preds[idx] = scores.argmax(-1)
            preds = preds.view_as(labels)
        return MaskedLMOutput(loss=loss, logits=preds)

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        # Saved as the stock class: the weights are BertForMaskedLM's, so every HF tool loads them.
        cfg_path = Path(save_directory) / "config.json"
        if cfg_path.exists():
            data = json.loads(cfg_path.read_text(encoding="utf-8"))
            data["architectures"] = ["BertForMaskedLM"]
            cfg_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# Dropout keys of the BERT family (BERT, RoBERTa, ELECTRA, ...), and of DistilBERT.
_DROPOUT_KEYS = (("hidden_dropout_prob", "attention_probs_dropout_prob"), ("dropout", "attention_dropout"))


def dropout_overrides(config, dropout: float | None, flag: str = "--dropout") -> dict:
    """Config keyword arguments for ``from_pretrained`` that set the hidden and attention dropout."""
    if dropout is None:
        return {}
    for keys in _DROPOUT_KEYS:
        if all(hasattr(config, k) for k in keys):
            return dict.fromkeys(keys, dropout)
    raise UsageError(f"{flag} {dropout}: the {getattr(config, 'model_type', '?')} model config has no dropout "
                     "setting bertkit knows; leave --dropout out")


def check_compatible(config, tokenizer, max_seq_length: int | None, flag: str = "--model") -> None:
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise UsageError(f"{flag}: the tokenizer has {len(tokenizer):,} tokens "
                         f"but the model's vocabulary has {vocab:,}; "
                         "use the tokenizer the model was trained with")
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_seq_length and max_pos and max_seq_length > max_pos:
        raise UsageError(f"--max-seq-length {max_seq_length} is above the model's {max_pos} positions; "
                         f"use --max-seq-length {max_pos} or less")


def load_mlm_model(path: Path, sparse: bool = True):
    return load_model(SparseBertForMaskedLM if sparse else BertForMaskedLM, path, "masked-LM")


def new_mlm_model(config: BertConfig, sparse: bool = True):
    cls = SparseBertForMaskedLM if sparse else BertForMaskedLM
    return cls(config)


@dataclass
class Checkpoint:
    """A checkpoint to fine-tune: its dir, config and tokenizer."""

    path: Path
    config: Any
    tokenizer: Any


def open_checkpoint_for(model: str | None, allow_pickle: bool, max_seq_length: int) -> Checkpoint:
    """The checked model dir of a fine-tuning command, its config and tokenizer, compatible with
    ``max_seq_length`` (one usage error naming --model otherwise)."""
    mdir, config, tok = open_checkpoint(model, allow_pickle)
    check_compatible(config, tok, max_seq_length, "--model")
    return Checkpoint(mdir, config, tok)


def new_parameters(loading: dict) -> set[str]:
    """Names of the parameters ``from_pretrained`` initialised afresh: missing from the checkpoint, or
    held there with another shape (another number of labels)."""
    return set(loading.get("missing_keys") or []) | {k[0] if isinstance(k, (tuple, list)) else k
                                                     for k in loading.get("mismatched_keys") or []}


def init_head_at_prior(model: nn.Module, new: set[str], bias: list[float]) -> str | None:
    """Set the output bias of a newly initialised head (``new``: its parameter names) to ``bias``;
    a head loaded from the checkpoint is left as trained.  Returns the parameter set, if any."""
    # the head's output layer comes last and has one bias entry per label (BERT: classifier.bias,
    # RoBERTa-style heads: classifier.out_proj.bias)
    found = [(n, p) for n, p in model.named_parameters()
             if n in new and n.endswith("bias") and tuple(p.shape) == (len(bias),)]
    if not found:
        return None
    name, param = found[-1]
    with torch.no_grad():
        param.copy_(torch.tensor(bias, dtype=param.dtype))
    return name


def weighted_loss(problem: str, weights: list[float] | None):
    """A class-weighted loss for the Trainer's ``compute_loss_func`` (None: the model's own loss)."""
    if weights is None:
        return None
    w = torch.tensor(weights)

    def loss_fn(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        if problem == "multi":
            return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(),
                                                                  pos_weight=w.to(logits.device))
        return nn.functional.cross_entropy(logits.float(), labels.long(), weight=w.to(logits.device))

    return loss_fn




def _cls_only_layer_forward(layer, hidden_states, attention_mask=None, encoder_hidden_states=None,
                            encoder_attention_mask=None, cache=None, **kwargs):
    """``BertLayer.forward`` for the last layer of a classifier: keys and values from every position,
    the query, attention output and feed-forward for position 0 ([CLS]) alone.  Returns (batch, 1,
    hidden): the pooler reads ``[:, 0]``, so the logits and gradients are those of the full layer."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    sa = layer.attention.self
    first = hidden_states[:, :1]
    batch, length, _ = hidden_states.shape
    d = sa.attention_head_size
    query = sa.query(first).view(batch, 1, -1, d).transpose(1, 2)
    key = sa.key(hidden_states).view(batch, length, -1, d).transpose(1, 2)
    value = sa.value(hidden_states).view(batch, length, -1, d).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] != 1:
        attention_mask = attention_mask[:, :, :1, :]  # the [CLS] query's row of the (batch, 1, q, k) mask
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager_attention_forward)
    out, _ = attend(sa, query, key, value, attention_mask, dropout=sa.dropout.p if sa.training else 0.0,
                    scaling=sa.scaling, **kwargs)
    attention_output = layer.attention.output(out.reshape(batch, 1, -1).contiguous(), first)
    return layer.feed_forward_chunk(attention_output)


def cls_only_last_layer(model: nn.Module) -> bool:
    """Make a BERT sequence classifier compute its last layer for [CLS] alone.

    ``BertForSequenceClassification`` classifies from the pooler, which reads only position 0 of the
    last layer, yet transformers runs that layer for every position.  Its feed-forward, query and
    attention output projections are 10/12 of a layer's matrix work, so on MiniLM-L6 (6 layers) this
    drops ~14% of the forward and backward work with the same logits and gradients
    (tests/test_modeling.py checks both); on the 2-layer tiny preset, ~40%.  Only the instance's
    ``forward`` is replaced: parameters, state dict and the saved model are unchanged.  Models of other
    shapes (no pooler, a decoder, cross-attention, another architecture) are left alone: returns
    whether the change applied."""
    from transformers.models.bert.modeling_bert import BertLayer

    bert = getattr(model, "bert", None)
    config = getattr(model, "config", None)
    if (bert is None or config is None or getattr(bert, "pooler", None) is None
            or type(model).__name__ != "BertForSequenceClassification"
            or config.is_decoder or getattr(config, "add_cross_attention", False)
            or config._attn_implementation not in ("sdpa", "eager")):
        return False
    last = bert.encoder.layer[-1]
    if type(last) is not BertLayer:
        return False
    last.forward = types.MethodType(_cls_only_layer_forward, last)
    return True
