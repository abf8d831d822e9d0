"""bertkit distill: students picked and copied from the teacher, the cached teacher outputs, the mixed loss,
and the command end to end (predict on its output, a refused student, resume, the teacher's pass shared
under torchrun)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import cli, read_jsonl
from test_resume import needs_torchrun

from bertkit.distillation import HARD_MASK, classification_loss, hard_label_loss, kept_layers, shrink, soft_target_loss
from bertkit.errors import UsageError

FAST = ["--epochs", 1, "--batch-size", 16, "--lr", "1e-3", "--quiet"]


def test_kept_layers_spread_evenly_up_to_the_top_one():
    assert kept_layers(6, 3) == [1, 3, 5]
    assert kept_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert kept_layers(12, 4) == [2, 5, 8, 11]
    assert kept_layers(2, 1) == [1]
    assert kept_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(UsageError):
        kept_layers(2, 3)


def test_shrink_copies_the_kept_layers(classifier):
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    student, keep = shrink(teacher, 1)
    assert keep == [1] and student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    t, s = teacher.state_dict(), student.state_dict()
    for name, value in s.items():
        src = name.replace("encoder.layer.0.", "encoder.layer.1.")
        assert torch.equal(value, t[src]), name
    assert len(teacher.bert.encoder.layer) == 2  # the teacher is left whole
    ids = torch.tensor([[2, 10, 11, 3]])
    assert student(input_ids=ids).logits.shape == teacher(input_ids=ids).logits.shape


def test_alpha_0_is_plain_fine_tuning_loss():
    """--alpha 0: the loss the model computes from its labels, whatever the teacher says."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    x = torch.randint(5, 50, (6, 7))
    for problem, labels in (("single", torch.tensor([0, 1, 2, 1, 0, 2])),
                            ("multi", torch.randint(0, 2, (6, 3)).float()),
                            ("regression", torch.randn(6))):
        n = 1 if problem == "regression" else 3
        pt = {"single": "single_label_classification", "multi": "multi_label_classification",
              "regression": "regression"}[problem]
        model = BertForSequenceClassification(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=32,
                                                         num_labels=n, problem_type=pt)).eval()
        out = model(input_ids=x, labels=labels)
        teacher = {"teacher_logits": torch.randn(6, n) * 5}
        loss = classification_loss(problem, 0.0, 2.0)(out, {"labels": labels}, teacher, torch.ones(6))
        assert torch.allclose(loss, out.loss, atol=1e-6), problem
        mixed = classification_loss(problem, 0.5, 2.0)(out, {"labels": labels}, teacher, torch.ones(6))
        assert not torch.allclose(mixed, out.loss)


def test_soft_loss_is_zero_at_the_teacher_and_masked_rows_drop_from_the_hard_loss():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]])
    assert soft_target_loss("single", logits, logits, 3.0).abs() < 1e-6
    # KL(t || s) * T^2 by hand
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    p, q = torch.softmax(t / 2, -1), torch.softmax(logits / 2, -1)
    assert torch.allclose(soft_target_loss("single", logits, t, 2.0), (p * (p / q).log()).sum(-1).mean() * 4)
    labels = torch.tensor([0, 1, 1])
    mask = torch.tensor([1, 0, 1])
    loss = classification_loss("single", 0.0, 1.0)({"logits": logits}, {"labels": labels}, None, mask)
    assert torch.allclose(loss, hard_label_loss("single", logits[[0, 2]], labels[[0, 2]]))
    only_unlabelled = classification_loss("single", 0.5, 1.0)({"logits": logits}, {"labels": labels},
                                                              {"teacher_logits": t}, torch.zeros(3))
    assert torch.allclose(only_unlabelled, 0.5 * soft_target_loss("single", logits, t, 1.0))


