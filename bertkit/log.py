"""Console output.

Human-readable progress and summaries go to stderr, so stdout stays for data (``predict -o -``,
``env``, ``recipes``).  ``--quiet`` keeps only warnings and errors, ``--verbose`` adds library logs.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_LOGGER_NAME = "bertkit"


def get_logger() -> logging.Logger:
    return logging.getLogger(_LOGGER_NAME)


def is_tty() -> bool:
    return sys.stderr.isatty()


def setup(verbosity: int = 0) -> None:
    """verbosity: -1 quiet, 0 normal, 1 verbose.  Processes other than the main one of a distributed
    run only report warnings and errors."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        verbosity = min(verbosity, -1)
    logger = get_logger()
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if verbosity <= 0:
        # Library chatter that does not concern a user of the CLI.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DATASETS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # imported already (a library user, a test): it read the env then
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        for name in ("transformers", "datasets", "accelerate", "torch", "evaluate", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if verbosity < 0 or not is_tty():
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
        try:
            import datasets

            datasets.disable_progress_bars()
        except Exception:  # noqa: BLE001
            pass


def quiet() -> bool:
    return get_logger().level > logging.INFO
