"""HTTP inference for every task kind: the app, the batcher that owns the model, and the server's metrics.

One :class:`Batcher` thread owns the tokenizer and the model.  A request is checked and queued by the event
loop (a few microseconds: no tokenization there); when the model becomes free the batcher takes what is
waiting, up to ``--max-batch-tokens`` (no wait timer: an idle server answers a lone request at once, a busy
one batches across clients), encodes it with the task kind, runs it through the shared length-sorted loop
and decodes each request's rows: the records are exactly what ``bertkit predict`` writes for the same rows.
Admission is bounded: rows queued or in flight beyond ``--max-queue`` get 429 at once, never a growing queue.

Why Starlette + uvicorn: two small, well-kept packages (an ASGI toolkit and its reference server) that give
routing, request limits and graceful shutdown; FastAPI would add pydantic models and an OpenAPI page, but a
request here is validated by its task kind (which fields a row has), not by a static schema.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import uvicorn  # the serve extra: this module is imported only once `bertkit serve` has checked it is installed

from .tasks import Windows, iter_windows, trim_freed_memory

# Histogram buckets (seconds; rows per batch)
TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TRIM_EVERY = 64  # batcher rounds between handing freed memory back (shapes change every round)
ENCODE_ROWS = 1024  # at most this many waiting rows encoded in one tokenizer call


class RequestError(Exception):
    """A bad request: its HTTP status, a machine-readable type and a one-line message naming the field."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error_type, self.headers = status, error_type, headers or {}


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------

class Histogram:
    def __init__(self, buckets):
        self.buckets, self.counts, self.sum, self.n = tuple(buckets), [0] * len(buckets), 0.0, 0

    def observe(self, v: float) -> None:
        self.sum += v
        self.n += 1
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{b:g}"}} {c}' for b, c in zip(self.buckets, self.counts, strict=True)]
        return out + [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.n}"]


@dataclass
class Metrics:
    """What /metrics exposes (Prometheus text format) and the summary at shutdown."""

    requests: dict[int, int] = field(default_factory=dict)
    rows: int = 0
    batches: int = 0
    batch_rows: Histogram = field(default_factory=lambda: Histogram(ROW_BUCKETS))
    queue_seconds: Histogram = field(default_factory=lambda: Histogram(TIME_BUCKETS))
    inference_seconds: Histogram = field(default_factory=lambda: Histogram(TIME_BUCKETS))
    started: float = field(default_factory=time.time)

    def count(self, status: int) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1

    def text(self, queued_rows: int, loaded: bool) -> str:
        lines = ["# HELP bertkit_requests_total HTTP requests answered, by status code.",
                 "# TYPE bertkit_requests_total counter",
                 *[f'bertkit_requests_total{{code="{c}"}} {n}' for c, n in sorted(self.requests.items())],
                 "# HELP bertkit_rows_total Rows (texts, questions) answered.", "# TYPE bertkit_rows_total counter",
                 f"bertkit_rows_total {self.rows}",
                 "# HELP bertkit_queue_rows Rows admitted and not yet answered (queued or in the model).",
                 "# TYPE bertkit_queue_rows gauge", f"bertkit_queue_rows {queued_rows}",
                 "# HELP bertkit_model_loaded 1 once the model is loaded.", "# TYPE bertkit_model_loaded gauge",
                 f"bertkit_model_loaded {int(loaded)}",
                 "# HELP bertkit_batch_rows Rows per batch the model ran.", "# TYPE bertkit_batch_rows histogram",
                 *self.batch_rows.lines("bertkit_batch_rows"),
                 "# HELP bertkit_queue_seconds Time a request waited for the model.",
                 "# TYPE bertkit_queue_seconds histogram", *self.queue_seconds.lines("bertkit_queue_seconds"),
                 "# HELP bertkit_inference_seconds Time of the batch a request was answered in.",
                 "# TYPE bertkit_inference_seconds histogram",
                 *self.inference_seconds.lines("bertkit_inference_seconds")]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# The batcher
# ------------------------------------------------------------------------------------------------

@dataclass
class Job:
    rows: list[dict]
    params: SimpleNamespace
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    windows: Windows | None = None
    started: float = 0.0
    finished: float = 0.0


