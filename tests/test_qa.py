"""Extractive QA: reading, windows, post-processing, metrics, finetune-qa end to end (tiny and fast)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, cli, needs_shared, read_jsonl

from bertkit import qa
from bertkit.errors import UsageError

CJK = "北京是中国的首都巴黎法国位于欧洲城市人口多少哪里什么"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A tiny uncased WordPiece tokenizer (letters, a few words, some CJK characters) built in-test."""
    from transformers import BertTokenizerFast

    words = ["the", "capital", "of", "is", "what", "where", "paris", "france", "city", "a", "in", "river",
             "and", "lives", "who", "name", "tom", "anna", "berlin", "germany", "old", "town", "many", "people"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "。", "？"] + words + letters
             + [f"##{c}" for c in letters] + list(dict.fromkeys(CJK)) + [str(i) for i in range(10)])
    path = tmp_path_factory.mktemp("qatok") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab=str(path), do_lower_case=True)


def squad_json(path: Path, paragraphs: list[tuple[str, list[tuple[str, str, list[tuple[str, int]], bool]]]],
               version: str = "v2.0") -> Path:
    data = {"version": version, "data": [{"title": "t", "paragraphs": [
        {"context": ctx, "qas": [{"id": qid, "question": q, "is_impossible": imp,
                                  "answers": [{"text": t, "answer_start": s} for t, s in answers]}
                                 for qid, q, answers, imp in qas]} for ctx, qas in paragraphs]}]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


CTX = "Paris is the capital of France. Berlin is the capital of Germany."


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------

def test_read_squad_v2_nested_with_unanswerable_and_bad_answers(tmp_path):
    p = squad_json(tmp_path / "d.json", [(CTX, [
        ("q1", "What is the capital of France?", [("Paris", 0), ("Paris", 0)], False),
        ("q2", "Who lives in Berlin?", [], True),
        ("q3", "What is the capital of Germany?", [("Berlin", 5)], False),  # wrong start: skipped, question dropped
        ("q4", "Capital of Germany?", [("Berlin", 32), ("Bonn", 32)], False),  # one good, one bad answer
    ])])
    d = qa.read_qa(str(p), "--train")
    assert d.ids == ["q1", "q2", "q4"]
    assert d.answers[0] == {"text": ["Paris", "Paris"], "answer_start": [0, 0]}
    assert d.answers[1] == {"text": [], "answer_start": []} and d.has_no_answer
    assert d.answers[2] == {"text": ["Berlin"], "answer_start": [32]}
    assert d.bad_answers == 2 and d.bad_ids == ["q3", "q4"] and d.dropped == 1


def test_read_flat_jsonl_and_csv_answer_text(tmp_path):
    rows = [{"id": "a", "q": "What is the capital of France?", "c": CTX,
             "ans": {"text": ["France"], "answer_start": [24]}},
            {"id": "b", "q": "Capital of Germany?", "c": CTX, "ans": {"text": "Germany", "answer_start": 57}}]
    j = tmp_path / "d.jsonl"
    j.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    d = qa.read_qa(str(j), "--train", "q", "c", "ans")
    assert d.answers == [{"text": ["France"], "answer_start": [24]}, {"text": ["Germany"], "answer_start": [57]}]
    c = tmp_path / "d.csv"
    with open(c, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "context", "answer"])
        w.writerow(["What is the capital of Germany?", CTX, "Berlin"])  # start found in the context
        w.writerow(["Which river?", CTX, "Seine"])  # not in the context: reported, dropped
        w.writerow(["Who knows?", CTX, ""])  # no answer
    d = qa.read_qa(str(c), "--validation", answer_column="answer")
    assert d.answers == [{"text": ["Berlin"], "answer_start": [32]}, {"text": [], "answer_start": []}]
    assert d.bad_answers == 1 and d.dropped == 1
    with pytest.raises(qa.DataError, match="--question-column"):
        qa.read_qa(str(c), "--train", question_column="query", answer_column="answer")


# ------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------

