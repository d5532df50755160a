"""The queue service with a fake isolation (no bwrap needed): admission, 429, long-poll, health under load,
expiry and graceful shutdown. The real isolation is covered in tests/integration/test_sandbox_*.py."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp.test_utils import TestServer

from mathfirst_hpc.sandbox.config import SandboxConfig
from mathfirst_hpc.sandbox.isolation import Isolation, JobDir, Limits, RawRun, Slot
from mathfirst_hpc.sandbox.server import SandboxService, build_app
from mathfirst_hpc.sandbox.types import ExecJob


class FakeIsolation(Isolation):
    """Each run sleeps ``delay_s`` and prints the program's stdin back."""

    name = "fake"

    def __init__(self, cfg: SandboxConfig, delay_s: float) -> None:
        super().__init__(cfg)
        self.delay_s = delay_s

    def _root_for(self, host) -> str:
        return str(host)

    async def run(self, slot: Slot, job_dir: JobDir, argv: list[str], stdin: bytes, limits: Limits) -> RawRun:
        await asyncio.sleep(self.delay_s)
        return RawRun(exit_code=0, stdout=stdin, wall_s=self.delay_s)


def _service(tmp_path, delay_s: float, **cfg_fields) -> SandboxService:
    cfg = SandboxConfig(workers=2, **cfg_fields)
    slots = []
    for i in range(cfg.workers):
        (tmp_path / f"w{i}").mkdir()
        slots.append(Slot(index=i, uid=None, gid=None, dir=tmp_path / f"w{i}"))
    return SandboxService(cfg, FakeIsolation(cfg, delay_s), slots)


async def _with_server(service: SandboxService, body) -> None:
    server = TestServer(build_app(service))
    await server.start_server()
    service.start()
    try:
        async with aiohttp.ClientSession(base_url=str(server.make_url(""))) as http:
            await body(http)
    finally:
        await service.shutdown()
        await server.close()


def _jobs(n: int) -> list[dict]:
    return [ExecJob(code="pass", stdin=f"{i}\n", expected_output=str(i)).to_dict() for i in range(n)]


def test_submit_then_long_poll_returns_each_result_once(tmp_path) -> None:
    async def body(http: aiohttp.ClientSession) -> None:
        ids = (await (await http.post("/v1/jobs", json={"jobs": _jobs(5)})).json())["ids"]
        got: dict = {}
        while len(got) < 5:
            reply = await (await http.post("/v1/results", json={"ids": ids, "wait_s": 5})).json()
            got.update(reply["results"])
        assert [got[i]["passed"] for i in ids] == [True] * 5
        again = await (await http.post("/v1/results", json={"ids": ids[:1], "wait_s": 0})).json()
        assert again["unknown"] == ids[:1]  # fetched results are forgotten

    asyncio.run(_with_server(_service(tmp_path, 0.01, shutdown_linger_s=0.1), body))


def test_full_queue_answers_429_with_retry_after_and_too_big_413(tmp_path) -> None:
    async def body(http: aiohttp.ClientSession) -> None:
        assert (await http.post("/v1/jobs", json={"jobs": _jobs(10)})).status == 200
        full = await http.post("/v1/jobs", json={"jobs": _jobs(3)})
        assert full.status == 429 and int(full.headers["Retry-After"]) >= 1
        assert (await http.post("/v1/jobs", json={"jobs": _jobs(11)})).status == 413
        metrics = await (await http.get("/metrics")).json()
        assert metrics["rejected_429"] == 3

    asyncio.run(_with_server(_service(tmp_path, 0.5, queue_max=10, shutdown_grace_s=0.1,
                                      shutdown_linger_s=0.1), body))


def test_malformed_jobs_get_400_naming_the_job(tmp_path) -> None:
    async def body(http: aiohttp.ClientSession) -> None:
        reply = await http.post("/v1/jobs", json={"jobs": [{"code": "x"}, {"code": "x", "language": "cobol"}]})
        assert reply.status == 400 and "job 1" in (await reply.json())["error"]
        assert (await http.post("/v1/jobs", data=b"not json")).status == 400

    asyncio.run(_with_server(_service(tmp_path, 0.01, shutdown_linger_s=0.1), body))


def test_health_answers_within_a_second_with_2000_jobs_queued(tmp_path) -> None:
    async def body(http: aiohttp.ClientSession) -> None:
        assert (await http.post("/v1/jobs", json={"jobs": _jobs(2000)})).status == 200
        started = time.perf_counter()
        health = await (await http.get("/health")).json()
        assert time.perf_counter() - started < 1.0
        assert health["queue_depth"] >= 1990 and health["running"] == 2

    asyncio.run(_with_server(_service(tmp_path, 0.2, shutdown_grace_s=1, shutdown_linger_s=0.1), body))


def test_shutdown_fails_queued_jobs_explicitly_and_lets_running_ones_finish(tmp_path) -> None:
    service = _service(tmp_path, 0.3, shutdown_grace_s=5, shutdown_linger_s=0.1)

    async def body() -> None:
        service.start()
        ids = service.submit([ExecJob(code="pass", stdin="x", expected_output="x") for _ in range(6)])
        await asyncio.sleep(0.05)  # two are running now
        results = {}

        async def fetch() -> None:
            while len(results) < 6:
                results.update((await service.results(ids, wait_s=1))["results"])

        fetcher = asyncio.create_task(fetch())
        await service.shutdown()
        await asyncio.wait_for(fetcher, 5)
        statuses = [results[i]["status"] for i in ids]
        assert statuses[:2] == ["ok", "ok"]
        assert statuses[2:] == ["sandbox_error"] * 4  # not run: never a verdict on the code
        assert all(results[i]["passed"] is None for i in ids[2:])
        assert not service.accepting

    asyncio.run(body())


def test_shutdown_kills_jobs_past_the_grace_period_and_says_so(tmp_path) -> None:
    service = _service(tmp_path, 30, shutdown_grace_s=0.2, shutdown_linger_s=0.1)

    async def body() -> None:
        service.start()
        ids = service.submit([ExecJob(code="pass", tests=["assert True"])])
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        shutdown = asyncio.create_task(service.shutdown())
        result = (await service.results(ids, wait_s=5))["results"][ids[0]]
        await shutdown
        assert result["status"] == "killed" and result["passed"] is False
        assert time.perf_counter() - started < 3

    asyncio.run(body())


def test_draining_server_answers_503(tmp_path) -> None:
    async def body(http: aiohttp.ClientSession) -> None:
        http_service.accepting = False
        reply = await http.post("/v1/jobs", json={"jobs": _jobs(1)})
        assert reply.status == 503 and "Retry-After" in reply.headers

    http_service = _service(tmp_path, 0.01, shutdown_linger_s=0.1)
    asyncio.run(_with_server(http_service, body))


def test_unfetched_results_expire(tmp_path) -> None:
    service = _service(tmp_path, 0.01, result_ttl_s=0.2, shutdown_linger_s=0.1)

    async def body() -> None:
        service.start()
        ids = service.submit([ExecJob(code="pass")])
        await asyncio.sleep(0.5)
        assert (await service.results(ids, wait_s=0))["unknown"] == ids
        await service.shutdown()

    asyncio.run(body())
