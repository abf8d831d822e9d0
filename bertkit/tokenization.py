"""Tokenizers and tokenized datasets: WordPiece training, manifests, MLM packing (streamed by
:mod:`bertkit.streaming`), classification encoding.

Used by ``bertkit tokenize`` and by ``pretrain-mlm`` on raw files (the same code path), so a
dataset tokenized ahead of time and one tokenized on the fly are identical.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .data import DOC_START, expand_inputs, join_text, load_inputs, split_columns
from .distributed import is_main_process, main_process_first
from .errors import DataError, UsageError
from .loading import DATASET_DIR, MANIFEST, TOKENIZER_DIR, load_tokenizer
from .log import get_logger
from .outputs import StagedDir, write_json
from .summary import human_bytes

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
RESUME = "resume.json"  # in an unfinished output dir: where an interrupted mlm run continues

log = get_logger()


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------

def train_wordpiece(texts: Iterator[list[str]], vocab_size: int, lowercase: bool, min_frequency: int = 2,
                    model_max_length: int = 512):
    """Train a BERT WordPiece tokenizer; CJK characters are split into single-character words, as BERT does."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS, continuing_subword_prefix="##",
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece(prefix="##")
    from transformers import BertTokenizerFast

    cls = BertTokenizerFast if BertTokenizerFast is not None else PreTrainedTokenizerFast
    return cls(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
               sep_token="[SEP]", mask_token="[MASK]", do_lower_case=lowercase,
               tokenize_chinese_chars=True, strip_accents=None, model_max_length=model_max_length)


def vocab_shortfall(got: int, asked: int, min_frequency: int) -> str:
    """Why a trained vocabulary is smaller than --vocab-size: WordPiece stops when no pair of pieces
    occurs ``min_frequency`` times any more, so a small corpus supports fewer tokens."""
    return (f"Vocabulary: {got:,} tokens, not the {asked:,} asked for: the corpus supports only {got:,} at "
            f"min_frequency {min_frequency} (every character, and merges seen at least {min_frequency} times); "
            "a larger corpus gives more, `--set tokenizer.min_frequency=1` a few more")


def tokenizer_fingerprint(tok) -> str:
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode("utf-8")).hexdigest()[:16]


def text_batches(ds, columns: list[str], batch_size: int = 1000) -> Iterator[list[str]]:
    for start in range(0, len(ds), batch_size):
        batch = ds[start:start + batch_size]
        n = len(batch[columns[0]])
        yield join_text(batch, columns, n)


# --------------------------------------------------------------------------------------------
# Manifest and cached tokenized datasets
# --------------------------------------------------------------------------------------------

def file_digest(path: Path) -> dict:
    if path.is_dir():
        h = hashlib.sha256()
        size = 0
        for f in sorted(path.rglob("*")):
            if f.is_file():
                st = f.stat()
                size += st.st_size
                h.update(f"{f.relative_to(path)}:{st.st_size}:{int(st.st_mtime)}".encode())
        return {"path": str(path), "bytes": size, "sha256": h.hexdigest(), "kind": "datasets-dir"}
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": h.hexdigest()}


def is_tokenized_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file() and (p / DATASET_DIR).is_dir()


def read_manifest(path: str | Path) -> dict:
    try:
        return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}/{MANIFEST}: unreadable manifest ({e}); re-run bertkit tokenize") from None