@pytest.fixture(scope="module")
def student_dir(workdir, classifier, cls_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "student"
    train, dev = cls_files
    unl = out.parent / "unlabeled.txt"
    unl.write_text("the food was lovely\nthe room was awful\nwe will come back\n", encoding="utf-8")
    assert cli("distill", "--teacher", classifier, "--output", out, "--train", train, "--validation", dev,
               "--student-layers", 1, "--unlabeled", unl, *FAST) == 0
    return out


def test_cached_teacher_outputs_are_the_teachers_predictions(classifier, cls_files, tmp_path):
    """The teacher's outputs stored per training window equal what predict computes for those rows; kept in
    the output dir, a rerun over the same windows reads them back, one over other windows computes its own."""
    from bertkit import tasks
    from bertkit.commands import distill
    from bertkit.config import resolve
    from bertkit.schemas import DistillConfig
    from bertkit.tasks.classification import rows_of

    train, _ = cls_files
    cfg = resolve(DistillConfig, flags={"teacher": str(classifier), "output": "unused", "data.train": str(train),
                                        "data.validation": str(cls_files[1])})
    teacher = distill.open_teacher(cfg)
    kind = distill.distiller_for(teacher.task_class)
    cfg = kind.with_teacher_settings(cfg, teacher.config)
    assert cfg.data.max_seq_length == 32  # the teacher's, not the finetune default
    teacher.task = teacher.task_class(teacher.config, teacher.tokenizer, 32, teacher.path)
    data = kind.load_data(cfg, teacher)
    assert distill.add_teacher_outputs(kind, data, teacher, 8, tmp_path)["teacher_outputs"] == "computed"
    cached = np.asarray(data.train["teacher_logits"], dtype=np.float32)
    raw = data.raw["train"]
    model = teacher.task.load_torch(teacher.path)  # no inference-only changes: the plain model
    expected = teacher.task.logits(tasks.torch_model_fn(model), rows_of(raw["text"]), 16)
    assert cached.shape == (len(raw), 2)
    np.testing.assert_allclose(cached, expected, atol=1e-4)
    assert set(data.train[HARD_MASK]) == {1}
    again = kind.load_data(cfg, teacher)
    assert distill.add_teacher_outputs(kind, again, teacher, 8, tmp_path)["teacher_outputs"] == "reused"
    np.testing.assert_array_equal(np.asarray(again.train["teacher_logits"], dtype=np.float32), cached)
    fewer = kind.load_data(cfg, teacher)
    fewer.train = fewer.train.select(range(5))
    assert distill.add_teacher_outputs(kind, fewer, teacher, 8, tmp_path)["teacher_outputs"] == "computed"
    np.testing.assert_allclose(np.asarray(fewer.train["teacher_logits"], dtype=np.float32), cached[:5], atol=1e-5)


def test_distill_end_to_end_then_predict(student_dir, classifier, cls_files):
    cfg = json.loads((student_dir / "config.json").read_text())
    teacher = json.loads((classifier / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and teacher["num_hidden_layers"] == 2
    assert cfg["id2label"] == teacher["id2label"]
    assert cfg["bertkit_max_seq_length"] == teacher["bertkit_max_seq_length"] == 32
    assert cfg["bertkit_long_text"] == teacher["bertkit_long_text"]
    metrics = json.loads((student_dir / "metrics.json").read_text())
    assert metrics["student_layers_kept"] == [1] and metrics["unlabeled_examples"] == 3
    assert metrics["teacher_outputs"] == "computed" and not (student_dir / "teacher_outputs").exists()
    comp = metrics["comparison"]
    assert comp["student"]["parameters"] < comp["teacher"]["parameters"]
    assert comp["student"]["metric"] == comp["teacher"]["metric"] == "accuracy"
    assert (student_dir / "README.md").exists() and (student_dir / "bertkit_config.yaml").exists()
    _, dev = cls_files
    preds = student_dir.parent / "preds.jsonl"
    assert cli("predict", "--model", student_dir, "--input", dev, "--output", preds, "--quiet") == 0
    rows = read_jsonl(preds)
    assert len(rows) == 30 and {r["label"] for r in rows} <= {"good", "bad"}


def test_distilled_student_loads_in_evaluate_export_and_pipeline(student_dir, cls_files):
    from transformers import pipeline

    _, dev = cls_files
    assert cli("evaluate", "--model", student_dir, "--data", dev, "--output", student_dir.parent / "eval",
               "--quiet") == 0
    scored = json.loads((student_dir.parent / "eval" / "metrics.json").read_text())
    trained = json.loads((student_dir / "metrics.json").read_text())
    assert scored["accuracy"] == pytest.approx(trained["comparison"]["student"]["value"])
    assert pipeline("text-classification", model=str(student_dir))("the food was great")[0]["label"] in ("good", "bad")
    pytest.importorskip("onnxruntime")
    assert cli("export", "--model", student_dir, "--output", student_dir.parent / "onnx", "--quiet") == 0
    assert (student_dir.parent / "onnx" / "model.onnx").exists()


def test_student_with_another_vocabulary_is_refused(classifier, cls_files, tmp_path, capsys):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    other = tmp_path / "other"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "food"]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(other)
    BertForMaskedLM(BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(other)
    train, dev = cls_files
    capsys.readouterr()
    assert cli("distill", "--teacher", classifier, "--student", other, "--output", tmp_path / "out",
               "--train", train, "--validation", dev, "--quiet") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "vocabulary differs from the teacher's" in err
    assert not (tmp_path / "out").exists()


def test_student_dir_and_resume(classifier, mlm_model, cls_files, tmp_path):
    """--student: any model with the teacher's vocabulary (here the teacher's own MLM base, with a new head);
    a finished run resumes from its checkpoint instead of training again."""
    train, dev = cls_files
    out = tmp_path / "s"
    args = ["distill", "--teacher", classifier, "--student", mlm_model, "--output", out, "--train", train,
            "--validation", dev, "--alpha", "1", *FAST]
    assert cli(*args, "--max-steps", 2, "--save-steps", 1, "--eval-steps", 1) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert first["steps"] == 2 and first["student_layers_kept"] is None
    ck = out / "checkpoints" / "checkpoint-2"
    assert (ck / "trainer_state.json").exists()
    assert cli(*args, "--max-steps", 3, "--save-steps", 1, "--eval-steps", 1, "--resume", ck) == 0
    log = read_jsonl(out / "training_log.jsonl")
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    assert [r for r in log if r.get("step") == 3]


@needs_torchrun
def test_ddp_processes_share_the_teacher_pass_and_a_rerun_reads_it(classifier, cls_files, tmp_path):
    """Under torchrun each process runs the teacher over half the windows and writes its share to the output
    dir; killed after checkpoint-2, the run's rerun resumes there and reads both shares instead of running
    the teacher again; the finished student's dir keeps none of it."""
    from test_resume import _killer, _torchrun

    script, env = _killer(tmp_path, at=2, rank=0, on="save")
    out = tmp_path / "student"
    args = ["distill", "--teacher", classifier, "--train", cls_files[0], "--validation", cls_files[1], "--output",
            out, "--student-layers", 1, "--max-steps", 4, "--batch-size", 8, "--save-steps", 2, "--eval-steps", 2,
            "--quiet"]
    p = _torchrun(script, *args, env=env, restarts=0, port=29561)
    assert p.returncode != 0 and (tmp_path / "killed").exists(), p.stderr[-3000:]
    kept = out / "teacher_outputs"
    assert json.loads((kept / "key.json").read_text())["processes"] == 2
    assert sorted(d.name for d in kept.iterdir()) == ["key.json", "part-0", "part-1"]
    p = _torchrun("-m", "bertkit", *args, env=env, restarts=0, port=29562)
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher_outputs"] == "reused" and metrics["steps"] == 4 and not kept.exists()


def test_qa_alpha_0_is_plain_fine_tuning_loss():
    from transformers import BertConfig, BertForQuestionAnswering

    from bertkit.distillation import span_loss

    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=32)).eval()
    x = torch.randint(5, 50, (4, 9))
    sp, ep = torch.tensor([1, 0, 3, 12]), torch.tensor([2, 0, 5, 12])  # 12: outside the window, ignored
    out = model(input_ids=x, start_positions=sp, end_positions=ep)
    labels = {"start_positions": sp, "end_positions": ep}
    teacher = {"teacher_start_logits": torch.randn(4, 9), "teacher_end_logits": torch.randn(4, 9)}
    assert torch.allclose(span_loss(0.0, 2.0)(out, labels, teacher, None), out.loss, atol=1e-6)
    same = {"teacher_start_logits": out.start_logits, "teacher_end_logits": out.end_logits}
    assert span_loss(1.0, 2.0)(out, labels, same, None).abs() < 1e-5
    # windows of --unlabeled questions (hard_mask 0) drop from the hard-label loss; a batch of them alone
    # has a hard-label loss of 0 (not NaN) and learns from the teacher alone
    kept = model(input_ids=x[[0, 2]], start_positions=sp[[0, 2]], end_positions=ep[[0, 2]]).loss
    assert torch.allclose(span_loss(0.0, 2.0)(out, labels, teacher, torch.tensor([1, 0, 1, 0])), kept, atol=1e-6)
    alone = span_loss(0.5, 2.0)(out, labels, teacher, torch.zeros(4))
    assert torch.isfinite(alone) and torch.allclose(alone, 0.5 * span_loss(1.0, 2.0)(out, labels, teacher, None))


def test_distill_question_answering(mlm_model, tmp_path):
    """A QA teacher: per-token soft targets (start/end over each window), the student predicts with the
    teacher's window settings."""
    from test_qa import synthetic_squad
    from transformers import AutoTokenizer, BertForQuestionAnswering

    teacher = tmp_path / "qa-teacher"
    BertForQuestionAnswering.from_pretrained(str(mlm_model)).save_pretrained(str(teacher))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(teacher))
    train = synthetic_squad(tmp_path / "train.json", 16)
    dev = synthetic_squad(tmp_path / "dev.json", 6, seed=1)
    # --unlabeled questions: a SQuAD-format file (its answers not read) or rows of question and context
    unlabeled = synthetic_squad(tmp_path / "unlabeled.json", 5, seed=2)
    out = tmp_path / "qa-student"
    assert cli("distill", "--teacher", teacher, "--output", out, "--train", train, "--validation", dev,
               "--unlabeled", unlabeled, "--max-seq-length", 32, "--doc-stride", 8, "--max-question-length", 12,
               "--max-steps", 3, "--batch-size", 8, "--quiet") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"] and config["num_hidden_layers"] == 1
    assert config["bertkit_max_seq_length"] == 32 and config["bertkit_doc_stride"] == 8
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["comparison"]["student"]["metric"] == "f1"
    # 5 contexts (and a second question for the first), each longer than one window of 32 tokens
    assert metrics["unlabeled_windows"] > 6 and metrics["train_windows"] > metrics["unlabeled_windows"]
    preds = tmp_path / "answers.jsonl"
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "what is the capital of france ?",
                                     "context": "paris is the capital of france ."}) + "\n")
    assert cli("predict", "--model", out, "--input", questions, "--output", preds, "--quiet") == 0
    assert "answer" in read_jsonl(preds)[0]


