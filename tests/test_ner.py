"""Token classification: reading tagged files, tag schemes, entity spans, windows, the seqeval metric
module, finetune-ner through the CLI, and the token-classification task kind."""

from __future__ import annotations

import importlib.util
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, cli, needs_shared

from bertkit import ner
from bertkit.errors import DataError
from bertkit.schemas import EvaluateConfig, PredictConfig

# ------------------------------------------------------------------------------------------------
# Tags and entities
# ------------------------------------------------------------------------------------------------

def test_split_tag_on_the_first_dash():
    assert ner.split_tag("B-geo-loc") == ("B", "geo-loc")
    assert ner.split_tag("O") == ("O", "")
    assert ner.split_tag("M-ORG") == ("M", "ORG")
    for bad in ("PER", "B-", "X-PER", "BB-PER", ""):
        assert ner.split_tag(bad) is None


def test_entities_per_scheme():
    assert ner.entities(["B-PER", "I-PER", "O", "B-geo-loc"]) == [("PER", 0, 2), ("geo-loc", 3, 4)]
    # IOB1: I- starts an entity, B- separates two of one type
    assert ner.entities(["I-LOC", "I-LOC", "B-LOC", "O"]) == [("LOC", 0, 2), ("LOC", 2, 3)]
    # lenient: an I- after O, and a type switch, start entities
    assert ner.entities(["O", "I-PER", "I-LOC"]) == [("PER", 1, 2), ("LOC", 2, 3)]
    assert ner.entities(["B-PER", "E-PER", "S-LOC", "B-ORG", "I-ORG", "E-ORG"]) == \
        [("PER", 0, 2), ("LOC", 2, 3), ("ORG", 3, 6)]
    # BMES: M is inside; a sentence starting with M- (as two Resume training sentences do) still counts
    assert ner.entities(["B-ORG", "M-ORG", "E-ORG", "S-NAME"]) == [("ORG", 0, 3), ("NAME", 3, 4)]
    assert ner.entities(["M-ORG", "E-ORG", "O"]) == [("ORG", 0, 2)]


