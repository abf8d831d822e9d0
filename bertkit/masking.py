"""Masked-language-model batches: dynamic padding, 80/10/10 masking, whole-word masking.

Training masks at ``probability``; evaluation always masks 15% with a generator reseeded at each
evaluation, so eval losses of different runs (and of the same run over time) compare.

A training batch's masks are drawn from a generator seeded by (seed, epoch, the batch's token ids), not
from the global RNG: the DataLoader collates a batch ahead of the step that uses it (and in worker
processes when there are workers), so global-RNG masks would depend on when and where a batch was
collated, and a run resumed from a checkpoint would mask its first batches differently from one never
interrupted.  Keyed on the batch itself, the masks are the same wherever the run restarts; a new epoch
draws new masks for the same examples (dynamic masking).
"""

from __future__ import annotations

import contextlib
import hashlib

import torch

EVAL_PROBABILITY = 0.15


class MLMCollator:
    def __init__(self, tokenizer, probability: float = 0.15, mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1, whole_word_mask: bool = False, pad_to_multiple_of: int | None = 8,
                 eval_seed: int = 1234, seed: int = 0):
        from .errors import UsageError

        if not 0.0 < probability < 1.0:
            raise UsageError(f"--mlm-probability {probability}: must be between 0 and 1")
        if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1.0:
            raise UsageError("mlm.mask_replace_prob + mlm.random_replace_prob must be within 0..1 "
                             f"(got {mask_replace_prob} + {random_replace_prob})")
        if tokenizer.mask_token_id is None:
            raise UsageError("the tokenizer has no [MASK] token; masked-LM training needs one")
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.probability = probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.whole_word_mask = whole_word_mask
        self.pad_to_multiple_of = pad_to_multiple_of
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.continuation = None
        if whole_word_mask:
            vocab = tokenizer.get_vocab()
            cont = torch.zeros(max(self.vocab_size, max(vocab.values()) + 1), dtype=torch.bool)
            for tok, i in vocab.items():
                if tok.startswith("##"):
                    cont[i] = True
            self.continuation = cont
        self.eval_seed = eval_seed
        self.seed = seed
        self.epoch = 0  # set at each epoch's start by the trainer
        self.generator: torch.Generator | None = None
        self._eval = False

    @contextlib.contextmanager
    def evaluation(self):
        """Deterministic 15% masking inside this block."""
        prev = (self._eval, self.generator)
        self._eval = True
        self.generator = torch.Generator().manual_seed(self.eval_seed)
        try:
            yield
        finally:
            self._eval, self.generator = prev

    def pad(self, examples) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [e["input_ids"] for e in examples]
        longest = max(len(s) for s in seqs)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        ids = torch.full((len(seqs), longest), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), longest), dtype=torch.long)
        for i, s in enumerate(seqs):
            t = torch.as_tensor(s, dtype=torch.long)
            ids[i, : len(t)] = t
            attn[i, : len(t)] = 1
        return ids, attn

    def batch_generator(self, ids: torch.Tensor) -> torch.Generator:
        """The training masks' generator for the padded batch ``ids``: a function of (seed, epoch, ids) alone."""
        h = hashlib.blake2b(ids.numpy().tobytes(), digest_size=8)
        h.update(f"{self.seed}:{self.epoch}:{tuple(ids.shape)}".encode())
        return torch.Generator().manual_seed(int.from_bytes(h.digest(), "little") & ((1 << 63) - 1))

    def __call__(self, examples):
        ids, attn = self.pad(examples)
        inputs, labels = self.mask(ids, None if self._eval else self.batch_generator(ids))
        return {"input_ids": inputs, "attention_mask": attn, "labels": labels}

    def mask(self, ids: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        g = generator if generator is not None else self.generator
        p = EVAL_PROBABILITY if self._eval else self.probability
        special = torch.isin(ids, self.special_ids)
        r = torch.rand(ids.shape, generator=g)
        if self.continuation is not None:
            # a word = a token that is not a ## continuation, plus the continuations that follow it;
            # all its tokens share the draw of its first token (CJK characters are words of their own)
            cont = self.continuation[ids.clamp(max=len(self.continuation) - 1)] & ~special
            pos = torch.arange(ids.size(1)).expand_as(ids)
            start = torch.where(cont, torch.zeros_like(pos), pos)
            first = torch.cummax(start, dim=1).values
            r = torch.gather(r, 1, first)
        selected = (r < p) & ~special
        labels = torch.where(selected, ids, torch.full_like(ids, -100))
        r2 = torch.rand(ids.shape, generator=g)
        to_mask = selected & (r2 < self.mask_replace_prob)
        to_random = selected & (r2 >= self.mask_replace_prob) & (r2 < self.mask_replace_prob + self.random_replace_prob)
        inputs = ids.clone()
        inputs[to_mask] = self.mask_id
        if to_random.any():
            rand_tokens = torch.randint(self.vocab_size, ids.shape, generator=g)
            inputs[to_random] = rand_tokens[to_random]
        return inputs, labels
