"""Bad input: one clear line naming the file/flag/column, exit 1 (data) or 2 (usage), no traceback,
nothing half-written."""

from __future__ import annotations

import json

import pytest
from conftest import cli, run_cli


def check(capsys, args, code, *needles):
    rc = cli(*args)
    err = capsys.readouterr().err
    assert rc == code, f"exit {rc}, expected {code}: {err}"
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("bertkit: error")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def test_missing_input(capsys, tmp_path):
    check(capsys, ["tokenize", tmp_path / "nope.txt", "--output", tmp_path / "o", "--train-tokenizer"], 1,
          "nope.txt", "no such file")
    assert not (tmp_path / "o").exists()


def test_no_input(capsys, tmp_path):
    check(capsys, ["tokenize", "--output", tmp_path / "o", "--train-tokenizer"], 2, "no input")


def test_empty_file(capsys, tmp_path):
    f = tmp_path / "e.txt"
    f.write_text("")
    check(capsys, ["tokenize", f, "--output", tmp_path / "o", "--train-tokenizer"], 1, "e.txt", "empty")


def test_glob_matches_nothing(capsys, tmp_path):
    check(capsys, ["tokenize", str(tmp_path / "*.txt"), "--output", tmp_path / "o", "--train-tokenizer"], 1,
          "matches no file")


def test_unknown_extension(capsys, tmp_path):
    f = tmp_path / "data.xlsx"
    f.write_text("x")
    check(capsys, ["tokenize", f, "--output", tmp_path / "o", "--train-tokenizer"], 1, "data.xlsx", ".jsonl")


