#!/usr/bin/env python
"""Benchmark: ``bertkit serve`` under an open-loop HTTP load, against offline ``bertkit predict`` and against a
plain ``transformers.pipeline`` inside a FastAPI handler (Starlette when FastAPI is not installed).

Model: an SST-2 classifier fine-tuned from MiniLM-L6 (as ``onnx_speed.py`` makes it: ``bertkit finetune-cls
--model minilm-l6`` on the first ``--train-rows`` rows of SST-2 train.tsv, 1 epoch, max length 64), trained here
unless ``--model`` names one, exported with ``bertkit export`` to ONNX fp32 and int8 (``--validation`` SST-2
dev).  Texts: the SST-2 dev sentences.  Every process gets the same thread count (``--threads``).

Servers, each a subprocess on 127.0.0.1 with a free port: ``python -m bertkit serve --model DIR --port 0
--port-file F --threads N`` (its defaults otherwise: 8 rows per forward pass on a CPU, --max-queue 256) on the
fp32 and the int8 export,
and the peer: this script with ``--worker peer``, ``pipeline("text-classification")`` on the torch model
called in an ``async def`` handler, so one request at a time (access log off, as for bertkit).

Load: an asyncio HTTP/1.1 client in this process (keep-alive connections, at most ``--connections``).
Open loop: request i is due at ``t0 + i / rate`` whatever the server does, and its latency counts from that
due time, so time spent waiting for the server (or for a free connection) is counted, not hidden (no
coordinated omission); "client lag" is how late requests were actually written.  Every phase is bounded in
requests and in time; a request unanswered ``--timeout`` seconds after the phase counts as status 0.

Measured, on each bertkit server (ratios against peers measured in this run):

(a) saturation: closed loops of each of ``--saturation-connections`` connections in turn (each client sends its
    next request when the previous one is answered; one text per request) for ``--phase-seconds``; the most
    answers/s of them against ``bertkit predict`` rows/s on the same model, threads and texts (batch
    ``--batch-size``; its own figure: weights loaded, rows predicted and written).  Target >= 0.75.  Why
    several: with few clients every client waits in the same round, so the queue is empty while the answers
    travel and the next round starts small; more clients keep the next round queued.
(b) p99 latency in an open loop at 50% of (a), against the median latency of single requests sent one after
    another to the idle server.  Target <= 3x.
(c) an open loop at 2x (a): only 200 and 429 answers, goodput (200 answers per second, from the first due
    time to the last 200 answer) >= 0.8x (a), and ``GET /health`` (polled every 50 ms by its own process and
    connection) p99 <= 50 ms.
(d) VmRSS of the server process (/proc/PID/status) before and after ``--rss-requests`` requests of mixed
    length (one dev sentence; three joined, past the model's length; or 2-8 sentences in one request), sent by
    a closed loop; also read after the first 10% (new shapes grow the allocators' pools once).  Target growth
    <= 30 MB.
(e) every dev row sent as its own request (concurrently, so rows share batches with other requests) against
    ``bertkit predict``'s records for the same model: fp32 labels equal on every row and scores equal to 1e-5
    (records carry 6 decimals; another batch pads differently); int8 labels equal on >= 99% (dynamic
    quantization scales depend on the whole batch).

The peer gets (a) and (b) (it has no admission control, so 2x its saturation only grows its queue).

    .venv/bin/python benchmarks/serve_speed.py --threads 2 > serve_speed.log 2>&1
    .venv/bin/python benchmarks/serve_speed.py --quick --model DIR     # a smoke run of the script itself
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import bertkit_cmd, cpu_name  # noqa: E402
from onnx_speed import add_model_args, child_env, export, read_tsv, run, train  # noqa: E402  (same model, exports)

SAT_TARGET, P99_TARGET, GOODPUT_TARGET, HEALTH_P99_MS, RSS_MB, INT8_AGREE = 0.75, 3.0, 0.8, 50.0, 30.0, 0.99
HOST = "127.0.0.1"


# ------------------------------------------------------------------------------------------------
# The peer: transformers pipeline inside a FastAPI (or Starlette) handler, in its own process
# ------------------------------------------------------------------------------------------------

def peer_server(a) -> None:
    """What users write today: load a pipeline at import, call it in the handler.  The handler is ``async def``
    and calls the pipeline directly, so requests run one at a time (no batching across clients)."""
    import socket

    import torch
    import uvicorn
    from transformers import pipeline

    torch.set_num_threads(a.threads)
    pipe = pipeline("text-classification", model=a.model, tokenizer=a.model, device=-1)
    try:
        from fastapi import FastAPI
        from pydantic import BaseModel

        app, framework = FastAPI(), "FastAPI"

        class Request(BaseModel):
            inputs: str

        @app.post("/predict")
        async def predict(req: Request):
            return pipe(req.inputs)

        @app.get("/health")
        async def health():
            return {"status": "ok"}
    except ImportError:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def predict(request):
            return JSONResponse(pipe((await request.json())["inputs"]))

        async def health(request):
            return JSONResponse({"status": "ok"})

        framework = "Starlette"
        app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health)])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(2048)
    Path(a.port_file).write_text(f"{sock.getsockname()[1]}\n{framework}\n", encoding="utf-8")
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")).run(sockets=[sock])


# ------------------------------------------------------------------------------------------------
# Server processes
# ------------------------------------------------------------------------------------------------

class Server:
    """A server subprocess (bertkit serve or the peer) on 127.0.0.1; ``port`` once /health answers 200."""

    def __init__(self, name: str, cmd: list[str], threads: int, work: Path, start_timeout: float):
        self.name, self.port_file, self.log = name, work / f"{name}.port", work / f"{name}.log"
        self.port_file.unlink(missing_ok=True)
        with open(self.log, "w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(cmd + ["--port-file", str(self.port_file)], stdout=log, stderr=log,
                                         env=child_env(threads))
        self.port, self.framework = 0, ""
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited {self.proc.returncode} while starting:\n{self.log_tail()}")
            if self.port_file.is_file() and self.port_file.read_text().endswith("\n"):
                lines = self.port_file.read_text().split()
                self.port = int(lines[0])
                self.framework = lines[1] if len(lines) > 1 else ""
                if health_once(self.port)[0] == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{name}: /health not 200 within {start_timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise SystemExit(f"{self.name}: no VmRSS in /proc/{self.proc.pid}/status")

    def stop(self) -> int:
        """SIGTERM (bertkit serve finishes what it admitted, then exits 0); SIGKILL after 60 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def get(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of one GET on a fresh connection; status 0 when nothing answers."""
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def health_once(port: int) -> tuple[int, float]:
    t = time.monotonic()
    status, _ = get(port, "/health")
    return status, time.monotonic() - t


def batch_counts(port: int) -> tuple[float, float]:
    """(rows, batches) the server has run, from bertkit serve's /metrics; (nan, nan) from the peer."""
    status, text = get(port, "/metrics")
    found = {}
    for line in text.decode("utf-8", "replace").splitlines() if status == 200 else ():
        name, _, value = line.partition(" ")
        if name in ("bertkit_rows_total", "bertkit_batch_rows_count"):
            found[name] = float(value)
    return found.get("bertkit_rows_total", float("nan")), found.get("bertkit_batch_rows_count", float("nan"))


class HealthPoller:
    """GET /health every ``every`` seconds on its own keep-alive connection, from its own process (this script
    with ``--worker health``: in this process the load generator would hold the GIL while a poll waits, and
    that wait would be counted as the server's), recording status and latency, until ``stop()``."""

    def __init__(self, port: int, every: float = 0.05):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", "health",
                                      "--port-file", str(port), "--phase-seconds", str(every)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self) -> None:
        """(the poller starts with the process)"""

    def stop(self) -> list[tuple[int, float]]:
        out, _ = self.proc.communicate("stop\n", timeout=60)
        return [tuple(x) for x in json.loads(out.strip().splitlines()[-1])]


