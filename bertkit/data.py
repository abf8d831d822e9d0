"""Reading user data: files and globs of .txt .csv .tsv .json .jsonl .parquet, or a saved ``datasets``
directory, into a :class:`datasets.Dataset`, with one-line errors that name the file, line or column.

Delimited files whose requested columns are all integers (``--text-column 3``) are read without a
header and their columns are named ``"0"``, ``"1"``, ...; this reads headerless TSVs such as GLUE's CoLA.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError, UsageError

TEXT_EXTS = {".txt", ".text"}
DELIMITED_EXTS = {".csv": ",", ".tsv": "\t"}
JSON_EXTS = {".json", ".jsonl", ".ndjson"}
PARQUET_EXTS = {".parquet"}
SUPPORTED = sorted(TEXT_EXTS | set(DELIMITED_EXTS) | JSON_EXTS | PARQUET_EXTS)

DOC_START = "_doc_start"  # bool column: this row starts a new document (mlm packing joins documents with [SEP])


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json"))


def expand_inputs(inputs: Iterable[str], flag: str) -> list[Path]:
    """Expand globs; every pattern must match something, and files must be non-empty."""
    inputs = list(inputs or [])
    if not inputs:
        raise UsageError(f"no input given: pass {flag} FILE (files, globs or a saved datasets dir)")
    paths: list[Path] = []
    for item in inputs:
        if any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"{flag} {item}: the pattern matches no file")
            paths.extend(Path(m) for m in matches if Path(m).is_file() or is_saved_dataset(Path(m)))
        else:
            p = Path(item)
            if not p.exists():
                raise DataError(f"{flag} {item}: no such file or directory")
            paths.append(p)
    for p in paths:
        if p.is_dir():
            if not is_saved_dataset(p):
                raise DataError(f"{flag} {p}: a directory, but not a dataset saved with save_to_disk "
                                "(pass the files inside it, or a glob such as DIR/*.txt)")
            continue
        if p.suffix.lower() not in SUPPORTED:
            raise DataError(f"{flag} {p}: unknown file type '{p.suffix or '(none)'}'; "
                            f"use one of {', '.join(SUPPORTED)} or a saved datasets dir")
        if p.stat().st_size == 0:
            raise DataError(f"{flag} {p}: the file is empty")
    return paths


def read_text(path: Path) -> str:
    """Decode a file as UTF-8 (a BOM is dropped); name the line of the first bad byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        at = e.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)  # utf-8-sig counts after the BOM
        line = raw.count(b"\n", 0, at) + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[at]:02x}); "
                        "re-save the file as UTF-8, e.g. iconv -f GB18030 -t UTF-8") from None


def _headerless(columns: Iterable[str | None]) -> bool:
    cols = [c for c in columns if c]
    return bool(cols) and all(str(c).isdigit() for c in cols)


def read_rows(path: Path, columns: Iterable[str | None] = (), text_mode: str = "lines"):
    """Read one input into a Dataset.

    ``text_mode`` decides how plain-text files are read: ``lines`` (one example per non-empty line,
    column ``text``) or ``docs`` (one row per non-empty line plus a ``_doc_start`` flag that is
    true after a blank line, so documents can be joined with [SEP] when packing).
    """
    import datasets

    ext = path.suffix.lower()
    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - any failure here is the user's directory
            raise DataError(f"{path}: cannot load the saved dataset ({e})") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DataError(f"{path}: a DatasetDict without a 'train' split (splits: {', '.join(ds)}); "
                                "pass the split's own directory")
            ds = ds["train"]
        return ds
    if ext in TEXT_EXTS:
        return _read_txt(path, text_mode)
    if ext in DELIMITED_EXTS:
        return datasets.Dataset.from_dict(_read_delimited(path, DELIMITED_EXTS[ext], _headerless(columns)))
    if ext in JSON_EXTS:
        return datasets.Dataset.from_list(read_json(path))
    if ext in PARQUET_EXTS:
        try:
            return datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{path}: cannot read as parquet ({type(e).__name__}: {e})") from None
    raise DataError(f"{path}: unknown file type '{ext}'; use one of {', '.join(SUPPORTED)}")


