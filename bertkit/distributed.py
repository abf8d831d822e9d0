"""Distributed helpers: which process this is, barriers, and the per-step agreement.

Everything here is a no-op in a single process, so commands call it unconditionally; under
``torchrun`` / ``accelerate launch`` it goes through accelerate's ``PartialState`` (and
``torch.distributed`` for the agreement), the same state the Trainer uses.
"""

from __future__ import annotations

import contextlib
import os


def _state():
    from accelerate import PartialState

    _join_restarted_group()
    # cpu=True where there is no accelerator: without it accelerate sets up no process group for torchrun's
    # processes on a CPU (DistributedType.NO), so each one took itself for the main process and barriers
    # returned at once, until the Trainer's own arguments set the group up (with cpu=True, as here)
    return PartialState(cpu=not has_accelerator())


def _join_restarted_group() -> None:
    """Under ``torchrun --max-restarts`` with its default (static) rendezvous the restarted workers share
    the launcher's key-value store with the workers they replace, and torch's process-group setup finds
    the dead workers' addresses there (gloo: "connectFullMesh failed ... Connection refused").  A
    restarted worker joins its group under a prefix of its own restart round instead, before accelerate
    would set the group up; a first start, and ``--standalone`` / c10d rendezvous (a new store per round),
    are left to accelerate."""
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size(), is_master=False)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, store=dist.PrefixStore(f"bertkit/restart_{attempt}", store),
                            rank=int(os.environ["RANK"]), world_size=world_size())


def current_device():
    """This process's device: the one the Trainer trains on."""
    return _state().device


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_index() -> int:
    """This process's rank among ``world_size()`` (0 in a single process)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    if "RANK" not in os.environ and "LOCAL_RANK" not in os.environ:
        return True
    return _state().is_main_process


@contextlib.contextmanager
def main_process_first():
    """The main process runs the block first (tokenizes, writes caches); the others wait, then run it
    and find the cache.  A no-op in a single process."""
    if world_size() <= 1:
        yield
        return
    with _state().main_process_first():
        yield


def wait_for_everyone() -> None:
    if world_size() > 1:
        _state().wait_for_everyone()


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (getattr(torch.backends, "mps", None) is not None
                                         and torch.backends.mps.is_available())


def agree_max(values: list[float], device) -> list[float]:
    """The element-wise maximum of ``values`` over all processes (one all-reduce), or ``values`` itself
    outside a distributed run.  Processes that must take a decision at the same step (stop on the
    clock, stop on a signal only one of them caught, refit a schedule) decide on the agreed values."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor([float(v) for v in values], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def process_ids() -> list[tuple[str, int]]:
    """(host, pid) of every process by rank (one all-gather), or ``[]`` outside a distributed run: what a
    survivor needs to tell which peer died when a collective fails."""
    import socket

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return []
    ids: list = [None] * dist.get_world_size()
    dist.all_gather_object(ids, (socket.gethostname(), os.getpid()))
    return ids


# what gloo / NCCL / torch.distributed say when a peer's connection breaks
_PEER_FAILURE = ("connection reset by peer", "connection closed by peer", "broken pipe", "gloo", "nccl",
                 "processgroup", "socket timeout")


def is_peer_failure(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed (a peer died or hung), not an error of this process."""
    import torch.distributed as dist

    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e).lower() for s in _PEER_FAILURE)
