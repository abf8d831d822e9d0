"""The command-line surface: every command (and sweep subcommand) answers --help, naming its key flags."""

from __future__ import annotations

import pytest
import typer
from conftest import cli

from bertkit.cli import app

# command path -> flags its help must name
KEY_FLAGS = {
    ("tokenize",): ["--output", "--tokenizer", "--train-tokenizer", "--max-seq-length", "--num-proc", "--config"],
    ("pretrain-mlm",): ["--data", "--output", "--preset", "--mlm-probability", "--time-budget", "--resume"],
    ("finetune-cls",): ["--model", "--train", "--validation", "--output", "--epochs", "--lr", "--metric"],
    ("finetune-qa",): ["--model", "--train", "--validation", "--output", "--doc-stride", "--max-answer-length"],
    ("distill",): ["--teacher", "--student", "--student-layers", "--alpha", "--temperature", "--unlabeled",
                   "--output"],
    ("finetune-ner",): ["--model", "--train", "--validation", "--output", "--tag-scheme", "--stride",
                        "--label-all-subtokens", "--words-column", "--tags-column", "--tag-column"],
    ("predict",): ["--model", "--input", "--output", "--task", "--top-k", "--backend", "--batch-size",
                   "--words-column"],
    ("evaluate",): ["--model", "--data", "--output", "--task", "--batch-size"],
    ("export",): ["--model", "--output", "--quantize"],
    ("serve",): ["--model", "--host", "--port", "--port-file", "--backend", "--threads", "--max-batch-tokens",
                 "--max-queue", "--max-request-rows", "--max-body-bytes"],
    ("sweep",): ["--report", "--study", "finetune-cls", "finetune-qa", "finetune-ner", "distill"],
    ("sweep", "finetune-cls"): ["--param", "--trials", "--storage", "--pruner", "--sampler", "--model", "--lr"],
    ("sweep", "finetune-qa"): ["--param", "--trials", "--storage", "--pruner", "--sampler", "--doc-stride"],
    ("sweep", "finetune-ner"): ["--param", "--trials", "--storage", "--pruner", "--sampler", "--tag-scheme"],
    ("sweep", "distill"): ["--param", "--trials", "--teacher", "--alpha", "--temperature", "--student-layers"],
    ("env",): [],
    ("recipes",): ["--path", "NAME"],
}


def command_paths(group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    paths = set()
    for name, command in group.commands.items():
        paths.add((*prefix, name))
        if hasattr(command, "commands"):  # a group (Typer's own click copy: no isinstance against click's)
            paths |= command_paths(command, (*prefix, name))
    return paths


def test_every_command_has_a_help_test():
    assert command_paths(typer.main.get_command(app)) == set(KEY_FLAGS)


@pytest.mark.parametrize("path", sorted(KEY_FLAGS), ids=" ".join)
def test_help_exits_0_and_names_the_key_flags(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one option per line: no flag folded across lines
    assert cli(*path, "--help") == 0
    out = capsys.readouterr().out
    assert "Usage: bertkit " + " ".join(path) in out
    missing = [f for f in KEY_FLAGS[path] if f not in out]
    assert not missing, f"bertkit {' '.join(path)} --help does not name {missing}:\n{out}"