def test_qa_unlabeled_rows_and_bad_files(mlm_model, tmp_path, capsys):
    """--unlabeled for a QA teacher: rows of question and context count; a missing file, or rows without a
    context, are one line and exit 1, leaving nothing behind."""
    from test_qa import synthetic_squad
    from transformers import AutoTokenizer, BertForQuestionAnswering

    teacher = tmp_path / "qa-teacher"
    BertForQuestionAnswering.from_pretrained(str(mlm_model)).save_pretrained(str(teacher))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(teacher))
    train = synthetic_squad(tmp_path / "train.json", 8)
    rows, blank = tmp_path / "rows.jsonl", tmp_path / "blank.jsonl"
    rows.write_text("".join(json.dumps({"question": f"who lives in town {i} ?", "context": f"bob lives in town {i} ."})
                            + "\n" for i in range(3)), encoding="utf-8")
    blank.write_text(json.dumps({"question": "who ?", "context": "  "}) + "\n", encoding="utf-8")
    common = ["--teacher", teacher, "--train", train, "--max-seq-length", 32, "--doc-stride", 8,
              "--max-question-length", 12, "--max-steps", 1, "--batch-size", 8, "--quiet"]
    assert cli("distill", *common, "--output", tmp_path / "student", "--unlabeled", rows) == 0
    assert json.loads((tmp_path / "student" / "metrics.json").read_text())["unlabeled_windows"] == 3
    out = tmp_path / "refused"
    for unl, says in ((tmp_path / "missing.jsonl", "missing.jsonl: no such file"),
                      (blank, "blank.jsonl: no questions with a context")):
        capsys.readouterr()
        assert cli("distill", *common, "--output", out, "--unlabeled", unl) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--unlabeled" in err[0] and says in err[0], err
        assert not out.exists()


