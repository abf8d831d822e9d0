"""Shipped recipes: YAML configs under ``recipes/`` whose first comment line is the command to run them
and whose second is their purpose."""

from __future__ import annotations

from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def recipe_files() -> list[Path]:
    if not RECIPES_DIR.is_dir():
        return []
    return sorted(p for p in RECIPES_DIR.rglob("*.yaml"))


def read_header(path: Path) -> dict:
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [ln.lstrip("#").strip() for ln in lines if ln.startswith("#")]
    command = next((c.removeprefix("Run:").strip() for c in comments if c.startswith("Run:")), "")
    purpose = next((c.removeprefix("Purpose:").strip() for c in comments if c.startswith("Purpose:")), "")
    return {"name": str(path.relative_to(RECIPES_DIR)), "path": str(path), "command": command, "purpose": purpose}


def list_recipes() -> list[dict]:
    return [read_header(p) for p in recipe_files()]
