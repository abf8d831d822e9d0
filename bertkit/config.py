"""Configuration schemas and their resolution.

Each command has one dataclass schema.  Values come from three sources, applied in order:

    defaults  <  recipe YAML (``--config``)  <  CLI flags  <  ``--set key.sub=value``

Unknown keys are errors (exit 2) that name the key and list the valid ones, values are coerced to
the field's type (so ``lr: 2e-5`` in YAML, which ``yaml.safe_load`` reads as a string, becomes a
float), and the resolved config is saved next to the outputs as ``bertkit_config.yaml``.

Fields carry their CLI flag and help text in ``dataclasses.field(metadata=...)`` (see :func:`opt`),
so the CLI is generated from the schema and the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import UsageError

CONFIG_FILENAME = "bertkit_config.yaml"


def opt(default: Any = None, help: str = "", flag: str | None = None, *, argument: bool = False,
        choices: tuple[str, ...] | None = None, factory: Any = None) -> Any:
    """A schema field with its CLI flag and help text.

    ``flag`` is the option's declaration (``"--lr"`` or ``"--lowercase/--no-lowercase"``); a field
    without a flag is set only from a recipe or ``--set``.  ``argument`` makes it positional.
    """
    metadata = {"help": help, "flag": flag, "argument": argument, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A nested section (another dataclass) of a schema."""
    return dataclasses.field(default_factory=cls, metadata={"section": True})


# --------------------------------------------------------------------------------------------
# Type coercion
# --------------------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str | float | int | None) -> float | None:
    """'30m', '2h', '90s', '1.5h' or a number of seconds -> seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise UsageError(f"cannot read duration {value!r}: use a number with s, m, h or d, e.g. 30m")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        # a union of a variable number of types: X | Y has no spelling for that
        return Union[tuple(args)], True  # type: ignore[return-value]  # noqa: UP007
    return tp, False


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML, a flag or ``--set``) to type ``tp``; UsageError if impossible."""
    inner, optional = _strip_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "~")):
        if optional:
            return None
        raise UsageError(f"config key '{key}' cannot be empty")
    origin = typing.get_origin(inner)
    try:
        if origin is Literal:
            allowed = typing.get_args(inner)
            sval = str(value).lower() if isinstance(value, bool) is False else str(value).lower()
            for a in allowed:
                if str(a).lower() == sval:
                    return a
            raise UsageError(f"config key '{key}' must be one of {', '.join(map(str, allowed))} (got {value!r})")
        if origin is list:
            (item_tp,) = typing.get_args(inner) or (str,)
            if isinstance(value, str):
                value = [v for v in (s.strip() for s in value.split(",")) if v]
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [coerce(v, item_tp, key) for v in value]
        if origin is dict or inner is dict:
            if not isinstance(value, dict):
                raise UsageError(f"config key '{key}' must be a mapping (got {value!r})")
            return dict(value)
        if inner is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("true", "yes", "1", "on"):
                return True
            if s in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if inner is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            s = str(value).strip().replace("_", "")
            try:
                return int(s)
            except ValueError:
                f = float(s)  # '1e4'
                if not f.is_integer():
                    raise
                return int(f)
        if inner is float:
            if isinstance(value, bool):
                raise ValueError
            f = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
            if math.isnan(f):
                raise ValueError
            return f
        if inner is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        return value
    except UsageError:
        raise
    except (TypeError, ValueError):
        name = getattr(inner, "__name__", str(inner))
        raise UsageError(f"config key '{key}' must be {name} (got {value!r})") from None


