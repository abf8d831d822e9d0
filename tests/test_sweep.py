"""bertkit sweep: the search space, a sweep through the CLI (finetune-cls and finetune-qa), two workers sharing a
journal, a killed worker."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, cli

optuna = pytest.importorskip("optuna")

from bertkit.errors import UsageError  # noqa: E402
from bertkit.sweep.pruning import PruningCallback, make_pruner  # noqa: E402
from bertkit.sweep.schema import SweepFinetuneConfig  # noqa: E402
from bertkit.sweep.space import parse_param, search_space  # noqa: E402
from bertkit.sweep.study import direction  # noqa: E402


def _fixed(model, train, dev, out, *extra):
    """The finetune-cls flags every trial shares (tiny: a few steps each)."""
    return ["--model", model, "--train", train, "--validation", dev, "--max-seq-length", 32, "--batch-size", 16,
            "--output", out, "--threads", 1, *extra]


# ------------------------------------------------------------------------------------------------
# Search space
# ------------------------------------------------------------------------------------------------

def test_param_parsing():
    p = parse_param("lr=log:1e-5:3e-4")
    assert (p.key, p.kind, p.low, p.high) == ("train.lr", "log", 1e-5, 3e-4)
    p = parse_param("epochs=int:2:6")
    assert (p.key, p.kind, p.low, p.high) == ("train.epochs", "int", 2, 6)
    p = parse_param("dropout=float:0:0.2")
    assert (p.key, p.kind) == ("dropout", "float")
    p = parse_param("batch_size=choice:16,32")
    assert p.key == "train.batch_size" and p.choices == (16, 32)
    assert parse_param("warmup-ratio=float:0:0.2").key == "train.warmup_ratio"  # the flag's spelling
    assert parse_param("train.weight_decay=float:0:0.1").key == "train.weight_decay"  # a dotted key
    assert parse_param("scheduler=choice:linear,cosine").choices == ("linear", "cosine")
    assert parse_param("max_seq_length=log:16:128").low == 16  # log-spaced ints for an int field


@pytest.mark.parametrize("text,message", [
    ("foo=int:1:2", "not a field of finetune-cls; searchable: batch_size"),
    ("lr=log:0:1e-3", "log needs LOW > 0"),
    ("lr=log:1e-3:1e-5", "need LOW < HIGH"),
    ("lr=cubic:1:2", "unknown kind 'cubic'"),
    ("lr", "expected NAME=KIND"),
    ("batch_size=float:8:64", "is an integer"),
    ("model=int:1:2", "not numeric"),
    ("epochs=int:1.5:3", "whole numbers"),
    ("batch_size=choice:16,sixteen", "must be int"),
    ("output=choice:a,b", "not a field"),
])
def test_param_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_param(text)


def test_unknown_param_lists_valid_names():
    with pytest.raises(UsageError) as e:
        parse_param("learning_rate=log:1e-5:1e-4")
    assert "lr" in str(e.value) and "epochs" in str(e.value) and "warmup_ratio" in str(e.value)


def test_search_section_and_flags(tmp_path):
    from bertkit.config import resolve

    recipe = tmp_path / "r.yaml"
    recipe.write_text("command: sweep finetune-cls\nsearch:\n  lr: log:1e-5:1e-4\n  batch_size: [8, 16]\n"
                      "sweep:\n  trials: 5\n", encoding="utf-8")
    cfg = resolve(SweepFinetuneConfig, recipe, {"sweep.params": ["lr=float:1e-5:2e-5", "epochs=int:1:3"]})
    space = {p.key: p for p in search_space(cfg)}
    assert space["train.lr"].kind == "float"  # the flag replaces the recipe's entry
    assert space["train.batch_size"].choices == (8, 16)
    assert space["train.epochs"].kind == "int" and cfg.sweep.trials == 5
    with pytest.raises(UsageError, match="nothing to search"):
        search_space(resolve(SweepFinetuneConfig))


def test_direction():
    assert direction("loss") == "minimize" and direction("eval_mse") == "minimize"
    for m in (None, "accuracy", "f1", "pearsonr", "f1_micro"):
        assert direction(m) == "maximize"
    assert direction("f1", "finetune-qa") == "maximize" and direction("eval_exact_match", "finetune-qa") == "maximize"
    with pytest.raises(UsageError, match="use one of exact_match, f1"):
        direction("accuracy", "finetune-qa")
    # distill's metric is its teacher's kind's: any target's is known
    for m in (None, "accuracy", "exact_match", "f1", "precision"):
        assert direction(m, "distill") == "maximize"
    assert direction("loss", "distill") == "minimize"


def test_pruning_callback_reports_and_stops():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.6))
    trial = study.ask()
    cb = PruningCallback(trial)
    args = SimpleNamespace(metric_for_best_model="accuracy", get_warmup_steps=lambda total: 0)
    state = SimpleNamespace(epoch=1.0, global_step=5, max_steps=15, is_world_process_zero=True)
    cb.on_evaluate(args, state, None, metrics={"eval_accuracy": 0.7})
    assert cb.planned == 15  # what the trial would cost unpruned
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1000: 0.7}
    state = SimpleNamespace(epoch=2.0, global_step=10, max_steps=15, is_world_process_zero=True)
    with pytest.raises(optuna.TrialPruned):
        cb.on_evaluate(args, state, None, metrics={"eval_accuracy": 0.5})
    assert cb.pruned_at == 10
    # the last evaluation never prunes: its steps are spent, its result is worth keeping
    trial = study.ask()
    cb = PruningCallback(trial)
    cb.on_evaluate(args, SimpleNamespace(epoch=3.0, global_step=15, max_steps=15, is_world_process_zero=True), None,
                   metrics={"eval_accuracy": 0.5})
    assert cb.pruned_at is None


def test_no_pruning_while_the_learning_rate_warms_up(tmp_path):
    from transformers import TrainingArguments

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.6))
    trial = study.ask()
    cb = PruningCallback(trial)
    args = TrainingArguments(output_dir=str(tmp_path), warmup_steps=0.4, metric_for_best_model="accuracy")
    # 40% of 20 steps: warming up until step 8; the value is reported there all the same
    cb.on_evaluate(args, SimpleNamespace(epoch=0.5, global_step=5, max_steps=20, is_world_process_zero=True), None,
                   metrics={"eval_accuracy": 0.5})
    assert cb.pruned_at is None
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {500: 0.5}
    with pytest.raises(optuna.TrialPruned):
        cb.on_evaluate(args, SimpleNamespace(epoch=1.0, global_step=10, max_steps=20, is_world_process_zero=True),
                       None, metrics={"eval_accuracy": 0.5})
    assert cb.pruned_at == 10


def test_results_count_the_steps_pruning_saved(tmp_path):
    from bertkit.sweep.results import steps_line, write_results
    from bertkit.sweep.space import Param

    study = optuna.create_study(direction="maximize")
    for value, steps, planned in [(0.8, 10, None), (None, 4, 10), (0.9, 10, None)]:
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
        trial.set_user_attr("steps", steps)
        if value is None:
            trial.set_user_attr("planned_steps", planned)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    summary = write_results(tmp_path, study, [Param("lr", "train.lr", "log", 1e-5, 1e-3)], "accuracy", "finetune-cls")
    assert summary["steps_total"] == 24 and summary["steps_without_pruning"] == 30
    assert [r["planned_steps"] for r in summary["rows"]] == [10, 10, 10]
    assert steps_line(24, 30) == "24 (80.0% of the 30 its trials would have run unpruned)"
    assert steps_line(30, 30) == "30"


def _replay(study, curve):
    """Reports a curve [(step, value)...] to a new trial; the step it was pruned at, or None (completed)."""
    trial = study.ask()
    for step, value in curve:
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    study.tell(trial, value)
    return None


@pytest.mark.parametrize("kind", ["halving", "hyperband"])
def test_halving_and_hyperband_rungs_start_at_the_first_evaluation(kind):
    study = optuna.create_study(direction="maximize", pruner=make_pruner(kind))
    good = [(504, 0.80), (1008, 0.84), (1512, 0.85)]
    assert _replay(study, good) is None
    if kind == "halving":
        # first rung at the first evaluation (504), not at an epoch (1000) or Optuna's "auto" (after a
        # complete trial): a worse trial stops there
        assert _replay(study, [(504, 0.60), (1008, 0.70), (1512, 0.75)]) == 504
        assert _replay(study, [(504, 0.82), (1008, 0.86), (1512, 0.87)]) is None
    else:  # brackets: some trials compete from the first evaluation, the others from the third
        stops = {_replay(study, [(504, 0.60 - i / 1000), (1008, 0.70 - i / 1000), (1512, 0.75), (2016, 0.76)])
                 for i in range(12)}
        assert 504 in stops and stops <= {504, 1512, None}


def test_unknown_pruner_is_a_usage_error():
    with pytest.raises(UsageError, match="use one of median, halving, hyperband, none"):
        make_pruner("medain")


def test_without_optuna_one_line_exit_2(monkeypatch, capsys, mlm_model, cls_files, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    train, dev = cls_files
    code = cli("sweep", "finetune-cls", *_fixed(mlm_model, train, dev, tmp_path / "s"), "--param", "lr=log:1e-4:1e-3")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["bertkit: error: bertkit sweep needs Optuna, which is not installed: "
                                 "pip install 'bertkit[sweep]'"]


def test_only_a_sweep_imports_optuna():
    """The CLI imports the sweep schemas at start-up, for every command: Optuna (an extra) is imported only by
    the sweep's own modules."""
    def imports_optuna(modules: str) -> bool:
        code = f"import sys, {modules}; print('optuna' in sys.modules)"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
        return proc.stdout.strip() == "True"

    assert not imports_optuna("bertkit.cli, bertkit.sweep.schema, bertkit.commands.finetune_cls, "
                              "bertkit.commands.export")
    assert imports_optuna("bertkit.commands.sweep")


