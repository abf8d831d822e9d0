"""Label spaces: problem detection, encoding, priors."""

from __future__ import annotations

import numpy as np
import pytest

from bertkit.errors import DataError
from bertkit.labels import LabelSpace, detect_problem


def test_detect_problem():
    assert detect_problem(["a", "b"]) == "single"
    assert detect_problem([0, 1, 2]) == "single"
    assert detect_problem(["0.5", "3.2", "1"]) == "regression"
    assert detect_problem(["1,2", "3"]) == "multi"
    assert detect_problem([[1], [0, 2]]) == "multi"


def test_label_space_and_unknown_labels():
    s = LabelSpace.from_values(["pos", "neg", "pos"])
    assert s.names == ["neg", "pos"] and s.encode(["pos"]) == [1]
    with pytest.raises(DataError, match="'meh'"):
        s.encode(["meh"], source="dev.csv")
    m = LabelSpace.from_values(["0,2", "1"], "auto")
    assert m.problem == "multi" and m.encode(["0,2"]) == [[1.0, 0.0, 1.0]]


def test_prior_bias_is_the_best_constant_predictor():
    single = LabelSpace("single", ["a", "b", "c"])
    b = np.array(single.prior_bias([0, 0, 0, 1, 1, 2, 0, 1]))
    p = np.exp(b) / np.exp(b).sum()
    assert p == pytest.approx(np.array([5, 4, 2]) / 11)  # (counts + 1) / (n + 3)
    multi = LabelSpace("multi", ["x", "y"])
    rows = [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert 1 / (1 + np.exp(-np.array(multi.prior_bias(rows)))) == pytest.approx([0.5, 0.25])
    # with pos_weight w the BCE-optimal constant is w*p / (w*p + 1 - p)
    sig = 1 / (1 + np.exp(-np.array(multi.prior_bias(rows, [1.0, 3.0]))))
    assert sig == pytest.approx([0.5, 0.75 / (0.75 + 0.75)])
    assert LabelSpace("regression").prior_bias([1.0, 2.0, 6.0]) == pytest.approx([3.0])
