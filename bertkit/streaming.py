"""MLM corpora at any size: read, encode and pack in bounded chunks, writing Arrow shards as they fill.

``bertkit tokenize --task mlm`` (and ``pretrain-mlm`` on raw files) used to read the whole corpus into
one ``datasets.Dataset``, encode it into one in-memory table and pack that: peak RSS grew by ~13.5 MB
per MB of text (0.96 GB for 17 MB, 4.33 GB for 266 MB).  Here the inputs are cut into
chunks (``.txt`` files: byte ranges ending at a line break; other formats: batches of rows of one
file at a time), each chunk is decoded and encoded on its own (in ``num_proc`` worker processes),
and the main process packs the chunks *in input order* with a :class:`Packer` that carries the
unfinished block, the pending document start and the "seen a token" flag from one chunk to the next,
so the blocks are exactly those of one pass over the whole corpus whatever the chunk size and
``num_proc``.  Blocks go to Arrow files as they are made; nothing corpus-sized stays in memory.

This module's top-level imports stay light (numpy, tokenizers): spawned workers import it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import split_documents
from .errors import DataError, UsageError
from .summary import fmt_duration, human_bytes

DOC_START = "_doc_start"  # == bertkit.data.DOC_START (not imported: workers keep their imports light)

# 4 MiB of text a chunk: ~1M MiniLM tokens, so a worker holds a few tens of MB at a time and a
# chunk's result (4 bytes a token) is ~4 MB to send back; per-chunk overhead (pickling, one
# process round trip) stays well under 1% of the ~2 s a chunk takes to encode on one core.
CHUNK_BYTES = 4 << 20
# Lines encoded per call inside a chunk: tokenizers' Encoding objects hold tokens and offsets
# (~100 bytes a token), so encoding a whole chunk at once would hold ~100 MB; 2,000 lines ~10 MB.
ENCODE_LINES = 2000
# A shard is closed at 64 MiB of token ids or after a minute, whichever comes first: each closed shard is
# a point an interrupted run resumes from, so a killed run loses at most that much work.  (datasets'
# save_to_disk makes 500 MB shards: a corpus under ~220 MB of text never reached one.)
SHARD_BYTES = 64 << 20
SHARD_SECONDS = 60.0


# --------------------------------------------------------------------------------------------
# Packing across chunks
# --------------------------------------------------------------------------------------------

class Packer:
    """Pack token rows into framed blocks of ``block_size`` ([CLS] ... [SEP] included), chunk by chunk.

    ``docs``: the token stream of all rows, with [SEP] between documents, is cut into full blocks;
    the tail is kept as a last, shorter block (nothing is dropped, and a tiny corpus still yields a
    block).  ``lines``: every row is its own example; rows longer than a block are split.

    State carried between :meth:`feed` calls: the tokens of the unfinished block, a document start
    seen in rows without tokens (it applies to the next row that has some, so empty rows never
    double a [SEP]) and whether any token was seen (no [SEP] before the first document).  So feeding
    a corpus in any number of chunks gives the blocks of one pass.  Numpy only, no loop per token.
    """

    def __init__(self, block_size: int, cls_id: int, sep_id: int, mode: str = "docs"):
        if block_size < 8:
            raise UsageError(f"--max-seq-length {block_size} is too small: use at least 8")
        self.block_size, self.body = block_size, block_size - 2
        self.cls_id, self.sep_id, self.mode = cls_id, sep_id, mode
        self.carry = np.zeros(0, dtype=np.int32)
        self.pending_start = False
        self.seen_tokens = False
        self.rows = self.tokens = self.documents = self.blocks = self.block_tokens = 0

    def _emit(self, stream: np.ndarray, final: bool, out: list) -> np.ndarray:
        body, block_size = self.body, self.block_size
        full = len(stream) // body
        if full:
            framed = np.empty((full, block_size), dtype=np.int32)
            framed[:, 0] = self.cls_id
            framed[:, 1:-1] = stream[: full * body].reshape(full, body)
            framed[:, -1] = self.sep_id
            out.append((framed.ravel(), np.full(full, block_size, dtype=np.int64)))
        rest = stream[full * body:]
        if final and len(rest):
            out.append((np.concatenate([[self.cls_id], rest, [self.sep_id]]).astype(np.int32),
                        np.array([len(rest) + 2], dtype=np.int64)))
            rest = rest[:0]
        return rest

    def _result(self, out: list) -> tuple[np.ndarray, np.ndarray]:
        if not out:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
        flat = np.concatenate([o[0] for o in out]) if len(out) > 1 else out[0][0]
        lengths = np.concatenate([o[1] for o in out]) if len(out) > 1 else out[0][1]
        self.blocks += len(lengths)
        self.block_tokens += int(lengths.sum())
        return flat, lengths

    def feed(self, lengths: np.ndarray, values: np.ndarray, starts: np.ndarray | None = None):
        """Rows given as per-row token counts and their concatenated ids (``starts``: the row begins a
        document; None: every row does).  Returns the blocks completed, as (flat ids, block lengths)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        values = np.asarray(values, dtype=np.int32)
        n = len(lengths)
        self.rows += n
        self.tokens += int(lengths.sum())
        out: list = []
        body = self.body
        if self.mode == "lines":
            # one example per row: rows longer than a block are split into pieces, each framed
            self.documents += n
            lens = lengths[lengths > 0]
            if len(lens):
                pieces = (lens + body - 1) // body
                piece_len = np.full(int(pieces.sum()), body, dtype=np.int64)
                piece_len[np.cumsum(pieces) - 1] = lens - (pieces - 1) * body
                out_len = piece_len + 2
                ends = np.cumsum(out_len)
                begins = ends - out_len
                framed = np.empty(int(ends[-1]), dtype=np.int32)
                content = np.ones(len(framed), dtype=bool)
                content[begins] = False
                content[ends - 1] = False
                framed[content] = values  # the pieces, in order, are exactly the row values
                framed[begins] = self.cls_id
                framed[ends - 1] = self.sep_id
                out.append((framed, out_len))
            return self._result(out)
        starts = np.ones(n, dtype=bool) if starts is None else np.asarray(starts, dtype=bool)
        self.documents += int(starts.sum())
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # A [SEP] goes before the first non-empty row of each document after the first one.  Empty
        # rows carry their document start on to the next non-empty row (no doubled [SEP]).
        nonempty = np.flatnonzero(lengths > 0)
        count = np.concatenate([[0], np.cumsum(starts)])  # starts seen before row i: count[i]
        prev = np.concatenate([[-1], nonempty[:-1]])
        new_doc = (count[nonempty + 1] - count[prev + 1]) > 0
        if len(nonempty):
            new_doc[0] = new_doc[0] or self.pending_start
            self.pending_start = bool(count[-1] - count[nonempty[-1] + 1] > 0)
        else:
            self.pending_start = self.pending_start or bool(starts.any())
        if not self.seen_tokens and len(nonempty):
            new_doc[0] = False  # no [SEP] before the very first document
            self.seen_tokens = True
        insert_at = offsets[nonempty[new_doc]]
        stream = np.insert(values, insert_at, self.sep_id) if len(insert_at) else values
        self.carry = self._emit(np.concatenate([self.carry, stream]), False, out)
        return self._result(out)

    def finish(self):
        """The last, shorter block (docs mode); raises when the whole input held no token."""
        out: list = []
        if self.mode == "docs":
            self.carry = self._emit(self.carry, True, out)
        result = self._result(out)
        if not self.blocks:
            raise DataError("the input holds no tokens after tokenization (is the text column empty?)")
        return result

    def state(self) -> dict:
        """What :meth:`restore` needs to continue packing exactly where this packer is (JSON-able)."""
        return {"carry": self.carry.tolist(), "pending_start": self.pending_start, "seen_tokens": self.seen_tokens,
                "counts": [self.rows, self.tokens, self.documents, self.blocks, self.block_tokens]}

    def restore(self, state: dict) -> None:
        self.carry = np.asarray(state["carry"], dtype=np.int32)
        self.pending_start, self.seen_tokens = bool(state["pending_start"]), bool(state["seen_tokens"])
        self.rows, self.tokens, self.documents, self.blocks, self.block_tokens = state["counts"]

    def stats(self) -> dict:
        return {
            "examples": self.rows,
            "documents": self.documents,
            "tokens": self.tokens,
            "blocks": self.blocks,
            "block_tokens": self.block_tokens,
            "packing_efficiency": round(float(self.block_tokens) / float(max(self.blocks, 1) * self.block_size), 4),
        }


