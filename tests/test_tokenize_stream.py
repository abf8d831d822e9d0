"""Streaming tokenization (what `bertkit tokenize` runs): packing loses no token, and chunked
reading/encoding/packing gives exactly the blocks of one pass over the whole corpus, whatever the chunk
size and --num-proc; nothing half-written is left."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import EN, ZH, cli, write_corpus

CLS, SEP = 2, 3


@pytest.fixture(scope="module")
def tok():
    from bertkit.tokenization import train_wordpiece

    return train_wordpiece(iter([EN + ZH]), vocab_size=120, lowercase=True, min_frequency=1)


def _random_rows(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 40, size=n)
    lengths[rng.random(n) < 0.15] = 0  # rows without tokens, some at chunk edges
    starts = rng.random(n) < 0.3
    values = rng.integers(10, 90, size=int(lengths.sum())).astype(np.int32)
    return lengths, values, starts


def _feed(packer, lengths, values, starts, cut: int):
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flats, lens = [], []
    for s in range(0, len(lengths), cut):
        e = min(s + cut, len(lengths))
        st = None if starts is None else starts[s:e]
        f, ln = packer.feed(lengths[s:e], values[offsets[s]:offsets[e]], st)
        flats.append(f)
        lens.append(ln)
    f, ln = packer.finish()
    flats.append(f)
    lens.append(ln)
    return np.concatenate(flats), np.concatenate(lens)


@pytest.mark.parametrize("mode", ["docs", "lines"])
@pytest.mark.parametrize("seed", [0, 1])
def test_packer_across_chunk_boundaries_equals_one_chunk(mode, seed):
    from bertkit.streaming import Packer

    lengths, values, starts = _random_rows(seed)
    one = Packer(16, CLS, SEP, mode)
    ref_flat, ref_len = _feed(one, lengths, values, starts, cut=len(lengths))
    for cut in (1, 2, 3, 7, 64):
        p = Packer(16, CLS, SEP, mode)
        flat, lens = _feed(p, lengths, values, starts, cut)
        assert np.array_equal(flat, ref_flat) and np.array_equal(lens, ref_len), cut
        assert p.stats() == one.stats()
    # no token lost: the content of the blocks is the token stream, [SEP] between documents
    content = ref_flat[np.isin(ref_flat, [CLS, SEP], invert=True)]
    assert np.array_equal(content, values)
    assert one.stats()["tokens"] == len(values) and one.stats()["block_tokens"] == len(ref_flat)


def _pack(rows, starts=None, block=32, mode="docs", cut=None):
    """Rows of token ids through a Packer, ``cut`` rows a feed: the blocks as lists, and the counts."""
    from bertkit.streaming import Packer

    packer = Packer(block, CLS, SEP, mode)
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    values = np.array([t for r in rows for t in r], dtype=np.int32)
    flat, lens = _feed(packer, lengths, values, None if starts is None else np.array(starts), cut or len(rows))
    ends = np.cumsum(lens)
    return [flat[e - n:e].tolist() for e, n in zip(ends, lens, strict=True)], packer.stats()


def test_pack_docs_keeps_tail_and_joins_documents_with_sep():
    blocks, stats = _pack([[10, 11, 12], [13, 14], [15, 16, 17, 18], [19]], [True, False, True, True])
    assert blocks == [[CLS, 10, 11, 12, 13, 14, SEP, 15, 16, 17, 18, SEP, 19, SEP]]
    assert stats["tokens"] == 10 and stats["blocks"] == 1 and stats["examples"] == 4


def test_pack_docs_full_blocks_lose_no_token():
    rng = np.random.default_rng(0)
    rows = [rng.integers(10, 90, size=int(rng.integers(0, 60))).tolist() for _ in range(300)]
    starts = [i % 3 == 0 for i in range(300)]
    blocks, stats = _pack(rows, starts, cut=70)
    assert all(b[0] == CLS and b[-1] == SEP for b in blocks)
    assert all(len(b) == 32 for b in blocks[:-1]) and 3 <= len(blocks[-1]) <= 32
    expected = []
    for i, (r, s) in enumerate(zip(rows, starts, strict=True)):
        expected += [SEP] * (s and i > 0) + r
    assert [t for b in blocks for t in b[1:-1]] == expected
    assert stats["tokens"] == sum(map(len, rows)) and stats["blocks"] == len(blocks)
    assert stats["block_tokens"] == sum(map(len, blocks))


def test_pack_without_doc_start_treats_rows_as_documents():
    assert _pack([[10, 11], [12], [13, 14]], block=16)[0] == [[CLS, 10, 11, SEP, 12, SEP, 13, 14, SEP]]


def test_pack_lines_one_example_per_line_and_splits_long_lines():
    long = list(range(20, 90))  # 70 tokens, block body 30
    blocks, stats = _pack([[10, 11, 12], [], long, [13]], [True, False, True, False], mode="lines")
    assert blocks == [[CLS, 10, 11, 12, SEP],
                      [CLS, *long[:30], SEP], [CLS, *long[30:60], SEP], [CLS, *long[60:], SEP],
                      [CLS, 13, SEP]]
    assert stats["tokens"] == 74


def test_pack_empty_rows_do_not_double_sep_and_no_tokens_is_an_error():
    from bertkit.errors import DataError

    blocks, stats = _pack([[5, 6], [], [7], [], [], [8, 9], []], [True, False, True, True, False, True, True],
                          block=16)
    assert blocks == [[CLS, 5, 6, SEP, 7, SEP, 8, 9, SEP]]
    assert stats["documents"] == 5 and stats["tokens"] == 5
    assert _pack([[], [5], [6]], [True, True, False], block=16)[0] == [[CLS, 5, 6, SEP]]
    for mode in ("docs", "lines"):
        with pytest.raises(DataError):
            _pack([[], []], [True, True], mode=mode)


def _reference(paths, tok, block, mode="docs"):
    """One plain pass (read every row, encode them all, pack in Python): the blocks and counts the
    streamed chunks must reproduce."""
    from bertkit.data import DOC_START, load_inputs

    ds, _ = load_inputs([str(p) for p in paths], "INPUT", {"--text-column": "text"}, text_mode=mode)
    rows = tok(list(ds["text"]), add_special_tokens=False)["input_ids"]
    starts = list(ds[DOC_START]) if mode == "docs" and DOC_START in ds.column_names else [True] * len(rows)
    body = block - 2
    if mode == "lines":
        pieces = [r[i:i + body] for r in rows for i in range(0, len(r), body)]
    else:  # one token stream, [SEP] between documents (a start on an empty row moves to the next row)
        stream, pending, seen = [], False, False
        for r, start in zip(rows, starts, strict=True):
            pending = pending or start
            if r:
                stream += [tok.sep_token_id] * (pending and seen) + r
                pending, seen = False, True
        pieces = [stream[i:i + body] for i in range(0, len(stream), body)]
    blocks = [[tok.cls_token_id, *p, tok.sep_token_id] for p in pieces]
    n_tokens = sum(map(len, blocks))
    return blocks, {"examples": len(rows), "documents": sum(starts), "tokens": sum(map(len, rows)),
                    "blocks": len(blocks), "block_tokens": n_tokens,
                    "packing_efficiency": round(n_tokens / (len(blocks) * block), 4)}


def _stream(paths, tok, block, tmp: Path, mode="docs", num_proc=1, chunk_bytes=4 << 20):
    import datasets

    from bertkit.streaming import Packer, ShardWriter, tokenize_corpus
    from bertkit.tokenization import row_batches

    def read_table(p):
        return row_batches(p, flag="INPUT", columns={"--text-column": "text"}, text_mode=mode, text_cols=["text"])

    packer = Packer(block, tok.cls_token_id, tok.sep_token_id, mode)
    out = tmp / f"ds-{mode}-{num_proc}-{chunk_bytes}"
    writer = ShardWriter(out, shard_bytes=2000)  # several shards
    tokenize_corpus([Path(p) for p in paths], tok, packer, writer, num_proc=num_proc, read_table=read_table,
                    chunk_bytes=chunk_bytes)
    writer.close("test")
    ds = datasets.load_from_disk(str(out))
    return [list(x) for x in ds["input_ids"]], packer.stats(), out


def _awkward_corpus(tmp: Path) -> list[Path]:
    """Text files with what chunk edges could get wrong: a BOM, CRLF, runs of blank lines, whitespace
    lines, documents longer than a chunk, a line without a final newline, Chinese; plus a JSONL."""
    a = write_corpus(tmp / "a.txt", docs=25)
    lines = ["\ufeff" + EN[0]]
    for i in range(40):
        lines += [EN[i % len(EN)], ZH[i % len(ZH)] + "。" * (i % 3)]
        lines += [""] * (i % 4) + (["   \t "] if i % 5 == 0 else [])
    b = tmp / "b.txt"
    b.write_bytes("\r\n".join(lines).encode("utf-8"))  # no final newline
    c = tmp / "c.jsonl"
    c.write_text("\n".join(json.dumps({"text": t, "other": 1}, ensure_ascii=False) for t in EN + ZH) + "\n",
                 encoding="utf-8")
    return [a, b, c]


@pytest.mark.parametrize("mode", ["docs", "lines"])
def test_stream_equals_one_pass_whatever_the_chunk_size(tok, tmp_path, mode):
    paths = _awkward_corpus(tmp_path)
    ref_blocks, ref_stats = _reference(paths, tok, 32, mode)
    for chunk_bytes in (1, 50, 333, 4 << 20):  # 1 byte: every line is its own chunk
        blocks, stats, out = _stream(paths, tok, 32, tmp_path, mode, chunk_bytes=chunk_bytes)
        assert blocks == ref_blocks, chunk_bytes
        assert stats == ref_stats, chunk_bytes
    assert len(list(out.glob("data-*-of-*.arrow"))) > 1


def test_stream_num_proc_2_same_blocks_same_order(tok, tmp_path):
    paths = _awkward_corpus(tmp_path)
    one, s1, _ = _stream(paths, tok, 32, tmp_path, num_proc=1, chunk_bytes=200)
    two, s2, _ = _stream(paths, tok, 32, tmp_path, num_proc=2, chunk_bytes=97)
    assert one == two and s1 == s2
    assert s1["documents"] > 25 and s1["blocks"] == len(one)


def test_bad_utf8_in_a_later_chunk_names_the_line(tok, tmp_path):
    from bertkit.errors import DataError

    f = tmp_path / "bad.txt"
    f.write_bytes(("hello world\n" * 50).encode() + b"caf\xe9\n" + b"more text\n")
    with pytest.raises(DataError, match=r"bad.txt: line 51 is not valid UTF-8 \(byte 0xe9\)"):
        _stream([f], tok, 32, tmp_path, chunk_bytes=100)
    g = tmp_path / "bom.txt"  # with a BOM, in the first chunk
    g.write_bytes(b"\xef\xbb\xbfab\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"bom.txt: line 2 is not valid UTF-8 \(byte 0xe9\)"):
        _stream([g], tok, 32, tmp_path)


def test_tokenize_cli_streams_files_and_reports_throughput(tmp_path, capsys):
    """Through the CLI: two files, --num-proc 2; the output loads, the manifest counts are the
    dataset's, the summary gives MB/s and tokens/s; a stale temp dir from a killed run is removed."""
    import datasets

    a = write_corpus(tmp_path / "a.txt", docs=30)
    b = write_corpus(tmp_path / "b.txt", docs=12)
    out = tmp_path / "out"
    stale = tmp_path / ".out.tmp-999999999"  # no such process: a killed run's leftovers
    stale.mkdir()
    assert cli("tokenize", str(tmp_path / "*.txt"), "--output", out, "--train-tokenizer", "--vocab-size", 200,
               "--max-seq-length", 32, "--num-proc", 2) == 0
    err = capsys.readouterr().err
    assert "MB/s" in err and "tokens/s" in err and "file 2/2 done" in err
    assert not stale.exists() and not list(tmp_path.glob(".out*"))  # no temp, partial or lock left
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    ds = datasets.load_from_disk(str(out / "dataset"))
    lengths = [len(x) for x in ds["input_ids"]]
    assert m["counts"]["blocks"] == len(ds) and m["counts"]["block_tokens"] == sum(lengths)
    assert m["counts"]["documents"] == 42 and m["counts"]["examples"] == 84
    assert m["throughput"]["bytes"] == a.stat().st_size + b.stat().st_size
    assert m["throughput"]["tokens_per_s"] > 0