def test_window_settings_are_checked():
    qa.check_windows(384, 128, 64)
    with pytest.raises(UsageError, match=r"--doc-stride 317.*384 - --max-question-length 64 - 3 = 317"):
        qa.check_windows(384, 317, 64)
    with pytest.raises(UsageError, match="--max-seq-length 40"):
        qa.check_windows(40, 4, 64)
    with pytest.raises(UsageError, match="512 positions"):
        qa.check_windows(1024, 128, 64, max_positions=512)


def long_context(n: int = 12) -> tuple[str, int]:
    """A long context whose one mention of 'tom' sits near the end; returns (context, answer start)."""
    filler = " ".join("anna lives in the old town of berlin ." for _ in range(n))
    ctx = filler + " the name is tom ."
    return ctx, ctx.index("tom")


def test_every_window_is_a_training_example_answer_outside_is_cls(tok):
    ctx, start = long_context()
    data = qa.QAData(["x"], ["who is it?"], [ctx], [{"text": ["tom"], "answer_start": [start]}])
    ds = qa.encode_train(data, tok, max_seq_length=32, doc_stride=8, max_question_length=8)
    assert len(ds) > 3
    assert all(len(ids) <= 32 for ids in ds["input_ids"])
    pos = list(zip(ds["start_positions"], ds["end_positions"], strict=True))
    inside = [i for i, (s, e) in enumerate(pos) if s != 0]
    assert inside and inside[-1] == len(ds) - 1  # the answer is in the last window(s) only
    assert all(pos[i] == (0, 0) for i in range(len(ds)) if i not in inside)
    for i in inside:
        s, e = pos[i]
        assert tok.decode(ds["input_ids"][i][s:e + 1]) == "tom"
    # the windows cover the whole context: every context token is in some window
    win = qa.encode_windows(tok, ["who is it?"], [ctx], 32, 8, 8)
    covered = {o for offs in win.meta["offsets"] for o in offs if o is not None}
    all_offsets = {tuple(o) for o in tok(ctx, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]}
    assert covered == all_offsets
    # a long question is cut to --max-question-length tokens
    long_q = qa.truncate_questions(tok, ["what " * 20 + "?"], 8)[0]
    assert len(tok(long_q, add_special_tokens=False)["input_ids"]) == 8


def test_unanswerable_question_trains_on_cls(tok):
    data = qa.QAData(["x"], ["who?"], [CTX], [{"text": [], "answer_start": []}])
    ds = qa.encode_train(data, tok, 64, 16, 8)
    assert ds["start_positions"] == [0] and ds["end_positions"] == [0]


# ------------------------------------------------------------------------------------------
# Post-processing
# ------------------------------------------------------------------------------------------

def _logits_for(win, wanted: list[str], contexts: list[str], peak: float = 10.0):
    """Start/end logits peaking on the tokens of ``wanted[q]`` in every window that holds it."""
    starts, ends = [], []
    for w in range(len(win)):
        q = int(win.row[w])
        L = len(win.meta["offsets"][w])
        s, e = np.zeros(L), np.zeros(L)
        a = contexts[q].find(wanted[q])
        b = a + len(wanted[q])
        for t, o in enumerate(win.meta["offsets"][w]):
            if o is not None and o[0] == a:
                s[t] = peak
            if o is not None and o[1] == b:
                e[t] = peak
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_postprocess_combines_windows_and_maps_characters(tok):
    ctx, start = long_context()
    zh = "巴黎是法国的首都。" * 6 + "北京是中国的首都。"
    contexts = [ctx, zh, CTX]
    questions = ["who is it?", "中国的首都是哪里？", "what is the capital of germany?"]
    wanted = ["tom", "北京", "Berlin"]
    win = qa.encode_windows(tok, questions, contexts, 32, 8, 8)
    assert len(win) > 6
    s, e = _logits_for(win, wanted, contexts)
    res = qa.postprocess(s, e, win, contexts, n_best=5, max_answer_length=10, top_k=3)
    for r, c, w in zip(res, contexts, wanted, strict=True):
        assert r["answer"] == w and c[r["start"]:r["end"]] == w
        assert 0 < r["score"] <= 1 and len(r["alternatives"]) == 3
    assert res[0]["start"] == start and res[1]["start"] == zh.index("北京")
    # max_answer_length: a span longer than it is never chosen
    s2 = [x.copy() for x in s]
    e2 = [x.copy() for x in e]
    res = qa.postprocess(s2, e2, win, contexts, max_answer_length=1)
    assert res[2]["answer"] == "Berlin"  # one token
    assert len(res[1]["answer"]) <= 1