# --------------------------------------------------------------------------------------------
# Building, merging, flattening
# --------------------------------------------------------------------------------------------

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def from_dict(cls: type, data: dict[str, Any], prefix: str = "", source: str = "config") -> Any:
    """Build ``cls`` from a nested dict, rejecting unknown keys and coercing types."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {data!r}")
    hints = _hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        close = _closest(k, list(names))
        hint = f"; did you mean '{prefix}{close}'?" if close else ""
        raise UsageError(f"{source}: unknown config key '{prefix}{k}'{hint} (valid: {', '.join(names)})")
    kwargs = {}
    for name, value in data.items():
        f = names[name]
        if f.metadata.get("section"):
            kwargs[name] = from_dict(hints[name], value or {}, prefix=f"{prefix}{name}.", source=source)
        else:
            kwargs[name] = coerce(value, hints[name], f"{prefix}{name}")
    return cls(**kwargs)


def _closest(word: str, options: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return m[0] if m else None


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """'train.lr=2e-5' -> ('train.lr', '2e-5' parsed by YAML)."""
    if "=" not in item:
        raise UsageError(f"--set {item!r}: expected key.sub=value, e.g. --set train.lr=2e-5")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise UsageError(f"--set {item!r}: the key before '=' is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file, or a recipe shipped in the package by name (``bertkit recipes`` lists them)."""
    from .recipe_files import find_recipe

    p = Path(path)
    if not p.is_file():
        shipped = find_recipe(str(path))
        if shipped is None:
            raise UsageError(f"--config {path}: no such file, nor a shipped recipe of that name (`bertkit recipes` "
                             "lists them)")
        p = shipped
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UsageError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: the recipe must be a YAML mapping of config keys")
    data.pop("command", None)  # recipes may say which command they are for
    return data


def resolve(cls: type, recipe: str | Path | None = None, flags: dict[str, Any] | None = None,
            sets: list[str] | None = None) -> Any:
    """defaults < recipe < flags (dotted keys) < --set (dotted keys)."""
    merged: dict[str, Any] = {}
    source = "config"
    if recipe:
        merged = load_recipe(recipe)
        source = f"--config {recipe}"
        from_dict(cls, merged, source=source)  # validate the recipe on its own, naming it in errors
    for key, value in (flags or {}).items():
        if value is not None:
            set_dotted(merged, key, value)
    for item in sets or []:
        key, value = parse_set(item)
        set_dotted(merged, key, value)
    return from_dict(cls, merged, source="config" if not sets else "config/--set")


def save_config(cfg: Any, directory: str | Path, command: str) -> Path:
    path = Path(directory) / CONFIG_FILENAME
    data = {"command": command, **to_dict(cfg)}
    path.write_text("# Resolved bertkit configuration; rerun with: bertkit " + command
                    + f" --config {CONFIG_FILENAME}\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return path


def iter_flag_fields(cls: type, prefix: str = ""):
    """Yield (dotted_key, field, type) for every field that has a CLI flag or argument."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("section"):
            yield from iter_flag_fields(hints[f.name], prefix=f"{prefix}{f.name}.")
        elif f.metadata.get("flag") or f.metadata.get("argument"):
            yield f"{prefix}{f.name}", f, hints[f.name]


def iter_all_fields(cls: type, prefix: str = ""):
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("section"):
            yield from iter_all_fields(hints[f.name], prefix=f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name]




# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

class Schema:
    """Base of the config schemas.  Each schema and section lists what is wrong with its own values in
    :meth:`problems`; :meth:`validate` collects them from the whole tree once and raises one
    :class:`UsageError` naming every problem, so a user fixes a command line in one go."""

    def problems(self) -> list[str]:
        return []

    def validate(self):
        found = collect_problems(self)
        if len(found) == 1:
            raise UsageError(found[0])
        if found:
            raise UsageError(f"{len(found)} problems: " + "; ".join(found))
        return self


def collect_problems(obj: Any) -> list[str]:
    found = list(obj.problems()) if isinstance(obj, Schema) else []
    for f in dataclasses.fields(obj):
        if f.metadata.get("section"):
            found += collect_problems(getattr(obj, f.name))
    return found


def at_least(value: Any, minimum: float, flag: str) -> list[str]:
    """``[problem]`` if a set ``value`` is below ``minimum``, else ``[]``."""
    return [f"{flag} {value}: must be at least {minimum}"] if value is not None and value < minimum else []


def in_unit_interval(value: Any, flag: str, closed_top: bool = False) -> list[str]:
    """``[problem]`` unless a set ``value`` is in [0, 1) (or [0, 1] with ``closed_top``)."""
    if value is None or 0 <= value < 1 or (closed_top and value == 1):
        return []
    return [f"{flag} {value}: must be in [0, 1{']' if closed_top else ')'}"]


def duration_problems(value: Any, flag: str) -> list[str]:
    try:
        parse_duration(value)
    except UsageError as e:
        return [f"{flag} {value}: {str(e).split(': ', 1)[-1]}"]
    return []
