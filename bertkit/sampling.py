"""Training order for fine-tuning: batches of similar length without a length curriculum.

transformers' ``group_by_length`` (LengthGroupedSampler) sorts megabatches of 50 batches by length, so
each batch holds examples of one length and consecutive batches run long to short.  On 4,000 SST-2 rows
(MiniLM, 1 epoch) that cost about 2 points of accuracy against shuffled batches (figures in
``--batching``'s help and benchmarks/finetune_parity.py).  ``windowed_order`` keeps most of the padding
saving with far less structure: examples are shuffled, cut into windows of a few batches, sorted by
length only inside each window, and the resulting batches are shuffled again -- so no run of batches
is ordered by length and each batch still mixes lengths from a quarter/eighth/... of a random sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BATCHING_CHOICES = ("window", "length", "random")


def windowed_order(lengths: Sequence[int] | np.ndarray, batch_size: int, window: int, seed: int,
                   epoch: int = 0) -> np.ndarray:
    """One epoch's index order (a permutation of ``range(len(lengths))``).

    The order is cut by the DataLoader into consecutive batches of ``batch_size``: every full batch
    comes from one window of ``window`` batches (random examples sorted by length inside the window),
    the full batches appear in shuffled order, and the ``len % batch_size`` leftover examples (random
    ones) come last, so they form the one short batch instead of shifting every batch boundary.

    Depends only on (lengths, batch_size, window, seed, epoch): under distributed training every
    process computes the same order and accelerate hands each its share of the batches.
    ``window=1`` is a plain shuffle cut into batches (no length grouping).
    """
    if batch_size < 1 or window < 1:
        raise ValueError(f"batch_size ({batch_size}) and window ({window}) must be >= 1")
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    # numpy's seed sequence from (seed, epoch): the same stream on every platform and process, a new
    # order each epoch
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, 0x6B7462])
    perm = rng.permutation(n)
    n_full = n - n % batch_size
    body, tail = perm[:n_full], perm[n_full:]
    span = window * batch_size
    batches = []
    for start in range(0, n_full, span):
        w = body[start:start + span]
        # stable sort: ties keep the random order of the permutation
        w = w[np.argsort(lengths[w], kind="stable")]
        batches.extend(w[i:i + batch_size] for i in range(0, len(w), batch_size))
    order = [batches[i] for i in rng.permutation(len(batches))]
    return np.concatenate(order + [tail]) if order else tail.copy()


def padded_tokens(lengths: Sequence[int] | np.ndarray, order: Sequence[int] | np.ndarray, batch_size: int,
                  multiple: int = 1) -> int:
    """Tokens a dynamically padding collator feeds the model for ``order`` cut into batches (each batch
    padded to its longest example, rounded up to ``multiple``)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.asarray(order, dtype=np.int64)
    total = 0
    for i in range(0, len(order), batch_size):
        b = lengths[order[i:i + batch_size]]
        longest = -(-int(b.max()) // multiple) * multiple
        total += longest * len(b)
    return total


def token_lengths(ds) -> np.ndarray:
    """Tokens per row of an encoded dataset (its ``input_ids``)."""
    return np.fromiter((len(x) for x in ds["input_ids"]), dtype=np.int64, count=len(ds))


from torch.utils.data import Sampler  # noqa: E402 - after the pure functions, which need numpy alone


class WindowedLengthSampler(Sampler):
    """A torch Sampler yielding ``windowed_order`` for the current epoch (``set_epoch`` is called by the
    Trainer/accelerate before each epoch, so a resumed run replays the same order)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, window: int, seed: int):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.window = window
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(windowed_order(self.lengths, self.batch_size, self.window, self.seed, self.epoch).tolist())
