"""bertkit serve: the real server in a subprocess on 127.0.0.1 (port 0), answering every task kind as
`bertkit predict` does, every error as one-line JSON, overload as 429, SIGTERM after finishing its requests.
Every request loop is bounded; nothing asserts on time."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import cli, read_jsonl

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


@contextmanager
def server(model: Path, tmp_path: Path, *extra):
    """A running `bertkit serve` (yields its URL and process); SIGTERM at the end, which must exit 0."""
    port_file = tmp_path / f"port-{len(list(tmp_path.glob('port-*')))}"
    proc = subprocess.Popen([sys.executable, "-m", "bertkit", "serve", "--model", str(model), "--port", "0",
                             "--port-file", str(port_file), "--threads", "1", *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for _ in range(600):  # bounded: the CLI's start-up on a loaded machine
            if port_file.exists():
                url = f"http://127.0.0.1:{port_file.read_text().strip()}"
                if get(url + "/health")[0] == 200:
                    break
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read()}")
            threading.Event().wait(0.2)
        else:
            raise AssertionError("serve did not become healthy")
        yield url, proc
    finally:
        if proc.poll() is None and not getattr(proc, "terminated", False):
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        proc.stderr_text = err
    assert proc.returncode == 0, err


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


def post(url: str, body, content_type: str = "application/json") -> tuple[int, dict, object]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/predict", data=data, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def _qa_model(mlm_model: Path, out: Path) -> Path:
    from transformers import AutoTokenizer, BertForQuestionAnswering

    BertForQuestionAnswering.from_pretrained(str(mlm_model)).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(out))
    return out


def _close(a, b, path=""):
    """Records equal, floats to 1e-5 (another batch composition pads differently)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("kind", ["classification", "fill-mask", "question-answering"])
def test_every_kind_answers_as_predict(kind, tmp_path, classifier, mlm_model):
    long = " ".join(["the staff were friendly and the food was great"] * 12)  # past the model's length
    if kind == "classification":
        model, rows = classifier, [{"text": t} for t in ("the place was great", "服务太差了", long, "ok")]
        inputs = [r["text"] for r in rows]
    elif kind == "fill-mask":
        model, rows = mlm_model, [{"text": "the food was [MASK] good"}, {"text": "这家[MASK]的菜非常好吃"}]
        inputs = [r["text"] for r in rows]
    else:
        model = _qa_model(mlm_model, tmp_path / "qa")
        rows = [{"question": "who was friendly?", "context": long}, {"question": "什么好吃?", "context": "菜非常好吃"}]
        inputs = rows
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    assert cli("predict", "--model", model, "--input", tmp_path / "in.jsonl", "--output", tmp_path / "p.jsonl",
               "--quiet") == 0
    expected = read_jsonl(tmp_path / "p.jsonl")
    with server(model, tmp_path) as (url, _):
        status, headers, got = post(url, {"inputs": inputs})
        assert status == 200 and float(headers["x-queue-time"]) >= 0 and float(headers["x-inference-time"]) >= 0
        _close(got, expected)
        status, _, one = post(url, {"inputs": inputs[0]})  # a single input is a batch of one
        assert status == 200 and len(one) == 1
        _close(one[0], expected[0])
        info = json.loads(get(url + "/info")[1])
        assert info["task"] == kind and info["backend"] == "torch"
        assert info["max_length"] == (32 if kind == "classification" else 512)  # as fine-tuned, else the limit


def test_a_list_of_two_texts_is_two_rows_not_a_pair(tmp_path, classifier):
    with server(classifier, tmp_path) as (url, _):
        status, _, got = post(url, {"inputs": ["the place was great", "the room was dirty"]})
        assert status == 200 and [r["text"] for r in got] == ["the place was great", "the room was dirty"]
        assert all("text_pair" not in r for r in got)
        status, _, got = post(url, {"inputs": [{"text": "the place was great", "text_pair": "the room was dirty"}]})
        assert status == 200 and len(got) == 1 and got[0]["text_pair"] == "the room was dirty"


def test_bad_requests_get_one_line_json_and_the_server_keeps_serving(tmp_path, classifier):
    with server(classifier, tmp_path, "--max-request-rows", 3, "--max-queue", 8, "--max-body-bytes", 2048) \
            as (url, proc):
        cases = [
            (post(url, b"{not json"), 400, "invalid_json", "body"),
            (post(url, {"inputs": ["x"]}, "text/plain"), 415, "unsupported_media_type", "content-type"),
            (post(url, {"text": "x"}), 422, "invalid_request", "inputs"),
            (post(url, {"inputs": 3}), 422, "invalid_input", "inputs"),
            (post(url, {"inputs": [{"txt": "x"}]}), 422, "invalid_input", "inputs[0].text"),
            (post(url, {"inputs": [{"text": "a", "text_pair": "b"}, {"text": "c"}]}), 422, "invalid_input",
             "inputs[1]"),
            (post(url, {"inputs": []}), 422, "invalid_input", "inputs"),
            (post(url, {"inputs": "x", "parameters": {"top_k": 0}}), 422, "invalid_parameters", "parameters.top_k"),
            (post(url, {"inputs": "x", "parameters": {"temperature": 1}}), 422, "invalid_parameters",
             "parameters.temperature"),
            (post(url, {"inputs": ["a", "b", "c", "d"]}), 413, "too_many_rows", "--max-request-rows"),
            (post(url, {"inputs": ["x" * 4000]}), 413, "body_too_large", "--max-body-bytes"),
        ]
        for (status, _, body), want, error_type, names in cases:
            assert status == want and body["error_type"] == error_type and names in body["error"], body
            assert "\n" not in body["error"] and "Traceback" not in body["error"]
        for path, want in (("/nope", 404), ("/predict", 405)):
            status, raw = get(url + path)
            assert status == want and json.loads(raw)["error_type"] in ("not_found", "method_not_allowed")
        assert get(url + "/health")[0] == 200
        assert post(url, {"inputs": "still serving"})[0] == 200
        metrics = get(url + "/metrics")[1].decode()
        for code in (200, 400, 404, 405, 413, 415, 422):
            assert f'bertkit_requests_total{{code="{code}"}}' in metrics
        assert "bertkit_queue_seconds_bucket" in metrics and "bertkit_batch_rows_count" in metrics


