"""The search space of a sweep: the params (``--param lr=log:1e-5:3e-4`` or a recipe's ``search:``),
checked against the target command's fields, the values a trial draws, and the sampler that draws them."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from ..config import coerce, iter_all_fields
from ..errors import UsageError
from ..schemas import FinetuneConfig
from . import require_optuna
from .schema import TARGETS, SweepFields, target_of

optuna = require_optuna()  # the sweep extra: a UsageError saying how to install it, not an ImportError


@dataclass
class Param:
    name: str             # what the user wrote, shown in tables (lr)
    key: str              # the schema's dotted key (train.lr)
    kind: str             # log, int, float, choice
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def spec(self) -> str:
        if self.kind == "choice":
            return "choice:" + ",".join(map(str, self.choices))
        return f"{self.kind}:{_num(self.low)}:{_num(self.high)}"


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


_NOT_SEARCHABLE = {"output", "overwrite", "allow_pickle", "train.resume", "train.report_to", "data.train",
                   "data.validation", "data.test"}


def field_index(schema: type = FinetuneConfig) -> tuple[dict[str, tuple[str, Any]], dict[str, list[str]]]:
    """{dotted key: (key, type)} of the searchable fields and {short name: [dotted keys]}."""
    fields = {k: (k, tp) for k, _, tp in iter_all_fields(schema) if k not in _NOT_SEARCHABLE}
    short: dict[str, list[str]] = {}
    for k in fields:
        short.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    return fields, short


def resolve_name(name: str, schema: type = FinetuneConfig) -> tuple[str, Any]:
    """A field by dotted key (train.lr), short name (lr) or flag spelling (warmup-ratio) -> (key, type)."""
    fields, short = field_index(schema)
    n = name.strip().lstrip("-").replace("-", "_")
    if n in fields:
        return fields[n]
    keys = short.get(n, [])
    if len(keys) == 1:
        return fields[keys[0]]
    if len(keys) > 1:
        raise UsageError(f"--param {name}: ambiguous; use one of {', '.join(keys)}")
    valid = sorted(short[k][0].rsplit(".", 1)[-1] if len(short[k]) == 1 else k for k in short)
    command = next((t.command for t in TARGETS.values() if t.schema is schema), "the command")
    raise UsageError(f"--param {name}: not a field of {command}; searchable: {', '.join(valid)}")


def _base_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is not None and type(None) in typing.get_args(tp) and len(args) == 1:
        return args[0]
    return tp


def parse_param(text: str, schema: type = FinetuneConfig) -> Param:
    """``lr=log:1e-5:3e-4`` -> Param.  Kinds: log (log-uniform; int fields give log-spaced ints), int, float,
    choice (comma-separated values, each coerced to the field's type)."""
    if "=" not in text:
        raise UsageError(f"--param {text!r}: expected NAME=KIND:..., e.g. --param lr=log:1e-5:3e-4")
    name, _, spec = text.partition("=")
    return parse_spec(name.strip(), spec.strip(), schema)


def parse_spec(name: str, spec: Any, schema: type = FinetuneConfig) -> Param:
    key, tp = resolve_name(name, schema)
    where = f"--param {name}"
    base = _base_type(tp)
    if isinstance(spec, (list, tuple)):  # a recipe's `lr: [1e-5, 3e-5]` is a choice
        kind, rest = "choice", list(spec)
    else:
        kind, _, rest_s = str(spec).partition(":")
        kind = kind.strip().lower()
        rest = rest_s
    if kind == "choice":
        values = rest if isinstance(rest, list) else [v.strip() for v in rest.split(",") if v.strip()]
        if len(values) < 1:
            raise UsageError(f"{where}: choice needs values, e.g. {name}=choice:16,32")
        # each value read as YAML, as the CLI reads a flag's: choice:16,32 gives ints
        parsed = tuple(coerce(yaml.safe_load(v) if isinstance(v, str) else v, tp, key) for v in values)
        if len(set(map(repr, parsed))) != len(parsed):
            raise UsageError(f"{where}: repeated choices {list(parsed)}")
        return Param(name, key, "choice", choices=parsed)
    if kind not in ("log", "int", "float"):
        raise UsageError(f"{where}: unknown kind {kind!r}; use log:LOW:HIGH, int:LOW:HIGH, float:LOW:HIGH or "
                         "choice:A,B")
    if base not in (int, float):
        raise UsageError(f"{where}: {key} is not numeric; search it with choice:A,B,...")
    parts = rest.split(":")
    if len(parts) != 2:
        raise UsageError(f"{where}: expected {kind}:LOW:HIGH (got {spec!r})")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"{where}: LOW and HIGH must be numbers (got {spec!r})") from None
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise UsageError(f"{where}: need LOW < HIGH (got {spec!r})")
    if kind == "log" and low <= 0:
        raise UsageError(f"{where}: log needs LOW > 0 (got {spec!r})")
    if kind == "float" and base is int:
        raise UsageError(f"{where}: {key} is an integer; use int:{parts[0]}:{parts[1]}")
    if kind == "int" or (kind == "log" and base is int):
        if not (low.is_integer() and high.is_integer()):
            raise UsageError(f"{where}: int bounds must be whole numbers (got {spec!r})")
        return Param(name, key, kind, int(low), int(high))
    return Param(name, key, kind, low, high)


