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