def _resolve(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _resolve_all(items: list) -> None:
    for future, value, error in items:
        _resolve(future, value, error)


class Batcher:
    """The thread that owns the tokenizer and the model (see the module doc)."""

    def __init__(self, opened, batch_size: int, max_batch_tokens: int, max_queue: int, metrics: Metrics):
        self.opened, self.task = opened, opened.task
        self.batch_size, self.max_batch_tokens, self.max_queue = batch_size, max_batch_tokens, max_queue
        self.metrics = metrics
        self.queue: deque[Job] = deque()
        self.admitted = 0  # rows queued or in the model
        self.cond = threading.Condition()
        self.loaded = threading.Event()
        self.load_error: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._main, name="bertkit-batcher", daemon=True)
        self.model_fn = None
        self.encode_together = True  # see _encode_waiting

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Finish what was admitted, then end the thread."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()

    def submit(self, rows: list[dict], params: SimpleNamespace, loop) -> Job:
        """Admit a request or raise 429 (over --max-queue rows) / 503 (loading, stopping)."""
        if not self.loaded.is_set():
            raise RequestError(503, "loading", "the model is still loading; retry shortly", {"Retry-After": "1"})
        job = Job(rows, params, loop, loop.create_future())
        with self.cond:
            if self.stopping:
                raise RequestError(503, "shutting_down", "the server is shutting down")
            if self.admitted + len(rows) > self.max_queue:
                raise RequestError(429, "overloaded", f"{self.admitted} rows are queued (--max-queue "
                                   f"{self.max_queue}); retry shortly", {"Retry-After": "1"})
            self.admitted += len(rows)
            self.queue.append(job)
            self.cond.notify()
        return job

    def _main(self) -> None:
        try:
            self.model_fn = self.opened.model_fn()
        except BaseException as e:  # noqa: BLE001 - reported by the server, which then exits
            self.load_error = e
            return
        self.loaded.set()
        rounds = 0
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if not self.queue:
                    return
            jobs = self._take()
            self._run(jobs)
            rounds += 1
            if rounds % TRIM_EVERY == 0:
                trim_freed_memory()

    def _take(self) -> list[Job]:
        """The waiting jobs, oldest first, while their tokens fit --max-batch-tokens (at least one).
        Encoding happens here, in the batcher thread, outside the lock the event loop takes."""
        self._encode_waiting()
        taken: list[Job] = []
        tokens = 0
        while True:
            with self.cond:
                if not self.queue:
                    break
                job = self.queue[0]
            if job.windows is None:
                try:
                    job.windows = self.task.encode(job.rows)
                except Exception as e:  # noqa: BLE001 - one bad request must not stop the batcher
                    with self.cond:
                        self.queue.popleft()
                        self.admitted -= len(job.rows)
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, e)
                    continue
            n = int(job.windows.lengths().sum())
            if taken and tokens + n > self.max_batch_tokens:
                break
            with self.cond:
                self.queue.popleft()
            taken.append(job)
            tokens += n
        return taken

    def _encode_waiting(self) -> None:
        """Encode every waiting job in one tokenizer call (up to ENCODE_ROWS rows), then split the
        windows back by row: one tokenizer round trip (and GIL hand-off with the busy event loop) per round
        instead of per request.  Kinds whose windows carry per-window ``meta`` (QA offsets, word maps; found
        on the first try, then not tried again) and a batch that fails to encode fall back to one call per
        job (``_take``), where a bad request fails alone."""
        if not self.encode_together:
            return
        with self.cond:
            waiting, rows = [], 0
            for j in self.queue:
                if j.windows is None:
                    if rows + len(j.rows) > ENCODE_ROWS:
                        break
                    waiting.append(j)
                    rows += len(j.rows)
        if len(waiting) < 2:
            return
        try:
            merged = self.task.encode([r for j in waiting for r in j.rows])
        except Exception:  # noqa: BLE001 - each job is encoded (and fails) alone in _take
            return
        if merged.meta:
            self.encode_together = False
            return
        lo = 0
        for j in waiting:
            hi = lo + len(j.rows)
            pick = np.flatnonzero((merged.row >= lo) & (merged.row < hi))
            j.windows = Windows({k: [v[i] for i in pick] for k, v in merged.inputs.items()}, merged.row[pick] - lo)
            lo = hi

    def _run(self, jobs: list[Job]) -> None:
        """The jobs' windows through the model in length-sorted batches (``iter_windows``); each job is
        decoded and answered as soon as its last window is done, so the event loop sends those answers and
        reads new requests while the model runs the next batch, instead of all at the end of the round."""
        if not jobs:
            return
        t0 = time.perf_counter()
        for j in jobs:
            j.started = t0
        keys = jobs[0].windows.inputs.keys()
        merged = Windows({k: [x for j in jobs for x in j.windows.inputs[k]] for k in keys},
                         np.concatenate([j.windows.row for j in jobs]))
        sizes = [len(j.windows) for j in jobs]
        starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()  # job k's windows: starts[k]:starts[k + 1]
        job_of = np.repeat(np.arange(len(jobs)), sizes)
        left = list(sizes)
        results: list = [None] * len(merged)
        answered = [False] * len(jobs)
        try:
            for idx, outs in iter_windows(self.task, self.model_fn, merged, self.batch_size):
                done = []
                for w, r in zip(idx, outs, strict=True):
                    results[w] = r
                    k = int(job_of[w])
                    left[k] -= 1
                    if not left[k]:
                        done.append(k)
                self._answer(jobs, done, results, starts, answered, None)
            self._answer(jobs, [k for k, n in enumerate(sizes) if not n], results, starts, answered, None)
        except Exception as e:  # noqa: BLE001 - answered as 500 to the requests of this batch not yet answered
            self._answer(jobs, [k for k in range(len(jobs)) if not answered[k]], results, starts, answered, e)
        rows = sum(len(j.rows) for j in jobs)
        m = self.metrics
        m.batches += 1
        m.rows += rows
        m.batch_rows.observe(rows)

    def _answer(self, jobs: list[Job], done: list[int], results: list, starts: list[int], answered: list[bool],
                error: BaseException | None) -> None:
        """Decode the ``done`` jobs and resolve their futures: one wake-up of each event loop, not one per
        request."""
        if not done:
            return
        t1 = time.perf_counter()
        answers: dict[asyncio.AbstractEventLoop, list] = {}
        for k in done:
            j = jobs[k]
            value, err = None, error
            if error is None:
                try:
                    value = self.task.decode(j.rows, j.windows, results[starts[k]:starts[k + 1]], j.params)
                except Exception as e:  # noqa: BLE001
                    err = e
            j.finished = t1
            answered[k] = True
            answers.setdefault(j.loop, []).append((j.future, value, err))
            self.metrics.queue_seconds.observe(j.started - j.enqueued)
            self.metrics.inference_seconds.observe(t1 - j.started)
        with self.cond:
            self.admitted -= sum(len(jobs[k].rows) for k in done)
        for loop, items in answers.items():
            loop.call_soon_threadsafe(_resolve_all, items)