def test_missing_text_column_lists_found(capsys, tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("sentence,label\nhello,1\n")
    check(capsys, ["tokenize", f, "--output", tmp_path / "o", "--train-tokenizer"], 1,
          "'text'", "--text-column", "sentence, label")


def test_non_utf8_names_line(capsys, tmp_path):
    f = tmp_path / "gbk.txt"
    f.write_bytes(b"first line\nsecond\n" + "第三行".encode("gbk") + b"\n")
    check(capsys, ["tokenize", f, "--output", tmp_path / "o", "--train-tokenizer"], 1, "gbk.txt", "line 3", "UTF-8")


def test_non_utf8_after_a_bom_names_its_line_and_byte(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbftext,label\na,1\n" + "第三".encode("gbk") + b",1\n")
    from bertkit.data import read_text
    from bertkit.errors import DataError

    with pytest.raises(DataError, match=r"line 3 is not valid UTF-8 \(byte 0xb5\)"):
        read_text(f)


def test_malformed_jsonl_names_line(capsys, tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n{"text": "b"}\n{"text": oops}\n')
    check(capsys, ["tokenize", f, "--output", tmp_path / "o", "--train-tokenizer"], 1, "d.jsonl", "line 3")


def test_ragged_csv(capsys, tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\na,1\nb,1,extra\n")
    check(capsys, ["tokenize", f, "--output", tmp_path / "o", "--task", "cls", "--train-tokenizer"], 1,
          "d.csv", "row 3")


def test_validation_labels_missing_from_train(capsys, tmp_path, mlm_model):
    tr, va = tmp_path / "tr.csv", tmp_path / "va.csv"
    tr.write_text("text,label\na,x\nb,y\n")
    va.write_text("text,label\na,x\nb,z\n")
    check(capsys, ["finetune-cls", "--model", mlm_model, "--train", tr, "--validation", va, "--output",
                   tmp_path / "o"], 1, "'z'", "va.csv")


def test_missing_label_column(capsys, tmp_path, mlm_model):
    tr = tmp_path / "tr.csv"
    tr.write_text("text,sentiment\na,x\nb,y\n")
    check(capsys, ["finetune-cls", "--model", mlm_model, "--train", tr, "--output", tmp_path / "o"], 1,
          "'label'", "--label-column", "text, sentiment")


@pytest.mark.parametrize("command", ["finetune-cls", "finetune-qa"])
def test_too_few_rows_to_hold_out_validation(capsys, tmp_path, mlm_model, command):
    if command == "finetune-cls":
        tr = tmp_path / "tr.csv"
        tr.write_text("text,label\na,x\nb,y\nc,x\n")
    else:
        tr = tmp_path / "tr.jsonl"
        tr.write_text("".join(json.dumps({"question": f"q{i}", "context": "paris is in france",
                                          "answers": {"text": ["paris"], "answer_start": [0]}}) + "\n"
                              for i in range(3)))
    check(capsys, [command, "--model", mlm_model, "--train", tr, "--output", tmp_path / "o"], 1,
          "too few", "--validation FILE")
    # the resolved config may be there (a rerun with --validation accepts it), never a model
    assert not (tmp_path / "o" / "config.json").exists() and not (tmp_path / "o" / "metrics.json").exists()


def test_model_dir_without_config_or_weights(capsys, tmp_path, mlm_model):
    d = tmp_path / "m"
    d.mkdir()
    check(capsys, ["predict", "--model", d, "--input", "-"], 2, "config.json")
    (d / "config.json").write_text((mlm_model / "config.json").read_text())
    check(capsys, ["predict", "--model", d, "--input", "-"], 2, "weights")


def test_pickle_weights_need_allow_pickle(capsys, tmp_path, mlm_model):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text((mlm_model / "config.json").read_text())
    (d / "pytorch_model.bin").write_bytes(b"not really")
    check(capsys, ["predict", "--model", d, "--input", "-"], 2, "pickle")


def test_vocab_mismatch(capsys, tmp_path, mlm_model, tokenized, corpus):
    d = tmp_path / "m"
    d.mkdir()
    cfg = json.loads((mlm_model / "config.json").read_text())
    cfg["vocab_size"] = 10
    (d / "config.json").write_text(json.dumps(cfg))
    for f in ("model.safetensors",):
        (d / f).write_bytes((mlm_model / f).read_bytes())
    check(capsys, ["pretrain-mlm", "--data", corpus, "--model", d, "--tokenizer", tokenized, "--output",
                   tmp_path / "o", "--max-steps", 1], 2, "vocabulary")


def test_max_seq_length_above_positions(capsys, tmp_path, mlm_model, cls_files):
    tr, va = cls_files
    check(capsys, ["finetune-cls", "--model", mlm_model, "--train", tr, "--output", tmp_path / "o",
                   "--max-seq-length", 4096], 2, "--max-seq-length 4096", "512")


@pytest.mark.parametrize("flag,value,needle", [
    ("--batch-size", "0", "--batch-size 0"),
    ("--lr", "-1e-4", "--lr"),
    ("--max-steps", "0", "--max-steps"),
])
def test_nonsense_numbers(capsys, tmp_path, tokenized, flag, value, needle):
    check(capsys, ["pretrain-mlm", "--data", tokenized, "--output", tmp_path / "o", flag, value], 2, needle)


def test_output_is_a_file(capsys, tmp_path, tokenized):
    f = tmp_path / "file"
    f.write_text("x")
    check(capsys, ["pretrain-mlm", "--data", tokenized, "--output", f], 2, "--output", "a file")


def test_nonempty_output_refused(capsys, tmp_path, tokenized):
    d = tmp_path / "busy"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    check(capsys, ["pretrain-mlm", "--data", tokenized, "--output", d], 2, "--overwrite")
    assert (d / "precious.txt").read_text() == "keep me"


def test_debug_shows_traceback(tmp_path):
    p = run_cli("tokenize", tmp_path / "nope.txt", "--output", tmp_path / "o", "--train-tokenizer", "--debug",
                check=False)
    assert p.returncode == 1 and "Traceback" in p.stderr


def test_bad_choice(capsys, tmp_path, tokenized):
    check(capsys, ["pretrain-mlm", "--data", tokenized, "--output", tmp_path / "o", "--precision", "fp8"], 2,
          "precision", "bf16")