def test_token_alpha_0_is_plain_fine_tuning_loss():
    """The token-classification loss: --alpha 0 is the model's own loss (unlabelled sub-tokens, -100, left
    out); at the teacher's own logits the soft part is zero."""
    from transformers import BertConfig, BertForTokenClassification

    from bertkit.distillation import token_loss

    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=32, num_labels=5)).eval()
    x = torch.randint(5, 50, (3, 7))
    y = torch.randint(0, 5, (3, 7))
    y[:, 0] = y[:, -1] = y[1, 2] = -100  # [CLS], [SEP] and a later sub-token
    out = model(input_ids=x, labels=y)
    labels = {"labels": y}
    assert torch.allclose(token_loss(0.0, 2.0)(out, labels, {"teacher_logits": torch.randn(3, 7, 5)}, None),
                          out.loss, atol=1e-6)
    assert token_loss(1.0, 2.0)(out, labels, {"teacher_logits": out.logits}, None).abs() < 1e-5
    # the soft part reads only the labelled positions: the teacher's logits elsewhere change nothing
    other = out.logits.clone()
    other[y == -100] = 50.0
    assert token_loss(1.0, 2.0)(out, labels, {"teacher_logits": other}, None).abs() < 1e-5
    # per_batch: while training, sums over the 14 labelled sub-tokens divided by the training set's mean
    # per batch (here 7), as finetune-ner's loss; evaluation (no per_batch) keeps the batch's own mean
    from types import SimpleNamespace

    from bertkit.trainers import TokenClsDistillTrainer

    teacher = {"teacher_logits": torch.randn(3, 7, 5)}
    with torch.no_grad():  # as the Trainer evaluates
        evaluated = model(input_ids=x, labels=y)
    own = token_loss(0.5, 2.0)(evaluated, labels, teacher, None)
    trainer = SimpleNamespace(labelled_per_batch=7.0, hard_per_batch=7.0)
    assert TokenClsDistillTrainer.distill_loss_kwargs(trainer, model.eval()) == {}
    assert torch.allclose(token_loss(0.5, 2.0)(evaluated, labels, teacher, None,
                                               **TokenClsDistillTrainer.distill_loss_kwargs(trainer, model)), own)
    trained = model.train()(input_ids=x, labels=y)
    kwargs = TokenClsDistillTrainer.distill_loss_kwargs(trainer, model)
    assert kwargs == {"per_batch": 7.0, "hard_per_batch": 7.0}
    ratio = token_loss(0.5, 2.0)(trained, labels, teacher, None, **kwargs) / token_loss(0.5, 2.0)(
        trained, labels, teacher, None)
    assert ratio.item() == pytest.approx(14 / 7, rel=1e-5)
    # with --unlabeled sentences (hard_mask 0) the hard-label loss is over the labelled sub-tokens' own mean
    # per batch, the soft one over all scored: here row 2 is unlabelled, 9 of the 14 scored sub-tokens labelled
    mask = torch.tensor([1, 1, 0])
    alpha_0 = token_loss(0.0, 2.0)(trained, labels, teacher, mask, per_batch=7.0, hard_per_batch=4.5)
    assert alpha_0.item() == pytest.approx(token_loss(0.0, 2.0)(trained, labels, teacher, mask).item() * 9 / 4.5,
                                           rel=1e-5)
    alpha_1 = token_loss(1.0, 2.0)(trained, labels, teacher, mask, per_batch=7.0, hard_per_batch=4.5)
    assert alpha_1.item() == pytest.approx(token_loss(1.0, 2.0)(trained, labels, teacher, mask).item() * 14 / 7,
                                           rel=1e-5)


