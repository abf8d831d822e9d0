"""bertkit serve: HTTP inference for every task kind (the serve extra: Starlette + uvicorn).

Stages: check the extra and the config -> open the model (kind, tokenizer, backend) -> bind the socket (a
free port with --port 0; printed and written to --port-file) -> start the batcher, which loads the weights
while /health answers 503 -> serve until SIGTERM / Ctrl-C, then stop accepting, finish every admitted
request, and print a summary.  The app and the batcher live in :mod:`bertkit.serving`.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from .. import __version__
from ..errors import UsageError
from ..inference import open_model
from ..log import quiet
from ..outputs import write_text
from ..schemas import SERVE_CPU_BATCH, SERVE_GPU_BATCH, ServeConfig
from ..summary import fmt_duration, print_summary

EXTRA_HINT = "pip install 'bertkit[serve]'"


def _say(msg: str) -> None:
    if not quiet():
        print(msg, file=sys.stderr, flush=True)


def require_extra() -> None:
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"bertkit serve needs the serve extra ({', '.join(missing)} not installed); {EXTRA_HINT}")


def run(cfg: ServeConfig) -> dict:
    require_extra()
    cfg.validate()
    opened = open_model(cfg)
    sock = bind(cfg.host, cfg.port)
    port = sock.getsockname()[1]
    url = f"http://{cfg.host if ':' not in cfg.host else f'[{cfg.host}]'}:{port}"
    if cfg.port_file:
        write_text(Path(cfg.port_file), f"{port}\n")
    threads = threads_of(cfg)
    _say(f"serve: {url} ({opened.task.name}, {opened.backend}, {threads} threads) -- POST {url}/predict; "
         f"loading {opened.path}")
    stats = serve(cfg, opened, sock, threads)
    print_summary("serve", summary_rows(url, stats))
    return stats


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so --port 0 gives a port the caller can print before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def threads_of(cfg: ServeConfig) -> int:
    """The model's intra-op threads: --threads, else what torch and ONNX Runtime pick by themselves."""
    from ..onnx_runtime import default_threads

    return cfg.threads or default_threads()


def serve(cfg: ServeConfig, opened, sock: socket.socket, threads: int) -> dict:
    """Run the server until a signal; returns the figures of the summary."""
    import uvicorn

    from ..serving import Batcher, DrainingServer, Metrics, build_app, signals_ignored, watch_loading

    metrics = Metrics()
    batch_size = cfg.batch_size or (SERVE_CPU_BATCH if opened.device.type == "cpu" else SERVE_GPU_BATCH)
    batcher = Batcher(opened, batch_size, cfg.max_batch_tokens, cfg.max_queue, metrics)
    limits = {"max_request_rows": cfg.max_request_rows, "max_body_bytes": cfg.max_body_bytes,
              "max_queue": cfg.max_queue, "max_batch_tokens": cfg.max_batch_tokens, "batch_size": batch_size,
              "top_k": cfg.top_k}
    info = {"bertkit_version": __version__, "model": str(opened.path), "task": opened.task.name,
            "description": opened.task.description, "fields": list(opened.task.fields),
            "optional_fields": list(opened.task.optional_fields), **opened.task.info(),
            "max_length": opened.max_len, "backend": opened.backend, "device": str(opened.device),
            "threads": threads, "limits": limits}
    state = SimpleNamespace(draining=False)
    config = uvicorn.Config(build_app(batcher, info, limits, state), log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=None)
    server = DrainingServer(config, state)
    batcher.start()
    t0 = time.time()
    watch_loading(batcher, server, lambda: _say(f"serve: ready ({opened.task.name} model loaded)"))
    with signals_ignored():
        try:
            server.run(sockets=[sock])
        finally:
            batcher.stop()
            sock.close()
    if batcher.load_error is not None:
        raise batcher.load_error
    return {"seconds": time.time() - t0, "requests": dict(metrics.requests), "rows": metrics.rows,
            "batches": metrics.batches}


def summary_rows(url: str, stats: dict) -> list[tuple[str, str]]:
    codes = ", ".join(f"{c}: {n:,}" for c, n in sorted(stats["requests"].items())) or "none"
    return [("served", url), ("time", fmt_duration(stats["seconds"])), ("requests", codes),
            ("rows", f"{stats['rows']:,} in {stats['batches']:,} batches"
                     + (f" ({stats['rows'] / stats['batches']:.1f} rows per batch)" if stats["batches"] else ""))]
