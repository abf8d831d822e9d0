"""Shipped recipes: the YAML configs in the repository's top-level ``recipes/``, which the wheel ships as
``bertkit/recipes/`` (pyproject.toml maps the one onto the other).  A recipe's first comment line is the
command that runs it (``# Run: ...``) and its second its purpose (``# Purpose: ...``).  ``--config NAME``
finds one by name (``finetune-sst2-minilm``)."""

from __future__ import annotations

from pathlib import Path


def _recipes_dir() -> Path:
    package = Path(__file__).resolve().parent
    installed = package / "recipes"  # a wheel install
    # a checkout or an editable install reads the top-level recipes/; a stale bertkit/recipes/ holding no
    # YAML (a __pycache__ left by an older layout) is not taken for the installed copy
    return installed if any(installed.glob("*.yaml")) else package.parent / "recipes"


RECIPES_DIR = _recipes_dir()


def recipe_files() -> list[Path]:
    return sorted(RECIPES_DIR.rglob("*.yaml"))


def recipe_name(path: Path) -> str:
    return str(path.relative_to(RECIPES_DIR).with_suffix("")).replace("\\", "/")


def find_recipe(name: str) -> Path | None:
    """A shipped recipe by name, with or without ``.yaml`` (``accelerate/cpu-2proc`` for the
    accelerate configs); None if there is none."""
    key = name.removesuffix(".yaml").removeprefix("recipes/")
    return next((p for p in recipe_files() if recipe_name(p) == key), None)


def read_header(path: Path) -> dict:
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [ln.lstrip("#").strip() for ln in lines if ln.startswith("#")]
    command = next((c.removeprefix("Run:").strip() for c in comments if c.startswith("Run:")), "")
    purpose = next((c.removeprefix("Purpose:").strip() for c in comments if c.startswith("Purpose:")), "")
    return {"name": recipe_name(path), "path": str(path), "command": command, "purpose": purpose}


def list_recipes() -> list[dict]:
    return [read_header(p) for p in recipe_files()]
