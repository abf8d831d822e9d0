"""Sparse MLM head and MLM collator: fast CPU checks on tiny configs."""

from __future__ import annotations

import json

import pytest
import torch

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "unbelievable transformations happen unexpectedly in wonderland",
    "tokenization of uncommon words produces continuation pieces",
    "a small model learns masked language modelling quickly",
    "pretraining encoders needs lots of unlabelled text",
    "the dog sleeps while the fox runs around the garden",
]


@pytest.fixture(scope="module")
def tok():
    from bertkit.tokenization import train_wordpiece

    return train_wordpiece(iter([SENTENCES]), vocab_size=100, lowercase=True, min_frequency=1)


def tiny_config(tok, dropout: float = 0.0):
    from transformers import BertConfig

    return BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout, pad_token_id=tok.pad_token_id, type_vocab_size=2)


def make_pair(tok):
    from transformers import BertForMaskedLM

    from bertkit.modeling import SparseBertForMaskedLM

    torch.manual_seed(0)
    sparse = SparseBertForMaskedLM(tiny_config(tok))
    dense = BertForMaskedLM(tiny_config(tok))
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


def mlm_batch(tok, seed: int = 0, n: int = 6, probability: float = 0.3):
    from bertkit.masking import MLMCollator

    enc = tok([SENTENCES[i % len(SENTENCES)] + " " + SENTENCES[(i * 5 + 1) % len(SENTENCES)] for i in range(n)])
    coll = MLMCollator(tok, probability)
    coll.generator = torch.Generator().manual_seed(seed)
    return coll([{"input_ids": ids} for ids in enc["input_ids"]])


# --------------------------------------------------------------------------------------------
# SparseBertForMaskedLM
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 0.25])  # 0.25: the Trainer divides the loss under gradient accumulation
def test_sparse_loss_and_gradients_equal_dense(tok, scale):
    sparse, dense = make_pair(tok)
    batch = mlm_batch(tok)
    assert (batch["labels"] != -100).sum() > 3
    sparse.train()
    dense.train()
    ls = sparse(**batch).loss
    ld = dense(**batch).loss
    assert torch.allclose(ls, ld, atol=1e-5), (ls.item(), ld.item())
    (ls * scale).backward()
    (ld * scale).backward()
    dense_params = dict(dense.named_parameters())
    n = 0
    for name, p in sparse.named_parameters():
        q = dense_params[name]
        if p.grad is None and q.grad is None:
            continue
        gp = p.grad if p.grad is not None else torch.zeros_like(p)
        gq = q.grad if q.grad is not None else torch.zeros_like(q)
        assert torch.allclose(gp, gq, atol=1e-5, rtol=1e-4), name
        n += 1
    assert n == len(dense_params)


def test_sparse_without_masked_tokens_has_zero_loss_and_grads(tok):
    sparse, _ = make_pair(tok)
    batch = mlm_batch(tok)
    batch["labels"].fill_(-100)
    out = sparse(**batch)
    assert out.loss.item() == 0.0
    out.loss.backward()  # still connected to the graph (DDP needs every parameter used)