def split_documents(text: str, new_doc: bool) -> tuple[list[str], list[bool], bool]:
    """Plain text -> (non-blank lines stripped, whether each starts a document, whether the next line of a
    continuation would): blank lines separate documents; ``new_doc`` says whether the text starts one."""
    rows: list[str] = []
    starts: list[bool] = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            new_doc = True
            continue
        rows.append(s)
        starts.append(new_doc)
        new_doc = False
    return rows, starts, new_doc


def _read_txt(path: Path, text_mode: str):
    import datasets

    text = read_text(path)
    rows, starts, _ = split_documents(text, new_doc=True)
    if not rows:
        raise DataError(f"{path}: no text (only blank lines)")
    data = {"text": rows}
    if text_mode == "docs":
        data[DOC_START] = starts
    return datasets.Dataset.from_dict(data)


def _read_delimited(path: Path, delimiter: str, headerless: bool) -> dict[str, list]:
    text = read_text(path)
    # TSV: no quoting (GLUE files contain bare quotes); CSV: standard quoting.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        rows = [r for r in reader if r]
    except csv.Error as e:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise DataError(f"{path}: line {reader.line_num}: malformed {kind} ({e})") from None
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    if headerless:
        header = [str(i) for i in range(max(len(r) for r in rows))]
        body = rows
        first_line = 1
    else:
        header = [h.strip() for h in rows[0]]
        body = rows[1:]
        first_line = 2
        if not body:
            raise DataError(f"{path}: only a header line, no data rows")
    width = len(header)
    out: dict[str, list] = {h: [] for h in header}
    for i, r in enumerate(body):
        if len(r) != width:
            if headerless and len(r) < width:
                r = r + [""] * (width - len(r))
            else:
                raise DataError(f"{path}: row {i + first_line} has {len(r)} fields, the header has {width}; "
                                "fix the row (quote fields containing the delimiter)")
        for h, v in zip(header, r, strict=True):
            out[h].append(v)
    return out


