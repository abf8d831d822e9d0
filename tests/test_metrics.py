"""Metrics from the shipped `evaluate` modules and the window aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from bertkit.metrics import classification_metrics, load_metric


def test_shipped_metrics_match_reference_formulas():
    p, r = np.array([1, 0, 1, 1, 0, 2]), np.array([1, 0, 0, 1, 1, 2])
    out = classification_metrics("single", np.eye(3)[p], r, 3)
    assert out["accuracy"] == pytest.approx(4 / 6)
    # macro F1 by hand: class0 p=1/2 r=1/2 -> .5; class1 p=2/3 r=2/3 -> 2/3; class2 1
    assert out["f1"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    sp = load_metric("spearmanr").compute(predictions=[1, 2, 3, 4], references=[1, 3, 2, 4])["spearmanr"]
    assert sp == pytest.approx(0.8)
    mcc = load_metric("matthews_correlation").compute(predictions=[1, 1, 0, 0], references=[1, 0, 0, 0])
    assert mcc["matthews_correlation"] == pytest.approx(1 / 3 ** 0.5)


def test_per_text_aggregates_windows():
    from bertkit.metrics import mean_by_group, per_text

    logits = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [2.0, 2.0]], dtype=np.float32)
    labels = np.array([1, 0, 1, 0])
    agg, lab = per_text(logits, labels, [7, 2, 7, 2])  # windows of texts 7 and 2, interleaved
    assert agg.tolist() == [[2.5, 2.0], [0.5, 2.5]]  # text 2, then text 7 (sorted ids)
    assert lab.tolist() == [0, 1]
    assert mean_by_group(logits, [1, 1, 0, 0], 3).tolist() == [[1.0, 3.5], [2.0, 1.0], [0.0, 0.0]]