def test_distill_token_classification(mlm_model, tmp_path):
    """A tagger teacher: per-token soft targets at the labelled sub-tokens; the student keeps the teacher's
    tags, scheme and windows, and predicts a tag for every word of a sentence longer than a window."""
    from test_ner import write_tagged
    from transformers import AutoTokenizer, BertForTokenClassification

    names = ["O", "B-PER", "I-PER", "B-geo-loc", "I-geo-loc"]
    teacher = tmp_path / "ner-teacher"
    model = BertForTokenClassification.from_pretrained(str(mlm_model), num_labels=len(names),
                                                       id2label=dict(enumerate(names)),
                                                       label2id={n: i for i, n in enumerate(names)})
    model.config.bertkit_tag_scheme, model.config.bertkit_stride = "IOB2", 4
    model.save_pretrained(str(teacher))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(teacher))
    train = write_tagged(tmp_path / "train.txt", 24, 0, long_every=6)
    dev = write_tagged(tmp_path / "dev.txt", 8, 1, long_every=4)
    out = tmp_path / "ner-student"
    # untagged raw sentences (one longer than a window; Chinese split per character) the teacher tags
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text("Alice met Bob in Paris .\n\n张三在北京工作\n" + " ".join(["word"] * 30) + "\n",
                         encoding="utf-8")
    assert cli("distill", "--teacher", teacher, "--output", out, "--train", train, "--validation", dev,
               "--test", dev, "--unlabeled", unlabeled, "--max-seq-length", 16, "--max-steps", 3, "--batch-size", 8,
               "--quiet") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and config["num_hidden_layers"] == 1
    assert [config["id2label"][str(i)] for i in range(len(names))] == names
    assert config["bertkit_tag_scheme"] == "IOB2" and config["bertkit_stride"] == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["comparison"]["student"]["metric"] == "f1" and "test_f1" in metrics
    assert metrics["unlabeled_windows"] > 3  # the 30-word sentence takes several windows
    # long tagged sentences windowed, not cut
    assert metrics["train_windows"] - metrics["unlabeled_windows"] > metrics["train_examples"]
    preds = tmp_path / "tags.jsonl"
    assert cli("predict", "--model", out, "--input", dev, "--output", preds, "--quiet") == 0
    words = [len(s.split("\n")) for s in dev.read_text().strip().split("\n\n")]
    assert [len(r["tags"]) for r in read_jsonl(preds)] == words