# ------------------------------------------------------------------------------------------------
# Requests
# ------------------------------------------------------------------------------------------------

def parse_request(body: bytes, task, max_rows: int, default_top_k: int) -> tuple[list[dict], SimpleNamespace]:
    """(rows, decode parameters) of a /predict body, or RequestError naming the field."""
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, "invalid_json", f"body: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or "inputs" not in obj:
        raise RequestError(422, "invalid_request", 'body: expected an object with "inputs" (and optional '
                                                   '"parameters")')
    unknown = sorted(set(obj) - {"inputs", "parameters"})
    if unknown:
        raise RequestError(422, "invalid_request", f"{unknown[0]}: unknown field; use inputs and parameters")
    try:
        rows = task.request_rows(obj["inputs"])
    except ValueError as e:
        raise RequestError(422, "invalid_input", str(e)) from None
    if not rows:
        raise RequestError(422, "invalid_input", "inputs: empty; send at least one row")
    if len(rows) > max_rows:
        raise RequestError(413, "too_many_rows", f"inputs: {len(rows)} rows; at most {max_rows} per request "
                                                 "(--max-request-rows)")
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(422, "invalid_parameters", "parameters: expected an object")
    top_k = params.pop("top_k", default_top_k)
    if params:
        raise RequestError(422, "invalid_parameters", f"parameters.{sorted(params)[0]}: unknown; known: top_k")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise RequestError(422, "invalid_parameters", f"parameters.top_k: {top_k!r}; an integer in [1, 100]")
    return rows, SimpleNamespace(top_k=top_k)