def _suggested_commands(err: str) -> list[str]:
    return re.findall(r"`(bertkit [^`]+)`", err)


def test_resume_refusals_suggest_only_commands_that_run(tmp_path, capsys, monkeypatch):
    """--resume on another command's output is refused, and every command the error names parses and
    resolves to a config (the commands' work stubbed): no suggestion that would itself exit 2."""
    from bertkit.config import resolve, save_config
    from bertkit.schemas import FinetuneConfig

    cls_run = tmp_path / "cls"
    cls_run.mkdir()
    save_config(resolve(FinetuneConfig), cls_run, "finetune-cls")  # what a finetune-cls run leaves
    qa_sweep = tmp_path / "qa"
    qa_sweep.mkdir()
    (qa_sweep / "bertkit_config.yaml").write_text("command: sweep finetune-qa\n", encoding="utf-8")
    errors = []
    for out in (cls_run, qa_sweep):
        assert cli("sweep", "finetune-cls", "--output", out, "--resume") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        errors.append(err[0])
    assert "holds a finetune-cls run, not a sweep" in errors[0] and "bertkit finetune-cls" not in errors[0]
    assert f"resume it with `bertkit sweep finetune-qa --output {qa_sweep} --resume`" in errors[1]

    import importlib

    for module in ("sweep", "finetune_cls", "finetune_qa"):
        monkeypatch.setattr(importlib.import_module(f"bertkit.commands.{module}"), "run", lambda cfg: None)
    suggested = [c for e in errors for c in _suggested_commands(e)]
    assert suggested
    for command in suggested:
        assert cli(*shlex.split(command)[1:]) == 0, (command, capsys.readouterr().err)