def test_distill_refuses_tags_the_teacher_lacks(mlm_model, tmp_path, capsys):
    from test_ner import write_tagged
    from transformers import AutoTokenizer, BertForTokenClassification

    teacher = tmp_path / "ner-teacher"
    BertForTokenClassification.from_pretrained(str(mlm_model), num_labels=3,
                                               id2label={0: "O", 1: "B-PER", 2: "I-PER"}).save_pretrained(str(teacher))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(teacher))
    train = write_tagged(tmp_path / "train.txt", 12, 0)
    out = tmp_path / "student"
    assert cli("distill", "--teacher", teacher, "--output", out, "--train", train, "--max-steps", 1, "--quiet") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tags the teacher does not know: B-geo-loc" in err[0]
    assert not out.exists()


def test_tagger_unlabeled_missing_or_empty_is_one_line(mlm_model, tmp_path, capsys):
    from test_ner import write_tagged
    from transformers import AutoTokenizer, BertForTokenClassification

    teacher = tmp_path / "ner-teacher"
    BertForTokenClassification.from_pretrained(
        str(mlm_model), num_labels=5, id2label=dict(enumerate(["O", "B-PER", "I-PER", "B-geo-loc", "I-geo-loc"]))
    ).save_pretrained(str(teacher))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(teacher))
    train = write_tagged(tmp_path / "train.txt", 12, 0)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    out = tmp_path / "student"
    for unl, says in ((tmp_path / "missing.txt", "missing.txt: no such file"), (empty, "empty.txt: no sentences")):
        capsys.readouterr()
        assert cli("distill", "--teacher", teacher, "--output", out, "--train", train, "--unlabeled", unl,
                   "--max-steps", 1, "--quiet") == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--unlabeled" in err[0] and says in err[0], err
        assert not out.exists()