def build_app(batcher: Batcher, info: dict, limits: dict, state: SimpleNamespace):
    """The Starlette app: POST /predict, GET /health, /info, /metrics; every error a one-line JSON."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    metrics = batcher.metrics

    def error(status: int, error_type: str, message: str, headers: dict | None = None) -> Response:
        return JSONResponse({"error": message, "error_type": error_type}, status, headers=headers)

    async def read_body(request) -> bytes:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits["max_body_bytes"]:
            raise RequestError(413, "body_too_large", f"body: {int(size):,} bytes; at most "
                                                      f"{limits['max_body_bytes']:,} (--max-body-bytes)")
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limits["max_body_bytes"]:
                raise RequestError(413, "body_too_large", f"body: over {limits['max_body_bytes']:,} bytes "
                                                          "(--max-body-bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(request) -> Response:
        try:
            if state.draining:
                raise RequestError(503, "shutting_down", "the server is shutting down")
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise RequestError(415, "unsupported_media_type",
                                   f"content-type: {ctype or '(none)'}; send application/json")
            body = await read_body(request)
            rows, params = parse_request(body, batcher.task, limits["max_request_rows"], limits["top_k"])
            job = batcher.submit(rows, params, asyncio.get_running_loop())
            records = await job.future
        except RequestError as e:
            return error(e.status, e.error_type, str(e), e.headers)
        except Exception as e:  # noqa: BLE001 - the server keeps serving; the client gets one line
            return error(500, "internal", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        headers = {"x-queue-time": f"{(job.started - job.enqueued) * 1000:.2f}",
                   "x-inference-time": f"{(job.finished - job.started) * 1000:.2f}"}
        return Response(json.dumps(records, ensure_ascii=False, default=_json_default), 200, headers,
                        media_type="application/json")

    async def health(request) -> Response:
        if batcher.loaded.is_set() and not state.draining:
            return JSONResponse({"status": "ok"})
        status = "draining" if state.draining else "loading"
        return JSONResponse({"status": status}, 503)

    async def info_route(request) -> Response:
        return JSONResponse({**info, "status": "ok" if batcher.loaded.is_set() else "loading"})

    async def metrics_route(request) -> Response:
        return PlainTextResponse(metrics.text(batcher.admitted, batcher.loaded.is_set()),
                                 media_type="text/plain; version=0.0.4")

    async def http_error(request, exc: HTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}")

    routes = [Route("/predict", predict, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/info", info_route, methods=["GET"]), Route("/metrics", metrics_route, methods=["GET"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return CountStatus(app, metrics)


class CountStatus:
    """ASGI middleware: counts every HTTP response by status code (for /metrics)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.count(message["status"])
            await send(message)

        return await self.app(scope, receive, counting_send)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def watch_loading(batcher: Batcher, server, on_ready) -> threading.Thread:
    """A thread that calls ``on_ready`` once the model is loaded, or ends ``server`` (a uvicorn Server) when
    it cannot be loaded (the caller then raises the batcher's ``load_error``)."""

    def wait():
        while not batcher.loaded.wait(0.2):
            if batcher.load_error is not None or not batcher.thread.is_alive():
                server.should_exit = True
                return
        on_ready()

    t = threading.Thread(target=wait, name="bertkit-loading", daemon=True)
    t.start()
    return t


@contextmanager
def signals_ignored():
    """SIGTERM / Ctrl-C do nothing by themselves inside: uvicorn's handlers, installed over these while it
    serves, start its graceful shutdown (stop accepting, finish every request in flight) and raise the signal
    again once it is done, which lands here; a second SIGTERM while the batcher stops then cannot kill the
    process before its summary (an orchestrator that repeats the signal got exit -15 instead of 0)."""
    import signal

    ignore = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in ignore.items():
            signal.signal(sig, handler)


class DrainingServer(uvicorn.Server):
    """uvicorn's server that, on SIGTERM / Ctrl-C, marks ``state.draining`` (new requests get 503) before
    its own graceful shutdown finishes the admitted ones."""

    def __init__(self, config, state: SimpleNamespace):
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig, frame):
        self.state.draining = True
        super().handle_exit(sig, frame)
