"""Config resolution: defaults < recipe < flags < --set, unknown keys, coercion, recipes."""

from __future__ import annotations

import pytest
import yaml
from conftest import run_cli

from bertkit.config import coerce, parse_duration, resolve
from bertkit.errors import UsageError
from bertkit.recipe_files import find_recipe, list_recipes, recipe_files
from bertkit.schemas import (
    DistillConfig,
    FinetuneConfig,
    FinetuneNERConfig,
    FinetuneQAConfig,
    PredictConfig,
    PretrainConfig,
    TokenizeConfig,
)

SCHEMAS = {"tokenize": TokenizeConfig, "pretrain-mlm": PretrainConfig, "finetune-cls": FinetuneConfig,
           "finetune-qa": FinetuneQAConfig, "finetune-ner": FinetuneNERConfig, "predict": PredictConfig,
           "distill": DistillConfig}


def test_defaults():
    cfg = resolve(PretrainConfig)
    assert cfg.train.lr == 5e-4 and cfg.mlm.probability == 0.15 and cfg.model.preset == "tiny"
    assert resolve(FinetuneConfig).train.lr == 5e-5  # per-command defaults of a shared section


def test_precedence(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 2e-5\n  batch_size: 8\n  seed: 1\nmodel:\n  preset: mini\n")
    cfg = resolve(PretrainConfig, recipe)
    assert cfg.train.lr == 2e-5 and isinstance(cfg.train.lr, float)  # YAML reads '2e-5' as a string
    assert cfg.train.batch_size == 8 and cfg.model.preset == "mini"
    cfg = resolve(PretrainConfig, recipe, flags={"train.batch_size": 16, "train.seed": None})
    assert cfg.train.batch_size == 16 and cfg.train.seed == 1  # a flag not given leaves the recipe's value
    cfg = resolve(PretrainConfig, recipe, flags={"train.batch_size": 16}, sets=["train.batch_size=32", "train.lr=1e-4"])
    assert cfg.train.batch_size == 32 and cfg.train.lr == 1e-4
    assert cfg.train.epochs == 1.0  # default survives


@pytest.mark.parametrize("bad,match", [
    ({"train": {"lrr": 1}}, "train.lrr"),
    ({"nope": 1}, "nope"),
    ({"train": {"batch_size": "many"}}, "train.batch_size"),
    ({"train": {"precision": "fp8"}}, "precision"),
])
def test_bad_recipe_keys(tmp_path, bad, match):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(bad))
    with pytest.raises(UsageError, match=match):
        resolve(PretrainConfig, recipe)


def test_unknown_key_suggests():
    with pytest.raises(UsageError, match="did you mean 'train.lr'"):
        resolve(PretrainConfig, sets=["train.lrr=1"])


def test_set_syntax_errors():
    with pytest.raises(UsageError, match="key.sub=value"):
        resolve(PretrainConfig, sets=["train.lr"])


def test_coerce():
    assert coerce("3", int, "k") == 3 and coerce("1e4", int, "k") == 10000
    assert coerce("false", bool, "k") is False
    assert coerce("a,b", list[str], "k") == ["a", "b"]
    with pytest.raises(UsageError):
        coerce("1.5", int, "k")
    assert parse_duration("30m") == 1800 and parse_duration("2h") == 7200 and parse_duration(90) == 90
    with pytest.raises(UsageError):
        parse_duration("soon")


def test_cli_precedence_saved(tmp_path, tokenized):
    """flags beat the recipe, --set beats flags; the resolved config is saved with the outputs."""
    from conftest import TINY, cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 2e-5\n  batch_size: 2\n  max_steps: 1\n  seed: 7\n")
    out = tmp_path / "m"
    assert cli("pretrain-mlm", "--config", recipe, "--data", tokenized, "--output", out, "--batch-size", 4,
               "--lr", "3e-4", "--set", "train.lr=4e-4", "--quiet", *TINY) == 0
    saved = yaml.safe_load((out / "bertkit_config.yaml").read_text())
    assert saved["train"]["batch_size"] == 4 and saved["train"]["lr"] == 4e-4 and saved["train"]["seed"] == 7
    # the saved config reruns as a recipe
    assert resolve(PretrainConfig, out / "bertkit_config.yaml").train.lr == 4e-4


def test_cli_unknown_key_exit_2():
    p = run_cli("pretrain-mlm", "--data", "x", "--output", "y", "--set", "train.nope=1", check=False)
    assert p.returncode == 2 and "train.nope" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("pretrain-mlm", "--bogus-flag", check=False)
    assert p.returncode == 2


def test_every_recipe_loads():
    files = recipe_files()
    assert len(files) >= 5
    for f in files:
        lines = f.read_text(encoding="utf-8").splitlines()
        assert lines[1].startswith("# Purpose: "), f
        data = yaml.safe_load(f.read_text())
        if "accelerate" in f.parts:  # accelerate launch configs
            assert lines[0].startswith('# Run: accelerate launch --config_file "$(bertkit recipes --path accelerate/'
                                       + f.stem + ')"'), f
            assert data["distributed_type"] and data["num_processes"] >= 1
            continue
        assert lines[0].startswith("# Run: bertkit "), f
        assert lines[0].split()[3] == data["command"], f
        resolve(SCHEMAS[data["command"]], f)
    names = {r["name"] for r in list_recipes()}
    assert "pretrain-tiny-enwiki" in names
    assert find_recipe("pretrain-tiny-enwiki.yaml") == find_recipe("pretrain-tiny-enwiki") is not None


def test_recipes_command():
    p = run_cli("recipes")
    assert "finetune-sst2-minilm" in p.stdout and "$ bertkit" in p.stdout
    assert run_cli("recipes", "--path", "accelerate/cpu-2proc").stdout.strip().endswith("cpu-2proc.yaml")
    assert run_cli("recipes", "finetune-sst2-minilm").stdout.startswith("# Run: bertkit finetune-cls")
    bad = run_cli("recipes", "no-such-recipe", check=False)
    assert bad.returncode == 2 and "bertkit recipes" in bad.stderr


def test_config_takes_a_shipped_recipe_by_name():
    cfg = resolve(FinetuneConfig, "finetune-sst2-minilm", {"train.lr": 1e-4})
    assert cfg.model == "minilm-l6" and cfg.train.lr == 1e-4
    with pytest.raises(UsageError, match="nor a shipped recipe"):
        resolve(FinetuneConfig, "no-such-recipe")


def test_validate_collects_every_problem():
    cfg = FinetuneConfig(model="m")
    cfg.data.train = "t.csv"
    cfg.train.lr, cfg.train.batch_size, cfg.dropout = 0, 0, 1.5
    with pytest.raises(UsageError) as e:
        cfg.validate()
    msg = str(e.value)
    assert msg.startswith("3 problems: ") and "--lr 0" in msg and "--batch-size 0" in msg and "--dropout 1.5" in msg
    assert "\n" not in msg
    cfg.train.lr, cfg.train.batch_size, cfg.dropout = 1e-4, 8, 0.1
    assert cfg.validate() is cfg