def cache_key(digests: list[dict], params: dict, tokenizer_id: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([d["sha256"] for d in digests]).encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(tokenizer_id.encode())
    h.update(__version__.encode())
    return h.hexdigest()[:20]


def build_tokenized(data_cfg, tok_cfg, task: str, out_dir: Path, flag: str = "inputs") -> dict:
    """Read inputs, train or load a tokenizer, tokenize and (mlm) pack; write dataset, tokenizer and
    manifest into ``out_dir`` (callers write to a temp dir and rename).  mlm: if ``out_dir`` holds
    an interrupted run of the same inputs, parameters and tokenizer (a ``resume.json``, written each
    time a dataset shard is finished), the run continues from its last finished shard; any other
    existing ``out_dir`` is replaced.

    Returns the manifest.
    """
    t0 = time.time()
    text_cols = split_columns(data_cfg.text_column)
    columns = {"--text-column": data_cfg.text_column}
    if task == "cls":
        columns["--text-pair-column"] = data_cfg.text_pair_column
        columns["--label-column"] = data_cfg.label_column or "label"
    text_mode = "docs" if task == "mlm" and data_cfg.packing == "docs" else "lines"
    if tok_cfg.train and tok_cfg.path:
        raise UsageError("--tokenizer and --train-tokenizer exclude each other: pass one")
    if task == "mlm":
        # mlm streams its inputs (bertkit/streaming.py): nothing here holds the whole corpus
        ds = None
        paths = expand_inputs(data_cfg.inputs, flag)
        read_table = functools.partial(row_batches, flag=flag, columns=columns, text_mode=text_mode,
                                       text_cols=text_cols)
        total = sum(p.stat().st_size if p.is_file() else 0 for p in paths)
        log.info(f"Tokenizing {len(paths)} file(s)" + (f", {human_bytes(total)}" if total else ""))
    else:
        read_table = None
        ds, paths = load_inputs(data_cfg.inputs, flag, columns, text_mode=text_mode)
        log.info(f"Read {len(ds):,} rows from {len(paths)} file(s)")

    digests = [file_digest(p) for p in paths]
    key = cache_key(digests, _cache_params(data_cfg, task), _tok_id(tok_cfg))
    resume = _read_resume(out_dir, key) if task == "mlm" else None
    if resume is None and (out_dir / RESUME).exists():
        log.info(f"Discarding {out_dir}: an interrupted run with other inputs, parameters or tokenizer")
        shutil.rmtree(out_dir)

    if resume is not None:
        # the tokenizer of the interrupted run (a trained one is not trained again)
        tok, tok_source = load_tokenizer(out_dir / TOKENIZER_DIR), resume["tokenizer_source"]
        log.info(f"Resuming an interrupted run in {out_dir}: {resume['bytes_done'] / 1e6:,.1f} MB were done "
                 f"({len(resume['parts'])} finished shard(s))")
    else:
        tok, tok_source = _tokenizer_for(tok_cfg, lambda: wordpiece_texts(paths, read_table) if task == "mlm"
                                         else text_batches(ds, text_cols))
    if resume is None:
        out_dir.mkdir(parents=True, exist_ok=False)
        tok.save_pretrained(str(out_dir / TOKENIZER_DIR))

    if task == "mlm":
        stats, extra = _pack_mlm(paths, tok, data_cfg, out_dir, resume, {"key": key, "tokenizer_source": tok_source},
                                 read_table)
    else:
        stats, extra = _encode_cls(ds, paths, tok, data_cfg, text_cols, out_dir)
    manifest = {
        "bertkit_version": __version__,
        "task": task,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": digests,
        "tokenizer": {"source": tok_source, "fingerprint": tokenizer_fingerprint(tok), "vocab_size": len(tok),
                      "lowercase": bool(getattr(tok, "do_lower_case", tok_cfg.lowercase))},
        "parameters": {**asdict(data_cfg), "inputs": [str(p) for p in paths]},
        "counts": stats,
        "seconds": round(time.time() - t0, 2),
        **extra,
    }
    manifest["cache_key"] = key
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _tokenizer_for(tok_cfg, training_texts) -> tuple[Any, str]:
    """The tokenizer to encode with and where it came from: trained on ``training_texts()`` (called only
    when training) or loaded from ``--tokenizer``."""
    if tok_cfg.train:
        if tok_cfg.vocab_size < len(SPECIAL_TOKENS) + 10:
            raise UsageError(f"--vocab-size {tok_cfg.vocab_size} is too small")
        log.info(f"Training a WordPiece tokenizer (vocab {tok_cfg.vocab_size:,}, "
                 f"{'lowercase' if tok_cfg.lowercase else 'cased'})")
        tok = train_wordpiece(training_texts(), tok_cfg.vocab_size, tok_cfg.lowercase, tok_cfg.min_frequency)
        if len(tok) < tok_cfg.vocab_size:
            log.info(vocab_shortfall(len(tok), tok_cfg.vocab_size, tok_cfg.min_frequency))
        return tok, "trained"
    if tok_cfg.path:
        return load_tokenizer(tok_cfg.path), str(tok_cfg.path)
    raise UsageError("no tokenizer: pass --tokenizer DIR (a local tokenizer or model dir) or --train-tokenizer")


def _pack_mlm(paths, tok, data_cfg, out_dir: Path, resume: dict | None, stamp: dict, read_table) -> tuple[dict, dict]:
    """Stream ``paths`` into packed blocks in ``out_dir`` (from ``resume``'s last finished shard);
    returns (counts, manifest extras).  ``stamp`` goes into every resume checkpoint."""
    from .streaming import Packer, ShardWriter, tokenize_corpus

    packer = Packer(data_cfg.max_seq_length, tok.cls_token_id, tok.sep_token_id, mode=data_cfg.packing)
    writer = ShardWriter(out_dir / DATASET_DIR, resume_parts=resume["parts"] if resume else None)
    tokens_before = resume["packer"]["counts"][1] if resume else 0

    def checkpoint(state: dict) -> None:
        write_json(out_dir / RESUME, {**state, **stamp})

    run = tokenize_corpus(paths, tok, packer, writer, num_proc=data_cfg.num_proc, read_table=read_table, log=log,
                          resume=resume, checkpoint=checkpoint)
    writer.close(fingerprint=stamp["key"][:16])
    (out_dir / RESUME).unlink(missing_ok=True)
    stats = packer.stats()
    secs = max(run["seconds"], 1e-9)
    return stats, {"throughput": {"bytes": run["bytes"], "seconds": round(run["seconds"], 2),
                                  "mb_per_s": round(run["bytes"] / 1e6 / secs, 3),
                                  "tokens_per_s": round((stats["tokens"] - tokens_before) / secs),
                                  **({"resumed_at_bytes": run["resumed_at_bytes"]} if resume else {})}}


def _encode_cls(ds, paths, tok, data_cfg, text_cols: list[str], out_dir: Path) -> tuple[dict, dict]:
    """One example per row with its label, saved in ``out_dir``; returns (counts, manifest extras)."""
    from .labels import LabelSpace

    labels_col = data_cfg.label_column or "label"
    space = LabelSpace.from_values(ds[labels_col], problem="auto", column=labels_col)
    ds = space.attach(ds, labels_col, source=str(paths[0]))
    packed = encode_for_classification(ds, tok, text_cols, data_cfg.text_pair_column, data_cfg.max_seq_length,
                                       "truncate", 0, data_cfg.num_proc)
    lengths = np.array([len(x) for x in packed["input_ids"]])
    packed.save_to_disk(str(out_dir / DATASET_DIR))
    return ({"examples": len(ds), "tokens": int(lengths.sum()), "blocks": len(packed),
             "packing_efficiency": round(float(lengths.mean() / lengths.max()), 4) if len(lengths) else 0.0},
            {"labels": space.to_dict()})


def _cache_params(data_cfg, task: str) -> dict:
    d = asdict(data_cfg)
    for k in ("inputs", "num_proc", "eval_fraction"):
        d.pop(k, None)
    d["task"] = task
    return d


def _tok_id(tok_cfg) -> str:
    if tok_cfg.train:
        return f"train:{tok_cfg.vocab_size}:{tok_cfg.lowercase}:{tok_cfg.min_frequency}"
    p = Path(tok_cfg.path or "")
    f = p / "tokenizer.json"
    if (p / TOKENIZER_DIR / "tokenizer.json").exists():
        f = p / TOKENIZER_DIR / "tokenizer.json"
    return hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else str(p)


def _read_resume(out_dir: Path, key: str) -> dict | None:
    """The state of an interrupted run in ``out_dir`` if it is of this cache key, else None."""
    from .streaming import CHUNK_BYTES

    try:
        state = json.loads((out_dir / RESUME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if state.get("key") != key or state.get("chunk_bytes") != CHUNK_BYTES or \
            not (out_dir / TOKENIZER_DIR).is_dir() or \
            not all((out_dir / DATASET_DIR / name).is_file() for name in state.get("parts", [])):
        return None
    return state


def row_batches(path: Path, flag: str, columns: dict, text_mode: str, text_cols: list[str],
                batch_size: int = 10000):
    """(texts, document starts) batches of one non-text input (csv/tsv/json/parquet/saved dataset),
    read with :func:`load_inputs` (same columns, checks and errors) one file at a time."""
    import glob as _glob

    ds, _ = load_inputs([_glob.escape(str(path))], flag, columns, text_mode=text_mode)
    for start in range(0, len(ds), batch_size):
        batch = ds[start:start + batch_size]
        n = len(batch[text_cols[0]])
        yield join_text(batch, text_cols, n), (list(batch[DOC_START]) if DOC_START in batch else None)


def wordpiece_texts(paths: list[Path], read_table) -> Iterator[list[str]]:
    """The texts of all inputs, a chunk at a time, for the WordPiece trainer (it takes an iterator)."""
    from .data import TEXT_EXTS
    from .streaming import CHUNK_BYTES, Chunk, read_chunk_lines, text_ranges

    for i, p in enumerate(paths):
        if p.suffix.lower() in TEXT_EXTS and not p.is_dir():
            for s, e in text_ranges(p, CHUNK_BYTES):
                yield read_chunk_lines(Chunk(0, i, str(p), e - s, s, e, file_start=(s == 0)), docs=False)[0]
        else:
            for texts, _ in read_table(p):
                yield texts


def tokenized_cache(data_cfg, tok_cfg, cache_dir: Path) -> Path:
    """pretrain-mlm on raw files: tokenize once into ``cache_dir`` and reuse it while inputs,
    parameters and tokenizer are unchanged.  Runs on the main process first; the others wait for
    it and then read the cache (see :func:`bertkit.distributed.main_process_first`)."""
    paths = None
    with main_process_first():
        if is_tokenized_dir(cache_dir):
            from .data import expand_inputs

            paths = expand_inputs(data_cfg.inputs, "--data")
            key = cache_key([file_digest(p) for p in paths], _cache_params(data_cfg, "mlm"), _tok_id(tok_cfg))
            if read_manifest(cache_dir).get("cache_key") == key:
                log.info(f"Using the tokenized cache {cache_dir}")
                return cache_dir
        if is_main_process():
            with StagedDir(cache_dir, "pretrain-mlm") as tmp:
                build_tokenized(data_cfg, tok_cfg, "mlm", tmp, flag="--data")
    return cache_dir


# --------------------------------------------------------------------------------------------
# Classification examples
# --------------------------------------------------------------------------------------------

def head_tail(ids: list[int], max_len: int, cls_id: int, sep_id: int) -> list[int]:
    """``--long-text head-tail``: [CLS], the first quarter and the last three quarters of the token
    budget, [SEP] (Sun et al., 2019, "How to fine-tune BERT for text classification")."""
    budget = max_len - 2
    if len(ids) > budget:
        head = budget // 4
        ids = ids[:head] + ids[len(ids) - (budget - head):]
    return [cls_id, *ids, sep_id]


def encode_for_classification(ds, tok, text_cols: list[str], pair_col: str | None, max_len: int,
                              long_text: str = "truncate", stride: int = 32, num_proc: int = 1):
    """Tokenize one example per row (no padding: batches are padded dynamically).

    ``long_text``: ``truncate`` keeps the head; ``head-tail`` keeps the first quarter and the last
    three quarters of the token budget (Sun et al., 2019); ``sliding-window`` turns a long text into
    overlapping windows (``stride`` tokens of overlap), each a training example carrying the row's
    label and an ``example_id`` so window scores can be aggregated per text.
    """
    if max_len < 8:
        raise UsageError(f"--max-seq-length {max_len} is too small: use at least 8")
    if long_text == "sliding-window" and not 0 <= stride < max_len // 2:
        raise UsageError(f"--stride {stride} must be between 0 and half of --max-seq-length ({max_len // 2})")
    keep = [c for c in ("labels",) if c in ds.column_names]
    ds = ds.add_column("example_id", list(range(len(ds))))

    def fn(batch):
        n = len(batch[text_cols[0]])
        texts = join_text(batch, text_cols, n)
        pairs = [str(p) for p in batch[pair_col]] if pair_col else None
        if long_text == "sliding-window":
            enc = tok(texts, pairs, truncation="only_second" if pairs else True, max_length=max_len,
                      stride=stride, return_overflowing_tokens=True)
            mapping = enc.pop("overflow_to_sample_mapping")
            out = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
            out["example_id"] = [batch["example_id"][i] for i in mapping]
            for k in keep:
                out[k] = [batch[k][i] for i in mapping]
            return out
        if long_text == "head-tail" and not pairs:
            enc = tok(texts, add_special_tokens=False)
            full = [head_tail(x, max_len, tok.cls_token_id, tok.sep_token_id) for x in enc["input_ids"]]
            out = {"input_ids": full, "attention_mask": [[1] * len(x) for x in full],
                   "token_type_ids": [[0] * len(x) for x in full]}
        else:
            enc = tok(texts, pairs, truncation=True, max_length=max_len)
            out = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
        out["example_id"] = batch["example_id"]
        for k in keep:
            out[k] = batch[k]
        return out

    return ds.map(fn, batched=True, batch_size=1000, num_proc=num_proc if num_proc > 1 else None,
                  remove_columns=ds.column_names, desc="Tokenizing")