def test_overload_gets_429_and_the_server_stays_healthy(tmp_path, classifier):
    """--max-queue 4 rows: while one request of 4 rows is admitted, the others are refused at once."""
    long = " ".join(["the staff were friendly and the food was great"] * 20)
    results: list[tuple[int, dict]] = []
    with server(classifier, tmp_path, "--max-queue", 4, "--max-request-rows", 4, "--batch-size", 1) as (url, _):
        start = threading.Barrier(24)

        def client():
            start.wait()
            status, headers, _ = post(url, {"inputs": [long] * 4})
            results.append((status, headers))

        threads = [threading.Thread(target=client) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert get(url + "/health")[0] == 200
        assert post(url, {"inputs": "after the storm"})[0] == 200
    statuses = [s for s, _ in results]
    assert len(statuses) == 24 and set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses
    assert all(h.get("retry-after") == "1" for s, h in results if s == 429)


def test_sigterm_finishes_requests_in_flight_and_exits_0(tmp_path, classifier):
    long = " ".join(["the staff were friendly and the food was great"] * 20)
    results: list[int] = []
    with server(classifier, tmp_path, "--max-batch-tokens", 64, "--batch-size", 1) as (url, proc):
        def client():
            results.append(post(url, {"inputs": [long] * 64})[0])

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        for _ in range(200):  # until a request is admitted (bounded)
            if "bertkit_queue_rows 0\n" not in get(url + "/metrics")[1].decode():
                break
        proc.send_signal(signal.SIGTERM)
        proc.terminated = True  # once: a second SIGTERM is what an impatient orchestrator sends
        for t in threads:
            t.join(timeout=300)
    # admitted requests are answered; one that arrives once draining started gets 503
    assert len(results) == 3 and 200 in results and set(results) <= {200, 503}
    assert "bertkit serve" in proc.stderr_text or "requests" in proc.stderr_text


def test_serve_without_the_extra_names_it(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert cli("serve", "--model", tmp_path) == 2
    assert "pip install 'bertkit[serve]'" in capsys.readouterr().err


def _batcher(model: Path, requests: list[list[dict]]):
    """A Batcher (thread not started) on ``model`` with ``requests`` waiting."""
    from types import SimpleNamespace

    from bertkit.inference import open_model
    from bertkit.serving import Batcher, Job, Metrics

    cfg = SimpleNamespace(model=str(model), allow_pickle=False, max_seq_length=None, device="cpu", task="auto",
                          backend="torch", threads=1)
    batcher = Batcher(open_model(cfg), 8, 8192, 64, Metrics())
    for rows in requests:
        batcher.queue.append(Job(rows, SimpleNamespace(top_k=1), None, None))
    return batcher


def test_waiting_requests_are_encoded_together_as_each_alone(classifier):
    """The batcher encodes the waiting requests in one tokenizer call and splits the windows back by row:
    each request's windows equal its own encoding."""
    long = " ".join(["the staff were friendly and the food was great"] * 12)  # past the model's 32 tokens
    texts = [["the place was great"], [long, "ok"], ["服务太差了"], [long]]
    batcher = _batcher(classifier, [[{"text": t} for t in rows] for rows in texts])
    batcher._encode_waiting()
    for job in batcher.queue:
        alone = batcher.task.encode(job.rows)
        assert job.windows is not None and job.windows.inputs == alone.inputs
        assert job.windows.row.tolist() == alone.row.tolist()


def test_kinds_with_window_maps_are_encoded_a_request_at_a_time(tmp_path, mlm_model):
    """QA windows carry offsets into their context: the batcher leaves them to one call per request (and
    stops trying to encode them together)."""
    rows = [{"question": "who?", "context": "the staff were friendly"}, {"question": "what?", "context": "菜非常好吃"}]
    batcher = _batcher(_qa_model(mlm_model, tmp_path / "qa"), [[r] for r in rows])
    batcher._encode_waiting()
    assert all(job.windows is None for job in batcher.queue) and not batcher.encode_together


def test_serve_batch_size_defaults_by_device_and_refuses_zero(capsys):
    """--batch-size: unset means 8 rows on a CPU (64 on a GPU, resolved at start); 0 is a usage error."""
    from bertkit.schemas import SERVE_CPU_BATCH, ServeConfig

    assert ServeConfig().batch_size is None and SERVE_CPU_BATCH == 8
    assert cli("serve", "--model", "no-such-dir", "--batch-size", 0) == 2
    assert "--batch-size 0: must be at least 1" in capsys.readouterr().err