@pytest.mark.parametrize("problem", ["multi", "regression"])
def test_distill_pairs_multi_label_and_regression(problem, mlm_model, tmp_path):
    """Text pairs with a multi-label teacher (and teacher-labelled pairs) or a regression teacher: the
    student keeps the teacher's problem, labels and threshold."""
    import csv

    from transformers import AutoTokenizer, BertForSequenceClassification

    names = ["food", "room", "staff"] if problem == "multi" else ["score"]
    teacher = tmp_path / "teacher"
    model = BertForSequenceClassification.from_pretrained(
        str(mlm_model), num_labels=len(names), id2label=dict(enumerate(names)),
        problem_type="multi_label_classification" if problem == "multi" else "regression")
    model.config.bertkit_max_seq_length, model.config.bertkit_threshold = 32, 0.4
    model.save_pretrained(str(teacher))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(teacher))
    rng = np.random.default_rng(0)
    for name, n in (("train", 24), ("dev", 8)):
        with open(tmp_path / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "text_pair", "label"])
            for i in range(n):
                label = (",".join(sorted({names[i % 3], names[(i * 2) % 3]})) if problem == "multi"
                         else f"{rng.normal():.3f}")
                w.writerow([f"the food was great {i}", "the staff were friendly", label])
    extra = []
    if problem == "multi":
        (tmp_path / "unl.csv").write_text("text,text_pair\nthe room was dirty,awful\nlovely view,we will come back\n")
        extra = ["--unlabeled", tmp_path / "unl.csv"]
    out = tmp_path / "student"
    assert cli("distill", "--teacher", teacher, "--output", out, "--train", tmp_path / "train.csv", "--validation",
               tmp_path / "dev.csv", "--text-pair-column", "text_pair", "--max-steps", 2, "--batch-size", 8,
               "--quiet", *extra) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["problem"] == problem and config["problem_type"] == model.config.problem_type
    assert list(config["id2label"].values()) == names
    if problem == "multi":
        assert metrics["unlabeled_examples"] == 2 and config["bertkit_threshold"] == 0.4
        assert metrics["comparison"]["student"]["metric"] == "f1_micro"
    else:
        assert metrics["comparison"]["student"]["metric"] == "pearsonr"


