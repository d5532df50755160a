"""A minimal OpenAI-compatible completions server for the judge model, backed by any ``JudgeBackend`` (HF on CPU).

It stands in for ``vllm serve MODEL`` where there is no GPU (the tests, the local cluster): the same client,
``rewards.judge.OpenAiJudgeBackend``, talks to either. Endpoints:

    GET  /health                 200 "ok"
    GET  /v1/models              {"data": [{"id": MODEL}]}
    POST /v1/completions         {"prompt": str | [str], "max_tokens": N} -> {"choices": [{"index", "text"}]}
                                 greedy decoding only (temperature is ignored: a judge is deterministic)

Run::

    python -m mathfirst_hpc.services.judge_server --model-path /models/judge --port 0 --run-dir RUN

With ``--run-dir`` the address is written to ``RunPaths(RUN).service_address("judge")`` once it listens, and
removed on SIGTERM/SIGINT (scancel, preemption) if still ours.

Simplification: one generate call at a time (a lock), no streaming, no chat endpoint, no authentication.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..paths import RunPaths
from ..records import ServiceRecord
from ..rewards.judge import JudgeBackend

MAX_TOKENS_CAP = 256


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: JudgeBackend, model: str) -> None:
        super().__init__(address, _Handler)
        self.backend, self.model = backend, model
        self.lock = threading.Lock()
        self.requests_served = 0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: JudgeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the job log is for errors
        pass

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/health":
            self._send(200, "ok")
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/v1/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            prompts = request["prompt"]
            prompts = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
            max_tokens = min(int(request.get("max_tokens", 16)), MAX_TOKENS_CAP)
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": {"message": f"bad request: {exc}"}})
            return
        try:
            with self.server.lock:
                texts = self.server.backend.generate(prompts, max_tokens)
                self.server.requests_served += 1
        except Exception as exc:  # noqa: BLE001 - the client turns a 500 into a retry, then verdict 'error'
            self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
            return
        self._send(200, {"object": "text_completion", "model": self.server.model,
                         "choices": [{"index": i, "text": t, "finish_reason": "length"} for i, t in enumerate(texts)]})


def start_server(backend: JudgeBackend, host: str = "127.0.0.1", port: int = 0,
                 model: str = "judge") -> JudgeServer:
    """A server answering in a background thread; ``server.shutdown()`` stops it."""
    server = JudgeServer((host, port), backend, model)
    threading.Thread(target=server.serve_forever, name="judge-server", daemon=True).start()
    return server


def record(run_dir: Path | str, server: JudgeServer, bind_host: str, model: str) -> ServiceRecord:
    host = socket.gethostname() if bind_host in ("0.0.0.0", "::", "") else bind_host
    port = int(server.server_address[1])
    rec = ServiceRecord("judge", f"http://{host}:{port}", host, port, os.getpid(), os.environ.get("SLURM_JOB_ID"),
                        model)
    rec.write(RunPaths(run_dir).service_address("judge"))
    return rec


def clear(run_dir: Path | str, pid: int) -> None:
    """Remove the record if it is still ours (a requeued server may have written a newer one)."""
    path = RunPaths(run_dir).service_address("judge")
    rec = ServiceRecord.read(path)
    if rec is not None and rec.pid == pid:
        path.unlink(missing_ok=True)


def serve(backend: JudgeBackend, host: str, port: int, run_dir: Path | str | None, model: str = "judge") -> None:
    """Serve until SIGTERM/SIGINT; record the address in ``run_dir`` meanwhile."""
    server = JudgeServer((host, port), backend, model)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    where = record(run_dir, server, host, model).url if run_dir else server.url
    print(f"[judge] serving {model} on {where}", flush=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
        if run_dir:
            clear(run_dir, os.getpid())


def main(argv: list[str] | None = None) -> None:
    from ..rewards.judge import HfJudgeBackend

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--served-model-name", default="judge")
    args = parser.parse_args(argv)
    serve(HfJudgeBackend.from_path(args.model_path), args.host, args.port, args.run_dir, args.served_model_name)


if __name__ == "__main__":
    main()