# ------------------------------------------------------------------------------------------------
# End to end
# ------------------------------------------------------------------------------------------------

def _study(out: Path):
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


def test_sweep_cli_end_to_end(mlm_model, cls_files, tmp_path, capsys):
    train, dev = cls_files
    out = tmp_path / "sweep"
    code = cli("sweep", "finetune-cls", *_fixed(mlm_model, train, dev, out), "--epochs", 1, "--metric", "loss",
               "--param", "lr=log:1e-4:3e-3", "--param", "warmup_ratio=choice:0,0.1", "--trials", 3,
               "--pruner", "none", "--sampler", "random")
    err = capsys.readouterr().err
    assert code == 0, err
    assert len([ln for ln in err.splitlines() if ln.startswith("trial ")]) == 3  # one line per trial
    assert "ETA" in err and "best params" in err and "bertkit finetune-cls --config" in err
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["trials"] == {"complete": 3} and summary["direction"] == "minimize"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert set(rows[0]) == {"number", "lr", "warmup_ratio", "objective", "state", "steps", "seconds"}
    assert all(r["state"] == "COMPLETE" and int(r["steps"]) == 5 for r in rows)
    best = summary["best"]["number"]
    assert min(float(r["objective"]) for r in rows) == pytest.approx(summary["best"]["objective"])
    for n in range(3):  # each trial is a normal run; its checkpoints are gone
        tdir = out / "trials" / str(n)
        assert (tdir / "metrics.json").exists() and (tdir / "training_log.jsonl").exists()
        assert not (tdir / "checkpoints").exists()
    assert (out / "best" / "config.json").exists() and (out / "best" / "model.safetensors").exists()
    assert json.loads((out / "best" / "metrics.json").read_text())["eval_loss"] == pytest.approx(
        summary["best"]["objective"])
    first = (out / "best.yaml").read_text().splitlines()[0]
    assert first == f"# bertkit finetune-cls --config {out / 'best.yaml'}"
    assert (out / "history.png").exists() and (out / "importances.png").exists()
    assert f"trial {best}" in err

    # rerunning the finished sweep runs nothing more; --resume continues it with its saved settings
    assert cli("sweep", "finetune-cls", *_fixed(mlm_model, train, dev, out), "--epochs", 1, "--metric", "loss",
               "--param", "lr=log:1e-4:3e-3", "--param", "warmup_ratio=choice:0,0.1", "--trials", 3,
               "--pruner", "none", "--sampler", "random") == 0
    assert len(_study(out).trials) == 3
    assert cli("sweep", "finetune-cls", "--output", out, "--resume", "--trials", 4) == 0
    assert [t.state.name for t in _study(out).trials] == ["COMPLETE"] * 4
    capsys.readouterr()
    assert cli("sweep", "--report", out) == 0
    report = capsys.readouterr().out.splitlines()
    assert report[0].split() == ["#", "lr", "warmup_ratio", "loss", "state", "steps", "seconds"]
    best = _study(out).best_trial.number
    assert len(report) == 7 and report[-1].startswith(f"best: trial {best}, loss ")
    assert report[-2] == "training steps: 20"  # four trials of 5 steps, none pruned

    # another search space in the same study is refused
    code = cli("sweep", "finetune-cls", *_fixed(mlm_model, train, dev, out), "--epochs", 1, "--metric", "loss",
               "--param", "lr=log:1e-4:1e-2", "--trials", 3)
    assert code == 2 and "started with other settings" in capsys.readouterr().err


