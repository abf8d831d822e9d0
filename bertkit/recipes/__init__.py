"""Shipped recipes: YAML configs inside the package (so a wheel install has them), whose first comment
line is the command that runs them (``# Run: ...``) and whose second is their purpose
(``# Purpose: ...``).  ``--config NAME`` finds one by name (``finetune-sst2-minilm``)."""

from __future__ import annotations

from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent


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