def health_worker(port: int, every: float) -> None:
    """The poller process: polls until a line (or EOF) arrives on stdin, then prints the samples as JSON."""
    import http.client

    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
    samples = []
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    while not done.is_set():
        t = time.monotonic()
        try:
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            samples.append((r.status, time.monotonic() - t))
        except OSError:
            samples.append((0, time.monotonic() - t))
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
        done.wait(max(0.0, every - (time.monotonic() - t)))
    conn.close()
    print(json.dumps(samples), flush=True)


# ------------------------------------------------------------------------------------------------
# The load generator: asyncio HTTP/1.1 keep-alive client
# ------------------------------------------------------------------------------------------------

class StaleConnection(ConnectionError):
    """The connection was closed before any byte of the answer came back."""


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def post(self, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        try:
            await self.writer.drain()
            status_line = await self.reader.readline()
        except (ConnectionResetError, BrokenPipeError) as e:
            raise StaleConnection(str(e)) from None
        if not status_line:
            raise StaleConnection("closed by the server before answering")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            k, v = k.strip().lower(), v.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "transfer-encoding" and "chunked" in v:
                chunked = True
            elif k == "connection" and v == "close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            payload = b"".join(parts)
        else:
            payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        self.writer.close()


class Pool:
    """At most ``size`` keep-alive connections; a request waits for a free one (that wait counts in its
    latency in an open loop)."""

    def __init__(self, port: int, size: int):
        self.port, self.sem, self.idle = port, asyncio.Semaphore(size), []

    async def post(self, body: bytes) -> tuple[int, bytes, float]:
        """(status, body, when the request was written); status 0 when the connection failed.  A kept-alive
        connection the server closed while it sat idle (uvicorn closes them after 5 idle seconds) and that
        fails before any answer is retried once on a new connection, as HTTP clients do (urllib3, aiohttp);
        a new connection that fails counts as 0."""
        async with self.sem:
            conn = self.idle.pop() if self.idle else None
            if conn is not None and conn.writer.is_closing():
                conn = None
            sent = time.monotonic()
            for reused in ((True, False) if conn is not None else (False,)):
                if not reused:
                    try:
                        reader, writer = await asyncio.open_connection(HOST, self.port, limit=1 << 20)
                    except OSError:
                        return 0, b"", sent
                    conn = Conn(reader, writer)
                    sent = time.monotonic()
                try:
                    status, payload = await conn.post(body)
                except StaleConnection:
                    conn.close()
                    if reused:
                        continue
                    return 0, b"", sent
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
                    conn.close()
                    return 0, b"", sent
                except asyncio.CancelledError:  # a phase's time bound: this connection is mid-answer
                    conn.close()
                    raise
                if not conn.writer.is_closing():
                    self.idle.append(conn)
                return status, payload, sent
            return 0, b"", sent

    def close(self) -> None:
        for c in self.idle:
            c.close()
        self.idle.clear()


class Phase:
    """What one phase recorded: per request (status, latency s, client lag s, finished at), and bodies kept."""

    def __init__(self):
        self.status: list[int] = []
        self.latency: list[float] = []
        self.lag: list[float] = []
        self.finished: list[float] = []
        self.bodies: dict[int, bytes] = {}
        self.t0 = self.t1 = 0.0

    def add(self, status: int, latency: float, lag: float, finished: float) -> None:
        self.status.append(status)
        self.latency.append(latency)
        self.lag.append(lag)
        self.finished.append(finished)

    def ok_latencies(self) -> list[float]:
        return [x for s, x in zip(self.status, self.latency, strict=True) if s == 200]

    def goodput(self) -> float:
        """200 answers per second from the first due time to the last 200 answer (a batch round, and its
        answers, can end after the last request is sent; the server works throughout)."""
        done = [f for s, f in zip(self.status, self.finished, strict=True) if s == 200]
        return len(done) / max(max(done) - self.t0, 1e-9) if done else 0.0

    def codes(self) -> Counter:
        return Counter(self.status)


def quantile(xs: list[float], q: float) -> float:
    """Nearest-rank quantile (q in [0, 1]); nan for no values."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(-(-q * len(s) // 1)) - 1))]


def open_loop(port: int, bodies: list[bytes], rate: float, seconds: float, max_requests: int, connections: int,
              timeout: float) -> Phase:
    """Request i due at t0 + i / rate (i < min(rate * seconds, max_requests)); latency from its due time."""

    async def main() -> Phase:
        pool, ph = Pool(port, connections), Phase()
        n = max(1, min(max_requests, int(rate * seconds)))
        ph.t0 = time.monotonic() + 0.05
        ph.t1 = ph.t0 + n / rate

        async def one(i: int, due: float) -> None:
            status, _, sent = await pool.post(bodies[i % len(bodies)])
            now = time.monotonic()
            ph.add(status, now - due, sent - due, now)

        tasks = []
        for i in range(n):
            due = ph.t0 + i / rate
            wait = due - time.monotonic()
            await asyncio.sleep(max(0.0, wait))  # 0: behind schedule, still let answers be read
            tasks.append(asyncio.create_task(one(i, due)))
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
            ph.add(0, float("inf"), float("nan"), float("inf"))
        await asyncio.gather(*pending, return_exceptions=True)
        pool.close()
        return ph

    return asyncio.run(main())


def closed_loop(port: int, bodies: list[bytes], connections: int, seconds: float, max_requests: int,
                timeout: float, keep: bool = False) -> Phase:
    """``connections`` clients each send the next request (bodies in order) when the previous is answered,
    until ``max_requests`` are sent or ``seconds`` pass; with ``keep``, answers are kept by request index."""

    async def main() -> Phase:
        pool, ph = Pool(port, connections), Phase()
        ph.t0 = time.monotonic()
        end = ph.t0 + seconds
        counter = iter(range(max_requests))

        async def client() -> None:
            for i in counter:
                if time.monotonic() >= end:
                    return
                t = time.monotonic()
                status, payload, sent = await pool.post(bodies[i % len(bodies)])
                now = time.monotonic()
                ph.add(status, now - t, sent - t, now)
                if keep:
                    ph.bodies[i] = payload

        tasks = [asyncio.create_task(client()) for _ in range(connections)]
        _, pending = await asyncio.wait(tasks, timeout=seconds + timeout)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        ph.t1 = time.monotonic()
        pool.close()
        return ph

    return asyncio.run(main())


def idle_latency(port: int, bodies: list[bytes], n: int, timeout: float) -> list[float]:
    """Latency of ``n`` single requests sent one after another (one connection, nothing else running)."""
    ph = closed_loop(port, bodies, 1, timeout * n, n, timeout)
    return ph.ok_latencies()


# ------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------

def body(inputs) -> bytes:
    return json.dumps({"inputs": inputs}, ensure_ascii=False).encode()


def mixed_bodies(texts: list[str], n: int) -> list[bytes]:
    """Requests of mixed length: mostly one sentence; every 5th three sentences joined (past the model's
    length, truncated); every 10th 2-8 sentences in one request."""
    out = []
    for i in range(n):
        t = texts[i % len(texts)]
        if i % 10 == 9:
            out.append(body([texts[(i + j) % len(texts)] for j in range(2 + i % 7)]))
        elif i % 5 == 2:
            out.append(body(" ".join(texts[(i + j) % len(texts)] for j in range(3))))
        else:
            out.append(body(t))
    return out


def predict_offline(a, model: Path, inp: Path, out: Path, what: str, batch_size: int | None = None
                    ) -> tuple[float, list[dict]]:
    """``bertkit predict``'s own rows/s (weights loaded; rows predicted and written) and its records."""
    proc = run(bertkit_cmd() + ["predict", "--model", str(model), "--input", str(inp), "--output", str(out),
                                "--threads", str(a.threads), "--batch-size", str(batch_size or a.batch_size),
                                "--device", "cpu"],
               a.threads, what)
    line = next(ln for ln in proc.stderr.splitlines()[::-1] if ln.startswith("predict: "))
    rate = float(line.split("(")[1].split()[0].replace(",", ""))
    return rate, [json.loads(ln) for ln in out.read_text(encoding="utf-8").splitlines()]


def bertkit_server(a, name: str, model: Path, work: Path, batch_size: int | None = None) -> Server:
    batch_size = batch_size or a.serve_batch_size
    cmd = [sys.executable, "-m", "bertkit", "serve", "--model", str(model), "--port", "0", "--threads", str(a.threads),
           *(["--batch-size", str(batch_size)] if batch_size else []), "--quiet"]
    return Server(name, cmd, a.threads, work, a.start_timeout)


def peer(a, model: Path, work: Path) -> Server:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "peer", "--model", str(model),
           "--threads", str(a.threads)]
    return Server("pipeline-server", cmd, a.threads, work, a.start_timeout)