# --------------------------------------------------------------------------------------------
# Chunks: planning (main process) and encoding (workers)
# --------------------------------------------------------------------------------------------

@dataclass
class Chunk:
    """One unit of work.  Text files: a byte range of ``path`` that starts and ends at a line break;
    other inputs: rows already read (``texts``, ``starts``)."""
    index: int
    file_index: int
    path: str
    nbytes: int
    start: int = 0
    end: int = 0
    file_start: bool = True
    texts: list | None = None
    starts: list | None = None
    last_of_file: bool = False


@dataclass
class Encoded:
    index: int
    file_index: int
    nbytes: int
    lengths: np.ndarray
    values: np.ndarray
    starts: np.ndarray | None
    tail_new_doc: bool = False  # text files: the chunk ends in blank lines (a document ends there)
    last_of_file: bool = False
    seconds: float = 0.0


def text_ranges(path: Path, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """Byte ranges of ``path`` of about ``chunk_bytes``, each ending just after a b"\\n" (or at EOF).

    A range never splits a line, so splitting each range's text into lines gives the lines of the
    whole file (a UTF-8 multi-byte character never contains the byte 0x0a, and a b"\\r\\n" stays whole).
    """
    size = path.stat().st_size
    start = 0
    with open(path, "rb") as fh:
        while start < size:
            target = start + chunk_bytes
            if target >= size:
                yield start, size
                return
            fh.seek(target)
            fh.readline()  # to the end of the line the target falls in
            end = min(fh.tell(), size)
            yield start, end
            start = end


_WORKER: dict[str, Any] = {}


def _init_worker(tok_json: str, mode: str) -> None:
    """Pool initializer: one tokenizer per process, single-threaded (the processes are the parallelism)."""
    import signal

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # Ctrl-C reaches the whole process group: only the main process handles it (and removes the
    # partial output); workers stopping on their own would print a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from tokenizers import Tokenizer

    _WORKER["tok"] = Tokenizer.from_str(tok_json)
    _WORKER["mode"] = mode


def _bad_utf8(path: str, start: int, err: UnicodeDecodeError) -> DataError:
    pos = start + err.start
    with open(path, "rb") as fh:
        line = 1
        remaining = pos
        while remaining > 0:
            block = fh.read(min(remaining, 1 << 20))
            if not block:
                break
            line += block.count(b"\n")
            remaining -= len(block)
        fh.seek(pos)
        byte = fh.read(1)
    return DataError(f"{path}: line {line} is not valid UTF-8 (byte 0x{byte[0]:02x}); "
                     "re-save the file as UTF-8, e.g. iconv -f GB18030 -t UTF-8")


def _encode_ids(backend, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-text token counts and the concatenated ids (no special tokens), ENCODE_LINES at a time."""
    import itertools

    # encode_batch_fast skips the offset computation we do not need (tokenizers >= 0.21)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    lengths, values = [], []
    for s in range(0, len(texts), ENCODE_LINES):
        ids = [e.ids for e in encode(texts[s: s + ENCODE_LINES], add_special_tokens=False)]
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        lengths.append(lens)
        values.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lens.sum())))
    if not lengths:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    return np.concatenate(lengths), np.concatenate(values)


def read_chunk_lines(chunk: Chunk, docs: bool) -> tuple[list[str], list[bool] | None, bool]:
    """A text chunk's non-empty lines (stripped), their document-start flags and whether the chunk
    ends in blank lines.  As ``bertkit.data._read_txt`` on a whole file: a document starts at the
    file's start and after blank lines; the first line of a chunk that is not the file's start gets
    False here and the main process sets it from the previous chunk (see :func:`tokenize_corpus`)."""
    with open(chunk.path, "rb") as fh:
        fh.seek(chunk.start)
        raw = fh.read(chunk.end - chunk.start)
    try:
        # the BOM is only at the file's start; elsewhere U+FEFF is text
        text = raw.decode("utf-8-sig" if chunk.file_start else "utf-8")
    except UnicodeDecodeError as e:
        # utf-8-sig reports positions in the bytes after the BOM
        raise _bad_utf8(chunk.path, chunk.start + len(raw) - len(e.object), e) from None
    del raw
    rows, starts, new_doc = split_documents(text, chunk.file_start)
    return rows, (starts if docs else None), new_doc


def encode_chunk(chunk: Chunk, backend=None, mode: str | None = None) -> Encoded:
    """Decode and encode one chunk (in a worker, or in the main process with ``backend`` given)."""
    t0 = time.perf_counter()
    backend = backend if backend is not None else _WORKER["tok"]
    mode = mode or _WORKER["mode"]
    tail = False
    if chunk.texts is None:
        texts, starts, tail = read_chunk_lines(chunk, mode == "docs")
    else:
        texts, starts = chunk.texts, chunk.starts
    lengths, values = _encode_ids(backend, texts)
    return Encoded(chunk.index, chunk.file_index, chunk.nbytes, lengths, values,
                   None if starts is None else np.asarray(starts, dtype=bool), tail, chunk.last_of_file,
                   time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Output: Arrow shards written as blocks are made, laid out as datasets' save_to_disk does
# --------------------------------------------------------------------------------------------

class ShardWriter:
    """Write ``input_ids`` blocks into ``data-XXXXX-of-YYYYY.arrow`` files plus ``state.json`` and
    ``dataset_info.json``: the layout of ``Dataset.save_to_disk``, so ``load_from_disk`` reads it
    memory-mapped.  Each shard is written with datasets' own ``ArrowWriter`` (the writer
    save_to_disk uses); shards roll at ``shard_bytes`` or after ``shard_seconds``, each a point to
    resume from.  (``Dataset.from_generator`` would write a cache file that save_to_disk then
    copies, reading it back memory-mapped: ~1 GB of file pages resident for a 1 GB corpus.)"""

    def __init__(self, out_dir: Path, shard_bytes: int | None = None, resume_parts: list[str] | None = None,
                 shard_seconds: float | None = None):
        """``resume_parts``: continue an interrupted run in ``out_dir``, keeping these finished shards
        (and deleting any other, unfinished ``part-*.arrow``)."""
        import datasets

        self.dir = Path(out_dir)
        self.features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"))})
        self.shard_bytes = shard_bytes or SHARD_BYTES
        self.shard_seconds = SHARD_SECONDS if shard_seconds is None else shard_seconds
        self.parts: list[Path] = []
        if resume_parts is not None:
            self.parts = [self.dir / name for name in resume_parts]
            for f in self.dir.glob("part-*.arrow"):
                if f not in self.parts:
                    f.unlink()
        else:
            self.dir.mkdir(parents=True, exist_ok=False)
        self.writer = None
        self.written = 0
        self.just_closed = False  # a shard was finished by the last write(): a point to resume from

    def _open(self):
        from datasets.arrow_writer import ArrowWriter

        path = self.dir / f"part-{len(self.parts):05d}.arrow"
        self.parts.append(path)
        self.writer = ArrowWriter(features=self.features, path=str(path))
        self.written = 0
        self.opened = time.monotonic()

    def write(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        import pyarrow as pa

        self.just_closed = False
        if not len(lengths):
            return
        if self.writer is None:
            self._open()
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        arr = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.int32()))
        self.writer.write_table(pa.table({"input_ids": arr.cast(pa.list_(pa.int32()))}))
        self.written += flat.nbytes
        if self.written >= self.shard_bytes or time.monotonic() - self.opened >= self.shard_seconds:
            self.writer.finalize()
            self.writer.close()
            self.writer = None
            self.just_closed = True

    def close(self, fingerprint: str) -> None:
        import json

        if self.writer is not None:
            self.writer.finalize()
            self.writer.close()
            self.writer = None
        n = len(self.parts)
        files = []
        for i, part in enumerate(self.parts):
            name = f"data-{i:05d}-of-{n:05d}.arrow"
            os.replace(part, self.dir / name)
            files.append({"filename": name})
        state = {"_data_files": files, "_fingerprint": fingerprint, "_format_columns": None, "_format_kwargs": {},
                 "_format_type": None, "_output_all_columns": False, "_split": None}
        (self.dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        info = {"citation": "", "description": "", "features": self.features.to_dict(), "homepage": "", "license": ""}
        (self.dir / "dataset_info.json").write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------

class Progress:
    """Bytes done of the total, MB/s and an ETA on stderr: a line every ``every`` seconds and at the
    end of each file (plain lines, not a bar: logs of long runs stay readable)."""

    def __init__(self, total: int, n_files: int, log, every: float = 10.0):
        self.total, self.n_files, self.log, self.every = max(total, 1), n_files, log, every
        self.done = self.base = 0  # base: bytes done by an earlier, interrupted run (not in the rate)
        self.t0 = self.last = time.perf_counter()

    def update(self, nbytes: int, file_done: str | None = None, file_index: int = 0) -> None:
        self.done += nbytes
        now = time.perf_counter()
        last_file = file_done is not None and file_index == self.n_files - 1
        # a line per finished file too, but not more than one every 2 s (a dump of 1,000 small shards)
        if not last_file and now - self.last < (self.every if file_done is None else 2.0):
            return
        self.last = now
        rate = (self.done - self.base) / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        where = f"file {file_index + 1}/{self.n_files} done ({file_done}); " if file_done else ""
        self.log.info(f"Tokenizing: {where}{human_bytes(self.done)} of {human_bytes(self.total)} "
                      f"({self.done / self.total:.0%}), {rate / 1e6:.2f} MB/s, ETA {fmt_duration(eta)}")


def plan_chunks(paths: list[Path], read_table, chunk_bytes: int, docs: bool) -> Iterator[Chunk]:
    """Chunks of all inputs, in order, file by file.  ``read_table(path)`` reads a non-text input
    (one file at a time) and returns ``(texts batches iterator)``: batches of (texts, starts)."""
    from .data import TEXT_EXTS

    index = 0
    for fi, p in enumerate(paths):
        if p.suffix.lower() in TEXT_EXTS and not p.is_dir():
            ranges = list(text_ranges(p, chunk_bytes))
            for k, (s, e) in enumerate(ranges):
                yield Chunk(index, fi, str(p), e - s, s, e, file_start=(s == 0), last_of_file=(k == len(ranges) - 1))
                index += 1
        else:
            size = _input_bytes(p)
            batches = list(read_table(p))  # (texts, starts) lists of one file: bounded by the file
            total_rows = sum(len(b[0]) for b in batches) or 1
            done = 0
            for k, (texts, starts) in enumerate(batches):
                nb = size * (done + len(texts)) // total_rows - size * done // total_rows
                done += len(texts)
                yield Chunk(index, fi, str(p), nb, texts=texts, starts=starts if docs else None,
                            last_of_file=(k == len(batches) - 1))
                index += 1


def _input_bytes(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


class _Consumer:
    """The in-order half of :func:`tokenize_corpus`: feeds each encoded chunk to the packer and writer,
    carries document starts across chunk boundaries, checks every text file had text, reports progress
    and hands ``checkpoint`` a resumable state whenever the writer closes a shard."""

    def __init__(self, paths: list[Path], packer: Packer, writer: ShardWriter, chunk_bytes: int, progress,
                 checkpoint, resume: dict | None):
        from .data import TEXT_EXTS

        self.paths, self.packer, self.writer, self.progress = paths, packer, writer, progress
        self.chunk_bytes, self.checkpoint = chunk_bytes, checkpoint
        self.docs = packer.mode == "docs"
        self.is_text = [p.suffix.lower() in TEXT_EXTS and not p.is_dir() for p in paths]
        self.pending_start = False  # the previous chunk of this file ended in blank lines
        self.file_rows = self.done_bytes = self.skipped = 0
        if resume is not None:
            if resume.get("chunk_bytes") != chunk_bytes:
                raise ValueError("resume: the chunk size differs from the interrupted run's")
            packer.restore(resume["packer"])
            self.pending_start, self.file_rows = bool(resume["pending_start"]), int(resume["file_rows"])
            self.done_bytes = self.skipped = int(resume["bytes_done"])
            if progress is not None:
                progress.done = progress.base = self.skipped

    def __call__(self, enc: Encoded) -> None:
        starts = enc.starts
        if self.docs and starts is not None and self.is_text[enc.file_index]:
            if len(starts):
                starts[0] = starts[0] or self.pending_start
                self.pending_start = enc.tail_new_doc
            else:
                self.pending_start = self.pending_start or enc.tail_new_doc
        self.file_rows += len(enc.lengths)
        flat, lengths = self.packer.feed(enc.lengths, enc.values, starts)
        self.writer.write(flat, lengths)
        if enc.last_of_file:
            if self.file_rows == 0 and self.is_text[enc.file_index]:
                raise DataError(f"{self.paths[enc.file_index]}: no text (only blank lines)")
            self.file_rows = 0
            self.pending_start = False
        self.done_bytes += enc.nbytes
        if self.progress is not None:
            self.progress.update(enc.nbytes, self.paths[enc.file_index].name if enc.last_of_file else None,
                                 enc.file_index)
        if self.writer.just_closed and self.checkpoint is not None:
            self.checkpoint({"next_chunk": enc.index + 1, "chunk_bytes": self.chunk_bytes,
                             "packer": self.packer.state(), "pending_start": self.pending_start,
                             "file_rows": self.file_rows, "bytes_done": self.done_bytes,
                             "parts": [p.name for p in self.writer.parts]})


def _encoded_here(chunks, backend, mode: str):
    """Chunks encoded in this process on one thread (--num-proc 1 means one core)."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        for chunk in chunks:
            yield encode_chunk(chunk, backend, mode)
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _encoded_by_pool(chunks, backend, mode: str, num_proc: int):
    """Chunks encoded by ``num_proc`` spawned worker processes, yielded in input order with at most
    2 x num_proc in flight."""
    import collections
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=num_proc, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(backend.to_str(), mode)) as pool:
        inflight: collections.deque = collections.deque()
        try:
            for chunk in chunks:
                inflight.append(pool.submit(encode_chunk, chunk))
                while len(inflight) >= 2 * num_proc:
                    yield inflight.popleft().result()
            while inflight:
                yield inflight.popleft().result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # running chunks finish (seconds), queued ones never start
            raise