def read_json(path: Path) -> list[dict]:
    text = read_text(path)
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped[:1] in ("[", "{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if stripped[:1] == "{":
                return _read_jsonl_text(path, text)  # a .json file holding JSON lines
            raise DataError(f"{path}: line {e.lineno}: malformed JSON ({e.msg})") from None
        if isinstance(obj, dict):
            lists = [v for v in obj.values() if isinstance(v, list)]
            if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
                obj = lists[0]
            else:
                obj = [obj]
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise DataError(f"{path}: expected a list of objects (one per example)")
        if not obj:
            raise DataError(f"{path}: no examples")
        return obj
    return _read_jsonl_text(path, text)


def _read_jsonl_text(path: Path, text: str) -> list[dict]:
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {i}: malformed JSON ({e.msg} at column {e.colno})") from None
        if isinstance(obj, str):
            obj = {"text": obj}
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {i}: expected a JSON object, got {type(obj).__name__}")
        out.append(obj)
    if not out:
        raise DataError(f"{path}: no examples")
    return out


def require_columns(ds, path, wanted: dict[str, str | None]) -> None:
    """``wanted`` maps flag -> column; raise naming the first missing one and the columns found."""
    for flag, col in wanted.items():
        for c in split_columns(col):
            if c not in ds.column_names:
                found = ", ".join(x for x in ds.column_names if x != DOC_START)
                raise DataError(f"{path}: no column '{c}' ({flag}); columns found: {found}")


def split_columns(col: str | None) -> list[str]:
    """'title,body' -> ['title', 'body'] (several text columns are joined with a space)."""
    if not col:
        return []
    return [c.strip() for c in str(col).split(",") if c.strip()]


def join_text(batch: dict, columns: list[str], n: int) -> list[str]:
    if len(columns) == 1:
        return ["" if v is None else str(v) for v in batch[columns[0]]]
    return [" ".join(str(batch[c][i]) for c in columns if batch[c][i] not in (None, "")) for i in range(n)]


def load_inputs(inputs: Iterable[str], flag: str, columns: dict[str, str | None], text_mode: str = "lines"):
    """Expand, read, check and concatenate inputs, keeping only the requested columns.

    ``columns`` maps flag -> column name (None entries are skipped).  Several text columns given as
    'a,b' are kept separately; callers join them with :func:`join_text`.
    Returns ``(dataset, paths)``.
    """
    import datasets

    paths = expand_inputs(inputs, flag)
    wanted = {f: c for f, c in columns.items() if c}
    parts = []
    for p in paths:
        ds = read_rows(p, wanted.values(), text_mode=text_mode)
        if len(ds) == 0:
            raise DataError(f"{p}: no examples")
        if p.suffix.lower() in TEXT_EXTS and not p.is_dir():
            # plain text has a single column, 'text', whatever --text-column says
            keep = ["text"] + ([DOC_START] if DOC_START in ds.column_names else [])
            text_col = split_columns(columns.get("--text-column"))[:1]
            if text_col and text_col[0] != "text":
                ds = ds.rename_column("text", text_col[0])
                keep[0] = text_col[0]
            label_flags = [f for f in wanted if f != "--text-column"]
            if label_flags and any(f in ("--label-column", "--text-pair-column") for f in label_flags):
                f = next(f for f in label_flags if f in ("--label-column", "--text-pair-column"))
                raise DataError(f"{p}: a plain text file has only one text per line, "
                                f"so {f} {wanted[f]} cannot be read; "
                                "use .csv/.tsv/.jsonl for labels and pairs")
        else:
            require_columns(ds, p, wanted)
            keep = [c for f in wanted for c in split_columns(wanted[f])]
            keep = list(dict.fromkeys(keep))
            if text_mode == "docs":
                ds = ds.add_column(DOC_START, [True] * len(ds))
                keep.append(DOC_START)
        ds = ds.select_columns(keep)
        parts.append(ds)
    if len(parts) == 1:
        return parts[0], paths
    try:
        return datasets.concatenate_datasets(parts), paths
    except Exception as e:  # noqa: BLE001
        raise DataError(f"inputs {', '.join(map(str, paths))} cannot be combined: "
                        f"their columns differ in type ({e})") from None


def read_stdin_lines() -> list[tuple[int, str]]:
    """The non-blank lines of stdin (UTF-8, BOM allowed) with their 1-based line numbers."""
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)) + 1
        raise DataError(f"stdin: line {line} is not valid UTF-8") from None
    return [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]


def read_predict_input(source: str, text_column: str,
                       pair_column: str | None) -> tuple[list[str], list[str] | None, list[dict] | None]:
    """Texts (and pairs) to predict on, from a file or '-' (stdin, one text per line).

    Returns (texts, pairs, original rows or None).
    """
    if source == "-":
        texts = [ln.strip() for _, ln in read_stdin_lines()]
        if not texts:
            raise DataError("stdin: no input text (one text per line)")
        if pair_column:
            raise UsageError("--text-pair-column needs a .jsonl/.csv/.tsv input, not stdin")
        return texts, None, None
    cols = {"--text-column": text_column, "--text-pair-column": pair_column}
    ds, _ = load_inputs([source], "--input", cols, text_mode="lines")
    tcols = split_columns(text_column)
    texts = join_text(ds.to_dict(), tcols, len(ds)) if len(tcols) > 1 else [str(t) for t in ds[tcols[0]]]
    pairs = [str(t) for t in ds[pair_column]] if pair_column else None
    return texts, pairs, None