def test_null_threshold_and_tuning(tok):
    win = qa.encode_windows(tok, ["q"], [CTX], 64, 16, 8)
    s, e = _logits_for(win, ["Berlin"], [CTX], peak=2.0)
    s[0][0] = e[0][0] = 3.0  # null score 6 > span score 4
    assert qa.postprocess(s, e, win, [CTX])[0]["answer"] == "Berlin"  # v1: never empty
    r = qa.postprocess(s, e, win, [CTX], null_threshold=0.0)[0]
    assert r["answer"] == "" and r["start"] is None and r["null_diff"] == pytest.approx(2.0)
    assert qa.postprocess(s, e, win, [CTX], null_threshold=2.5)[0]["answer"] == "Berlin"
    # tuning: answer questions whose null_diff <= t
    t, f1 = qa.tune_null_threshold([-1.0, 0.5, 2.0, 3.0], [100.0, 100.0, 0.0, 0.0], [True, True, False, False])
    assert t == 1.25 and f1 == 100.0  # halfway between the last answered (0.5) and the first left empty (2.0)
    t, f1 = qa.tune_null_threshold([1.0, 2.0], [0.0, 0.0], [False, False])
    assert t < 1.0 and f1 == 100.0


def answer(model_fn, tok, questions, contexts, *, max_seq_length=32, doc_stride=8, max_question_length=8,
           batch_size=32, top_k=1) -> list[dict]:
    """The question-answering task's records (what predict writes) for a model function."""
    from types import SimpleNamespace

    from bertkit.tasks import predict_records
    from bertkit.tasks.question_answering import QuestionAnsweringTask

    config = SimpleNamespace(bertkit_doc_stride=doc_stride, bertkit_max_question_length=max_question_length)
    task = QuestionAnsweringTask(config, tok, max_seq_length)
    rows = [{"question": q, "context": c} for q, c in zip(questions, contexts, strict=True)]
    return list(predict_records(task, model_fn, rows, batch_size, SimpleNamespace(top_k=top_k)))


def test_answers_in_input_order_with_any_model_fn(tok):
    """A fake model (numpy only) that points at a given token: the shared loop batches sorted windows,
    calls model_fn, and the task returns answers per question in input order."""
    target = {tok.convert_tokens_to_ids("berlin"), tok.convert_tokens_to_ids("北")}
    calls = []

    def model_fn(batch):
        ids = batch["input_ids"]
        assert set(batch) >= {"input_ids", "attention_mask"} and ids.dtype == np.int64
        calls.append(ids.shape)
        hit = np.isin(ids, list(target)).astype(np.float32) * 8.0
        return {"start_logits": hit, "end_logits": hit}

    ctx, _ = long_context(6)
    contexts = [CTX, ctx, "北京是中国的首都。", CTX]
    res = answer(model_fn, tok, ["where?"] * 4, contexts, batch_size=3, top_k=2)
    assert [r["answer"] for r in res] == ["Berlin", "berlin", "北", "Berlin"]
    assert all(c[r["start"]:r["end"]] == r["answer"] for r, c in zip(res, contexts, strict=True))
    assert len(calls) > 1 and all(n <= 3 for n, _ in calls)
    assert len(res[0]["alternatives"]) == 2


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------