def tokenize_corpus(paths: list[Path], tok, packer: Packer, writer: ShardWriter, *, num_proc: int = 1,
                    read_table=None, chunk_bytes: int | None = None, log=None, resume: dict | None = None,
                    checkpoint=None) -> dict:
    """Encode and pack ``paths`` chunk by chunk into ``writer``; returns byte/second counts.

    Each time the writer finishes a shard, ``checkpoint(state)`` gets what a rerun needs to continue
    from there (the next chunk, the packer's and the line reader's state, the finished shards);
    ``resume=state`` continues from such a state: earlier chunks are not read or encoded again
    (a non-text input is still read to find its batches) and the blocks are those of one pass.

    ``num_proc`` > 1: a pool of that many spawned worker processes (one single-threaded tokenizer
    each) encodes chunks while the main process packs and writes them in input order, with at most
    2 x num_proc chunks in flight (memory bounded whatever the corpus size).  Processes rather than
    the tokenizers library's thread pool: reading, splitting lines and turning ids into arrays is
    Python work that threads would serialize on the GIL.  ``num_proc`` == 1 encodes in this process
    on one thread.  Spawned, not forked: the parent may hold threads (tokenizers, Arrow).
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    total = sum(_input_bytes(p) for p in paths)
    progress = Progress(total, len(paths), log) if log is not None else None
    consume = _Consumer(paths, packer, writer, chunk_bytes, progress, checkpoint, resume)
    chunks = plan_chunks(paths, read_table, chunk_bytes, packer.mode == "docs")
    if resume is not None:
        chunks = (c for c in chunks if c.index >= resume["next_chunk"])
    t0 = time.perf_counter()
    backend = tok.backend_tokenizer
    encoded = (_encoded_here(chunks, backend, packer.mode) if num_proc <= 1
               else _encoded_by_pool(chunks, backend, packer.mode, num_proc))
    try:
        for enc in encoded:
            consume(enc)
    finally:
        encoded.close()  # on an error here too: the pool stops now (queued chunks cancelled), not at garbage collection
    flat, lengths = packer.finish()
    writer.write(flat, lengths)
    seconds = time.perf_counter() - t0
    return {"bytes": total - consume.skipped, "seconds": seconds, "resumed_at_bytes": consume.skipped}