def speed(a, srv: Server, bodies: list[bytes]) -> dict:
    """Idle median latency, saturation (closed loop) and p99 at 50% of it (open loop)."""
    r: dict = {}
    idle = idle_latency(srv.port, bodies, a.idle_requests, a.timeout)
    r["idle_median"] = statistics.median(idle) if idle else float("nan")
    closed_loop(srv.port, bodies, a.saturation_connections[0], a.warmup_seconds, a.max_requests, a.timeout)
    r["loops"] = {}
    for n in a.saturation_connections:  # saturation: the most answers/s any closed loop got
        rows0, batches0 = batch_counts(srv.port)
        cpu0 = time.process_time()
        ph = closed_loop(srv.port, bodies, n, a.phase_seconds, a.max_requests, a.timeout)
        rows1, batches1 = batch_counts(srv.port)
        r["loops"][n] = {"rate": ph.codes()[200] / max(ph.t1 - ph.t0, 1e-9), "codes": dict(ph.codes()),
                         "p50": quantile(ph.ok_latencies(), 0.5),
                         "client_cpu": (time.process_time() - cpu0) / max(ph.t1 - ph.t0, 1e-9),
                         "rows_per_batch": (rows1 - rows0) / max(batches1 - batches0, 1)}
    r["connections"] = max(r["loops"], key=lambda n: r["loops"][n]["rate"])
    best = r["loops"][r["connections"]]
    r["sat"], r["sat_codes"], r["sat_p50"] = best["rate"], best["codes"], best["p50"]
    r["client_cpu"], r["rows_per_batch"] = best["client_cpu"], best["rows_per_batch"]
    if not r["sat"]:
        raise SystemExit(f"{srv.name}: no 200 answer at saturation ({codes(r['sat_codes'])}):\n{srv.log_tail()}")
    half = open_loop(srv.port, bodies, 0.5 * r["sat"], a.phase_seconds, a.max_requests, a.connections, a.timeout)
    r["half_p50"], r["half_p99"] = quantile(half.ok_latencies(), 0.5), quantile(half.latency, 0.99)
    r["half_codes"] = dict(half.codes())
    r["half_lag_p99"] = quantile([x for x in half.lag if x == x], 0.99)
    r["half_n"] = len(half.status)
    return r