def test_squad_metric_hand_computed():
    m = qa.qa_metrics(["the Eiffel Tower!", "eiffel", "paris", "", "x"],
                      [["Eiffel Tower"], ["Eiffel Tower", "the tower"], ["Paris, France"], [], ["y"]], "en")
    # EM: 1, 0, 0, 1 (empty for no answer), 0; F1: 1, 2/3, 2/3, 1, 0
    assert m["exact_match"] == pytest.approx(40.0)
    assert m["f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3 + 1 + 0) / 5)
    assert m["HasAns_total"] == 4 and m["NoAns_total"] == 1 and m["NoAns_exact"] == 100.0
    assert "HasAns_f1" not in qa.qa_metrics(["paris"], [["paris"]], "en")


def test_cmrc2018_metric_character_f1():
    m = qa.qa_metrics(["北京奥运", "《红楼梦》", "1998年"], [["2008年北京奥运会"], ["红楼梦"], ["1998年，"]], "zh")
    # '2008' '年' '北' '京' '奥' '运' '会' vs '北' '京' '奥' '运': LCS 4, P 1, R 4/7 -> 8/11; punctuation stripped
    assert m["f1"] == pytest.approx(100 * (8 / 11 + 1 + 1) / 3)
    assert m["exact_match"] == pytest.approx(200 / 3)
    # English word F1 would score the Chinese pair 0 (one 'word' each)
    assert qa.qa_metrics(["北京奥运"], [["2008年北京奥运会"]], "en")["f1"] == 0.0


def test_language_detection():
    assert qa.detect_language([CTX] * 3) == "en"
    assert qa.detect_language(["北京是中国的首都，有 2000 万人口 (Beijing)。"]) == "zh"


# ------------------------------------------------------------------------------------------
# finetune-qa through the CLI (tiny random BERT, a few steps)
# ------------------------------------------------------------------------------------------

def synthetic_squad(path: Path, n: int, seed: int = 0) -> Path:
    import random

    rng = random.Random(seed)
    places = [("paris", "france"), ("berlin", "germany"), ("rome", "italy"), ("madrid", "spain")]
    paras = []
    for i in range(n):
        city, country = places[i % len(places)]
        ctx = (f"the food was great . {city} is the capital of {country} . "
               + " ".join(rng.choice(["the", "staff", "were", "friendly"]) for _ in range(6)) + " .")
        qas = [(f"q{i}", f"what is the capital of {country} ?", [(city, ctx.index(city))], False)]
        if i % 5 == 0:
            qas.append((f"q{i}n", "who wrote the book ?", [], True))
        paras.append((ctx, qas))
    return squad_json(path, paras)


def test_finetune_qa_end_to_end(tmp_path, mlm_model):
    train = synthetic_squad(tmp_path / "train.json", 24)
    dev = synthetic_squad(tmp_path / "dev.json", 8, seed=1)
    out = tmp_path / "qa"
    assert cli("finetune-qa", "--model", mlm_model, "--train", train, "--validation", dev, "--output", out,
               "--max-steps", 6, "--batch-size", 8, "--lr", "1e-3", "--max-seq-length", 32, "--doc-stride", 8,
               "--max-question-length", 12, "--eval-steps", 3, "--tune-null-threshold", "--quiet") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_exact_match", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1"} <= set(metrics)
    assert metrics["steps"] == 6 and metrics["qa_language"] == "en" and metrics["train_windows"] >= 24
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"]
    assert config["bertkit_max_seq_length"] == 32 and config["bertkit_doc_stride"] == 8
    assert config["bertkit_max_answer_length"] == 30 and config["bertkit_qa_language"] == "en"
    assert isinstance(config["bertkit_null_threshold"], float)
    evals = [r for r in read_jsonl(out / "training_log.jsonl") if "eval_f1" in r]
    assert [r["step"] for r in evals][:2] == [3, 6]
    assert "question-answering" in (out / "README.md").read_text()

    # transformers 5 removed pipeline("question-answering") (KeyError: "The task question-answering has been
    # removed"); the dir is a standard QA model dir: the Auto classes load it, and bertkit.qa answers with it
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(str(out)).eval()
    from bertkit.tasks import torch_model_fn

    res = answer(torch_model_fn(model), AutoTokenizer.from_pretrained(str(out)), ["what is the capital of france ?"],
                 ["paris is the capital of france ."], max_question_length=12)
    assert res[0]["answer"] and 0 < res[0]["score"] <= 1

    # predict: a .jsonl of question/context rows, and stdin question<TAB>context; input order kept
    rows = [{"question": "what is the capital of spain ?", "context": "madrid is the capital of spain . " * 6},
            {"question": "what is the capital of italy ?", "context": "rome is the capital of italy ."}]
    inp = tmp_path / "q.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert cli("predict", "--model", out, "--input", inp, "--output", tmp_path / "p.jsonl", "--top-k", 2,
               "--quiet") == 0
    preds = read_jsonl(tmp_path / "p.jsonl")
    assert [p["question"] for p in preds] == [r["question"] for r in rows]
    for p, r in zip(preds, rows, strict=True):
        assert {"answer", "score", "start", "end", "alternatives"} <= set(p) and len(p["alternatives"]) == 2
        assert p["answer"] == "" or r["context"][p["start"]:p["end"]] == p["answer"]
    import io
    import sys

    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO("\n".join(f"{r['question']}\t{r['context']}" for r in rows).encode()))
    try:
        assert cli("predict", "--model", out, "--input", "-", "--output", tmp_path / "p2.csv", "--quiet") == 0
    finally:
        sys.stdin = old_stdin
    assert (tmp_path / "p2.csv").read_text().splitlines()[0].startswith("question,answer,score,start,end")

    # predict on a SQuAD-format file (what finetune-qa and evaluate read): its questions in order, with their ids
    assert cli("predict", "--model", out, "--input", dev, "--output", tmp_path / "p3.jsonl", "--quiet") == 0
    squad = [q for a in json.loads(dev.read_text())["data"] for p in a["paragraphs"] for q in p["qas"]]
    assert [(p["id"], p["question"]) for p in read_jsonl(tmp_path / "p3.jsonl")] == [(str(q["id"]), q["question"])
                                                                                   for q in squad]

    # evaluate: EM/F1 as in training's final evaluation, and a per-question predictions file
    assert cli("evaluate", "--model", out, "--data", dev, "--output", tmp_path / "ev", "--quiet") == 0
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["task"] == "question-answering" and report["metric"] == "squad"
    assert report["f1"] == pytest.approx(metrics["eval_f1"], abs=1e-6)
    assert len(read_jsonl(tmp_path / "ev" / "predictions.jsonl")) == report["examples"] == metrics["eval_examples"]

    # a stride that leaves no room is a usage error naming the limit
    assert cli("finetune-qa", "--model", mlm_model, "--train", train, "--output", tmp_path / "bad",
               "--max-seq-length", 32, "--doc-stride", 20, "--max-question-length", 12, "--quiet") == 2


