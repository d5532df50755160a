"""SandboxClient against scripted servers: order, 429 back-off, retries, and sandbox failures that come back as
"not scored" (passed=None), never as wrong answers."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time

from aiohttp import web
from aiohttp.test_utils import TestServer

from mathfirst_hpc.sandbox.client import SandboxClient
from mathfirst_hpc.sandbox.types import ExecJob, ExecResult


class ScriptedServer:
    """Runs jobs instantly (``passed`` = stdin == expected_output); ``script`` answers submissions first."""

    def __init__(self, submit_script: list[web.Response] | None = None, sandbox_errors: int = 0,
                 lose_first: bool = False) -> None:
        self.submit_script = list(submit_script or [])
        self.sandbox_errors = sandbox_errors  # first N executions fail inside the sandbox
        self.lose_first = lose_first
        self.jobs: dict[str, ExecJob] = {}
        self.submissions = 0
        self.ids = itertools.count()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/jobs", self.submit)
        app.router.add_post("/v1/results", self.results)
        return app

    async def submit(self, request: web.Request) -> web.Response:
        self.submissions += 1
        if self.submit_script:
            return self.submit_script.pop(0)
        ids = []
        for raw in (await request.json())["jobs"]:
            job_id = str(next(self.ids))
            self.jobs[job_id] = ExecJob.from_dict(raw)
            ids.append(job_id)
        return web.json_response({"ids": ids})

    async def results(self, request: web.Request) -> web.Response:
        done, unknown = {}, []
        for job_id in (await request.json())["ids"]:
            job = self.jobs.pop(job_id, None)
            if job is None or (self.lose_first and job_id == "0"):
                unknown.append(job_id)
            elif self.sandbox_errors > 0:
                self.sandbox_errors -= 1
                done[job_id] = ExecResult.sandbox_failure("bwrap broke").to_dict()
            else:
                passed = job.stdin == job.expected_output
                done[job_id] = ExecResult(status="ok", passed=passed, stdout=job.stdin).to_dict()
        return web.json_response({"results": done, "pending": [], "unknown": unknown})


def _run(server: ScriptedServer, jobs: list[ExecJob], **client_args) -> list[ExecResult]:
    async def body() -> list[ExecResult]:
        test_server = TestServer(server.app())
        await test_server.start_server()
        try:
            client = SandboxClient(str(test_server.make_url("")), **client_args)
            return await client.run_batch(jobs)
        finally:
            await test_server.close()

    return asyncio.run(body())


def _jobs(n: int) -> list[ExecJob]:
    return [ExecJob(code="pass", stdin=str(i), expected_output=str(i if i % 3 else -1)) for i in range(n)]


def test_results_come_back_in_job_order() -> None:
    results = _run(ScriptedServer(), _jobs(1100))  # more than one submission chunk
    assert [r.stdout for r in results] == [str(i) for i in range(1100)]
    assert [r.passed for r in results] == [bool(i % 3) for i in range(1100)]


def test_429_waits_for_retry_after_then_succeeds() -> None:
    busy = web.json_response({"error": "queue full"}, status=429, headers={"Retry-After": "0.3"})
    server = ScriptedServer(submit_script=[busy])
    started = time.perf_counter()
    results = _run(server, _jobs(4))
    assert time.perf_counter() - started >= 0.3
    assert server.submissions == 2 and all(r.scored for r in results)


def test_413_splits_the_batch() -> None:
    server = ScriptedServer(submit_script=[web.json_response({"error": "split it"}, status=413)
                                           for _ in range(2)])
    results = _run(server, _jobs(10))
    assert [r.stdout for r in results] == [str(i) for i in range(10)] and server.submissions == 3


def test_sandbox_error_is_retried_then_succeeds() -> None:
    results = _run(ScriptedServer(sandbox_errors=2), _jobs(2), max_retries=3)
    assert all(r.status == "ok" for r in results)


def test_persistent_sandbox_error_is_flagged_not_scored_never_wrong() -> None:
    results = _run(ScriptedServer(sandbox_errors=100), _jobs(3), max_retries=2)
    for result in results:
        assert result.status == "sandbox_error" and result.passed is None and not result.scored
        assert "3 times" in result.detail


def test_a_lost_job_is_resubmitted() -> None:
    results = _run(ScriptedServer(lose_first=True), _jobs(3))
    assert all(r.status == "ok" for r in results)


def test_an_unreachable_server_gives_sandbox_error_after_retries() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = SandboxClient(f"http://127.0.0.1:{port}", max_retries=2, timeout_s=5)
    started = time.perf_counter()
    results = client.run_batch_sync(_jobs(2))
    assert [r.status for r in results] == ["sandbox_error"] * 2
    assert all(r.passed is None for r in results)
    assert 0.7 <= time.perf_counter() - started < 5  # backed off 0.25 + 0.5 s


def test_run_batch_sync_works_inside_a_running_event_loop() -> None:
    async def body() -> list[ExecResult]:
        test_server = TestServer(ScriptedServer().app())
        await test_server.start_server()
        try:
            client = SandboxClient(str(test_server.make_url("")))
            return await asyncio.to_thread(client.run_batch_sync, _jobs(2))
        finally:
            await test_server.close()

    assert len(asyncio.run(body())) == 2


def test_empty_batch() -> None:
    assert SandboxClient("http://127.0.0.1:9").run_batch_sync([]) == []