def test_hidden_state_loss(classifier):
    """Zero for a student equal to the teacher at the mapped layers; a projection learns when the hidden
    sizes differ; the top layer of a [CLS]-only classifier is compared at [CLS]."""
    from transformers import AutoModelForSequenceClassification

    from bertkit.distillation import HiddenStateLoss
    from bertkit.modeling import cls_only_last_layer

    teacher = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    same, keep = shrink(teacher, 2)
    ids, mask = torch.tensor([[2, 10, 11, 3, 0]]), torch.tensor([[1, 1, 1, 1, 0]])
    cls_only_last_layer(teacher)
    t = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    s = same(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert t[-1].shape[1] == 1 and s[-1].shape[1] == 5
    assert HiddenStateLoss(keep, 32, 32)(s, t, mask) < 1e-10
    projected = HiddenStateLoss([1], 16, 32)
    small = tuple(x[..., :16] for x in s)
    loss = projected(small[:2], t, mask)
    loss.backward()
    assert loss > 0 and projected.project.weight.grad is not None


def test_hidden_loss_weight_with_a_narrower_student(classifier, cls_files, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    narrow = tmp_path / "narrow"
    tok = AutoTokenizer.from_pretrained(str(classifier))
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(narrow)
    tok.save_pretrained(narrow)
    train, dev = cls_files
    out = tmp_path / "s"
    assert cli("distill", "--teacher", classifier, "--student", narrow, "--output", out, "--train", train,
               "--validation", dev, "--hidden-loss-weight", 1, "--max-steps", 2, "--batch-size", 16, "--quiet") == 0
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert not any("distill_hidden_loss" in k for k in weights)  # the projection is not part of the student
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 16


def test_student_preset_is_a_new_model_of_that_size(classifier, cls_files, tmp_path):
    """--student-preset: a new BERT of the preset's shape reading the teacher's vocabulary and giving its
    labels; it learns the teacher's layers through the projection the hidden-state loss adds."""
    train, dev = cls_files
    out = tmp_path / "s"
    assert cli("distill", "--teacher", classifier, "--student-preset", "tiny", "--output", out, "--train", train,
               "--validation", dev, "--hidden-loss-weight", 1, "--max-steps", 2, "--batch-size", 16, "--quiet") == 0
    cfg = json.loads((out / "config.json").read_text())
    teacher = json.loads((classifier / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"]) == (2, 128)  # the tiny preset
    assert cfg["vocab_size"] == teacher["vocab_size"] and cfg["id2label"] == teacher["id2label"]
    assert cfg["bertkit_max_seq_length"] == teacher["bertkit_max_seq_length"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["student_layers_kept"] is None


def test_usage_errors_leave_nothing_behind(classifier, mlm_model, cls_files, tmp_path, capsys):
    train, dev = cls_files
    out = tmp_path / "out"
    common = ["--output", out, "--train", train, "--validation", dev, "--quiet"]
    for args, says in ((["--teacher", mlm_model], "distill trains students of classification, question-answering"),
                       (["--teacher", classifier, "--student-layers", 3], "the teacher has 2 layers"),
                       (["--teacher", classifier, "--student", mlm_model, "--student-layers", 1], "give one"),
                       (["--teacher", classifier, "--student-preset", "mini", "--student-layers", 1],
                        "--student-preset and --student-layers: give one"),
                       (["--teacher", classifier, "--student-preset", "huge"], "--student-preset huge: use one of"),
                       (["--teacher", classifier, "--alpha", 1.5], "--alpha 1.5: must be in [0, 1]"),
                       (["--teacher", classifier, "--alpha", 0, "--unlabeled", train], "--unlabeled with --alpha 0")):
        capsys.readouterr()
        assert cli("distill", *args, *common) == 2, args
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_teacher_collator_pads_per_token_outputs():
    from bertkit.distillation import PAD_LOGIT, TeacherCollator

    def base(features):
        n = max(len(f["input_ids"]) for f in features)
        return {"input_ids": torch.tensor([f["input_ids"] + [0] * (n - len(f["input_ids"])) for f in features])}

    feats = [{"input_ids": [1, 2, 3], "teacher_start_logits": [0.1, 0.2, 0.3], "teacher_tags": [[1, 2]] * 3},
             {"input_ids": [1, 2], "teacher_start_logits": [0.5, 0.6], "teacher_tags": [[3, 4]] * 2}]
    batch = TeacherCollator(base, per_token=True)(feats)
    assert batch["teacher_start_logits"].tolist()[1] == pytest.approx([0.5, 0.6, PAD_LOGIT])
    assert batch["teacher_tags"].shape == (2, 3, 2) and batch["teacher_tags"][1, 2].tolist() == [PAD_LOGIT] * 2
    assert "teacher_tags" in feats[0]  # the dataset's rows are left as they were
    flat = TeacherCollator(base, per_token=False)([{"input_ids": [1], "teacher_logits": [0.5, -0.5]}] * 2)
    assert flat["teacher_logits"].shape == (2, 2)
