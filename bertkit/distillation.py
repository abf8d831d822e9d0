"""Knowledge distillation: students made from a teacher, the teacher's outputs as training targets, and the
mixed soft/hard loss (the ``distill`` command's parts that need no data or files).

The soft-target loss follows Hinton et al. (2015), "Distilling the knowledge in a neural network": the KL
divergence between the teacher's and the student's softmax at temperature T, times T^2 so its gradients keep
their scale as T changes.  Multi-label students learn the teacher's sigmoid (binary cross-entropy against
it), regression students its output (squared error).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import UsageError

# what a student is trained with: (model outputs, its labels by name (those the batch has), the teacher's
# outputs by column (None when evaluating), the hard-label mask (None: every example has a label)); a kind's
# trainer may add keywords of its own (token classification: per_batch)
DistillLoss = Callable[..., torch.Tensor]
TEACHER_PREFIX = "teacher_"  # dataset columns holding the teacher's outputs
HARD_MASK = "hard_mask"  # dataset column: 1 where the example's label counts, 0 for teacher-labelled texts


# ------------------------------------------------------------------------------------------------
# Students
# ------------------------------------------------------------------------------------------------

def kept_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Which of the teacher's layers a student of ``student_layers`` keeps: spread evenly, ending at the top
    one (6 -> 3: 1, 3, 5; 12 -> 6: 1, 3, ..., 11; 12 -> 4: 2, 5, 8, 11).

    Why the top layer: a fine-tuned teacher's pooler and classifier were trained on the last layer's output,
    and the student keeps them; keeping that layer under them changes their input least.  DistilBERT took the
    other parity (0, 2, 4, ...) when distilling a pretrained model, whose head is re-learnt anyway."""
    if not 1 <= student_layers <= teacher_layers:
        raise UsageError(f"--student-layers {student_layers}: the teacher has {teacher_layers} layers; use 1 to "
                         f"{teacher_layers}")
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of transformer layers of a model (BERT, RoBERTa, ELECTRA: ``encoder.layer``; DistilBERT:
    ``transformer.layer``): the one ModuleList under the base model as long as ``num_hidden_layers``, with its
    name there."""
    n = model.config.num_hidden_layers
    found = [(name, m) for name, m in model.base_model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(found) != 1:
        raise UsageError(f"--student-layers: cannot find the layer stack of a {model.config.model_type} model; "
                         "pass a smaller model with --student instead")
    return found[0]


def shrink(teacher: nn.Module, student_layers: int) -> tuple[nn.Module, list[int]]:
    """A copy of ``teacher`` keeping ``student_layers`` of its layers (:func:`kept_layers`); embeddings,
    pooler and head are the teacher's.  Returns (student, the kept layers' indices)."""
    keep = kept_layers(teacher.config.num_hidden_layers, student_layers)
    student = copy.deepcopy(teacher)
    name, stack = encoder_layers(student)
    layers = [stack[i] for i in keep]
    for i, layer in enumerate(layers):
        for m in layer.modules():  # attention layers that know their index (for a cache) learn the new one
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = i
    parent, _, attr = name.rpartition(".")
    setattr(student.base_model.get_submodule(parent), attr, nn.ModuleList(layers))
    student.config.num_hidden_layers = student_layers
    return student, keep


def check_same_vocabulary(teacher_tok, student_tok, student: str) -> None:
    """A student reads the teacher's token ids: the two vocabularies must be equal, token for token."""
    a, b = teacher_tok.get_vocab(), student_tok.get_vocab()
    if a != b:
        differ = sum(1 for t, i in a.items() if b.get(t) != i) + len(set(b) - set(a))
        raise UsageError(f"--student {student}: its vocabulary differs from the teacher's ({len(b):,} vs {len(a):,} "
                         f"tokens, {differ:,} differ); a student must use the teacher's tokenizer")


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------

def soft_target_loss(problem: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student's loss against the teacher's outputs (means over the batch): single-label
    KL(teacher/T || student/T) * T^2; multi-label binary cross-entropy against the teacher's sigmoid;
    regression the squared error to the teacher's output."""
    if problem == "regression":
        return F.mse_loss(student.float(), teacher.float())
    if problem == "multi":
        return F.binary_cross_entropy_with_logits(student.float(), torch.sigmoid(teacher.float()))
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, -1), F.log_softmax(teacher.float() / t, -1),
                    log_target=True, reduction="batchmean") * (t * t)