def test_detect_scheme():
    assert ner.detect_scheme([["B-PER", "I-PER", "O"], ["B-LOC"]]) == "IOB2"
    assert ner.detect_scheme([["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]) == "IOB1"
    assert ner.detect_scheme([["B-PER", "E-PER", "S-LOC"]]) == "BIOES"
    assert ner.detect_scheme([["B-PER", "M-PER", "E-PER", "S-LOC"]]) == "BMES"


def test_labels_and_continuations():
    assert ner.label_names([["I-PER", "O", "B-PER"], ["B-geo-loc"]]) == ["O", "B-PER", "B-geo-loc", "I-PER"]
    assert ner.continuation("B-geo-loc", "IOB2") == "I-geo-loc"
    assert ner.continuation("B-ORG", "BMES") == "M-ORG"
    assert ner.continuation("E-ORG", "BMES") == "E-ORG" and ner.continuation("O", "IOB2") == "O"


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

def test_read_conll_text(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("-DOCSTART-\tO\n\nEU\tB-ORG\nrejects\tO\n\nPeter\tB-PER\nBlackburn\tI-PER\n", encoding="utf-8")
    t = ner.read_tagged(str(f), "--train")
    assert t.words == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert t.tags == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert t.where[1] == [6, 7]
    # CoNLL-2003's original four whitespace columns: the last by default, or --tag-column
    f4 = tmp_path / "b.conll"
    f4.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n", encoding="utf-8")
    assert ner.read_tagged(str(f4), "--train").tags == [["B-ORG", "O"]]
    assert ner.read_tagged(str(f4), "--train", tag_column=2).tags == [["B-NP", "B-VP"]]


def test_read_columnar(tmp_path):
    import pandas as pd

    rows = [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
            {"tokens": ["北", "京"], "tags": ["B-LOC", "I-LOC"]}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    pd.DataFrame({"words": [r["tokens"] for r in rows], "ner": [r["tags"] for r in rows]}).to_parquet(
        tmp_path / "a.parquet")
    (tmp_path / "a.csv").write_text('tokens,tags\nEU rejects,B-ORG O\n"[""北"", ""京""]","[""B-LOC"", ""I-LOC""]"\n',
                                    "utf-8")
    for name, cols in (("a.jsonl", ("tokens", "tags")), ("a.parquet", ("words", "ner")), ("a.csv", ("tokens", "tags"))):
        t = ner.read_tagged(str(tmp_path / name), "--train", *cols)
        assert t.words == [r["tokens"] for r in rows] and t.tags == [r["tags"] for r in rows], name


@pytest.mark.parametrize("text, where", [
    ("EU\tB-ORG\nrejects\n", ":2"),                       # a line without a tag
    ("EU\tB-ORG\nrejects\tX-VERB\n", ":2"),               # a prefix of no scheme
    ("EU\tB-ORG\nrejects\tE-ORG\n", ":2"),                # E- in IOB2 data (--tag-scheme IOB2)
])
def test_bad_lines_name_file_and_line(tmp_path, text, where):
    f = tmp_path / "bad.txt"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=rf"bad\.txt{where}\b"):
        t = ner.read_tagged(str(f), "--train")
        ner.check_tags(t, "IOB2")


def test_count_mismatch_and_unknown_tags(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n', "utf-8")
    with pytest.raises(DataError, match=r"a\.jsonl: row 2: 2 words but 1 tags"):
        ner.read_tagged(str(f), "--train")
    dev = tmp_path / "dev.txt"
    dev.write_text("a\tO\n\nb\tB-LOC\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.txt:3: tag 'B-LOC' does not occur in the training data"):
        ner.check_tags(ner.read_tagged(str(dev), "--validation"), "IOB2", ["O", "B-PER"], "--validation")


# ------------------------------------------------------------------------------------------------
# The metric module against seqeval
# ------------------------------------------------------------------------------------------------

# IOB1 draws mostly I- (B- then only parts two entities of one type, or is malformed as anywhere else)
@pytest.mark.parametrize("prefixes", ["BI", "IIIB", "BIES"], ids=["IOB2", "IOB1", "BIOES"])
def test_metric_equals_seqeval(prefixes):
    seqeval = pytest.importorskip("seqeval.metrics")
    from bertkit.metrics import load_metric

    metric = load_metric("seqeval")
    types = ["PER", "geo-loc", "ORG"]
    for seed in range(60):
        rng = random.Random(seed)

        def tags(n, rng=rng):  # malformed I- after O, type switches, E-/S- anywhere: every case conlleval meets
            return ["O" if (p := rng.choice(prefixes + "OO")) == "O" else f"{p}-{rng.choice(types)}" for _ in range(n)]

        gold = [tags(rng.randint(1, 15)) for _ in range(rng.randint(1, 8))]
        pred = [tags(len(g)) for g in gold]
        got = metric.compute(predictions=pred, references=gold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = seqeval.classification_report(gold, pred, output_dict=True)
            assert got["overall_f1"] == pytest.approx(seqeval.f1_score(gold, pred), abs=1e-12)
            assert got["overall_precision"] == pytest.approx(seqeval.precision_score(gold, pred), abs=1e-12)
            assert got["overall_recall"] == pytest.approx(seqeval.recall_score(gold, pred), abs=1e-12)
            assert got["overall_accuracy"] == pytest.approx(seqeval.accuracy_score(gold, pred), abs=1e-12)
        for kind in types:
            if kind in report:
                assert got[kind]["f1"] == pytest.approx(report[kind]["f1-score"], abs=1e-12)
                assert got[kind]["number"] == report[kind]["support"]


def test_bmes_scores_as_bioes():
    from bertkit.metrics import load_metric

    gold = [["B-ORG", "M-ORG", "E-ORG", "S-NAME", "O"]]
    pred = [["B-ORG", "M-ORG", "E-ORG", "O", "S-NAME"]]
    as_bioes = [[t.replace("M-", "I-") for t in s] for s in gold], [[t.replace("M-", "I-") for t in s] for s in pred]
    metric = load_metric("seqeval")
    assert metric.compute(predictions=pred, references=gold) == metric.compute(predictions=as_bioes[1],
                                                                               references=as_bioes[0])
    assert metric.compute(predictions=pred, references=gold)["overall_f1"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------

def test_windows_give_every_word_a_first_subtoken(mlm_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mlm_model)
    words = ["the", "\u200b", "food", "\x07", "was", "great"]  # zero-width space and a control char: no tokens
    w = ner.sentence_windows(tok, [words], 64, 4)
    assert len(w) == 1 and w.n_words == [6]
    ids = w.input_ids[0]
    firsts = w.word[0][w.first[0]].tolist()
    assert firsts == list(range(6))
    assert ids[int(np.flatnonzero(w.first[0])[1])] == tok.unk_token_id
    assert ids[int(np.flatnonzero(w.first[0])[3])] == tok.unk_token_id
    assert tok.convert_ids_to_tokens(ids[int(np.flatnonzero(w.first[0])[2])]) == "food"


def test_long_sentence_is_windowed_and_every_word_scored(mlm_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mlm_model)
    words = ("the food was really great and the staff were friendly " * 6).split()
    w = ner.sentence_windows(tok, [words, ["short"]], 16, 4)
    assert len(w) > 3 and all(len(x) <= 16 for x in w.input_ids)
    (win, at), (win2, _) = w.best_positions()
    assert len(win) == len(words) and len(win2) == 1
    for i, (k, p) in enumerate(zip(win, at, strict=True)):
        assert w.word[k][p] == i and w.first[k][p]
        # the chosen window is the one with the most context around the word
        ctx = min(p - 1, len(w.input_ids[k]) - 2 - p)
        for k2 in range(len(w)):
            where = np.flatnonzero((w.word[k2] == i) & w.first[k2]) if w.row[k2] == 0 else []
            for p2 in where:
                assert min(p2 - 1, len(w.input_ids[k2]) - 2 - p2) <= ctx
    # a perfect model's per-position answers, read back, give every word its own index
    got = w.gather(lambda k: w.word[k])
    assert got[0].tolist() == list(range(len(words)))


def test_split_and_join_words(mlm_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mlm_model)
    words, spans = ner.split_words("John went to 北京, fast.", tok)
    assert words == ["John", "went", "to", "北", "京", ",", "fast", "."]
    assert spans[3] == (13, 14) and spans[5] == (15, 16)
    text, spans = ner.join_words(["我", "在", "北", "京", "work", "ok"])
    assert text == "我在北京 work ok" and spans[4] == (5, 9)


# ------------------------------------------------------------------------------------------------
# finetune-ner end to end, and the task kind
# ------------------------------------------------------------------------------------------------

EN_PER, EN_LOC, FILL = ["john smith", "mary"], ["london", "new york"], "the was really great and staff friendly".split()
ZH_NAME, ZH_ORG, ZH_FILL = ["张三", "李"], ["北京大学", "餐厅"], list("这家的菜非常好吃服务")


def write_tagged(path: Path, n: int, seed: int, lang: str = "en", long_every: int = 0) -> Path:
    """Sentences of filler words and entities (IOB2 English, BMES Chinese); every ``long_every``-th one is
    made longer than the model windows used here."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        words, tags = [], []
        for _ in range(rng.randint(2, 6) + (14 if long_every and i % long_every == 0 else 0)):
            k = rng.random()
            if lang == "en":
                if k < 0.4:
                    kind, names = ("PER", EN_PER) if k < 0.2 else ("geo-loc", EN_LOC)
                    ent = rng.choice(names).split()
                    words += ent
                    tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(ent) - 1)
                else:
                    words.append(rng.choice(FILL))
                    tags.append("O")
            else:
                if k < 0.4:
                    kind, names = ("NAME", ZH_NAME) if k < 0.2 else ("ORG", ZH_ORG)
                    ent = list(rng.choice(names))
                    words += ent
                    tags += [f"S-{kind}"] if len(ent) == 1 else \
                        [f"B-{kind}"] + [f"M-{kind}"] * (len(ent) - 2) + [f"E-{kind}"]
                else:
                    words.append(rng.choice(ZH_FILL))
                    tags.append("O")
        lines += [f"{w}\t{t}" for w, t in zip(words, tags, strict=True)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def zh_files(workdir) -> tuple[Path, Path]:
    train = write_tagged(workdir / "zh-train.txt", 40, 2, "zh", long_every=8)
    return train, write_tagged(workdir / "zh-dev.txt", 10, 3, "zh")


@pytest.fixture(scope="module")
def en_tagger(workdir, mlm_model) -> Path:
    out = workdir / "ner-en"
    train = write_tagged(workdir / "ner-train.txt", 60, 0, long_every=10)
    dev = write_tagged(workdir / "ner-dev.txt", 16, 1, long_every=4)
    assert cli("finetune-ner", "--model", mlm_model, "--train", train, "--validation", dev, "--output", out,
               "--epochs", 3, "--batch-size", 16, "--lr", "3e-3", "--max-seq-length", 16, "--stride", 4,
               "--quiet") == 0
    return out


def test_finetune_ner_english(en_tagger, workdir):
    metrics = json.loads((en_tagger / "metrics.json").read_text())
    assert metrics["tag_scheme"] == "IOB2" and metrics["labels"][0] == "O" and "B-geo-loc" in metrics["labels"]
    assert metrics["metric_for_best_model"] == "f1" and 0 <= metrics["eval_f1"] <= 1
    assert "eval_f1_geo-loc" in metrics and metrics["eval_number_PER"] > 0
    # windowed, not truncated: the long sentences made more windows than sentences
    assert metrics["train_windows"] > metrics["train_examples"]
    config = json.loads((en_tagger / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert config["id2label"]["0"] == "O" and config["label2id"]["B-PER"] >= 1
    assert config["bertkit_max_seq_length"] == 16 and config["bertkit_stride"] == 4
    assert config["bertkit_tag_scheme"] == "IOB2" and config["bertkit_label_all_subtokens"] is False
    card = (en_tagger / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card
    log = [json.loads(line) for line in (en_tagger / "training_log.jsonl").read_text().splitlines()]
    assert any("eval_f1" in r for r in log) and any("loss" in r for r in log)
    if importlib.util.find_spec("matplotlib"):
        assert (en_tagger / "curves.png").stat().st_size > 0


def test_task_decode_agrees_with_pipeline(en_tagger):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    from bertkit.tasks.base import predict_records, torch_model_fn
    from bertkit.tasks.token_classification import Sentence, TokenClassification

    model = AutoModelForTokenClassification.from_pretrained(en_tagger).eval()
    tok = AutoTokenizer.from_pretrained(en_tagger)
    task = TokenClassification(model.config, tok, 16)
    rows = [Sentence.from_words(s.split())
            for s in ("john smith was in london", "mary and the staff", "new york great")]

    records = list(predict_records(task, torch_model_fn(model), rows, 2, PredictConfig()))
    pipe = pipeline("token-classification", model=str(en_tagger), aggregation_strategy="first")
    for row, rec in zip(rows, records, strict=True):
        assert len(rec["tags"]) == len(row.words)
        for e in rec["entities"]:
            assert rec["text"][e["start"]:e["end"]] == e["text"]
        # the pipeline's word-level entities (first sub-token, one tag per word; an I- after O or after
        # another type starts a group, as in conlleval) are the task's entities
        theirs = [(g["entity_group"], g["start"], g["end"]) for g in pipe(rec["text"])]
        assert [(e["type"], e["start"], e["end"]) for e in rec["entities"]] == theirs, rec
    # a word the tokenizer drops gets a tag of its own: it is read as [UNK] in its place, nothing shifts
    gap, unk = predict_records(task, torch_model_fn(model), [
        Sentence.from_words(["john", "\u200b", "smith", "was", "in", "london"]),
        Sentence.from_words(["john", tok.unk_token, "smith", "was", "in", "london"])], 2, PredictConfig())
    assert len(gap["tags"]) == 6 and gap["tags"] == unk["tags"]


def test_task_scores_every_word_of_long_sentences(en_tagger, workdir):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from bertkit.tasks.base import Scored, run_windows, torch_model_fn
    from bertkit.tasks.token_classification import TokenClassification

    model = AutoModelForTokenClassification.from_pretrained(en_tagger).eval()
    task = TokenClassification(model.config, AutoTokenizer.from_pretrained(en_tagger), 16)
    dev = workdir / "ner-dev.txt"
    cfg = EvaluateConfig(batch_size=4)
    labelled = task.read_labelled(str(dev), cfg)
    scored = task.score(torch_model_fn(model), labelled, cfg)
    assert scored.key == "f1" and 0 <= scored.score <= 1
    assert [len(t) for t in scored.outputs] == [len(w) for w in labelled.words]
    assert max(len(w) for w in labelled.words) > 16
    # finetune-ner's own validation score of the saved (best) model is the task's score of the same file
    metrics = json.loads((en_tagger / "metrics.json").read_text())
    assert scored.metrics["f1"] == pytest.approx(metrics["eval_f1"], abs=1e-9)
    assert scored.metrics["accuracy"] == pytest.approx(metrics["eval_accuracy"], abs=1e-9)
    assert task.agreement(scored, scored) == {"tag_agreement": 1.0}
    other = Scored(scored.metrics, "f1", [["O"] * len(t) for t in scored.outputs])
    share = sum(t == "O" for tags in scored.outputs for t in tags) / sum(map(len, labelled.words))
    assert task.agreement(scored, other) == {"tag_agreement": pytest.approx(share)}
    # raw text rows: words and offsets into the text as given (a model that always says O)
    rows = task.sample_rows(["Mary  went to 北京."])
    def flat(batch):
        return {"logits": np.zeros((*batch["input_ids"].shape, len(task.names)), dtype=np.float32)}

    windows = task.encode(rows)
    rec = task.decode(rows, windows, run_windows(task, flat, windows, 4), cfg)[0]
    assert rec["words"] == ["Mary", "went", "to", "北", "京", "."] and set(rec["tags"]) == {"O"}
    assert rec["text"] == "Mary  went to 北京." and rec["entities"] == []
    assert task.flatten(rec)["tags"] == "O O O O O O"


def test_predict_evaluate_export_through_the_cli(en_tagger, workdir, tmp_path):
    from conftest import read_jsonl

    dev = workdir / "ner-dev.txt"
    assert cli("evaluate", "--model", en_tagger, "--data", dev, "--output", tmp_path / "ev", "--quiet") == 0
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert evaluated["task"] == "token-classification" and evaluated["examples"] == 16
    assert evaluated["f1"] == pytest.approx(json.loads((en_tagger / "metrics.json").read_text())["eval_f1"])
    scored = read_jsonl(tmp_path / "ev" / "predictions.jsonl")
    assert all(len(r["tags"]) == len(r["gold_tags"]) == len(r["words"]) for r in scored)
    assert cli("predict", "--model", en_tagger, "--input", dev, "--output", tmp_path / "p.jsonl", "--quiet") == 0
    assert [r["tags"] for r in read_jsonl(tmp_path / "p.jsonl")] == [r["tags"] for r in scored]
    pytest.importorskip("onnxruntime")
    assert cli("export", "--model", en_tagger, "--output", tmp_path / "onnx", "--validation", dev, "--quiet") == 0
    validation = json.loads((tmp_path / "onnx" / "export.json").read_text())["validation"]
    assert validation["torch"]["f1"] == pytest.approx(evaluated["f1"])
    assert validation["onnx_fp32"]["f1"] == pytest.approx(evaluated["f1"])
    assert validation["onnx_fp32_agreement"] == {"tag_agreement": 1.0}


def test_serve_answers_as_predict(en_tagger, tmp_path):
    """`bertkit serve` takes raw text and pre-split words, and tags them as `bertkit predict` does."""
    from conftest import read_jsonl
    from test_serve import get, post, server

    words = [["john", "smith", "was", "in", "london"], ["mary", "and", "the", "staff"]]
    texts = ["new york was great , mary", "这家餐厅 john 很好"]
    (tmp_path / "w.jsonl").write_text("\n".join(json.dumps({"tokens": w}) for w in words), encoding="utf-8")
    (tmp_path / "t.txt").write_text("\n".join(texts), encoding="utf-8")
    expected = []
    for name in ("w.jsonl", "t.txt"):
        assert cli("predict", "--model", en_tagger, "--input", tmp_path / name, "--output", tmp_path / "p.jsonl",
                   "--quiet") == 0
        expected.append(read_jsonl(tmp_path / "p.jsonl"))

    def strip(records):  # scores are rounded, so another batch's padding may move their last digit
        return [{**r, "entities": [{k: v for k, v in e.items() if k != "score"} for e in r["entities"]]}
                for r in records]

    with server(en_tagger, tmp_path) as (url, _):
        status, _, got = post(url, {"inputs": [{"words": w} for w in words]})
        assert status == 200 and strip(got) == strip(expected[0])
        status, _, got = post(url, {"inputs": texts})
        assert status == 200 and strip(got) == strip(expected[1])
        status, _, err = post(url, {"inputs": [{"words": ["a", 3]}]})
        assert status == 422 and "inputs[0].words" in json.dumps(err)
        info = json.loads(get(url + "/info")[1])
        assert info["task"] == "token-classification" and info["labels"][0] == "O" and info["tag_scheme"] == "IOB2"


def test_task_reads_inputs(en_tagger, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from bertkit.tasks.token_classification import TokenClassification

    task = TokenClassification(AutoConfig.from_pretrained(en_tagger), AutoTokenizer.from_pretrained(en_tagger), 16)
    assert task.stride == 4 and task.scheme == "IOB2"
    files = {
        "a.txt": "john\tB-PER\nsmith\tI-PER\n\n北\tO\n京\tO\n",       # CoNLL-style: lines hold tabs
        "b.txt": "john smith, here\n\n北京\n",                            # raw sentences, one a line
        "c.jsonl": '{"tokens": ["john", "smith"]}\n{"tokens": ["北", "京"]}\n',
        "d.jsonl": '{"text": "john smith, here"}\n',
    }
    got = {}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        got[name] = [(r.text, r.words, r.spans) for r in task.read_inputs(PredictConfig(input=str(tmp_path / name)))]
    assert got["a.txt"] == got["c.jsonl"] == [("john smith", ["john", "smith"], [(0, 4), (5, 10)]),
                                              ("北京", ["北", "京"], [(0, 1), (1, 2)])]
    assert got["b.txt"][0] == got["d.jsonl"][0] == ("john smith, here", ["john", "smith", ",", "here"],
                                                   [(0, 4), (5, 10), (10, 11), (12, 16)])
    assert got["b.txt"][1] == ("北京", ["北", "京"], [(0, 1), (1, 2)])


def test_finetune_ner_chinese_bmes(workdir, mlm_model, zh_files):
    out = workdir / "ner-zh"
    train, dev = zh_files
    assert cli("finetune-ner", "--model", mlm_model, "--train", train, "--validation", dev, "--output", out,
               "--max-steps", 4, "--batch-size", 16, "--lr", "3e-3", "--max-seq-length", 16, "--stride", 4,
               "--label-all-subtokens", "--quiet") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tag_scheme"] == "BMES" and "M-ORG" in metrics["labels"] and "S-NAME" in metrics["labels"]
    assert "eval_f1_ORG" in metrics


def test_finetune_ner_resumes(zh_files, mlm_model, tmp_path):
    from conftest import read_jsonl

    out = tmp_path / "run"
    args = ["finetune-ner", "--model", mlm_model, "--train", zh_files[0], "--validation", zh_files[1], "--output",
            out, "--batch-size", 8, "--max-seq-length", 16, "--stride", 4, "--eval-steps", 2, "--logging-steps", 1,
            "--quiet"]
    assert cli(*args, "--max-steps", 2) == 0
    assert cli(*args, "--max-steps", 4) == 2  # a finished run is not replaced silently
    assert cli(*args, "--max-steps", 4, "--resume", out / "checkpoints" / "checkpoint-2") == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
    steps = [r["step"] for r in read_jsonl(out / "training_log.jsonl") if "loss" in r]
    assert steps[-2:] == [3, 4] and steps.count(1) == 1  # went on from step 2, did not start over


def test_finetune_ner_errors(workdir, mlm_model, tmp_path, capsys):
    train = write_tagged(tmp_path / "train.txt", 12, 0)
    dev = tmp_path / "dev.txt"
    dev.write_text("john\tB-PER\nsmith\tI-PER\n\nparis\tB-CITY\n", encoding="utf-8")
    assert cli("finetune-ner", "--model", mlm_model, "--train", train, "--validation", dev, "--output",
               tmp_path / "out", "--max-steps", 1) == 1
    err = capsys.readouterr().err
    assert f"{dev}:4: tag 'B-CITY' does not occur in the training data" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert cli("finetune-ner", "--model", mlm_model, "--train", train, "--output", tmp_path / "out", "--stride", 80,
               "--metric", "bleu") == 2
    err = capsys.readouterr().err
    assert "--stride 80" in err and "--metric bleu" in err
    assert cli("finetune-ner", "--model", mlm_model, "--train", train, "--output", tmp_path / "out",
               "--tag-scheme", "BILOU") == 2
    assert "BILOU" in capsys.readouterr().err


def test_sweep_finetune_ner(zh_files, mlm_model, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = cli("sweep", "finetune-ner", "--model", mlm_model, "--train", zh_files[0], "--validation", zh_files[1],
               "--max-seq-length", 16, "--stride", 4, "--batch-size", 16, "--max-steps", 2,
               "--output", out, "--threads", 1, "--param", "lr=log:1e-3:1e-2", "--trials", 2, "--sampler", "random",
               "--pruner", "none")
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["command"] == "finetune-ner" and summary["metric"] == "f1" and summary["direction"] == "maximize"
    assert summary["trials"] == {"complete": 2} and 0 <= summary["best"]["objective"] <= 1


# ------------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_shared
def test_real_files_read_and_count():
    """Entity counts of the shared NER sets (their README's figures), with the traps they hold."""
    base = SHARED / "ner"
    conll = ner.read_tagged(str(base / "conll2003" / "dev.txt"), "--validation")
    assert len(conll) == 3250 and sum(len(ner.entities(t)) for t in conll.tags) == 5942
    resume = ner.read_tagged(str(base / "resume" / "train.txt"), "--train")
    assert ner.detect_scheme(resume.tags) == "BMES"
    ner.check_tags(resume, "BMES")
    assert sum(len(ner.entities(t)) for t in resume.tags) == 13438 + 2  # two sentences start with M-ORG
    wnut = ner.read_tagged(str(base / "wnut16" / "train.txt"), "--train")
    assert "B-geo-loc" in ner.label_names(wnut.tags)
    msra = ner.read_tagged(str(base / "msra" / "test.txt"), "--test")
    assert max(len(w) for w in msra.words) == 595


@pytest.mark.slow
@needs_shared
def test_conll2003_dev_every_entity_scored(tmp_path):
    """MiniLM on a few CoNLL-2003 steps: the validation score counts every gold entity of dev (5,942),
    windowed sentences included, and the saved model loads in pipeline("token-classification")."""
    from conftest import minilm_dir

    if minilm_dir() is None:
        pytest.skip("the minilm extra is not installed")
    out = tmp_path / "conll"
    base = SHARED / "ner" / "conll2003"
    assert cli("finetune-ner", "--model", "minilm-l6", "--train", base / "train.txt", "--validation",
               base / "dev.txt", "--output", out, "--max-steps", 10, "--batch-size", 8, "--lr", "1e-4",
               "--max-seq-length", 64, "--stride", 16, "--quiet") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert sum(v for k, v in metrics.items() if k.startswith("eval_number_")) == 5942
    assert metrics["eval_windows"] > metrics["eval_examples"] == 3250
    from transformers import pipeline

    assert isinstance(pipeline("token-classification", model=str(out))("EU rejects German call"), list)


@pytest.mark.slow
@needs_shared
def test_msra_longest_test_sentence_answered_whole(mlm_model, zh_files, tmp_path):
    """MSRA test's 595-character sentence: a tag for every character (windows of 16 tokens here), entity
    offsets inside the sentence, nothing cut."""
    from conftest import read_jsonl

    msra = ner.read_tagged(str(SHARED / "ner" / "msra" / "test.txt"), "--test")
    longest = max(msra.words, key=len)
    assert len(longest) == 595
    tagger = tmp_path / "zh"
    train, dev = zh_files
    assert cli("finetune-ner", "--model", mlm_model, "--train", train, "--validation", dev, "--output", tagger,
               "--max-steps", 2, "--batch-size", 16, "--max-seq-length", 16, "--stride", 4, "--quiet") == 0
    src = tmp_path / "long.txt"
    src.write_text("".join(f"{c}\tO\n" for c in longest) + "\n", encoding="utf-8")
    out = tmp_path / "tags.jsonl"
    assert cli("predict", "--model", tagger, "--input", src, "--output", out, "--quiet") == 0
    [rec] = read_jsonl(out)
    assert rec["words"] == longest and len(rec["tags"]) == 595
    assert all(rec["text"][e["start"]:e["end"]] == e["text"] for e in rec["entities"])