def search_space(cfg: SweepFields) -> list[Param]:
    """The recipe's ``search:`` entries, then ``--param`` flags (a flag replaces a recipe entry of the same field);
    names are fields of the sweep's target command."""
    schema = target_of(cfg).schema
    params: dict[str, Param] = {}
    for name, spec in (cfg.search or {}).items():
        p = parse_spec(str(name), spec, schema)
        params[p.key] = p
    for text in cfg.sweep.params or []:
        p = parse_param(text, schema)
        params[p.key] = p
    if not params:
        raise UsageError("nothing to search: give --param NAME=KIND:... (e.g. --param lr=log:1e-5:3e-4) "
                         "or a search: section in the recipe")
    return list(params.values())


def suggest(trial, params: list[Param]) -> dict[str, Any]:
    """The trial's values, by dotted key.  Optuna's distribution names are the names the user wrote."""
    out = {}
    for p in params:
        if p.kind == "choice":
            out[p.key] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            out[p.key] = trial.suggest_int(p.name, p.low, p.high)
        elif p.kind == "log" and isinstance(p.low, int):
            out[p.key] = trial.suggest_int(p.name, p.low, p.high, log=True)
        else:
            out[p.key] = trial.suggest_float(p.name, p.low, p.high, log=p.kind == "log")
    return out


def grid_space(params: list[Param]) -> dict[str, list]:
    grid = {}
    for p in params:
        if p.kind == "choice":
            grid[p.name] = list(p.choices)
        elif p.kind == "int" and p.high - p.low <= 100:
            grid[p.name] = list(range(p.low, p.high + 1))
        else:
            raise UsageError(f"--sampler grid: --param {p.name}={p.spec()} is continuous; give it as "
                             f"choice:A,B,... (or int:LOW:HIGH)")
    return grid


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its stop: after the last grid point it calls ``study.stop()``, which
    raises outside ``study.optimize``; the sweep stops by counting trials instead."""

    def after_trial(self, study, trial, state, values):
        pass


def grid_size(params: list[Param]) -> int:
    return math.prod(len(v) for v in grid_space(params).values())


def make_sampler(kind: str, params: list[Param], seed: int, trials: int):
    """The sampler --sampler names, seeded; ``trials``: the study's total."""
    if kind == "grid":
        return GridSampler(grid_space(params), seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Optuna's 10 random start-up trials would make a 12-trial sweep a random search; a third of the
    # budget (at least 3) explores, the rest is TPE.  constant_liar: running trials of other workers
    # count as bad, so parallel workers do not all sample next to the same good point.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, trials // 3)), constant_liar=True)
