"""bertkit.sampling: the windowed length order (a permutation, deterministic, pads less than random,
not a length curriculum), and finetune-cls --batching end to end on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import cli

from bertkit.sampling import WindowedLengthSampler, padded_tokens, windowed_order


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    # long-tailed like real sentences (SST-2: median 10 tokens, max 57)
    return np.clip(np.random.default_rng(seed).lognormal(2.4, 0.6, n).astype(int) + 2, 2, 128)


@pytest.mark.parametrize("n,batch,window", [(0, 4, 2), (1, 4, 2), (7, 4, 2), (100, 32, 4), (1000, 32, 4),
                                            (1003, 32, 8), (50, 64, 4), (33, 1, 1), (129, 16, 100)])
def test_every_index_once(n, batch, window):
    for epoch in (0, 1):
        order = windowed_order(_lengths(n), batch, window, seed=3, epoch=epoch)
        assert sorted(order.tolist()) == list(range(n))


def test_deterministic_per_seed_and_epoch():
    lengths = _lengths(1000)
    a = windowed_order(lengths, 32, 4, seed=42, epoch=0)
    assert np.array_equal(a, windowed_order(lengths, 32, 4, seed=42, epoch=0))  # same on every process
    assert not np.array_equal(a, windowed_order(lengths, 32, 4, seed=42, epoch=1))
    assert not np.array_equal(a, windowed_order(lengths, 32, 4, seed=43, epoch=0))
    s = WindowedLengthSampler(lengths, 32, 4, seed=42)
    assert len(s) == 1000 and list(s) == a.tolist()
    s.set_epoch(1)
    assert list(s) == windowed_order(lengths, 32, 4, seed=42, epoch=1).tolist()


def test_pads_less_than_random():
    lengths = _lengths(4000)
    rand = np.mean([padded_tokens(lengths, windowed_order(lengths, 32, 1, s), 32, 8) for s in range(3)])
    win4 = np.mean([padded_tokens(lengths, windowed_order(lengths, 32, 4, s), 32, 8) for s in range(3)])
    win8 = np.mean([padded_tokens(lengths, windowed_order(lengths, 32, 8, s), 32, 8) for s in range(3)])
    assert win8 < win4 < 0.8 * rand


def test_full_batches_stay_whole_and_the_short_one_comes_last():
    lengths = _lengths(1003)
    order = windowed_order(lengths, 32, 4, seed=0)
    batches = [lengths[order[i:i + 32]] for i in range(0, 1003 - 1003 % 32, 32)]
    # each full batch is a contiguous run of one sorted window: sorted within the batch
    assert all(np.all(np.diff(b) >= 0) for b in batches)


def test_batch_order_is_not_length_sorted():
    """transformers' group_by_length runs 50 batches at a time from long to short; here consecutive
    batches should be as often longer as shorter than the previous one."""
    lengths = _lengths(32 * 200)
    order = windowed_order(lengths, 32, 4, seed=1)
    means = np.array([lengths[order[i:i + 32]].mean() for i in range(0, len(order), 32)])
    falls = float(np.mean(np.diff(means) < 0))
    assert 0.35 < falls < 0.65
    # and no long monotone runs (LengthGroupedSampler: runs of ~50)
    run = longest = 1
    for d in np.diff(means):
        run = run + 1 if d < 0 else 1
        longest = max(longest, run)
    assert longest < 12
    # the batch means are not correlated with position
    assert abs(np.corrcoef(np.arange(len(means)), means)[0, 1]) < 0.3


def test_bad_arguments():
    with pytest.raises(ValueError):
        windowed_order([1, 2, 3], 0, 4, seed=0)
    with pytest.raises(ValueError):
        windowed_order([1, 2, 3], 2, 0, seed=0)


@pytest.mark.parametrize("batching", ["window", "length", "random"])
def test_finetune_batching_choices(workdir, mlm_model, cls_files, batching):
    train, dev = cls_files
    out = workdir / f"cls-batching-{batching}"
    assert cli("finetune-cls", "--model", mlm_model, "--train", train, "--validation", dev, "--output", out,
               "--max-steps", 3, "--batch-size", 16, "--max-seq-length", 32, "--batching", batching,
               "--overwrite", "--quiet") == 0
    saved = yaml.safe_load((out / "bertkit_config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["batching"] == batching
    assert (out / "metrics.json").exists()


def test_finetune_batching_window_rejects_zero(workdir, mlm_model, cls_files):
    train, dev = cls_files
    assert cli("finetune-cls", "--model", mlm_model, "--train", train, "--validation", dev,
               "--output", workdir / "cls-batching-0", "--max-steps", 2, "--batching-window", 0, "--quiet") == 2


@pytest.mark.parametrize(("batching", "lr", "order"), [("auto", 5e-5, "window"), ("auto", 2e-5, "window"),
                                                       ("auto", 1e-4, "random"), ("window", 2e-4, "window"),
                                                       ("length", 1e-4, "length"), ("random", 1e-5, "random")])
def test_batching_auto_keeps_windows_only_up_to_the_measured_rate(batching, lr, order):
    from bertkit.schemas import ClsTrainConfig, FinetuneConfig

    train = ClsTrainConfig(batching=batching, lr=lr)
    assert train.batch_order() == order
    assert train.sampler_window() == (2 if order == "window" else None)
    assert FinetuneConfig().train.batching == "auto"  # finetune-cls's default