def test_finetune_qa_same_seed_same_run(tmp_path, mlm_model):
    """The new QA head is initialised under --seed: two runs give the same loss and scores."""
    train = synthetic_squad(tmp_path / "train.json", 12)
    runs = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        assert cli("finetune-qa", "--model", mlm_model, "--train", train, "--validation", train, "--output", out,
                   "--max-steps", 2, "--batch-size", 8, "--max-seq-length", 32, "--doc-stride", 8,
                   "--max-question-length", 12, "--quiet") == 0
        m = json.loads((out / "metrics.json").read_text())
        runs.append((m["train_loss"], m["eval_f1"]))
    assert runs[0] == runs[1]


# ------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_shared
def test_real_data_reads_and_scores_gold():
    sq = qa.read_qa(str(SHARED / "squad" / "dev-v1.1.json"), "--validation")
    assert len(sq) == 10570 and sq.bad_answers == 0
    zh = qa.read_qa(str(SHARED / "chinese" / "cmrc2018" / "cmrc2018_dev.json"), "--train")
    assert zh.bad_answers > 0 and len(zh) + zh.dropped == 3219
    assert qa.detect_language(zh.contexts) == "zh" and qa.detect_language(sq.contexts) == "en"
    gold = [a["text"][0] for a in sq.answers[:500]]
    assert qa.qa_metrics(gold, [a["text"] for a in sq.answers[:500]], "en")["exact_match"] == 100.0
