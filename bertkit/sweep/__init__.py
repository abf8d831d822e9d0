"""Hyperparameter sweeps on Optuna: ``bertkit sweep finetune-cls|finetune-qa ...``.

One module per concern: :mod:`.schema` (the sweep schemas and :data:`~.schema.TARGETS`, the commands a sweep
runs), :mod:`.space` (the searched params, their parsing, the sampler), :mod:`.pruning` (the pruners by
name and the callback that reports to them), :mod:`.study` (the study the workers share, and their
coordination), :mod:`.trial` (one trial: a run of the target command), :mod:`.results` (sweep.json,
trials.csv, best.yaml, best/, plots, the ``--report`` table).  The stages are in
:mod:`bertkit.commands.sweep`.

Optuna is an extra (``bertkit[sweep]``).  This module and :mod:`.schema` do not import it: the CLI imports
the sweep schemas at start-up for every command.  The other modules import it through
:func:`require_optuna`, which says in one line how to install it.
"""

from __future__ import annotations

from ..errors import UsageError

EXTRA_HINT = "pip install 'bertkit[sweep]'"


def require_optuna():
    """The optuna module, or a UsageError (exit 2) saying how to install it."""
    try:
        import optuna  # only when a sweep runs: the extra may be absent, and it costs a second to import
    except ImportError:
        raise UsageError(f"bertkit sweep needs Optuna, which is not installed: {EXTRA_HINT}") from None
    return optuna