def test_failed_trial_does_not_stop_the_sweep(mlm_model, cls_files, tmp_path, capsys):
    train, dev = cls_files
    out = tmp_path / "grid"
    # --head-lr -1 is refused by finetune-cls inside its trial; the grid's other point still runs
    assert cli("sweep", "finetune-cls", *_fixed(mlm_model, train, dev, out), "--epochs", 1,
               "--param", "head_lr=choice:-1,0.001", "--sampler", "grid", "--trials", 10) == 0
    assert "failed: UsageError: --head-lr -1.0: must be positive" in capsys.readouterr().err
    rows = {float(r["head_lr"]): r["state"] for r in csv.DictReader((out / "trials.csv").open())}
    assert rows == {-1.0: "FAIL", 0.001: "COMPLETE"}
    assert not (out / "trials" / "0" / "checkpoints").exists() and not (out / "trials" / "1" / "checkpoints").exists()


def test_sqlite_storage_and_report(mlm_model, cls_files, tmp_path, capsys):
    train, dev = cls_files
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    assert cli("sweep", "finetune-cls", *_fixed(mlm_model, train, dev, tmp_path / "sq"), "--epochs", 1,
               "--param", "lr=log:1e-4:1e-3", "--trials", 1, "--storage", url, "--study", "sq-1",
               "--no-keep-best", "--pruner", "halving") == 0
    assert not (tmp_path / "sq" / "best").exists() and not (tmp_path / "sq" / "study.journal").exists()
    capsys.readouterr()
    assert cli("sweep", "--report", url, "--study", "sq-1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["#", "lr", "accuracy", "state", "steps", "seconds"] and "complete" in out[1]
    assert cli("sweep", "--report", url, "--study", "nope") == 2
    assert "not in" in capsys.readouterr().err
    assert cli("sweep") == 2


def _worker(*args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "bertkit", "sweep", "finetune-cls", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_workers_share_one_study(mlm_model, cls_files, tmp_path):
    train, dev = cls_files
    out = tmp_path / "shared"
    args = [*_fixed(mlm_model, train, dev, out), "--epochs", 1, "--metric", "loss", "--param", "lr=log:1e-4:3e-3",
            "--param", "warmup_ratio=float:0:0.2", "--trials", 4, "--pruner", "none"]
    workers = [_worker(*args) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    study = _study(out)
    trials = study.trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # 4 trials, no duplicated numbers
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # 4 distinct parameter sets

    # best.yaml reruns the best trial: same seed, same data, same objective
    best = study.best_trial
    rerun = tmp_path / "rerun"
    assert cli("finetune-cls", "--config", out / "best.yaml", "--output", rerun, "--quiet") == 0
    assert json.loads((rerun / "metrics.json").read_text())["eval_loss"] == pytest.approx(best.value, rel=1e-3)


def test_killed_worker_trial_failed_and_rerun_finishes(mlm_model, cls_files, tmp_path, capsys):
    train, dev = cls_files
    out = tmp_path / "killed"
    args = [*_fixed(mlm_model, train, dev, out), "--epochs", 2, "--param", "lr=log:1e-4:3e-3", "--trials", 1,
            "--pruner", "none"]
    w = _worker(*args)
    deadline = time.time() + 120
    while not (out / "trials" / "0" / "bertkit_config.yaml").exists():  # trial 0 has started
        assert w.poll() is None and time.time() < deadline
        time.sleep(0.05)
    w.send_signal(signal.SIGKILL)
    w.wait()
    assert [t.state for t in _study(out).trials] == [optuna.trial.TrialState.RUNNING]

    assert cli("sweep", "finetune-cls", *args) == 0  # the rerun, in this process (one start-up less)
    assert "trial 0: marked failed (worker" in capsys.readouterr().err
    states = [t.state.name for t in _study(out).trials]
    assert states == ["FAIL", "COMPLETE"]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == states


# ------------------------------------------------------------------------------------------------
# finetune-qa
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qa_files(tmp_path_factory):
    from test_qa import synthetic_squad

    d = tmp_path_factory.mktemp("sweepqa")
    return synthetic_squad(d / "train.json", 16), synthetic_squad(d / "dev.json", 6, seed=1)


def _fixed_qa(model, train, dev, out, *extra):
    """The finetune-qa flags every trial shares (tiny: 4 steps, evaluated after 2 and 4)."""
    return ["--model", model, "--train", train, "--validation", dev, "--max-seq-length", 32, "--doc-stride", 8,
            "--max-question-length", 12, "--batch-size", 8, "--max-steps", 4, "--eval-steps", 2, "--output", out,
            "--threads", 1, *extra]


def test_qa_unknown_param_is_a_usage_error_listing_qa_fields(mlm_model, qa_files, tmp_path, capsys):
    train, dev = qa_files
    # tune_threshold is finetune-cls's: not a field of finetune-qa
    code = cli("sweep", "finetune-qa", *_fixed_qa(mlm_model, train, dev, tmp_path / "s"),
               "--param", "tune_threshold=choice:true,false")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("bertkit: error: --param tune_threshold: not a field of finetune-qa; searchable: ")
    assert all(name in err[0] for name in ("lr", "doc_stride", "n_best", "max_answer_length", "null_threshold"))
    assert not (tmp_path / "s" / "trials").exists()


def test_qa_sweep_end_to_end(mlm_model, qa_files, cls_files, tmp_path, capsys):
    from bertkit.config import resolve
    from bertkit.schemas import FinetuneQAConfig

    train, dev = qa_files
    out = tmp_path / "qa"
    args = [*_fixed_qa(mlm_model, train, dev, out), "--param", "lr=log:1e-4:3e-3", "--trials", 2, "--sampler", "random"]
    code = cli("sweep", "finetune-qa", *args)
    err = capsys.readouterr().err
    assert code == 0, err
    assert len([ln for ln in err.splitlines() if ln.startswith("trial ")]) == 2
    assert "bertkit finetune-qa --config" in err
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["command"] == "finetune-qa" and summary["metric"] == "f1" and summary["direction"] == "maximize"
    assert summary["trials"] == {"complete": 2}
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 2 and all(int(r["steps"]) == 4 for r in rows)
    assert max(float(r["objective"]) for r in rows) == pytest.approx(summary["best"]["objective"])
    # the pruning callback saw finetune-qa's F1 at each evaluation (after 2 and 4 of 4 steps = 1 epoch)
    assert all(len(t.intermediate_values) == 2 for t in _study(out).trials)

    # best.yaml is a finetune-qa config that reruns the best trial
    text = (out / "best.yaml").read_text()
    assert text.splitlines()[0] == f"# bertkit finetune-qa --config {out / 'best.yaml'}"
    assert "\ncommand: finetune-qa\n" in text
    assert resolve(FinetuneQAConfig, out / "best.yaml").data.doc_stride == 8
    rerun = tmp_path / "rerun"
    assert cli("finetune-qa", "--config", out / "best.yaml", "--output", rerun, "--quiet") == 0
    assert json.loads((rerun / "metrics.json").read_text())["eval_f1"] == pytest.approx(
        summary["best"]["objective"], abs=1e-6)
    # best/ is a QA model dir
    from transformers import AutoModelForQuestionAnswering

    assert json.loads((out / "best" / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    AutoModelForQuestionAnswering.from_pretrained(str(out / "best"))
    assert json.loads((out / "best" / "metrics.json").read_text())["eval_f1"] == pytest.approx(
        summary["best"]["objective"])

    # the saved settings are finetune-qa's: --resume continues (nothing left to run), --report reads the study
    assert cli("sweep", "finetune-qa", "--output", out, "--resume") == 0
    assert len(_study(out).trials) == 2
    capsys.readouterr()
    assert cli("sweep", "--report", out) == 0
    report = capsys.readouterr().out.splitlines()
    assert report[0].split() == ["#", "lr", "f1", "state", "steps", "seconds"] and len(report) == 5

    # resuming (or rerunning) the study as another command is a usage error naming both
    assert cli("sweep", "finetune-cls", "--output", out, "--resume") == 2
    err = capsys.readouterr().err
    assert "started as `bertkit sweep finetune-qa`, not `bertkit sweep finetune-cls`" in err
    cls_train, cls_dev = cls_files
    assert cli("sweep", "finetune-cls", *_fixed(mlm_model, cls_train, cls_dev, out), "--param", "lr=log:1e-4:3e-3",
               "--trials", 2) == 2
    assert "command ('finetune-qa' in the study, 'finetune-cls' here)" in capsys.readouterr().err


def test_distill_sweep_searches_alpha_and_temperature(classifier, cls_files, tmp_path, capsys):
    """bertkit sweep distill: each trial a student of the teacher with its --alpha and --temperature, the
    objective the teacher's kind's validation metric; best/ is a student dir and best.yaml reruns it."""
    train, dev = cls_files
    out = tmp_path / "distill-sweep"
    code = cli("sweep", "distill", "--teacher", classifier, "--train", train, "--validation", dev,
               "--student-layers", 1, "--batch-size", 16, "--max-steps", 4, "--eval-steps", 2, "--threads", 1,
               "--output", out, "--param", "alpha=float:0.2:0.9", "--param", "temperature=choice:1,4",
               "--trials", 2, "--sampler", "random", "--pruner", "none")
    err = capsys.readouterr().err
    assert code == 0, err
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["command"] == "distill" and summary["direction"] == "maximize"
    assert summary["metric"] == "accuracy" and summary["trials"] == {"complete": 2}
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert {"alpha", "temperature"} <= set(rows[0]) and len({r["alpha"] for r in rows}) == 2
    assert json.loads((out / "best" / "config.json").read_text())["num_hidden_layers"] == 1
    assert (out / "best.yaml").read_text().splitlines()[0] == f"# bertkit distill --config {out / 'best.yaml'}"