def hard_label_loss(problem: str, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None,
                    ) -> torch.Tensor:
    """The loss of plain fine-tuning (what the model computes from ``labels``; class-weighted when
    ``weights`` are given, as finetune-cls's --class-weights)."""
    if problem == "regression":
        return F.mse_loss(logits.float().squeeze(-1), labels.float())
    if problem == "multi":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weights)
    return F.cross_entropy(logits.float(), labels.long(), weight=weights)


def classification_loss(problem: str, alpha: float, temperature: float,
                        weights: list[float] | None = None) -> DistillLoss:
    """``alpha`` x the soft-target loss + (1 - alpha) x the hard-label loss over the examples that have a
    label (``hard_mask``); without teacher outputs (evaluation) the hard-label loss alone."""
    w = torch.tensor(weights) if weights is not None else None

    def loss(outputs, labels, teacher, hard_mask):
        logits, y = outputs["logits"], labels.get("labels")
        kept = logits
        if y is not None and hard_mask is not None:
            keep = hard_mask.bool()
            kept, y = logits[keep], y[keep]
        if y is None or len(y) == 0:
            hard = logits.sum() * 0.0
        else:
            hard = hard_label_loss(problem, kept, y, w.to(logits.device) if w is not None else None)
        if teacher is None or alpha == 0:
            return hard
        soft = soft_target_loss(problem, logits, teacher[TEACHER_PREFIX + "logits"], temperature)
        return alpha * soft + (1 - alpha) * hard

    return loss


def span_hard_loss(start: torch.Tensor, end: torch.Tensor, start_positions: torch.Tensor,
                   end_positions: torch.Tensor, hard_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Extractive QA's loss of plain fine-tuning (what ``*ForQuestionAnswering`` computes): the mean of the
    start and end cross-entropies, positions outside the window ignored, and the windows whose ``hard_mask``
    is 0 (``--unlabeled`` questions).  Sums over a count kept at least 1, not the mean reduction: a batch
    of unlabelled windows alone has no position left, where that mean is NaN."""
    n = start.size(1)
    sp, ep = start_positions.clamp(0, n), end_positions.clamp(0, n)
    if hard_mask is not None:
        unlabelled = ~hard_mask.bool()
        sp, ep = sp.masked_fill(unlabelled, n), ep.masked_fill(unlabelled, n)

    def mean_ce(logits, y):
        ce = F.cross_entropy(logits.float(), y, ignore_index=n, reduction="sum")
        return ce / (y != n).sum().clamp(min=1)

    return (mean_ce(start, sp) + mean_ce(end, ep)) / 2


def span_loss(alpha: float, temperature: float) -> DistillLoss:
    """Extractive QA: ``alpha`` x the soft-target loss of the start and end distributions over the window's
    tokens (their mean) + (1 - alpha) x :func:`span_hard_loss` (over the windows with a label)."""

    def loss(outputs, labels, teacher, hard_mask):
        start, end = outputs["start_logits"], outputs["end_logits"]
        if "start_positions" in labels:
            hard = span_hard_loss(start, end, labels["start_positions"], labels["end_positions"], hard_mask)
        else:
            hard = start.sum() * 0.0
        if teacher is None or alpha == 0:
            return hard
        soft = (soft_target_loss("single", start, teacher[TEACHER_PREFIX + "start_logits"], temperature)
                + soft_target_loss("single", end, teacher[TEACHER_PREFIX + "end_logits"], temperature)) / 2
        return alpha * soft + (1 - alpha) * hard

    return loss


def token_loss(alpha: float, temperature: float) -> DistillLoss:
    """Token classification: ``alpha`` x the soft-target loss of the teacher's tag distribution at every
    labelled sub-token (where the labels are not -100: a word's first sub-token, or all of them with
    --label-all-subtokens) + (1 - alpha) x the cross-entropy of plain fine-tuning there (sentences of
    ``--unlabeled``, ``hard_mask`` 0, have positions to score but no labels).  Each is a sum over the batch's
    sub-tokens divided by the trainer's constant where it gives one (training: the training set's mean scored
    sub-tokens per batch, ``per_batch``, and its mean labelled ones, ``hard_per_batch``, as finetune-ner's
    loss, so every token weighs alike whatever batch it is in), else by the batch's own count (evaluation)."""

    # masked sums, not boolean indexing or .any(): no host synchronisation at every training step
    def loss(outputs, labels, teacher, hard_mask, per_batch: float | None = None,
             hard_per_batch: float | None = None):
        logits, y = outputs["logits"], labels.get("labels")
        if y is None:
            return logits.sum() * 0.0
        scored = (y != -100).float()
        hard_y = y.masked_fill(~hard_mask.bool()[:, None], -100) if hard_mask is not None else y
        ce = F.cross_entropy(logits.float().flatten(0, 1), hard_y.flatten(), ignore_index=-100, reduction="sum")
        hard = ce / (hard_per_batch or per_batch or (hard_y != -100).sum().clamp(min=1))
        if teacher is None or alpha == 0:
            return hard
        t = temperature
        taught = teacher[TEACHER_PREFIX + "logits"][:, :logits.size(1)].float()
        kl = F.kl_div(F.log_softmax(logits.float() / t, -1), F.log_softmax(taught / t, -1), log_target=True,
                      reduction="none").sum(-1) * (t * t)
        soft = (kl * scored).sum() / (per_batch or scored.sum().clamp(min=1))
        return alpha * soft + (1 - alpha) * hard

    return loss


