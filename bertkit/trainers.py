"""bertkit's ``Trainer`` subclasses, one per kind of training, at module level.

The base class holds what every bertkit training shares; the subclasses add only what their task needs.
"""

from __future__ import annotations

import math
import time

from torch.utils.data import SequentialSampler
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import speed_metrics

from .callbacks import CollatorEpoch, Progress, Stopper
from .distributed import wait_for_everyone
from .sampling import WindowedLengthSampler, token_lengths


class BertkitTrainer(Trainer):
    """What every bertkit training shares: bertkit's progress instead of the Trainer's printers; a new
    head may train at its own learning rate (``head_params``/``head_lr``); training batches may come from
    bertkit's windowed length grouping (``batching_window``); evaluation sets are read in order."""

    def __init__(self, *args, head_params: frozenset[str] = frozenset(), head_lr: float | None = None,
                 batching_window: int | None = None, **kwargs):
        self.head_params = frozenset(head_params)
        self.head_lr = head_lr
        self.batching_window = batching_window
        super().__init__(*args, **kwargs)
        # transformers 5 takes a model whose forward has **kwargs to normalise its loss by the Trainer's
        # num_items_in_batch; BERT's heads take **kwargs but return their own per-batch mean, so the Trainer
        # would then neither divide the loss by --grad-accum (measured: the same step loss at 1 and 2, twice
        # the gradient) nor leave it alone across processes (it multiplies it by their count).  Every bertkit
        # loss is a per-batch mean: the Trainer's plain accumulation is the right one.
        self.model_accepts_loss_kwargs = False
        for cb in (PrinterCallback, ProgressCallback):
            self.remove_callback(cb)

    def _callback(self, cls):
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, cls)), None)

    @property
    def progress(self) -> Progress | None:
        return self._callback(Progress)

    @property
    def stopper(self) -> Stopper | None:
        return self._callback(Stopper)

    def create_optimizer(self, model=None):
        # --head-lr: the Trainer's own optimizer (same class, options and weight-decay groups), with
        # the new head's parameters moved to groups of their own at their own peak lr; the scheduler,
        # created afterwards, scales every group by the same warmup/decay factor.
        fresh = self.optimizer is None
        opt = super().create_optimizer(model)
        if fresh and self.head_params and self.head_lr is not None:
            ids = {id(p) for n, p in (model or self.model).named_parameters() if n in self.head_params}
            moved = []
            for group in opt.param_groups:
                mine = [p for p in group["params"] if id(p) in ids]
                if mine:
                    group["params"] = [p for p in group["params"] if id(p) not in ids]
                    moved.append({**{k: v for k, v in group.items() if k != "params"}, "params": mine,
                                  "lr": self.head_lr})
            opt.param_groups[:] = [g for g in opt.param_groups if g["params"]]
            for group in moved:
                opt.add_param_group(group)
        return opt

    def _save_rng_state(self, output_dir):
        # Each process writes its own rng_state_N.pth; the main process then writes trainer_state.json,
        # which marks the checkpoint complete (outputs.find_checkpoint).  Without this barrier it could
        # be written while another process is still writing (or is killed before) its RNG state, and a
        # resume would silently lose that process's random streams.
        super()._save_rng_state(output_dir)
        wait_for_everyone()

    def _get_train_sampler(self, train_dataset=None):
        # --batching window (batching_window set): bertkit's own sampler; length and random are the
        # Trainer's own (train_sampling_strategy).  The order depends on data_seed and the epoch alone,
        # so every process computes the same one and accelerate shards it by batch.
        train_dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.batching_window is None or train_dataset is None or not hasattr(train_dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return WindowedLengthSampler(token_lengths(train_dataset), self.args.train_batch_size, self.batching_window,
                                     seed)

    def _get_eval_sampler(self, eval_dataset):
        # transformers applies train_sampling_strategy="group_by_length" to evaluation as well, with a
        # shuffle: predictions would come back in an order unknown here, and sliding windows could not be
        # matched to their texts.  Evaluation sets are sorted by length beforehand instead (even less
        # padding) and read in order; with several processes accelerate shards them and gathers in order.
        if eval_dataset is None or self.args.world_size > 1:
            return None
        return SequentialSampler(eval_dataset)


class ClsTrainer(BertkitTrainer):
    """Sequence classification (everything it needs is in :class:`BertkitTrainer`)."""


class TokenClsTrainer(BertkitTrainer):
    """Token classification: evaluation is the Trainer's own, with label ids argmax'd batch by batch
    (``preprocess_logits_for_metrics``) and scored per word by :class:`bertkit.ner.WordScorer`.

    The training loss weighs every labelled token alike, whatever batch it lands in: the sum of the
    batch's token losses over the mean labelled tokens of a training batch (``labelled_per_batch``), not
    over the batch's own count.  With length-grouped batches (``--batching window``, the default) the
    per-batch mean gave a token of a batch of short sentences (CoNLL's headlines and score lines) several
    times the weight of one among long ones; with shuffled batches the two are about equal."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labelled_per_batch = labelled_per_row(self.train_dataset) * self.args.per_device_train_batch_size \
            if self.train_dataset is not None else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training or not self.labelled_per_batch or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch.nn.functional as F

        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs["logits"]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                               ignore_index=-100, reduction="sum") / self.labelled_per_batch
        return (loss, outputs) if return_outputs else loss


def labelled_per_row(ds, only: str | None = None) -> float:
    """Mean labelled tokens (label != -100) per row of an encoded token-classification dataset; ``only``: a
    column, counting the tokens of the rows where it is non-zero alone (still over all rows)."""
    import pyarrow.compute as pc

    if ds is None or len(ds) == 0 or "labels" not in ds.column_names:
        return 0.0
    table = ds.select_columns(["labels", *([only] if only else [])]).with_format("arrow")[:]  # not the logits
    if only:
        table = table.filter(pc.not_equal(table[only], 0))
    return (pc.sum(pc.not_equal(pc.list_flatten(table["labels"]), -100)).as_py() or 0) / len(ds)


class QATrainer(BertkitTrainer):
    """Extractive QA: evaluation predicts start/end logits on every validation window, post-processes
    them across the windows of each question into answers and scores EM/F1 (``eval_f1``,
    ``eval_exact_match``; ``--metric`` picks the best checkpoint from them).  The windows' questions and
    offsets stay outside the dataset the model sees (:class:`bertkit.qa.QAEvalSet`)."""

    def __init__(self, *args, qa_eval=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.qa_eval = qa_eval
        self.last_results: list[dict] | None = None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", tune: bool | None = None):
        if self.qa_eval is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        ev = self.qa_eval
        t0 = time.time()
        out = self.evaluation_loop(self.get_eval_dataloader(ev.dataset), description="Evaluation",
                                   prediction_loss_only=False, ignore_keys=ignore_keys,
                                   metric_key_prefix=metric_key_prefix)
        start, end = out.predictions[:2]
        metrics, results, threshold = ev.score(start, end, tune)
        self.last_results = results
        if threshold is not None and (tune if tune is not None else ev.tune):
            ev.null_threshold = threshold
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        metrics.update(speed_metrics(metric_key_prefix, t0, num_samples=len(ev.dataset),
                                     num_steps=math.ceil(len(ev.dataset) / self.args.eval_batch_size)))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class MLMTrainer(BertkitTrainer):
    """Masked-LM pretraining: evaluation masks a fixed 15% with a reseeded generator, so eval losses
    compare across runs; training logs report the padding share (padded slots / all slots since the
    last log)."""

    pad_slots = 0
    real_tokens = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if hasattr(self.data_collator, "epoch"):  # training masks keyed on the epoch (bertkit.masking)
            self.add_callback(CollatorEpoch(self.data_collator))

    def evaluate(self, *args, **kwargs):
        with self.data_collator.evaluation():
            return super().evaluate(*args, **kwargs)

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training and "attention_mask" in inputs:
            mask = inputs["attention_mask"]
            self.pad_slots += mask.numel()
            # summed where the mask is (a GPU tensor here) and read at the next log: reading it every step
            # would make the host wait for the device at each step
            self.real_tokens = self.real_tokens + mask.sum()
        return super().compute_loss(model, inputs, *args, **kwargs)

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self.pad_slots:
            logs["padding_share"] = round(1.0 - int(self.real_tokens) / self.pad_slots, 4)
            self.pad_slots = self.real_tokens = 0
        super().log(logs, *args, **kwargs)


class DistillMixin:
    """A student learning from a teacher (mixed into a kind's trainer): the teacher's outputs ride along in
    the training set as columns (``teacher_*``, computed once before training) with a ``hard_mask`` (0 for
    texts only the teacher labelled); ``distill_loss`` (:data:`bertkit.distillation.DistillLoss`, the task
    kind's) mixes the soft and hard losses.  Evaluation sets carry no teacher outputs: their loss is the
    hard-label loss.  ``per_token``: the teacher's outputs have a sequence axis (padded per batch).
    ``hidden_loss``: a :class:`~bertkit.distillation.HiddenStateLoss` weighted ``hidden_weight``, with the
    teacher model run beside the student on every training batch; the loss module is held by the student
    as ``distill_hidden_loss`` while it trains."""

    def __init__(self, *args, distill_loss=None, per_token: bool = False, hidden_loss=None, teacher_model=None,
                 hidden_weight: float = 0.0, **kwargs):
        from .distillation import TeacherCollator

        if hidden_loss is not None:  # before the Trainer places the model and builds the optimizer
            kwargs["model"].distill_hidden_loss = hidden_loss
        super().__init__(*args, **kwargs)
        self.distill_loss = distill_loss
        self.data_collator = TeacherCollator(self.data_collator, per_token)
        self.hidden_weight = hidden_weight
        self.teacher_model = teacher_model.to(self.args.device).eval() if teacher_model is not None else None

    def drop_hidden_loss(self) -> None:
        """Take the hidden-state loss (and its projection) off the student, before it is saved."""
        if hasattr(self.model, "distill_hidden_loss"):
            del self.model.distill_hidden_loss
        self.teacher_model = None

    def _set_signature_columns_if_needed(self):
        from .distillation import HARD_MASK, TEACHER_PREFIX

        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            columns = self.train_dataset.column_names if self.train_dataset is not None else []
            self._signature_columns += [c for c in columns if c.startswith(TEACHER_PREFIX) or c == HARD_MASK]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from .distillation import HARD_MASK, TEACHER_PREFIX

        teacher = {k: inputs.pop(k) for k in list(inputs) if k.startswith(TEACHER_PREFIX)} or None
        mask = inputs.pop(HARD_MASK, None)
        labels = {k: inputs.pop(k) for k in self.label_names if k in inputs}
        hidden = self.teacher_model is not None and model.training
        outputs = model(**inputs, output_hidden_states=True) if hidden else model(**inputs)
        loss = self.distill_loss(outputs, labels, teacher, mask, **self.distill_loss_kwargs(model))
        if hidden:
            import torch

            with torch.no_grad():
                taught = self.teacher_model(**inputs, output_hidden_states=True)
            module = self.accelerator.unwrap_model(model).distill_hidden_loss
            loss = loss + self.hidden_weight * module(outputs.hidden_states, taught.hidden_states,
                                                      inputs["attention_mask"])
        return (loss, outputs) if return_outputs else loss

    def distill_loss_kwargs(self, model) -> dict:
        """Keywords of the kind's own for ``distill_loss`` (none by default)."""
        return {}


class DistillTrainer(DistillMixin, ClsTrainer):
    """A sequence-classification student (see :class:`DistillMixin`)."""


class QADistillTrainer(DistillMixin, QATrainer):
    """An extractive-QA student (see :class:`DistillMixin`)."""


class TokenClsDistillTrainer(DistillMixin, TokenClsTrainer):
    """A token-classification student (see :class:`DistillMixin`); while training, its loss is normalised
    as finetune-ner's: the soft-target loss over the mean scored tokens of a training batch
    (``labelled_per_batch``), the hard-label loss over the mean of those with a label (``hard_per_batch``:
    fewer when ``--unlabeled`` sentences are mixed in, so the labels keep their weight, as the mean over the
    labelled rows does for a classification student)."""

    def __init__(self, *args, **kwargs):
        from .distillation import HARD_MASK

        super().__init__(*args, **kwargs)
        ds = self.train_dataset
        self.hard_per_batch = self.labelled_per_batch
        if self.labelled_per_batch and HARD_MASK in ds.column_names:
            self.hard_per_batch = labelled_per_row(ds, only=HARD_MASK) * self.args.per_device_train_batch_size

    def distill_loss_kwargs(self, model) -> dict:
        if not model.training or not self.labelled_per_batch:
            return {}
        return {"per_batch": self.labelled_per_batch, "hard_per_batch": self.hard_per_batch or None}
