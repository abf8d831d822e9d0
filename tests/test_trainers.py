"""The Trainer subclasses."""

from __future__ import annotations

import pytest


def test_head_lr_moves_only_the_new_head(mlm_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from bertkit.modeling import new_parameters
    from bertkit.trainers import ClsTrainer

    model, info = AutoModelForSequenceClassification.from_pretrained(str(mlm_model), num_labels=2,
                                                                     output_loading_info=True)
    head = new_parameters(info)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, weight_decay=0.01, use_cpu=True,
                             report_to="none", warmup_steps=0)
    trainer = ClsTrainer(model=model, args=args, head_params=head, head_lr=3e-3)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in trainer.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(named)
    for n, p in named.items():
        assert lr_of[id(p)][0] == (3e-3 if n in head else 1e-4), n
    assert lr_of[id(named["classifier.weight"])][1] == 0.01 and lr_of[id(named["classifier.bias"])][1] == 0.0
    trainer.optimizer.step()  # no gradients: nothing moves
    trainer.lr_scheduler.step()  # the linear decay scales every group by the same factor
    lrs = {g["lr"] / g["initial_lr"] for g in trainer.optimizer.param_groups}
    assert len(lrs) == 1 and lrs.pop() == pytest.approx(0.9)


def _token_batches(model_dir, tmp_path, ga: int):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForTokenClassification, TrainingArguments

    from bertkit.trainers import TokenClsTrainer

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(str(model_dir), num_labels=3)
    # 6 rows: 4 labelled tokens in each long row, 1 in each short one -> 2.5 per row, 5 per batch of 2
    rows = {"input_ids": [[2, 5, 6, 7, 8, 3]] * 3 + [[2, 5, 3]] * 3, "labels": [[-100, 0, 1, 2, 1, -100]] * 3
            + [[-100, 2, -100]] * 3}
    rows["attention_mask"] = [[1] * len(x) for x in rows["input_ids"]]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=ga,
                             use_cpu=True, report_to="none")
    trainer = TokenClsTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows))
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    trainer.current_gradient_accumulation_steps = ga
    long = {k: torch.tensor(v[:2]) for k, v in rows.items()}
    short = {k: torch.tensor(v[3:5]) for k, v in rows.items()}
    return trainer, model, long, short


def test_token_loss_weighs_every_labelled_token_alike(mlm_model, tmp_path):
    import torch

    trainer, model, long, short = _token_batches(mlm_model, tmp_path, ga=1)
    assert trainer.labelled_per_batch == pytest.approx(5.0)
    model.train()
    torch.manual_seed(1)
    ours = trainer.compute_loss(model, dict(long))
    torch.manual_seed(1)
    mean = model(**long).loss  # the model's own per-batch mean over its 8 labelled tokens
    assert ours.item() == pytest.approx(mean.item() * 8 / 5, rel=1e-5)
    model.eval()  # evaluation keeps the model's own mean
    assert float(trainer.compute_loss(model, dict(short))) == pytest.approx(float(model(**short).loss), rel=1e-6)


def test_gradient_accumulation_divides_the_loss(mlm_model, tmp_path):
    step = {}
    for ga in (1, 2):
        trainer, model, long, _ = _token_batches(mlm_model, tmp_path / str(ga), ga)
        model.eval()  # no dropout: both steps see the same forward
        step[ga] = float(trainer.training_step(model, dict(long)))
    # transformers alone returned the same loss at both (BERT's forward takes **kwargs)
    assert step[2] == pytest.approx(step[1] / 2, rel=1e-5)


def test_labelled_per_row_counts_scored_tokens_and_the_hard_rows_alone():
    """The token students' loss constants: labelled tokens per row over all rows, and (``only``) those of the
    tagged rows alone, still per row of the whole set (--unlabeled windows have scored tokens, no tags)."""
    import datasets

    from bertkit.trainers import labelled_per_row

    ds = datasets.Dataset.from_dict({"labels": [[-100, 1, 0, -100], [-100, 2, -100], [-100, 0, 0, 0, -100]],
                                     "hard_mask": [1, 1, 0]})
    assert labelled_per_row(ds) == pytest.approx(6 / 3)
    assert labelled_per_row(ds, only="hard_mask") == pytest.approx(3 / 3)
    assert labelled_per_row(ds.select([2]), only="hard_mask") == 0.0