def overload(a, srv: Server, bodies: list[bytes], sat: float) -> dict:
    poller = HealthPoller(srv.port)
    poller.start()
    ph = open_loop(srv.port, bodies, 2 * sat, a.phase_seconds, a.max_requests, a.connections, a.timeout)
    health = poller.stop()
    return {"codes": dict(ph.codes()), "goodput": ph.goodput(),
            "p99": quantile(ph.latency, 0.99), "lag_p99": quantile([x for x in ph.lag if x == x], 0.99),
            "health_p99": quantile([t for _, t in health], 0.99), "health_n": len(health),
            "health_codes": dict(Counter(s for s, _ in health))}


def rss_growth(a, srv: Server, texts: list[str]) -> dict:
    """VmRSS before, after the first 10% (new shapes: the allocators' pools grow once) and after all."""
    bodies = mixed_bodies(texts, min(a.rss_requests, 5000))
    first = max(1, a.rss_requests // 10)
    rss, codes_, n = [srv.rss_mb()], Counter(), 0
    for count in (first, a.rss_requests - first):
        ph = closed_loop(srv.port, bodies[n % len(bodies):] + bodies[:n % len(bodies)], 16, a.rss_seconds,
                         count, a.timeout)
        n += len(ph.status)
        codes_.update(ph.codes())
        time.sleep(1.0)  # the batcher's last round and its memory trim
        rss.append(srv.rss_mb())
    return {"before": rss[0], "warm": rss[1], "after": rss[2], "n": n, "codes": dict(codes_)}


def agreement(a, srv: Server, texts: list[str], ref: list[dict]) -> dict:
    ph = closed_loop(srv.port, [body(t) for t in texts], 16, a.timeout * len(texts), len(texts), a.timeout,
                     keep=True)
    same_label = same_score = 0
    max_diff = 0.0
    for i, want in enumerate(ref):
        raw = ph.bodies.get(i)
        if not raw:
            continue
        try:
            got = json.loads(raw)[0]
        except (json.JSONDecodeError, IndexError, KeyError, TypeError):
            continue
        if got.get("label") == want["label"]:
            same_label += 1
            diff = abs(got["score"] - want["score"])
            max_diff = max(max_diff, diff)
            same_score += diff <= 1e-5
    return {"n": len(ref), "labels": same_label, "scores": same_score, "max_diff": max_diff}


def int8_consistency(a, model: Path, texts: list[str], ref: list[dict], work: Path) -> dict:
    """How far int8 answers depend on the batch: ``predict`` on the same rows in a shuffled order against
    ``ref`` (its answers in file order), and ``serve`` against ``predict`` both at ``--batch-size 1``, where
    dynamic quantization scales each row by itself."""
    order = random.Random(0).sample(range(len(texts)), len(texts))
    shuffled = work / "dev-shuffled.jsonl"
    shuffled.write_text("".join(json.dumps({"text": texts[i]}) + "\n" for i in order), encoding="utf-8")
    _, recs = predict_offline(a, model, shuffled, work / "pred-int8-shuffled.jsonl", "bertkit predict int8 shuffled")
    back = {i: r for i, r in zip(order, recs, strict=True)}
    same = sum(back[i]["label"] == ref[i]["label"] for i in range(len(texts)))
    single = work / "dev.jsonl"
    single.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    _, one = predict_offline(a, model, single, work / "pred-int8-batch1.jsonl", "bertkit predict int8 batch 1",
                             batch_size=1)
    srv = bertkit_server(a, "serve-int8-batch1", model, work, batch_size=1)
    try:
        g = agreement(a, srv, texts, one)
    finally:
        srv.stop()
    return {"shuffled": same, "n": len(texts), "batch1": g}


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def ms(x: float) -> str:
    return f"{x * 1000:,.1f} ms" if x == x and x != float("inf") else "n/a"


def codes(c: dict) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(c.items())) or "none"


