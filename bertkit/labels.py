"""Label spaces for classification: single-label, multi-label and regression.

Labels may be names or integer ids; multi-label values are lists or comma-separated strings
("8,20"); regression values are floats.  The mapping is saved in the model config
(``id2label``/``label2id``) so pipelines print names, never LABEL_0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, UsageError

PROBLEM_TYPES = {
    "single": "single_label_classification",
    "multi": "multi_label_classification",
    "regression": "regression",
}


def _is_int(s: str) -> bool:
    s = s.strip()
    return s.lstrip("-").isdigit()


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _as_list(v: Any) -> list[str]:
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x).strip() for x in v]
    if v is None:
        return []
    return [x.strip() for x in str(v).split(",") if x.strip()]


def detect_problem(values: list[Any]) -> str:
    """floats -> regression; lists or ','-separated values -> multi; else single."""
    if any(isinstance(v, (list, tuple)) for v in values):
        return "multi"
    strs = [str(v).strip() for v in values if v is not None]
    if any("," in s for s in strs):
        return "multi"
    if strs and all(_is_float(s) for s in strs) and not all(_is_int(s) for s in strs):
        if any(isinstance(v, float) and not float(v).is_integer() for v in values) or any("." in s for s in strs):
            return "regression"
    return "single"


def ambiguous_labels(seen: Iterable[str]) -> str | None:
    """What makes a column's label values ambiguous, or None: ids mixed with names (``1``, ``pos``, ``0``,
    ``neg``: is 1 pos?), or names that differ only by case or spacing (``pos``, ``Pos``, `` pos``): one label
    or two?  Either way the data says one thing twice, and guessing would train on a split class."""
    seen = sorted(set(seen))
    ids, names = [s for s in seen if _is_int(s)], [s for s in seen if not _is_int(s)]
    if ids and names:
        return f"mixes integer ids ({', '.join(map(repr, ids[:10]))}) and names ({', '.join(map(repr, names[:10]))})"
    groups: dict[str, list[str]] = {}
    for s in names:
        groups.setdefault("".join(s.lower().split()), []).append(s)
    clashes = [g for g in groups.values() if len(g) > 1]
    if clashes:
        return "has labels that differ only by case or spacing: " + "; ".join(
            " / ".join(map(repr, g)) for g in clashes[:5])
    return None


@dataclass
class LabelSpace:
    problem: str  # single | multi | regression
    names: list[str] = field(default_factory=list)
    threshold: float = 0.5

    @property
    def num_labels(self) -> int:
        return 1 if self.problem == "regression" else len(self.names)

    @property
    def problem_type(self) -> str:
        return PROBLEM_TYPES[self.problem]

    @classmethod
    def from_values(cls, values: Iterable[Any], problem: str = "auto", labels_file: str | None = None,
                    column: str = "label") -> LabelSpace:
        values = list(values)
        if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            i = next(i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip()))
            raise DataError(f"label column '{column}': row {i + 1} has no label; remove unlabelled rows")
        if problem == "auto":
            problem = detect_problem(values)
        if problem == "regression":
            bad = [v for v in values if not _is_float(str(v))]
            if bad:
                raise DataError(f"label column '{column}': regression needs numbers, found {bad[0]!r}")
            return cls("regression", [])
        if labels_file:
            names = read_labels_file(labels_file)
        else:
            seen = set()
            for v in values:
                seen.update(_as_list(v) if problem == "multi" else [str(v).strip()])
            # single labels as written: ' pos' beside 'pos' is one label written two ways
            if (why := ambiguous_labels(seen if problem == "multi" else {str(v) for v in values})):
                raise DataError(f"label column '{column}': {why}; fix the data, or pass --labels FILE naming each "
                                "label (one per line; integer ids then stand for the line numbers from 0)")
            if all(_is_int(s) for s in seen):
                ids = sorted(int(s) for s in seen)
                # integer ids: keep them as ids when they are 0..n-1 (or a subset of that range)
                dense = ids and ids[0] >= 0 and ids[-1] < 2 * len(ids) + 2
                names = [str(i) for i in range(ids[-1] + 1)] if dense else [str(i) for i in ids]
            else:
                names = sorted(seen)
        if problem == "single" and len(names) < 2:
            raise DataError(f"label column '{column}': only one label ({', '.join(names)}); "
                            "classification needs two or more")
        return cls(problem, names)

    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def encode(self, values: Iterable[Any], source: str = "data", column: str = "label") -> list:
        if self.problem == "regression":
            try:
                return [float(v) for v in values]
            except (TypeError, ValueError):
                raise DataError(f"{source}: label column '{column}' has a non-numeric value for regression") from None
        idx = self.index()
        by_id = {str(i): i for i in range(len(self.names))}
        out: list = []
        missing: list[str] = []
        for v in values:
            items = _as_list(v) if self.problem == "multi" else [str(v).strip()]
            ids = []
            for it in items:
                if it in idx:
                    ids.append(idx[it])
                elif it in by_id and not any(_is_int(n) for n in self.names):
                    ids.append(by_id[it])  # ids against a names file
                else:
                    missing.append(it)
            if self.problem == "multi":
                row = [0.0] * len(self.names)
                for i in ids:
                    row[i] = 1.0
                out.append(row)
            else:
                out.append(ids[0] if ids else -1)
        if missing:
            uniq = sorted(set(missing))
            raise DataError(f"{source}: label(s) {', '.join(map(repr, uniq[:10]))} in column '{column}' are not among "
                            f"the training labels ({', '.join(self.names[:20])}"
                            f"{'...' if len(self.names) > 20 else ''}); "
                            "fix the data or pass --labels FILE with every label")
        return out

    def attach(self, ds, column: str, source: str):
        """Add a ``labels`` column encoding ``column`` (the original stays out of the model inputs)."""
        labels = self.encode(ds[column], source=source, column=column)
        if column in ds.column_names:
            ds = ds.remove_columns(column)
        return ds.add_column("labels", labels)

    def prior_bias(self, labels, weights: list[float] | None = None) -> list[float]:
        """The output bias under which a new head predicts the training labels' prior (the best constant
        predictor under the loss used), instead of transformers' 0.

        single-label: log class frequency (times the class weight, for a weighted loss);
        multi-label: log-odds of each label (times its ``pos_weight``); regression: the mean target.
        Starting at 0 makes the first steps of training spend the encoder's gradient on moving the output
        to the prior: with 28 rare labels (GoEmotions) every logit must go from 0 to about -3, and the
        shared push through the pooler's tanh can leave a model that only predicts the priors.
        """
        arr = np.asarray(labels, dtype=np.float64)
        if self.problem == "regression":
            return [float(arr.mean())] if arr.size else [0.0]
        w = np.ones(self.num_labels) if weights is None else np.asarray(weights, dtype=np.float64)
        if self.problem == "multi":
            p = np.clip(arr.mean(0), 1e-4, 1 - 1e-4)
            return [float(x) for x in np.log(np.maximum(w, 1e-6) * p / (1 - p))]
        counts = np.bincount(arr.astype(np.int64), minlength=self.num_labels) + 1.0  # +1: no label at -inf
        logp = np.log(counts * np.maximum(w, 1e-6))
        return [float(x) for x in logp - logp.mean()]

    def to_dict(self) -> dict:
        return {"problem": self.problem, "names": self.names, "threshold": self.threshold}

    def model_config_kwargs(self) -> dict:
        if self.problem == "regression":
            return {"num_labels": 1, "problem_type": "regression", "id2label": {0: "score"}, "label2id": {"score": 0}}
        return {"num_labels": len(self.names), "problem_type": self.problem_type,
                "id2label": dict(enumerate(self.names)), "label2id": self.index()}

    @classmethod
    def from_model_config(cls, config) -> LabelSpace:
        pt = getattr(config, "problem_type", None)
        if pt == "regression":
            return cls("regression", [])
        problem = "multi" if pt == "multi_label_classification" else "single"
        n = config.num_labels
        names = [str(config.id2label.get(i, config.id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]
        return cls(problem, names, float(getattr(config, "bertkit_threshold", 0.5) or 0.5))


def read_labels_file(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--labels {path}: no such file")
    names = [ln.strip() for ln in p.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    if len(names) < 1:
        raise DataError(f"--labels {path}: the file lists no labels (one name per line)")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"--labels {path}: duplicate label names {', '.join(dup)}")
    return names


def class_weights(spec: str | None, space: LabelSpace, train_labels) -> list[float] | None:
    """``--class-weights``: ``auto`` (inverse label frequency; multi-label: per label, used as pos_weight)
    or one comma-separated weight per label id."""
    if not spec:
        return None
    if space.problem == "regression":
        raise UsageError("--class-weights applies to classification, not regression")
    n = space.num_labels
    if spec == "auto":
        arr = np.asarray(train_labels)
        counts = arr.sum(0) if space.problem == "multi" else np.bincount(arr.astype(int), minlength=n)
        counts = np.maximum(counts.astype(float), 1.0)
        return [float(x) for x in counts.sum() / (n * counts)]
    try:
        w = [float(x) for x in spec.split(",")]
    except ValueError:
        raise UsageError(f"--class-weights {spec!r}: use 'auto' or {n} comma-separated numbers") from None
    if len(w) != n or any(x < 0 for x in w):
        raise UsageError(f"--class-weights {spec!r}: need {n} non-negative weights, one per label id")
    return w
