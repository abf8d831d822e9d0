"""bertkit distill: a smaller, faster student trained on a fine-tuned teacher's outputs.

``run`` is the list of stages (the same seams as finetune-cls: config, output dir, resume, signals,
budgets, curves, model card, DDP through :mod:`bertkit.training`).  What depends on the task kind (how
its training data is read and encoded, the student's head, the loss, what is stamped in the output's
config) is a :class:`KindDistiller`, found in :data:`DISTILLERS` by the teacher's kind; a kind opts in by
adding one there.  The teacher runs once over the training windows with its kind's batched loop
(:func:`bertkit.tasks.run_windows`); its outputs become dataset columns the
:class:`~bertkit.trainers.DistillTrainer` reads at every epoch, kept in the output dir while the run
trains (:class:`TeacherOutputs`: a rerun reads them back, DDP processes share the pass).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import tasks
from ..distillation import (
    HARD_MASK,
    HiddenStateLoss,
    check_same_vocabulary,
    classification_loss,
    kept_layers,
    shrink,
    span_loss,
    teacher_dataset,
    token_loss,
)
from ..distributed import agree_max, current_device, is_main_process, process_index, wait_for_everyone, world_size
from ..errors import UsageError
from ..inference import RowProgress, inference_length
from ..loading import load_model, open_checkpoint
from ..log import get_logger
from ..modeling import check_compatible, count_parameters, dropout_overrides, init_head_at_prior, new_parameters
from ..outputs import TEACHER_OUTPUTS, write_json
from ..schemas import DistillConfig
from ..summary import print_summary
from ..trainers import DistillTrainer, QADistillTrainer, TokenClsDistillTrainer
from ..training import save_run, start_run, train_with_signals
from . import finetune_cls, finetune_ner, finetune_qa

log = get_logger()


def run(cfg: DistillConfig, callbacks: list | tuple = ()) -> dict:
    """Distill; ``callbacks`` are extra Trainer callbacks (a benchmark's timer)."""
    cfg.validate()
    teacher = open_teacher(cfg)
    kind = distiller_for(teacher.task_class)
    cfg = kind.with_teacher_settings(cfg, teacher.config)
    cfg.validate()
    check_compatible(teacher.config, teacher.tokenizer, cfg.data.max_seq_length, "--teacher")
    teacher.task = teacher.task_class(teacher.config, teacher.tokenizer, cfg.data.max_seq_length, teacher.path)
    student_dir = open_student(cfg, teacher, kind)
    layers = layer_plan(cfg, teacher, student_dir)
    with start_run(cfg, "distill") as (out, resume_from):
        data = kind.load_data(cfg, teacher)
        # --alpha 0 never reads the teacher's outputs: the baseline pays nothing for them
        teacher_pass = add_teacher_outputs(kind, data, teacher, cfg.train.batch_size * 2, out) if cfg.alpha else {
            "teacher_seconds": 0.0, "teacher_cpu_seconds": 0.0, "teacher_outputs": "not run"}
        student, head = make_student(cfg, kind, teacher, student_dir, layers, data)
        trainer = kind.build_trainer(cfg, out, student, teacher.tokenizer, data, head, callbacks,
                                     **hidden_state_loss(cfg, teacher, student, layers))
    cpu0 = time.process_time()
    result, train_time = train_with_signals(trainer, out, resume_from)
    train_cpu = time.process_time() - cpu0  # this process's CPU seconds: the cost figure on a shared machine
    TeacherOutputs.remove_from(out)
    metrics = kind.final_metrics(cfg, trainer, data, result, train_time)
    trainer.drop_hidden_loss()
    stamp_settings(trainer.model.config, teacher.config)
    kind.stamp(trainer.model.config, cfg, data)
    metrics.update(distill_metrics(cfg, teacher, layers if student_dir is None else None),
                   **teacher_pass, train_cpu_seconds=round(train_cpu, 2))
    if is_main_process():
        metrics.update(compare(kind, cfg, teacher, trainer.model, data))
    # the training data was encoded with the teacher's tokenizer (a --student's has the same vocabulary)
    save_run(trainer, teacher.tokenizer, out, "distill", cfg, metrics, kind.model_card(cfg, data))
    print_summary("distill", summary_rows(cfg, teacher, metrics, out))
    return metrics


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------

@dataclass
class Teacher:
    """The teacher's dir, config, tokenizer and task kind (with the model's settings)."""

    path: Any
    config: Any
    tokenizer: Any
    task_class: type[tasks.Task]
    task: tasks.Task | None = None  # set once the inference length is known

    def load(self, device):
        """The teacher's torch model on ``device``, with its kind's inference-only speed-ups."""
        return self.task.prepare_torch(self.task.load_torch(self.path, flag="--teacher").to(device))


def open_teacher(cfg: DistillConfig) -> Teacher:
    path, config, tok = open_checkpoint(cfg.teacher, cfg.allow_pickle, flag="--teacher")
    kind = tasks.detect(config)
    return Teacher(path, config, tok, kind)


def distiller_for(kind: type[tasks.Task]) -> KindDistiller:
    found = DISTILLERS.get(kind.name)
    if found is None:
        raise UsageError(f"--teacher: a {kind.name} model; distill trains students of "
                         f"{', '.join(DISTILLERS)} teachers")
    return found()


def open_student(cfg: DistillConfig, teacher: Teacher, kind: KindDistiller):
    """A --student's (dir, config), refused (one line, exit 2) unless its vocabulary is the teacher's and it
    takes inputs of the length trained on; (None, config) for --student-preset; None for a copy of the
    teacher (--student-layers)."""
    if cfg.student_preset:
        return None, student_preset_config(cfg.student_preset, teacher, kind, cfg.data.max_seq_length)
    if not cfg.student:
        return None
    path, config, tok = open_checkpoint(cfg.student, cfg.allow_pickle, flag="--student")
    check_same_vocabulary(teacher.tokenizer, tok, cfg.student)
    check_compatible(config, teacher.tokenizer, cfg.data.max_seq_length, "--student")
    return path, config


def student_preset_config(name: str, teacher: Teacher, kind: KindDistiller, max_len: int):
    """A new BERT of preset ``name`` reading the teacher's inputs (vocabulary, segments; positions up to
    the teacher's limit, 512 or the training length at most) and giving its outputs (labels)."""
    from ..modeling import preset_config

    t = teacher.config
    positions = min(int(getattr(t, "max_position_embeddings", 512) or 512), max(512, max_len))
    shape = SimpleNamespace(preset=name, hidden_size=None, num_layers=None, num_heads=None, intermediate_size=None,
                            max_position_embeddings=positions, dropout=0.1)
    config = preset_config(shape, vocab_size=len(teacher.tokenizer), pad_token_id=teacher.tokenizer.pad_token_id)
    # at least 2: text pairs' segment ids are 0 and 1 whatever the teacher kept (DeBERTa-v2 keeps 0)
    config.type_vocab_size = max(2, int(getattr(t, "type_vocab_size", 2) or 0))
    for k, v in kind.student_config(teacher).items():
        setattr(config, k, v)
    return config


def add_teacher_outputs(kind: KindDistiller, data, teacher: Teacher, batch_size: int, out: Path) -> dict:
    """Run the teacher once over the training windows (exactly those the student sees) with its kind's
    loop, and add its outputs as ``teacher_*`` columns, through :class:`TeacherOutputs` (each process runs a
    share; a rerun of an interrupted run reads them back); returns the pass's figures for metrics.json."""
    ds = kind.training_set(data)
    store = TeacherOutputs(out, ds, teacher)
    t0, cpu0 = time.time(), time.process_time()
    outputs = store.read()
    # every process takes the same road (a process computing alone would wait at barriers forever)
    if agree_max([float(outputs is None)], current_device())[0]:
        outputs = None
    reused = outputs is not None
    if reused:
        log.info(f"Teacher outputs for {len(ds):,} training examples read from {store.dir} (the interrupted "
                 "run's pass)")
    else:
        outputs = store.compute(teacher, ds, batch_size)
    import datasets

    kind.set_training_set(data, datasets.concatenate_datasets([ds, outputs], axis=1))
    seconds, cpu = time.time() - t0, time.process_time() - cpu0
    if not reused:
        log.info(f"Teacher outputs for {len(ds):,} training examples in {seconds:.1f}s")
    return {"teacher_seconds": round(seconds, 2), "teacher_cpu_seconds": round(cpu, 2),
            "teacher_outputs": "reused" if reused else "computed"}


class TeacherOutputs:
    """The teacher's outputs over the training windows, kept in the output dir (``teacher_outputs/``) while
    the run trains: a rerun of an interrupted run reads them back instead of running the teacher again, and
    under DDP each process runs the teacher over its own share of the windows (a 1/N of the pass) and reads
    the others' shares from there (the output dir is shared, as checkpoints are).  ``key.json``, written
    last, once every share is on disk, names the windows (a hash of their token ids) and the teacher (its
    dir, files, length) they belong to: a pass cut short, or one for other data, is computed again.  Removed
    when training ends."""

    def __init__(self, out: Path, ds, teacher: Teacher):
        self.dir, self.rows = out / TEACHER_OUTPUTS, len(ds)
        self.key = self.fingerprint(ds, teacher)

    @staticmethod
    def fingerprint(ds, teacher: Teacher) -> str:
        import hashlib

        import pyarrow.compute as pc

        h = hashlib.sha256()
        for chunk in ds.with_format("arrow")["input_ids"].chunks:
            h.update(np.asarray(pc.list_value_length(chunk), dtype=np.int64).tobytes())
            h.update(np.asarray(pc.list_flatten(chunk), dtype=np.int64).tobytes())
        files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(teacher.path).iterdir()
                       if f.is_file())
        h.update(repr((str(Path(teacher.path).resolve()), files, teacher.task.max_len, teacher.task.outputs))
                 .encode())
        return h.hexdigest()

    def shares(self, world: int) -> list[tuple[int, int]]:
        """Each process's contiguous rows: the outputs read back in row order are the training set's."""
        return [(i * self.rows // world, (i + 1) * self.rows // world) for i in range(world)]

    def read(self):
        """The outputs kept for these windows and this teacher (a ``datasets.Dataset``), or None."""
        import datasets

        try:
            meta = json.loads((self.dir / "key.json").read_text(encoding="utf-8"))
            if meta.get("key") != self.key or meta.get("rows") != self.rows:
                return None
            parts = [datasets.load_from_disk(str(self.dir / f"part-{i}"))
                     for i, (lo, hi) in enumerate(self.shares(int(meta["processes"]))) if hi > lo]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        found = datasets.concatenate_datasets(parts)
        return found if len(found) == self.rows else None

    def compute(self, teacher: Teacher, ds, batch_size: int):
        """This process's share through the teacher, written as ``part-<rank>``; the whole, read back once
        every process has written its share."""
        rank, world = process_index(), world_size()
        if is_main_process():
            shutil.rmtree(self.dir, ignore_errors=True)  # another run's outputs, or a pass cut short
        wait_for_everyone()
        lo, hi = self.shares(world)[rank]
        share = ds.select(range(lo, hi))  # only this process's rows become Python lists
        windows = tasks.Windows({k: share[k] for k in tasks.base.FEATURES if k in share.column_names},
                                np.arange(len(share)))
        model_fn = tasks.torch_model_fn(teacher.load(current_device()))
        progress = RowProgress(len(share) if is_main_process() else 0, "Teacher")
        results: list = []
        for start in range(0, len(share), tasks.base.CHUNK_ROWS):
            part = windows.reorder(range(start, min(start + tasks.base.CHUNK_ROWS, len(share))))
            results += tasks.run_windows(teacher.task, model_fn, part, batch_size)
            progress.update(len(part))
        progress.close()
        if results:
            teacher_dataset(results, teacher.task.outputs).save_to_disk(str(self.dir / f"part-{rank}"))
        wait_for_everyone()
        if is_main_process():
            write_json(self.dir / "key.json", {"key": self.key, "rows": self.rows, "processes": world})
        wait_for_everyone()
        found = self.read()
        if found is None:
            raise RuntimeError(f"{self.dir}: the teacher's outputs were written but cannot be read back")
        return found

    @staticmethod
    def remove_from(out: Path) -> None:
        """Once training has ended: the student's output dir keeps no training-time files."""
        if is_main_process():
            shutil.rmtree(out / TEACHER_OUTPUTS, ignore_errors=True)


def layer_plan(cfg: DistillConfig, teacher: Teacher, student_dir) -> list[int] | None:
    """The teacher layers the student's layers are copied from (--student-layers, default half the
    teacher's) or learn from (--student with --hidden-loss-weight), checked before anything is written."""
    t_layers = teacher.config.num_hidden_layers
    if student_dir is None:
        return kept_layers(t_layers, cfg.student_layers or max(1, t_layers // 2))
    if not cfg.hidden_loss_weight:
        return None
    s_layers = student_dir[1].num_hidden_layers
    if s_layers > t_layers:
        raise UsageError(f"--hidden-loss-weight: the student has {s_layers} layers, the teacher {t_layers}; a "
                         "student layer needs a teacher layer to learn from")
    return kept_layers(t_layers, s_layers)


def make_student(cfg: DistillConfig, kind: KindDistiller, teacher: Teacher, student_dir,
                 layers: list[int] | None, data):
    """The student: a copy of the teacher keeping ``layers`` (:func:`layer_plan`), or the --student model
    with a head for the teacher's outputs.  Returns (model, the new head's parameter names)."""
    from transformers import set_seed

    set_seed(cfg.train.seed)
    if student_dir is not None and student_dir[0] is None:  # --student-preset: new weights, all of them learnt
        config = student_dir[1]
        for k, v in dropout_overrides(config, cfg.dropout, "--dropout").items():
            setattr(config, k, v)
        model = kind.auto_model(teacher).from_config(config)
        head = frozenset(n for n, _ in model.named_parameters() if not n.startswith(model.base_model_prefix + "."))
        kind.init_head(model, head, data)
        log.info(f"Student: a new '{cfg.student_preset}' model ({config.num_hidden_layers} layers, hidden "
                 f"{config.hidden_size})")
    elif student_dir is not None:
        path, config = student_dir
        model, loading = load_model(kind.auto_model(teacher), path, "distillation", flag="--student",
                                    ignore_mismatched_sizes=True, output_loading_info=True,
                                    **kind.student_config(teacher), **dropout_overrides(config, cfg.dropout))
        head = frozenset(new_parameters(loading))
        kind.init_head(model, head, data)
    else:
        full = teacher.task.load_torch(teacher.path, flag="--teacher",
                                       **dropout_overrides(teacher.config, cfg.dropout))
        model, _ = shrink(full, len(layers))
        del full
        head = frozenset()
        log.info(f"Student: the teacher's embeddings, head and layers {', '.join(map(str, layers))} of "
                 f"{teacher.config.num_hidden_layers}")
    return kind.prepare_student(model.train()), head


def hidden_state_loss(cfg: DistillConfig, teacher: Teacher, student, layers: list[int] | None) -> dict:
    """The DistillTrainer's hidden-state loss arguments for --hidden-loss-weight (none without it): student
    layer i against teacher layer ``layers[i]`` (:func:`layer_plan`)."""
    if not cfg.hidden_loss_weight:
        return {}
    loss = HiddenStateLoss(layers, student.config.hidden_size, teacher.config.hidden_size)
    log.info(f"Hidden-state loss (weight {cfg.hidden_loss_weight:g}): student layers 0-{len(layers) - 1} against "
             f"teacher layers {', '.join(map(str, layers))}" + (", through a learnt projection"
                                                                if loss.project is not None else ""))
    return {"hidden_loss": loss, "teacher_model": teacher.load("cpu"), "hidden_weight": cfg.hidden_loss_weight}


def stamp_settings(config, teacher_config) -> None:
    """The output predicts as the teacher does: its ``bertkit_*`` inference settings are copied (the kind
    stamps the student's own over them)."""
    for k, v in teacher_config.to_dict().items():
        if k.startswith("bertkit_"):
            setattr(config, k, v)


def distill_metrics(cfg: DistillConfig, teacher: Teacher, keep: list[int] | None) -> dict:
    return {"teacher": str(teacher.path), "teacher_layers": teacher.config.num_hidden_layers,
            "student_layers_kept": keep, "alpha": cfg.alpha, "temperature": cfg.temperature,
            "hidden_loss_weight": cfg.hidden_loss_weight}


def compare(kind: KindDistiller, cfg: DistillConfig, teacher: Teacher, student, data) -> dict:
    """Teacher and student on the validation set through the same loop (the one predict and evaluate run,
    on this process's device): metric, rows/s, parameters."""
    labelled = kind.labelled_validation(cfg, data)
    opts = SimpleNamespace(batch_size=64)
    found = {}
    for who, task, model in (("teacher", teacher.task, teacher.load(current_device())),
                             ("student", kind.task_for(student.config, teacher), student.eval())):
        model_fn = tasks.torch_model_fn(model)
        warm = task.encode(task.sample_rows(["a first call: its one-off costs are not speed"]))
        model_fn(tasks.pad_batch(warm.inputs, range(len(warm)), teacher.tokenizer.pad_token_id))
        t0 = time.time()
        scored = task.score(model_fn, labelled, opts)
        seconds = time.time() - t0
        found[who] = {"metric": scored.key, "value": scored.score, "parameters": count_parameters(model),
                      "rows_per_second": round(len(labelled) / max(seconds, 1e-9), 2)}
    t, s = found["teacher"], found["student"]
    return {"comparison": found, "speedup": round(s["rows_per_second"] / max(t["rows_per_second"], 1e-9), 3),
            "size_ratio": round(s["parameters"] / t["parameters"], 4)}


def summary_rows(cfg: DistillConfig, teacher: Teacher, metrics: dict, out) -> list[tuple[str, str]]:
    rows = [("teacher", f"{teacher.path} ({teacher.config.num_hidden_layers} layers)")]
    comp = metrics.get("comparison")
    if comp:
        for who in ("teacher", "student"):
            c = comp[who]
            rows.append((who + " vs validation", f"{c['metric']} {c['value']:.4f}, {c['parameters'] / 1e6:.2f}M "
                                                 f"parameters, {c['rows_per_second']:,.1f} rows/s"))
        rows.append(("student / teacher", f"{metrics['size_ratio']:.2f}x the parameters, {metrics['speedup']:.2f}x "
                                          "the rows/s"))
    keep = metrics.get("student_layers_kept")
    rows += [
        ("student", f"the teacher's layers {', '.join(map(str, keep))}" if keep
         else f"a new '{cfg.student_preset}' model" if cfg.student_preset else str(cfg.student)),
        ("loss", f"alpha {cfg.alpha:g} x soft targets (T {cfg.temperature:g}) + {1 - cfg.alpha:g} x hard labels"
                 + (f" + {cfg.hidden_loss_weight:g} x hidden states" if cfg.hidden_loss_weight else "")),
        ("steps", f"{metrics['steps']:,} ({metrics['epochs']} epochs)"),
        ("time", f"{metrics['train_seconds']:.1f}s ({metrics['examples_per_second']:,.1f} examples/s)"),
        ("model dir", str(out)),
    ]
    return rows


def unlabeled_rows(ds) -> int:
    """The training rows of --unlabeled (``hard_mask`` 0)."""
    import pyarrow.compute as pc

    return int(len(ds) - (pc.sum(ds.with_format("arrow")[HARD_MASK]).as_py() or 0))


# ----------------------------------------------------------------------------------------------
# Task kinds
# ----------------------------------------------------------------------------------------------

class KindDistiller:
    """What distilling a task kind needs; a kind opts in with a subclass in :data:`DISTILLERS`."""

    def with_teacher_settings(self, cfg: DistillConfig, teacher_config) -> DistillConfig:
        """``cfg`` with the settings it leaves unset taken from the teacher's config."""
        raise NotImplementedError

    def load_data(self, cfg: DistillConfig, teacher: Teacher):
        """The encoded splits, the training set with a ``hard_mask`` column."""
        raise NotImplementedError

    def training_set(self, data):
        """The encoded training windows of the splits ``load_data`` returns."""
        return data.train

    def set_training_set(self, data, ds) -> None:
        data.train = ds

    def with_unlabeled(self, cfg, tok, windows):
        """The encoded labelled training ``windows`` (``hard_mask`` 1), followed, with --unlabeled, by those
        :meth:`unlabeled` encodes (``hard_mask`` 0: soft targets only)."""
        windows = windows.add_column(HARD_MASK, [1] * len(windows))
        if not cfg.data.unlabeled:
            return windows
        import datasets

        more = self.unlabeled(cfg, tok)
        more = more.add_column(HARD_MASK, [0] * len(more)).select_columns(list(windows.features))
        log.info(f"--unlabeled: {more.num_rows:,} training examples the teacher labels (soft targets only)")
        return datasets.concatenate_datasets([windows, more.cast(windows.features)])

    def unlabeled(self, cfg, tok):
        """--unlabeled's examples encoded as the training ones are, with placeholder labels."""
        raise NotImplementedError

    def auto_model(self, teacher: Teacher):
        import transformers

        return getattr(transformers, teacher.task_class.auto_model)

    def student_config(self, teacher: Teacher) -> dict:
        """Config overrides a --student model loads with (the teacher's outputs)."""
        return {}

    def init_head(self, model, head: frozenset[str], data) -> None:
        """Initialise a --student's new head."""

    def prepare_student(self, model):
        return model

    def task_for(self, config, teacher: Teacher) -> tasks.Task:
        """The kind's task for a model config (scoring the student as predict will)."""
        return teacher.task_class(config, teacher.tokenizer, teacher.task.max_len)

    def build_trainer(self, cfg, out, model, tok, data, head, callbacks, **distill) -> DistillTrainer:
        """The kind's distillation Trainer; ``distill``: the hidden-state loss's arguments, when any."""
        raise NotImplementedError

    def final_metrics(self, cfg, trainer, data, result, train_time) -> dict:
        raise NotImplementedError

    def stamp(self, config, cfg, data) -> None:
        """The student's own inference settings."""

    def model_card(self, cfg, data) -> dict:
        return {}

    def labelled_validation(self, cfg, data):
        """The validation rows and labels as the kind's ``Task.score`` reads them."""
        raise NotImplementedError


class ClassificationDistiller(KindDistiller):
    """Sequence classification: finetune-cls's stages with the teacher's labels and settings; single-label,
    pairs, multi-label and regression (see :func:`bertkit.distillation.classification_loss`)."""

    def with_teacher_settings(self, cfg, teacher_config):
        d = cfg.data
        stride = getattr(teacher_config, "bertkit_stride", None)
        data = dataclasses.replace(
            d, max_seq_length=inference_length(teacher_config, d.max_seq_length),
            long_text=d.long_text or getattr(teacher_config, "bertkit_long_text", None) or "truncate",
            stride=d.stride if d.stride is not None else stride if stride is not None else 32)
        return dataclasses.replace(cfg, data=data)

    def load_data(self, cfg, teacher):
        from ..labels import LabelSpace

        self.space = LabelSpace.from_model_config(teacher.config)
        data = finetune_cls.load_splits(cfg, teacher.tokenizer, self.space)
        data.train = self.with_unlabeled(cfg, teacher.tokenizer, data.train)
        return data

    def unlabeled(self, cfg, tok):
        from ..data import load_inputs, split_columns
        from ..errors import DataError
        from ..tokenization import encode_for_classification

        d = cfg.data
        ds, _ = load_inputs([d.unlabeled], "--unlabeled", {"--text-column": d.text_column,
                                                             "--text-pair-column": d.text_pair_column},
                            text_mode="lines")
        if len(ds) == 0:
            raise DataError(f"--unlabeled {d.unlabeled}: no rows")
        enc = encode_for_classification(ds, tok, split_columns(d.text_column), d.text_pair_column, d.max_seq_length,
                                        d.long_text, d.stride)
        space = self.space
        blank = 0.0 if space.problem == "regression" else [0.0] * space.num_labels if space.problem == "multi" else 0
        return enc.add_column("labels", [blank] * len(enc))

    def student_config(self, teacher):
        from ..labels import LabelSpace

        return LabelSpace.from_model_config(teacher.config).model_config_kwargs()

    def init_head(self, model, head, data):
        labelled = [y for y, m in zip(data.train["labels"], data.train[HARD_MASK], strict=True) if m]
        if name := init_head_at_prior(model, set(head), data.space.prior_bias(labelled)):
            log.info(f"New head: {name} starts at the training labels' prior")

    def prepare_student(self, model):
        from ..modeling import cls_only_last_layer

        cls_only_last_layer(model)  # the same logits and gradients, less work (see the function)
        return model

    def build_trainer(self, cfg, out, model, tok, data, head, callbacks, **distill):
        space = data.space
        loss = classification_loss(space.problem, cfg.alpha, cfg.temperature, data.weights)
        return finetune_cls.build_trainer(cfg, out, model, tok, data, head, callbacks, trainer_cls=DistillTrainer,
                                          title=f"Distilling {cfg.teacher} into a student", distill_loss=loss,
                                          per_token=False, **distill)

    def final_metrics(self, cfg, trainer, data, result, train_time):
        metrics = finetune_cls.final_metrics(cfg, trainer, data, result, train_time)
        metrics["unlabeled_examples"] = unlabeled_rows(data.train)
        return metrics

    def stamp(self, config, cfg, data):
        finetune_cls.stamp_inference_settings(config, cfg, data.space)

    def model_card(self, cfg, data):
        extra = finetune_cls.model_card_extra(cfg, data)
        extra["purpose"] = (f"a text classifier distilled from `{cfg.teacher}`: use it with "
                            "`pipeline(\"text-classification\")` or `bertkit predict --model DIR`")
        return extra

    def labelled_validation(self, cfg, data):
        from ..data import join_text, split_columns
        from ..tasks.classification import Labelled, rows_of

        d, raw = cfg.data, data.raw["validation"]
        texts = join_text(raw.to_dict(), split_columns(d.text_column), len(raw))
        pairs = [str(x) for x in raw[d.text_pair_column]] if d.text_pair_column else None
        return Labelled(rows_of(texts, pairs), np.asarray(raw["labels"]))


class WindowsDistiller(KindDistiller):
    """A kind trained on its fine-tuning command's encoded windows (``data.train_windows``), with that
    command's stages reading the config the teacher's settings make (``ft_cfg``)."""

    ft_cfg: Any = None
    ft_command: Any = None  # the fine-tuning command's module (its build_trainer, model_card_extra)
    trainer_cls: Any = None  # the kind's DistillTrainer
    loss: Any = None  # (alpha, temperature) -> the kind's DistillLoss
    purpose: str = ""  # the model card's, with {teacher}

    def build_trainer(self, cfg, out, model, tok, data, head, callbacks, **distill):
        return self.ft_command.build_trainer(self.ft_cfg, out, model, tok, data, head, callbacks,
                                             trainer_cls=self.trainer_cls,
                                             title=f"Distilling {cfg.teacher} into a student",
                                             distill_loss=self.loss(cfg.alpha, cfg.temperature), per_token=True,
                                             **distill)

    def training_set(self, data):
        return data.train_windows

    def set_training_set(self, data, ds) -> None:
        data.train_windows = ds

    def final_metrics(self, cfg, trainer, data, result, train_time):
        metrics = self.command_metrics(trainer, data, result, train_time)
        metrics["unlabeled_windows"] = unlabeled_rows(data.train_windows)
        return metrics

    def command_metrics(self, trainer, data, result, train_time) -> dict:
        """The fine-tuning command's final metrics."""
        raise NotImplementedError

    def model_card(self, cfg, data):
        extra = self.ft_command.model_card_extra(self.ft_cfg, data)
        extra["purpose"] = self.purpose.format(teacher=cfg.teacher)
        return extra


class QuestionAnsweringDistiller(WindowsDistiller):
    """Extractive QA: finetune-qa's stages with the teacher's window, answer and metric settings; the soft
    targets are the teacher's start and end distributions over every training window's tokens."""

    ft_command, trainer_cls, loss = finetune_qa, QADistillTrainer, staticmethod(span_loss)
    purpose = ("an extractive question-answering model distilled from `{teacher}`: use it with "
               "`pipeline(\"question-answering\")` or `bertkit predict --model DIR`")

    def with_teacher_settings(self, cfg, teacher_config):
        from .. import qa
        from ..schemas import FinetuneQAConfig, QADataConfig, QATrainConfig

        if cfg.data.test:
            raise UsageError("--test: not for question-answering students, which are scored on --validation")
        d = cfg.data
        s = qa.inference_settings(teacher_config, inference_length(teacher_config, d.max_seq_length))
        data = dataclasses.replace(d, max_seq_length=s["max_seq_length"],
                                   doc_stride=d.doc_stride if d.doc_stride is not None else s["doc_stride"],
                                   max_question_length=d.max_question_length if d.max_question_length is not None
                                   else s["max_question_length"])
        cfg = dataclasses.replace(cfg, data=data)
        self.ft_cfg = FinetuneQAConfig(
            model=cfg.teacher, output=cfg.output, overwrite=cfg.overwrite, allow_pickle=cfg.allow_pickle,
            metric=cfg.metric or "f1", n_best=s["n_best"], max_answer_length=s["max_answer_length"],
            null_threshold=s["null_threshold"],
            qa_language=getattr(teacher_config, "bertkit_qa_language", None) or "auto", dropout=cfg.dropout,
            data=QADataConfig(train=data.train, validation=data.validation, question_column=data.question_column,
                              context_column=data.context_column, answer_column=data.answer_column,
                              max_seq_length=data.max_seq_length, doc_stride=data.doc_stride,
                              max_question_length=data.max_question_length),
            train=QATrainConfig(**dataclasses.asdict(cfg.train)))
        self.ft_cfg.validate()
        return cfg

    def load_data(self, cfg, teacher):
        data = finetune_qa.load_splits(self.ft_cfg, teacher.tokenizer)
        data.train_windows = self.with_unlabeled(cfg, teacher.tokenizer, data.train_windows)
        return data

    def unlabeled(self, cfg, tok):
        """--unlabeled's questions (a SQuAD-format file, its answers not read, or rows of --question-column and
        --context-column) in windows like the training ones, their start and end at [CLS] as for a question
        without an answer: placeholders the hard-label loss leaves out."""
        from .. import qa
        from ..errors import DataError

        d, fd = cfg.data, self.ft_cfg.data
        rows = [r for r in qa.read_questions(d.unlabeled, d.question_column, d.context_column, flag="--unlabeled")
                if r["question"].strip() and r["context"].strip()]
        if not rows:
            raise DataError(f"--unlabeled {d.unlabeled}: no questions with a context")
        log.info(f"--unlabeled {d.unlabeled}: {len(rows):,} questions")
        data = qa.QAData([str(i) for i in range(len(rows))], [r["question"] for r in rows],
                         [r["context"] for r in rows], [{"text": [], "answer_start": []} for _ in rows])
        return qa.encode_train(data, tok, fd.max_seq_length, fd.doc_stride, fd.max_question_length)

    def command_metrics(self, trainer, data, result, train_time):
        return finetune_qa.final_metrics(self.ft_cfg, trainer, data, result, train_time)

    def stamp(self, config, cfg, data):
        finetune_qa.stamp_inference_settings(config, self.ft_cfg, data.eval)

    def labelled_validation(self, cfg, data):
        return data.validation


class TokenClassificationDistiller(WindowsDistiller):
    """Token classification (NER, POS, chunking): finetune-ner's stages with the teacher's tags, tag scheme
    and windows; the soft targets are the teacher's tag distributions at the labelled sub-tokens of every
    training window."""

    ft_command, trainer_cls, loss = finetune_ner, TokenClsDistillTrainer, staticmethod(token_loss)
    purpose = ("a token classifier (per-word tags) distilled from `{teacher}`: use it with "
               "`pipeline(\"token-classification\")` or `bertkit predict --model DIR`")

    def with_teacher_settings(self, cfg, teacher_config):
        from ..schemas import FinetuneNERConfig, NERDataConfig

        d = cfg.data
        max_len = inference_length(teacher_config, d.max_seq_length)
        # the teacher's overlap, kept under half a window when the student trains on shorter ones; a --stride
        # given is checked as finetune-ner checks it
        taught = getattr(teacher_config, "bertkit_stride", None)
        stride = d.stride if d.stride is not None else min(32 if taught is None else int(taught),
                                                            max(0, (max_len - 2) // 2 - 1))
        data = dataclasses.replace(d, max_seq_length=max_len, stride=stride)
        self.ft_cfg = FinetuneNERConfig(
            model=cfg.teacher, output=cfg.output, overwrite=cfg.overwrite, allow_pickle=cfg.allow_pickle,
            metric=cfg.metric or "f1", dropout=cfg.dropout,
            data=NERDataConfig(train=d.train, validation=d.validation, test=d.test, words_column=d.words_column,
                               tags_column=d.tags_column, tag_column=d.tag_column,
                               tag_scheme=getattr(teacher_config, "bertkit_tag_scheme", None) or "auto",
                               label_all_subtokens=bool(getattr(teacher_config, "bertkit_label_all_subtokens", False)),
                               max_seq_length=max_len, stride=stride),
            train=dataclasses.replace(cfg.train))
        self.ft_cfg.validate()
        return dataclasses.replace(cfg, data=data)

    def load_data(self, cfg, teacher):
        from ..errors import DataError

        splits = finetune_ner.read_splits(self.ft_cfg)
        names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
        unknown = sorted(set(splits.names) - set(names))
        if unknown:
            raise DataError(f"--train {cfg.data.train}: tags the teacher does not know: {', '.join(unknown[:10])} "
                            f"(its tags: {', '.join(names)})")
        # the student's label ids are the teacher's (its soft targets are indexed by them)
        self.num_labels = len(names)
        data = finetune_ner.encode_splits(self.ft_cfg, teacher.tokenizer, dataclasses.replace(splits, names=names))
        data.train_windows = self.with_unlabeled(cfg, teacher.tokenizer, data.train_windows)
        return data

    def unlabeled(self, cfg, tok):
        """--unlabeled's sentences in windows like the tagged ones: the positions a tag would be read from are
        scored, with a placeholder label the hard-label loss leaves out."""
        from .. import ner
        from ..errors import DataError
        from ..tasks.token_classification import read_sentences

        d, fd = cfg.data, self.ft_cfg.data
        words = [s.words for s in read_sentences(d.unlabeled, tok, d.words_column, d.text_column, "--unlabeled")
                 if s.words]
        if not words:
            raise DataError(f"--unlabeled {d.unlabeled}: no sentences")
        # what the file was read as shows here (a .txt of raw lines, else a word per line, or rows)
        log.info(f"--unlabeled {d.unlabeled}: {len(words):,} sentences, {sum(map(len, words)) / len(words):.1f} "
                 "words each on average")
        windows = ner.sentence_windows(tok, words, fd.max_seq_length, fd.stride)
        cont = list(range(self.num_labels)) if fd.label_all_subtokens else None
        return finetune_ner.windows_dataset(windows, windows.labels([[0] * len(w) for w in words], cont), tok)

    def student_config(self, teacher):
        names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}}

    def command_metrics(self, trainer, data, result, train_time):
        return finetune_ner.final_metrics(trainer, data, result, train_time)

    def stamp(self, config, cfg, data):
        finetune_ner.stamp_inference_settings(config, self.ft_cfg, data.scheme)

    def labelled_validation(self, cfg, data):
        return data.validation.tagged


# The task kinds distill trains students of, by the kind's name (bertkit.tasks); a kind opts in here.
DISTILLERS: dict[str, type[KindDistiller]] = {"classification": ClassificationDistiller,
                                               "question-answering": QuestionAnsweringDistiller,
                                               "token-classification": TokenClassificationDistiller}
