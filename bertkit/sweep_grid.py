"""Optuna's GridSampler for ``bertkit sweep --sampler grid``.  A module of its own because it imports
optuna at import time: optuna is an optional extra, and :mod:`bertkit.commands.sweep` must import
without it to say so in one line (``pip install 'bertkit[sweep]'``); this one is imported only when the
grid sampler is asked for."""

from __future__ import annotations

import optuna


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its stop: after the last grid point it calls ``study.stop()``, which
    raises outside ``study.optimize``; the sweep stops by counting trials instead."""

    def after_trial(self, study, trial, state, values):
        pass