def test_tokenize_cli_error_midway_leaves_nothing(tok, tmp_path, capsys):
    tok.save_pretrained(str(tmp_path / "tokdir"))
    good = write_corpus(tmp_path / "a.txt", docs=10)
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"fine line\n\ncaf\xe9\n")
    out = tmp_path / "out"
    assert cli("tokenize", good, bad, "--output", out, "--tokenizer", tmp_path / "tokdir",
               "--max-seq-length", 32, "--num-proc", 2) == 1  # raised in a worker process
    assert "b.txt: line 3 is not valid UTF-8" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_wordpiece_texts_stream_every_line(tmp_path):
    from bertkit.tokenization import wordpiece_texts

    paths = _awkward_corpus(tmp_path)[:2]
    streamed = [t for batch in wordpiece_texts(paths, None) for t in batch]
    from bertkit.data import load_inputs

    ds, _ = load_inputs([str(p) for p in paths], "INPUT", {"--text-column": "text"}, text_mode="lines")
    assert streamed == ds["text"]


def test_interrupted_tokenize_resumes_from_finished_shards(tok, tmp_path, monkeypatch, capsys):
    """Ctrl-C midway keeps the finished shards (and says so); the same command continues from them
    without encoding their chunks again, and gives the dataset and counts of an uninterrupted run."""
    import datasets

    import bertkit.streaming as streaming

    tok.save_pretrained(str(tmp_path / "tokdir"))
    corpus = [write_corpus(tmp_path / "a.txt", docs=40), write_corpus(tmp_path / "b.txt", docs=30)]
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 400)
    monkeypatch.setattr(streaming, "SHARD_BYTES", 1500)
    real = streaming.encode_chunk
    calls = []

    def counting(chunk, *a, stop_at=None, **k):
        calls.append(chunk.index)
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(chunk, *a, **k)

    def tokenize(out, *extra):
        return cli("tokenize", *corpus, "--output", out, "--tokenizer", tmp_path / "tokdir", "--max-seq-length", 16,
                   *extra)

    monkeypatch.setattr(streaming, "encode_chunk", lambda c, *a, **k: counting(c, *a, **k))
    assert tokenize(tmp_path / "ref") == 0
    n_chunks = len(calls)
    assert n_chunks > 10
    calls.clear()
    monkeypatch.setattr(streaming, "encode_chunk", lambda c, *a, **k: counting(c, *a, stop_at=n_chunks - 5, **k))
    assert tokenize(tmp_path / "out") == 130
    assert "is kept in" in capsys.readouterr().err
    partial = tmp_path / ".out.partial"
    state = json.loads((partial / "resume.json").read_text())
    assert not (tmp_path / "out").exists() and 0 < state["next_chunk"] < n_chunks - 5
    calls.clear()
    monkeypatch.setattr(streaming, "encode_chunk", lambda c, *a, **k: counting(c, *a, **k))
    assert tokenize(tmp_path / "out") == 0
    assert "Resuming an interrupted run" in capsys.readouterr().err
    assert calls == list(range(state["next_chunk"], n_chunks))  # finished chunks were not encoded again
    assert not partial.exists()
    ref = datasets.load_from_disk(str(tmp_path / "ref" / "dataset"))
    got = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert got["input_ids"] == ref["input_ids"]
    m_ref = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["counts"] == m_ref["counts"] and m["cache_key"] == m_ref["cache_key"]
    assert m["throughput"]["resumed_at_bytes"] == state["bytes_done"]

    # a partial run of other parameters is not continued: it is discarded
    calls.clear()
    monkeypatch.setattr(streaming, "encode_chunk", lambda c, *a, **k: counting(c, *a, stop_at=n_chunks - 3, **k))
    assert tokenize(tmp_path / "out2") == 130
    assert (tmp_path / ".out2.partial" / "resume.json").exists()
    monkeypatch.setattr(streaming, "encode_chunk", real)
    assert cli("tokenize", *corpus, "--output", tmp_path / "out2", "--tokenizer", tmp_path / "tokdir",
               "--max-seq-length", 24) == 0
    assert "Discarding" in capsys.readouterr().err
    assert json.loads((tmp_path / "out2" / "manifest.json").read_text())["counts"]["blocks"] < m_ref["counts"]["blocks"]
