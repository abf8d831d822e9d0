"""Inference helpers shared by predict and evaluate."""

from __future__ import annotations


def test_inference_batches_keep_order_and_trim_memory(monkeypatch):
    """predict/evaluate batches: every row once, in the given order; freed memory is handed back to
    the OS every ``trim_every`` batches (glibc heaps otherwise creep up over a long loop)."""
    import bertkit.tasks.base as inference

    calls = []
    monkeypatch.setattr(inference, "trim_freed_memory", lambda: calls.append(1))
    order = [5, 3, 9, 0, 1, 2, 4, 6, 7, 8, 10]
    batches = list(inference.batches(order, 2, trim_every=2))
    assert [i for b in batches for i in b] == order
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2, 1]
    assert len(calls) == 2  # before batches 3 and 5
    inference._malloc_trim.cache_clear()
    monkeypatch.undo()
    inference.trim_freed_memory()  # the real one runs (or is a no-op off glibc) without error


def test_windows_ignore_padding_left_on_the_tokenizer(classifier):
    """Padding left enabled on the tokenizer's backend (by an earlier padded call, or saved in a
    tokenizer.json) must not pad the windows: batches are sorted by the windows' own lengths."""
    from bertkit.loading import load_model_config, load_tokenizer
    from bertkit.tasks.classification import ClassificationTask, rows_of

    tok = load_tokenizer(classifier)
    texts = ["the place was great and the staff friendly", "ok", "the room was dirty"]
    tok(texts, padding=True)  # leaves padding enabled on the backend
    assert tok.backend_tokenizer.padding is not None
    task = ClassificationTask(load_model_config(classifier), tok, 32)
    lengths = task.encode(rows_of(texts)).lengths().tolist()
    assert lengths[1] < lengths[2] < lengths[0]