def consistency_line(c: dict) -> str:
    g = c["batch1"]
    return (f"int8 batch dependence: predict on the dev rows shuffled = predict in file order on {c['shuffled']}/"
            f"{c['n']} labels; at --batch-size 1 (each row quantized by itself) serve = predict on "
            f"{g['labels']}/{g['n']} labels and {g['scores']}/{g['n']} scores to 1e-5.")


def report(a, res: dict, peer_res: dict, framework: str, meta: dict) -> None:
    import onnxruntime
    import torch
    import transformers

    print(f"\n## bertkit serve vs bertkit predict and a pipeline server (SST-2 dev, {meta['dev']:,} sentences)"
          + (" -- QUICK SMOKE RUN, not figures" if a.quick else "") + "\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, shared with other jobs (load average at start "
          f"{meta['load0']}, at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}); python "
          f"{platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; {meta['started']}.")
    serve = f"--batch-size {a.serve_batch_size}" if a.serve_batch_size else "defaults"
    print(f"Settings: {a.threads} thread(s) for every process; predict --batch-size {a.batch_size}; bertkit serve "
          f"{serve} otherwise (--batch-size 8 on a CPU, --max-queue 256, --max-batch-tokens 8192); client: asyncio "
          f"in the benchmark process, "
          f"<= {a.connections} keep-alive connections on 127.0.0.1; saturation: the best of closed loops of "
          f"{', '.join(map(str, a.saturation_connections))} connections, {a.warmup_seconds:g} s warm-up then "
          f"{a.phase_seconds:g} s each; "
          f"open-loop phases {a.phase_seconds:g} s (at most {a.max_requests:,} requests); idle latency: "
          f"{a.idle_requests} sequential requests; RSS: {a.rss_requests:,} mixed requests; offline predict on "
          f"{meta['predict_rows']:,} rows; peer: pipeline('text-classification') in a {framework} handler, "
          f"one request at a time, on the torch model.\n")
    print("| model | measure | bertkit serve | compared with | ratio | target | |")
    print("|---|---|---:|---:|---:|---|---|")
    checks = []

    def row(model, measure, value, ref, ratio, target, ok):
        mark = "" if ok is None else ("met" if ok else "NOT met")
        if ok is not None:
            checks.append((f"{model} {measure}", ok))
        print(f"| {model} | {measure} | {value} | {ref} | {ratio} | {target} | {mark} |")

    p = peer_res
    for name, r in res.items():
        s, o, m, g = r["speed"], r["overload"], r["rss"], r["agree"]
        row(name, "saturation, 1 text/request (answers/s)", f"{s['sat']:,.1f}",
            f"bertkit predict {r['predict']:,.1f} rows/s", f"{s['sat'] / r['predict']:.2f}x", f">= {SAT_TARGET}",
            s["sat"] / r["predict"] >= SAT_TARGET)
        row(name, "p99 latency at 50% of saturation", ms(s["half_p99"]), f"idle median {ms(s['idle_median'])}",
            f"{s['half_p99'] / s['idle_median']:.2f}x", f"<= {P99_TARGET}x",
            s["half_p99"] / s["idle_median"] <= P99_TARGET)
        only = set(o["codes"]) <= {200, 429}
        row(name, "2x saturation: answers", codes(o["codes"]), f"offered {2 * s['sat']:,.1f}/s", "",
            "only 200, 429", only)
        row(name, "2x saturation: goodput (200s/s)", f"{o['goodput']:,.1f}", f"saturation {s['sat']:,.1f}",
            f"{o['goodput'] / s['sat']:.2f}x", f">= {GOODPUT_TARGET}x", o["goodput"] / s["sat"] >= GOODPUT_TARGET)
        row(name, f"2x saturation: /health p99 ({o['health_n']} polls, {codes(o['health_codes'])})",
            ms(o["health_p99"]), "", "", f"<= {HEALTH_P99_MS:g} ms", o["health_p99"] * 1000 <= HEALTH_P99_MS)
        growth = m["after"] - m["before"]
        row(name, f"RSS growth over {m['n']:,} mixed requests ({codes(m['codes'])})", f"{growth:+.1f} MB",
            f"{m['before']:.0f} -> {m['warm']:.0f} (first 10%) -> {m['after']:.0f} MB", "", f"<= {RSS_MB:g} MB",
            growth <= RSS_MB)
        if name == "fp32":
            ok = g["labels"] == g["n"] and g["scores"] == g["n"]
            row(name, "= bertkit predict (labels; scores to 1e-5)",
                f"{g['labels']}/{g['n']}; {g['scores']}/{g['n']}", f"max score diff {g['max_diff']:.1e}", "",
                "every row", ok)
        else:
            row(name, "= bertkit predict (labels)", f"{g['labels']}/{g['n']}", f"max score diff {g['max_diff']:.1e}",
                f"{g['labels'] / g['n']:.3f}", f">= {INT8_AGREE}", g["labels"] >= INT8_AGREE * g["n"])
        row(name, "saturation vs the pipeline server", f"{s['sat']:,.1f}/s", f"{p['sat']:,.1f}/s",
            f"{s['sat'] / p['sat']:.2f}x", "", None)
        row(name, "idle median latency vs the pipeline server", ms(s["idle_median"]), ms(p["idle_median"]),
            f"{s['idle_median'] / p['idle_median']:.2f}x", "", None)
        row(name, "p99 at 50% of own saturation vs the pipeline server", ms(s["half_p99"]), ms(p["half_p99"]),
            f"{s['half_p99'] / p['half_p99']:.2f}x", "", None)
    print(f"\nPipeline server ({framework}): saturation {p['sat']:,.1f}/s ({codes(p['sat_codes'])}, load generator "
          f"{p['client_cpu'] * 100:.0f}% of a core), idle median "
          f"{ms(p['idle_median'])}, at 50% of saturation p50 {ms(p['half_p50'])} p99 {ms(p['half_p99'])}.")
    for name, r in res.items():
        s, o = r["speed"], r["overload"]
        loops = "; ".join(f"{n}: {x['rate']:,.1f}/s, p50 {ms(x['p50'])}, {x['rows_per_batch']:.1f} rows per batch"
                          for n, x in s["loops"].items())
        print(f"{name} details: closed loops by connections ({loops}); saturation answers {codes(s['sat_codes'])} "
              f"at {s['connections']} connections, load generator {s['client_cpu'] * 100:.0f}% of a core; 50% "
              f"phase {s['half_n']:,} requests ({codes(s['half_codes'])}),"
              f" p50 {ms(s['half_p50'])}, client lag p99 {ms(s['half_lag_p99'])}; 2x phase latency p99 "
              f"{ms(o['p99'])}, client lag p99 {ms(o['lag_p99'])}.")
    print(f"int8 predict labels = fp32 predict labels on {res['int8']['vs_fp32']}.")
    print(consistency_line(res["int8"]["consistency"]))
    missed = [k for k, ok in checks if not ok]
    print(f"\nTargets: {len(checks) - len(missed)} of {len(checks)} met" + (f"; NOT met: {'; '.join(missed)}"
                                                                            if missed else ""))


