"""The ``bertkit`` command line (Typer).

Thin by design: every training/data command's options are generated from its schema in
:mod:`bertkit.schemas` (flag, type, help), mapped to a config with the precedence
defaults < ``--config`` recipe < flags < ``--set``, and handed to ``bertkit.commands.<cmd>.run``.
Errors a user can cause are printed as one line (exit 1 data, 2 usage); ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import inspect
import os
import sys
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import click
import typer

from . import __version__
from .config import iter_flag_fields, resolve
from .errors import BertkitError, UsageError, no_room

# Nothing is ever fetched from the Hugging Face Hub: models, tokenizers, data and metrics are local.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

app = typer.Typer(
    name="bertkit",
    help="Train BERT-style encoders: tokenize, pretrain-mlm, finetune-cls, finetune-qa, finetune-ner, distill, sweep, "
         "evaluate, predict, serve, export. Offline; local paths only.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_STATE = {"debug": bool(os.environ.get("BERTKIT_DEBUG"))}


def _version(value: bool):
    if value:
        typer.echo(f"bertkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
):
    """bertkit: the BERT training toolkit."""


# ------------------------------------------------------------------------------------------------
# Commands generated from schemas
# ------------------------------------------------------------------------------------------------

def _cli_type(tp: Any, decl: str | None, choices) -> tuple[Any, dict]:
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin is typing.Union or (origin is not None and type(None) in typing.get_args(tp)):
        tp = args[0]
        origin = typing.get_origin(tp)
    extra: dict = {}
    if origin is Literal or choices:
        # validated (exit 2, naming the choices) when the config is resolved
        return str | None, extra
    if origin is list:
        return list[str] | None, extra
    if tp is bool:
        return bool | None, extra
    if tp in (int, float, str):
        return tp | None, extra
    return str | None, extra


_COMMON = [
    ("config", Annotated[str | None, typer.Option("--config", "-c",
                                                     help="Recipe YAML file (flags and --set override it).",
                                                     rich_help_panel="Configuration")]),
    ("sets", Annotated[list[str] | None, typer.Option("--set", help="Override any config key: "
                                                         "--set train.lr=2e-5 (repeatable).",
                                                         rich_help_panel="Configuration")]),
    ("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.",
                                           rich_help_panel="Output")]),
    ("verbose", Annotated[bool, typer.Option("--verbose", "-v", help="Also show library logs.",
                                             rich_help_panel="Output")]),
    ("debug", Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.", rich_help_panel="Output")]),
]


def _register(name: str, schema: type, runner: str, help_text: str, extra_params: list | None = None,
              map_extra: Callable[[dict], dict] | None = None, group: typer.Typer | None = None) -> None:
    params: list[inspect.Parameter] = []
    keymap: dict[str, str] = {}
    for dotted, field, tp in iter_flag_fields(schema):
        pname = dotted.replace(".", "__")
        keymap[pname] = dotted
        meta = field.metadata
        ann_tp, extra = _cli_type(tp, meta.get("flag"), meta.get("choices"))
        panel = dotted.split(".")[0].capitalize() if "." in dotted else None
        if meta.get("argument"):
            info = typer.Argument(help=meta["help"], show_default=False, metavar="INPUT...")
        else:
            decls = [meta["flag"]]
            info = typer.Option(*decls, help=meta["help"] + _default_text(field), show_default=False,
                                rich_help_panel=panel, **extra)
        params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[ann_tp, info]))
    for pname, ann in (extra_params or []) + _COMMON:
        default = False if typing.get_args(ann)[0] is bool else None
        params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))

    def command(**kwargs):
        _STATE["debug"] = _STATE["debug"] or kwargs.pop("debug", False)
        quiet, verbose = kwargs.pop("quiet", False), kwargs.pop("verbose", False)
        from .log import setup

        setup(-1 if quiet else (1 if verbose else 0))
        recipe, sets = kwargs.pop("config", None), kwargs.pop("sets", None)
        extra_values = {p: kwargs.pop(p) for p, _ in (extra_params or [])}
        flags = {keymap[k]: v for k, v in kwargs.items() if v is not None and v != []}
        if map_extra:
            flags.update(map_extra(extra_values))
        cfg = resolve(schema, recipe, flags, sets)
        import importlib

        importlib.import_module(f"bertkit.commands.{runner}").run(cfg)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = help_text
    (group or app).command(name, help=help_text)(command)


def _default_text(field) -> str:
    import dataclasses

    if field.default is dataclasses.MISSING or field.default in (None, "", False):
        return ""
    return f" (default: {field.default})"


def _register_all() -> None:
    from .schemas import (
        DistillConfig,
        EvaluateConfig,
        ExportConfig,
        FinetuneConfig,
        FinetuneNERConfig,
        FinetuneQAConfig,
        PredictConfig,
        PretrainConfig,
        ServeConfig,
        TokenizeConfig,
    )

    _register("tokenize", TokenizeConfig, "tokenize",
              "Train or load a WordPiece tokenizer and turn raw data into a cached, packed datasets dataset.")
    _register("pretrain-mlm", PretrainConfig, "pretrain_mlm",
              "Masked-language-model pretraining from a size preset or a local checkpoint.")
    _register("finetune-cls", FinetuneConfig, "finetune_cls",
              "Fine-tune a sequence classifier (single-label, multi-label, regression, pairs).")
    _register("finetune-qa", FinetuneQAConfig, "finetune_qa",
              "Fine-tune extractive question answering (SQuAD v1.1/v2.0 JSON or flat files; English and Chinese).")
    _register("finetune-ner", FinetuneNERConfig, "finetune_ner",
              "Fine-tune token classification (NER, POS, chunking): CoNLL-style or JSONL/CSV/Parquet word and tag "
              "lists; IOB1/IOB2/BIOES/BMES; English and Chinese.")
    _register("distill", DistillConfig, "distill",
              "Distill a fine-tuned teacher into a smaller, faster student (a copy keeping some of its layers, or "
              "--student DIR): soft targets mixed with the labels.")
    _register("evaluate", EvaluateConfig, "evaluate",
              "Compute a saved model's metrics on a labelled file (classification, QA) or on text (MLM), "
              "without training.")
    _register("predict", PredictConfig, "predict",
              "Fill-mask, classification or question-answering inference: files (or stdin) in, "
              "JSON lines or CSV out.")
    _register("serve", ServeConfig, "serve",
              "Serve a model over HTTP (the serve extra): POST /predict batches requests from many clients; "
              "/health, /info, /metrics.")
    _register("export", ExportConfig, "export",
              "Export a model to ONNX (fp32 or int8) for ONNX Runtime, checked against torch.")


_register_all()

sweep_app = typer.Typer(help="Hyperparameter sweeps on Optuna (the sweep extra): bertkit sweep "
                             "finetune-cls|finetune-qa|finetune-ner|distill (its flags) --param lr=log:1e-5:3e-4 "
                             "--trials 12; "
                             "bertkit sweep --report STORAGE.",
                        no_args_is_help=False, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(sweep_app, name="sweep")


@sweep_app.callback(invoke_without_command=True)
def _sweep_root(ctx: typer.Context,
                report: Annotated[str | None, typer.Option(
                    "--report", help="Print the trials table of an existing study: a journal file, a sweep's "
                                     "output dir or a storage URL.")] = None,
                study: Annotated[str | None, typer.Option("--study", help="Study name (with --report).")] = None):
    """Hyperparameter sweeps on Optuna: bertkit sweep finetune-cls|finetune-qa|finetune-ner|distill [its flags]
    --param NAME=KIND:..."""
    if ctx.invoked_subcommand is not None:
        return
    if report is None:
        raise UsageError("bertkit sweep: name the command to sweep (bertkit sweep "
                         "finetune-cls|finetune-qa|finetune-ner|distill ... --param lr=log:1e-5:3e-4) or give --report "
                         "STORAGE; see bertkit sweep --help")
    from .commands.sweep import report as sweep_report

    sweep_report(report, study)


def _register_sweeps() -> None:
    from .sweep.schema import TARGETS

    for t in TARGETS.values():  # commands.sweep.run finds the target from the config's class
        _register(t.command, t.sweep_schema, "sweep",
                  f"Sweep {t.command}'s hyperparameters: every {t.command} flag fixes a value, --param searches one.",
                  group=sweep_app)


_register_sweeps()


@app.command("env")
def env_command():
    """Versions, devices, precision and offline state, to paste into bug reports."""
    from .envinfo import env_report

    typer.echo(env_report())


@app.command("recipes")
def recipes_command(
    name: Annotated[str | None, typer.Argument(help="A recipe name: print that recipe (with --path: its file).",
                                                  show_default=False)] = None,
    path: Annotated[bool, typer.Option("--path", help="Print the recipe's file path (e.g. for accelerate's "
                                                      "--config_file).")] = False,
):
    """List the shipped recipes with their purpose and the command that runs each (--config NAME runs one)."""
    from .recipe_files import find_recipe, list_recipes

    if name:
        found = find_recipe(name)
        if found is None:
            typer.echo(f"bertkit: error: no shipped recipe {name!r}; `bertkit recipes` lists them", err=True)
            raise typer.Exit(2)
        typer.echo(str(found) if path else found.read_text(encoding="utf-8"), nl=path)
        return
    rows = list_recipes()
    if not rows:
        typer.echo("no recipes found", err=True)
        raise typer.Exit(1)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        typer.echo(f"{r['name'].ljust(width)}  {r['purpose']}")
        typer.echo(f"{' ' * width}  $ {r['command']}")


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------

def _is_click_error(e: BaseException) -> bool:
    # Typer vendors its own copy of click: recognise usage errors by their API, not their module.
    return hasattr(e, "show") and hasattr(e, "exit_code") and not isinstance(e, BertkitError)


def main(argv: list[str] | None = None) -> None:
    try:
        # outside standalone mode click returns the code of a typer.Exit instead of raising it
        code = app(args=argv, prog_name="bertkit", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except (typer.Exit, click.exceptions.Exit) as e:
        sys.exit(getattr(e, "exit_code", 0))
    except (typer.Abort, click.exceptions.Abort):
        print("bertkit: aborted", file=sys.stderr)
        sys.exit(130)
    except BertkitError as e:
        if _STATE["debug"]:
            import traceback

            traceback.print_exc()
        print(f"bertkit: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except MemoryError:
        print("bertkit: error: out of memory; lower --batch-size or --max-seq-length (see README: Troubleshooting)",
              file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback
        if _is_click_error(e):
            e.show()  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        if _STATE["debug"]:
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        if no_room(e):  # a write no command wrapped with its path (Python ignores SIGXFSZ: EFBIG arrives here)
            print(f"bertkit: error: cannot write {getattr(e, 'filename', None) or 'a file'}: {no_room(e)}",
                  file=sys.stderr)
        elif "out of memory" in msg.lower():
            print("bertkit: error: the device ran out of memory; lower --batch-size or --max-seq-length, or use "
                  "--grad-accum (see README: Troubleshooting)", file=sys.stderr)
        else:
            print(f"bertkit: error: {type(e).__name__}: {msg} (run again with --debug for the traceback)",
                  file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
