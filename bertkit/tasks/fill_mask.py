"""Fill-mask: a masked-LM's top tokens for every ``[MASK]``, and its loss / masked accuracy on text.

Scoring masks text as pretraining evaluates it: blocks of ``--max-seq-length`` tokens (a `bertkit tokenize`
output as it is, raw text packed the way `bertkit tokenize` packs it), a fixed, seeded 15% masking.  The
model is called with ``labels``: bertkit's sparse masked-LM (and an ONNX export, see
:class:`bertkit.onnx_runtime.OnnxModel`) then returns the loss and the predicted id at each masked
position, never vocabulary-sized logits for every token.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import FEATURES, ModelFn, Scored, Task, Windows, batches

MASK_ROWS = 64  # rows masked at once when scoring (the masks, hence the metric, depend on it; 64 was the batch)


class FillMaskTask(Task):
    name = "fill-mask"
    auto_model = "AutoModelForMaskedLM"
    architectures = ("ForMaskedLM", "ForPreTraining")
    per_token = True
    description = "masked-language model (fill-mask)"

    def load_torch(self, path, **kwargs):
        from ..loading import load_model
        from ..modeling import SparseBertForMaskedLM

        return load_model(SparseBertForMaskedLM, path, "masked-LM", **kwargs).eval()

    # -- inference ----------------------------------------------------------------------------

    def read_inputs(self, cfg) -> list[dict]:
        from ..data import read_predict_input
        from ..errors import UsageError

        if self.tokenizer.mask_token is None:
            raise UsageError("--model: the tokenizer has no mask token")
        texts, _, _ = read_predict_input(cfg.input, cfg.text_column, None)
        return [{"text": t} for t in texts]

    def encode(self, rows: Sequence[dict]) -> Windows:
        enc = self.tokenizer([r["text"] for r in rows], truncation=True, max_length=self.max_len)
        return Windows({k: enc[k] for k in FEATURES if k in enc}, np.arange(len(rows)))

    def window_result(self, out, batch, r):
        """The logits at the window's [MASK] positions only (a window's full logits are vocabulary-sized)."""
        pos = np.flatnonzero(batch["input_ids"][r] == self.tokenizer.mask_token_id)
        return out["logits"][r, pos]

    def decode(self, rows: Sequence[dict], windows: Windows, results: list, cfg) -> list[dict]:
        tok = self.tokenizer
        top_k = getattr(cfg, "top_k", 5)
        out = []
        for row, logits in zip(rows, results, strict=True):
            masks = []
            for z in logits:
                z = z.astype(np.float64)
                p = np.exp(z - z.max())
                p /= p.sum()
                ids = np.argsort(-p, kind="stable")[:top_k]
                masks.append([{"token": int(t), "token_str": tok.convert_ids_to_tokens(int(t)),
                               "score": round(float(p[t]), 6)} for t in ids])
            filled = row["text"]
            for m in masks:
                filled = filled.replace(tok.mask_token, m[0]["token_str"].removeprefix("##"), 1)
            out.append({"text": row["text"], "masks": masks, "filled": filled})
        return out

    def flatten(self, record: dict) -> dict:
        out = {"text": record["text"], "filled": record["filled"]}
        for j, m in enumerate(record["masks"]):
            out[f"mask{j + 1}_tokens"] = " ".join(c["token_str"] for c in m)
            out[f"mask{j + 1}_scores"] = " ".join(f"{c['score']:.4f}" for c in m)
        return out

    # -- scoring ------------------------------------------------------------------------------

    def read_labelled(self, path: str, cfg, flag: str = "--data"):
        """Blocks of token ids: a `bertkit tokenize` output as it is, else ``path`` tokenized and packed as
        `bertkit tokenize` does (into a temp dir removed with the returned dataset)."""
        import datasets

        from ..loading import DATASET_DIR
        from ..schemas import DataConfig, TokenizerConfig
        from ..tokenization import build_tokenized, is_tokenized_dir

        if is_tokenized_dir(path):
            return datasets.load_from_disk(str(Path(path) / DATASET_DIR))
        tmp = Path(tempfile.mkdtemp(prefix="bertkit-score-"))
        try:
            dcfg = DataConfig(inputs=[path], text_column=cfg.text_column, max_seq_length=cfg.max_seq_length or 128)
            build_tokenized(dcfg, TokenizerConfig(path=str(self.path)), "mlm", tmp / "tok", flag=flag)
            ds = datasets.load_from_disk(str(tmp / "tok" / DATASET_DIR))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        weakref.finalize(ds, shutil.rmtree, tmp, True)
        return ds

    def score(self, model_fn: ModelFn, labelled, cfg, progress=None) -> Scored:
        """Loss, perplexity and masked-token accuracy at a fixed, seeded 15% masking."""
        from ..masking import MLMCollator
        from ..metrics import perplexity

        collator = MLMCollator(self.tokenizer, eval_seed=cfg.seed)
        total_loss, total, correct, preds = 0.0, 0, 0, []
        with collator.evaluation():
            # the masks are drawn for MASK_ROWS rows at a time, whatever --batch-size (the seeded draws follow
            # the padded batch's shape): the metric of a model does not depend on the batch size it ran at (a
            # --batch-size above MASK_ROWS runs MASK_ROWS rows per pass)
            for group in batches(range(len(labelled)), MASK_ROWS):
                rows = labelled[group[0]:group[-1] + 1]["input_ids"]
                masked = {k: v.numpy() for k, v in collator([{"input_ids": r} for r in rows]).items()}
                for idx in batches(range(len(rows)), cfg.batch_size):
                    part = slice(idx[0], idx[-1] + 1)
                    width = int(masked["attention_mask"][part].sum(1).max())  # this batch's own padding
                    batch = {k: v[part, :width] for k, v in masked.items()}
                    out = model_fn(batch)
                    keep = batch["labels"] != -100
                    n = int(keep.sum())
                    total_loss += float(out["loss"]) * n if n else 0.0  # no masked token: the loss is NaN
                    total += n
                    p = out["logits"][keep]
                    correct += int((p == batch["labels"][keep]).sum())
                    preds.append(p.astype(np.int64))
                if progress is not None:
                    progress.update(len(rows))
        loss = total_loss / max(total, 1)
        metrics = {"masked_tokens": total, "loss": loss, "perplexity": perplexity(loss),
                   "masked_accuracy": correct / max(total, 1)}
        return Scored(metrics, "masked_accuracy", np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64))

    def agreement(self, a: Scored, b: Scored) -> dict:
        """Share of masked positions with the same top token."""
        x, y = a.outputs, b.outputs
        return {"argmax_agreement": float((x == y).mean()) if x.size else 1.0}

    # -- export -------------------------------------------------------------------------------

    def sample_rows(self, texts: Sequence[str]) -> list[dict]:
        """Texts with a [MASK] in the middle."""
        mask = self.tokenizer.mask_token or ""
        out = []
        for t in texts:
            words = t.split()
            if len(words) > 1:
                words[len(words) // 2] = mask
                out.append({"text": " ".join(words)})
            else:
                out.append({"text": t[: len(t) // 2] + mask + t[len(t) // 2 + 1:]})
        return out


TASK = FillMaskTask
