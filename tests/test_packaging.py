"""The package as users install it: a wheel, without the source tree, holds every module, lists and runs
the shipped recipes (the top-level recipes/, shipped as bertkit/recipes/) and has the metric modules."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT, write_corpus


def test_wheel_ships_recipes_and_runs_one_by_name(tmp_path):
    dist, site = tmp_path / "dist", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(dist), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("bertkit-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    # the installed copy, not the source tree: run from elsewhere with only the install on the path
    env = {**os.environ, "PYTHONPATH": str(site), "TOKENIZERS_PARALLELISM": "false"}

    def bertkit(*args):
        return subprocess.run([sys.executable, "-m", "bertkit", *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import bertkit; print(bertkit.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where
    listed = bertkit("recipes")
    assert listed.returncode == 0, listed.stderr
    assert "tokenize-enwiki" in listed.stdout and "finetune-sst2-minilm" in listed.stdout
    assert (site / "bertkit" / "metric_modules" / "accuracy" / "accuracy.py").is_file()
    # pyproject.toml names the packages (for the recipes/ mapping): a new subpackage left off would be missing
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bertkit").rglob("*.py")}
    assert source <= {p.relative_to(site).as_posix() for p in (site / "bertkit").rglob("*.py")}
    def yaml_files(top):
        return {p.relative_to(top).as_posix() for p in top.rglob("*.yaml")}

    assert yaml_files(ROOT / "recipes") == yaml_files(site / "bertkit" / "recipes")
    corpus = write_corpus(tmp_path / "corpus.txt", docs=20)
    ran = bertkit("tokenize", corpus, "--config", "tokenize-enwiki", "--output", tmp_path / "tok", "--set",
                  "data.num_proc=1", "--quiet")
    assert ran.returncode == 0, ran.stderr
    saved = (tmp_path / "tok" / "bertkit_config.yaml").read_text()
    assert "max_seq_length: 128" in saved  # the recipe's value was applied