# ------------------------------------------------------------------------------------------------

def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--threads", type=int, default=1, help="threads of every process (one count for all)")
    p.add_argument("--batch-size", type=int, default=32, help="predict's rows per forward pass")
    p.add_argument("--serve-batch-size", type=int, help="serve's rows per forward pass (default: serve's own)")
    p.add_argument("--workdir", help="where the model, exports, predictions and server logs go (default: temp)")
    p.add_argument("--quick", action="store_true", help="a smoke run: few hundred requests, short phases")
    p.add_argument("--agreement-only", action="store_true",
                   help="only the answers: serve against predict (and int8's batch dependence), no load phases")
    p.add_argument("--predict-rows", type=int, default=5000, help="offline predict: dev repeated to this many rows")
    p.add_argument("--dev-limit", type=int, help="only the first N dev sentences (default: all; --quick: 200)")
    p.add_argument("--phase-seconds", type=float, default=30.0, help="length of each load phase")
    p.add_argument("--warmup-seconds", type=float, default=5.0, help="closed-loop warm-up before saturation")
    p.add_argument("--idle-requests", type=int, default=200, help="sequential requests for the idle latency")
    p.add_argument("--rss-requests", type=int, default=20000, help="mixed requests between the two RSS readings")
    p.add_argument("--rss-seconds", type=float, default=900.0, help="time bound of the RSS phase")
    p.add_argument("--max-requests", type=int, default=200_000, help="bound on the requests of one phase")
    p.add_argument("--connections", type=int, default=512, help="open-loop connection cap (above --max-queue 256)")
    p.add_argument("--saturation-connections", default="64,128,192",
                   help="closed loops of these many clients, one after another; saturation is the best of them "
                        "(keep them under --max-queue 256, or 429s cut the count)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a phase waits for its last answers")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds a server has to answer /health")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--port-file", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker == "peer":
        return peer_server(a)
    if a.worker == "health":
        return health_worker(int(a.port_file), a.phase_seconds)
    a.saturation_connections = [int(x) for x in str(a.saturation_connections).split(",") if x]
    if a.quick:
        a.predict_rows, a.dev_limit = min(a.predict_rows, 400), a.dev_limit or 200
        a.phase_seconds, a.warmup_seconds, a.idle_requests = min(a.phase_seconds, 4.0), min(a.warmup_seconds, 1.0), 20
        a.rss_requests, a.max_requests, a.timeout = min(a.rss_requests, 300), min(a.max_requests, 2000), 30.0

    a.sst2 = Path(a.data_dir) / "glue" / "SST-2"
    if not (a.sst2 / "dev.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {a.sst2}; pass --data-dir")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bertkit-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    meta = {"load0": " ".join(f"{x:.2f}" for x in os.getloadavg()), "started": time.strftime("%Y-%m-%d %H:%M %Z")}

    model = Path(a.model) if a.model else work / "sst2-minilm"
    if not (model / "config.json").is_file():
        train(a, model)
    exports = {}
    for name, extra in (("fp32", ()), ("int8", ("--quantize", "int8"))):
        d = work / f"onnx-{name}"
        if not (a.reuse and (d / "export.json").is_file()):
            export(a, model, d, *extra)
        exports[name] = d

    texts = [t for t, _ in read_tsv(a.sst2 / "dev.tsv")][: a.dev_limit]
    meta["dev"] = len(texts)
    reps = -(-a.predict_rows // len(texts))
    meta["predict_rows"] = reps * len(texts)
    inp = work / "dev-repeated.jsonl"
    inp.write_text("".join(json.dumps({"text": t}) + "\n" for _ in range(reps) for t in texts), encoding="utf-8")
    bodies = [body(t) for t in texts]

    res: dict = {}
    for name, d in exports.items():
        rate, records = predict_offline(a, d, inp, work / f"pred-{name}.jsonl", f"bertkit predict {name}")
        res[name] = {"predict": rate, "records": records[: len(texts)]}
    fp32_labels = [r["label"] for r in res["fp32"]["records"]]
    same = sum(r["label"] == y for r, y in zip(res["int8"]["records"], fp32_labels, strict=True))
    res["int8"]["vs_fp32"] = f"{same}/{len(texts)} dev rows (offline)"

    res["int8"]["consistency"] = int8_consistency(a, exports["int8"], texts, res["int8"]["records"], work)
    for name, d in exports.items():
        srv = bertkit_server(a, f"serve-{name}", d, work)
        try:
            r = res[name]
            r["agree"] = agreement(a, srv, texts, r["records"])
            if a.agreement_only:
                continue
            r["speed"] = speed(a, srv, bodies)
            r["overload"] = overload(a, srv, bodies, r["speed"]["sat"])
            r["rss"] = rss_growth(a, srv, texts)
        finally:
            rc = srv.stop()
        if rc != 0:
            raise SystemExit(f"{srv.name} exited {rc} after SIGTERM:\n{srv.log_tail()}")
        if not a.agreement_only:
            print(f"[{name}: saturation {res[name]['speed']['sat']:,.1f}/s]", file=sys.stderr, flush=True)
    if a.agreement_only:
        for name, r in res.items():
            g = r["agree"]
            print(f"{name}: serve = predict on {g['labels']}/{g['n']} labels, {g['scores']}/{g['n']} scores to 1e-5 "
                  f"(max difference {g['max_diff']:.1e})")
        print(consistency_line(res["int8"]["consistency"]))
        return
    srv = peer(a, model, work)
    try:
        peer_res = speed(a, srv, bodies)
    finally:
        srv.stop()
    print(f"[pipeline server: saturation {peer_res['sat']:,.1f}/s]", file=sys.stderr, flush=True)
    report(a, res, peer_res, srv.framework, meta)
    print(f"\n(work dir: {work})")


if __name__ == "__main__":
    main()