def test_sparse_without_labels_equals_parent(tok):
    sparse, dense = make_pair(tok)
    sparse.eval()
    dense.eval()
    batch = mlm_batch(tok)
    with torch.no_grad():
        a = sparse(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = dense(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert a.shape == (*batch["input_ids"].shape, len(tok))
    assert torch.allclose(a, b, atol=1e-6)


def test_sparse_eval_returns_loss_and_masked_predictions(tok):
    sparse, dense = make_pair(tok)
    sparse.eval()
    dense.eval()
    batch = mlm_batch(tok)
    with torch.no_grad():
        out = sparse(**batch)
        ref = dense(**batch)
    assert torch.allclose(out.loss, ref.loss, atol=1e-5)
    masked = batch["labels"] != -100
    assert out.logits.shape == batch["labels"].shape
    assert (out.logits[~masked] == -100).all()
    assert torch.equal(out.logits[masked], ref.logits.argmax(-1)[masked])


def test_save_pretrained_loads_as_stock_bert(tok, tmp_path):
    from transformers import BertForMaskedLM

    sparse, _ = make_pair(tok)
    sparse.save_pretrained(str(tmp_path), safe_serialization=True)
    cfg = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert cfg["architectures"] == ["BertForMaskedLM"]
    loaded = BertForMaskedLM.from_pretrained(str(tmp_path), local_files_only=True)
    assert type(loaded) is BertForMaskedLM
    a, b = sparse.state_dict(), loaded.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------
# MLMCollator
# --------------------------------------------------------------------------------------------

def content_ids(tok):
    special = set(tok.all_special_ids)
    return torch.tensor([i for i in range(len(tok)) if i not in special])


def random_examples(tok, rows: int, length: int, seed: int = 0, ragged: bool = False):
    g = torch.Generator().manual_seed(seed)
    ids = content_ids(tok)
    out = []
    for r in range(rows):
        n = length - (r % 7 if ragged else 0)
        body = ids[torch.randint(len(ids), (n - 2,), generator=g)].tolist()
        out.append({"input_ids": [tok.cls_token_id] + body + [tok.sep_token_id]})
    return out


def test_collator_never_masks_special_tokens(tok):
    from bertkit.masking import MLMCollator

    coll = MLMCollator(tok, probability=0.9)
    examples = random_examples(tok, 32, 40, ragged=True)
    # a [SEP] in the middle, as pack_blocks puts between documents
    examples[0]["input_ids"][10] = tok.sep_token_id
    batch = coll(examples)
    ids, _ = coll.pad(examples)
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    assert special.sum() > 64 + 6  # [CLS], [SEP] and padding
    assert (batch["labels"][special] == -100).all()
    assert torch.equal(batch["input_ids"][special], ids[special])
    assert (batch["attention_mask"] == (ids != tok.pad_token_id).long()).all()
    assert batch["input_ids"].shape[1] % 8 == 0


def test_collator_masking_rate_and_80_10_10(tok):
    from bertkit.masking import MLMCollator

    coll = MLMCollator(tok, probability=0.15)
    examples = random_examples(tok, 256, 128, seed=1)
    ids, _ = coll.pad(examples)
    batch = coll(examples)
    content = ~torch.isin(ids, torch.tensor(tok.all_special_ids))
    selected = batch["labels"] != -100
    assert torch.equal(batch["labels"][selected], ids[selected])
    rate = selected.sum().item() / content.sum().item()
    assert 0.14 < rate < 0.16, rate
    inp = batch["input_ids"][selected]
    orig = ids[selected]
    n = selected.sum().item()
    to_mask = (inp == tok.mask_token_id).sum().item() / n
    kept = (inp == orig).sum().item() / n
    replaced = ((inp != orig) & (inp != tok.mask_token_id)).sum().item() / n
    assert 0.77 < to_mask < 0.83, to_mask
    assert 0.075 < kept < 0.14, kept  # 10% kept, plus random draws that hit the same token
    assert 0.07 < replaced < 0.125, replaced
    # unselected positions are untouched
    assert torch.equal(batch["input_ids"][~selected], ids[~selected])


def test_collator_eval_is_deterministic_at_15_percent(tok):
    from bertkit.masking import MLMCollator

    coll = MLMCollator(tok, probability=0.5)
    examples = random_examples(tok, 128, 128, seed=2)
    with coll.evaluation():
        a = coll(examples)
    with coll.evaluation():
        b = coll(examples)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    content = (a["attention_mask"] == 1).sum().item() - 2 * len(examples)
    rate = (a["labels"] != -100).sum().item() / content
    assert 0.135 < rate < 0.165, rate
    train = coll(examples)  # outside the block: the training probability again
    rate = (train["labels"] != -100).sum().item() / content
    assert 0.47 < rate < 0.53, rate


def test_collator_whole_word_mask_keeps_words_together(tok):
    from bertkit.masking import MLMCollator

    vocab = tok.get_vocab()
    cont = torch.zeros(len(tok), dtype=torch.bool)
    for t, i in vocab.items():
        if t.startswith("##"):
            cont[i] = True
    enc = tok(SENTENCES * 8)
    examples = [{"input_ids": ids} for ids in enc["input_ids"]]
    coll = MLMCollator(tok, probability=0.4, whole_word_mask=True)
    coll.generator = torch.Generator().manual_seed(0)
    batch = coll(examples)
    ids, _ = coll.pad(examples)
    selected = batch["labels"] != -100
    n_cont = 0
    for r in range(ids.size(0)):
        for c in range(1, ids.size(1)):
            if cont[ids[r, c]]:
                n_cont += 1
                start = c
                while cont[ids[r, start]]:
                    start -= 1
                assert selected[r, c] == selected[r, start], (r, c)
    assert n_cont > 50  # the tiny vocabulary splits words into ## pieces
    # some words are masked, some are not
    assert 0 < selected.sum() < (batch["attention_mask"] == 1).sum()