class HiddenStateLoss(nn.Module):
    """The mean squared error between the student's hidden states and the teacher's at mapped layers:
    student layer ``i`` against teacher layer ``layers[i]``, over the real tokens (where either model
    computed its top layer for [CLS] alone, that position), the student's mapped by a learnt linear
    projection when the hidden sizes differ (TinyBERT's W_h; Jiao et al., 2020).  Its parameters belong to
    the student while it trains (so the optimizer, DDP and checkpoints carry them) and are left out of
    the saved model."""

    def __init__(self, layers: list[int], student_hidden: int, teacher_hidden: int):
        super().__init__()
        self.layers = list(layers)
        self.project = nn.Linear(student_hidden, teacher_hidden) if student_hidden != teacher_hidden else None

    def forward(self, student_states, teacher_states, attention_mask: torch.Tensor) -> torch.Tensor:
        total = student_states[0].new_zeros(())
        for i, j in enumerate(self.layers):
            s, t = student_states[i + 1].float(), teacher_states[j + 1].float()  # [0]: the embeddings
            n = min(s.size(1), t.size(1))
            s, t, mask = s[:, :n], t[:, :n], attention_mask[:, :n].float()
            if self.project is not None:
                s = self.project(s)
            err = ((s - t) ** 2).mean(-1)
            total = total + (err * mask).sum() / mask.sum().clamp(min=1)
        return total / max(len(self.layers), 1)


# ------------------------------------------------------------------------------------------------
# Teacher outputs as training columns
# ------------------------------------------------------------------------------------------------

# the teacher's logit on a padded position: no probability at any temperature, no NaN (unlike -inf)
PAD_LOGIT = -1e4


def teacher_dataset(results: list[dict], names: tuple[str, ...]):
    """The teacher's kept window outputs (``Task.window_result`` per window) as a ``datasets.Dataset`` of
    ``teacher_*`` columns, row for row: a float32 vector per window (per-token outputs: as long as the window,
    a vector per token where the kind has classes per token).  float32, as the model computes them: Python
    floats would be stored as float64, twice the bytes."""
    import datasets

    columns, features = {}, {}
    for k in names:
        values = [np.asarray(r[k], dtype=np.float32) for r in results]
        feature = datasets.Value("float32")
        for _ in range(values[0].ndim if values else 1):
            feature = datasets.List(feature)
        columns[TEACHER_PREFIX + k], features[TEACHER_PREFIX + k] = [v.tolist() for v in values], feature
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


class TeacherCollator:
    """Collates the ``teacher_*`` columns beside the model inputs (which ``collate`` pads): stacked, or, for
    per-token outputs, padded along the token axis to the batch's length with :data:`PAD_LOGIT`."""

    def __init__(self, collate, per_token: bool):
        self.collate, self.per_token = collate, per_token

    def __call__(self, features: list[dict]) -> dict:
        features = [dict(f) for f in features]
        names = [k for k in features[0] if k.startswith(TEACHER_PREFIX)]
        columns = {k: [f.pop(k) for f in features] for k in names}
        batch = self.collate(features)
        for k, values in columns.items():
            if self.per_token:  # (tokens,) per window, or (tokens, labels) for per-token classes
                values = [np.asarray(v, dtype=np.float32) for v in values]
                arr = np.full((len(values), batch["input_ids"].shape[1], *values[0].shape[1:]), PAD_LOGIT,
                              dtype=np.float32)
                for i, v in enumerate(values):
                    arr[i, :len(v)] = v
            else:
                arr = np.asarray(values, dtype=np.float32)
            batch[k] = torch.from_numpy(arr)
        return batch
