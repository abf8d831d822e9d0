"""The time budget's schedule refit (pure functions) and the progress log."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from bertkit.callbacks import refit_schedule, steps_that_fit


def _lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_steps_that_fit_from_measured_step_time():
    # 10 steps in 20 s, 100 s budget: 40 more steps fit
    assert steps_that_fit(global_step=10, steps_done=10, elapsed=20.0, budget=100.0, max_steps=None) == 50
    assert steps_that_fit(10, 10, 20.0, 100.0, max_steps=30) == 30  # never beyond --max-steps
    assert steps_that_fit(10, 10, 99.9, 100.0, None) == 11  # at least one more step
    # resumed at step 100: only the steps of this process measure the pace
    assert steps_that_fit(110, 10, 20.0, 100.0, None) == 150


@pytest.mark.parametrize("make", [get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup])
def test_refit_schedule_completes_warmup_and_decay_at_the_new_total(make):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make(opt, num_warmup_steps=10, num_training_steps=1000)
    assert refit_schedule(sched, 40, warmup_ratio=0.1)
    lrs = _lrs(sched, 41)
    assert lrs[0] == 0.0 and lrs[4] == pytest.approx(1.0)  # warm-up shortened to 10% of 40 steps
    assert lrs[40] == pytest.approx(0.0, abs=1e-9)  # decayed to 0 exactly at the fitted end
    assert all(a >= b for a, b in pairwise(lrs[4:]))


def test_refit_schedule_leaves_a_constant_schedule_alone():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    assert not refit_schedule(sched, 40, 0.1)


def test_budget_stop_evaluates_and_saves_the_last_step_when_the_best_model_is_kept():
    from types import SimpleNamespace

    from transformers import TrainerControl

    from bertkit.callbacks import Stopper

    def stop(load_best=True, signal=None, budget_hit=True, eval_strategy="steps"):
        s = Stopper("1h")
        s.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=100), None)
        s.budget_hit, s.signal = budget_hit, signal
        args = SimpleNamespace(world_size=1, load_best_model_at_end=load_best, eval_strategy=eval_strategy)
        return s.on_step_end(args, SimpleNamespace(global_step=5, max_steps=100), TrainerControl())

    c = stop()
    assert c.should_training_stop and c.should_evaluate and c.should_save
    c = stop(load_best=False)  # pretraining: the final model is saved by the command, no extra evaluation
    assert c.should_training_stop and not c.should_evaluate and not c.should_save
    c = stop(signal=15)  # SIGTERM: stop now; the checkpoint for resuming is saved, nothing evaluated
    assert c.should_training_stop and c.should_save and not c.should_evaluate
    c = stop(budget_hit=False)  # still within the budget
    assert not c.should_training_stop and not c.should_evaluate
