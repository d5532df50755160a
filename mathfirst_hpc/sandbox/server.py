"""The sandbox queue service: an aiohttp server with a bounded job queue and a pool of isolated workers.

Run: ``mathfirst-hpc sandbox serve --host 127.0.0.1 --port 8765 --workers 2`` (``--run-dir D`` records the
address in ``D/sandbox/address.json``). In tests: ``with start_local_server(2) as (url, stop): ...``.

HTTP API (JSON bodies; ``ExecJob``/``ExecResult`` as in ``types.py``):

- ``POST /v1/jobs``     ``{"jobs": [job, ...]}`` -> ``{"ids": [...]}``. All or nothing: a batch that does not fit
  the queue gets **429** with ``Retry-After`` (seconds), one larger than the whole queue gets 413, a malformed
  job 400 naming it, and a draining server 503.
- ``POST /v1/results``  ``{"ids": [...], "wait_s": 10}`` -> ``{"results": {id: result}, "pending": [...],
  "unknown": [...]}``. Long-polls until at least one of the ids is finished (or ``wait_s``). A returned result
  is forgotten; results never fetched are dropped after ``result_ttl_s``. ``unknown`` ids (expired, or from
  before a restart) must be resubmitted.
- ``GET /health``       liveness and queue depth; answered at once whatever the queue holds. ``running`` counts the
  jobs workers hold: with bwrap up to two per worker (one executes, the next waits ready in its sandbox).
- ``GET /metrics``      queue depth, running, completed, executions/s over the last minute, outcomes by status.

Shutdown (SIGTERM/SIGINT): new submissions get 503; queued jobs are failed as ``sandbox_error`` ("not run");
running jobs get ``shutdown_grace_s`` to finish, then are killed and reported ``killed``; results stay
fetchable for ``shutdown_linger_s`` (or until all are fetched); then the port closes.

Simplifications: results live in memory (a restart forgets them; clients resubmit unknown ids); one process,
one event loop: executions are subprocesses, so the loop itself only moves bytes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field

from aiohttp import web

from .config import SandboxConfig
from .isolation import Isolation, Slot, acquire_slots, make_isolation, release_slots
from .runner import JobRunner
from .types import STATUSES, ExecJob, ExecResult

log = logging.getLogger(__name__)
COALESCE_S = 0.02
COALESCE_MAX_S = 1.0
COALESCE_FRACTION = 2
"""A long poll answers once half of its ids are done, when the server has nothing left to run, or after the time
those results should take (from the average execution time and the worker count), at most COALESCE_MAX_S."""
UNSAFE_WARNING = ("WARNING: sandbox isolation is 'none': programs run without namespaces, with only rlimits and "
                  "a separate uid; untrusted code can read files and use the network. Use bwrap for RL/eval.")


class QueueFull(Exception):
    def __init__(self, retry_after_s: int, too_big: bool = False) -> None:
        super().__init__(f"queue full, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.too_big = too_big


class Draining(Exception):
    pass


@dataclass
class _Record:
    job: ExecJob
    submitted_at: float
    result: ExecResult | None = None
    finished_at: float | None = None
    waiters: list[asyncio.Future] = field(default_factory=list)


class SandboxService:
    """Queue, workers, results and counters; the HTTP layer only translates to and from JSON."""

    def __init__(self, cfg: SandboxConfig, isolation: Isolation, slots: list[Slot]) -> None:
        self.cfg = cfg
        self.isolation = isolation
        self.slots = slots
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.records: dict[str, _Record] = {}
        self.running: dict[str, asyncio.Task] = {}
        self.accepting = True
        self.started_at = time.time()
        self.by_status: Counter[str] = Counter({status: 0 for status in STATUSES})
        self.completed = 0
        self.rejected = 0
        self._recent: deque[float] = deque()  # completion times, last 60 s
        self._exec_s_avg = 0.05
        self._workers: list[asyncio.Task] = []
        self._janitor: asyncio.Task | None = None
        self._runners = len(slots) * isolation.lanes
        """Jobs held by workers at once; a job's time from start to end includes waiting for its worker's other
        lane, so the queue drains at this many per ``_exec_s_avg``."""

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        # Isolation.lanes runners per worker slot: with bwrap, the second one's next execution already waits in
        # the worker's sandbox while the first runs (executions still run one at a time per worker)
        self._workers = [asyncio.create_task(self._worker(JobRunner(self.cfg, self.isolation, slot, lane)))
                         for slot in self.slots for lane in range(self.isolation.lanes)]
        self._janitor = asyncio.create_task(self._expire_loop())

    async def shutdown(self) -> None:
        """Stop taking jobs, fail the queued ones, let running ones finish within the grace period."""
        self.accepting = False
        while not self.queue.empty():
            job_id = self.queue.get_nowait()
            self._finish(job_id, ExecResult.sandbox_failure("not run: the sandbox server shut down first",
                                                            len(self.records[job_id].job.tests)))
        deadline = time.monotonic() + self.cfg.shutdown_grace_s
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self.running.values()):
            task.cancel()  # the runner kills the sandbox; the worker reports "killed"
        while self.running:
            await asyncio.sleep(0.01)
        linger_until = time.monotonic() + self.cfg.shutdown_linger_s
        while any(r.result is not None for r in self.records.values()) and time.monotonic() < linger_until:
            await asyncio.sleep(0.05)
        for task in [*self._workers, self._janitor]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    # --- API -----------------------------------------------------------------------------------------------
    def submit(self, jobs: list[ExecJob]) -> list[str]:
        if not self.accepting:
            raise Draining()
        depth = self.queue.qsize()
        if len(jobs) > self.cfg.queue_max:
            raise QueueFull(1, too_big=True)
        if depth + len(jobs) > self.cfg.queue_max:
            self.rejected += len(jobs)
            raise QueueFull(self._retry_after_s(depth + len(jobs) - self.cfg.queue_max))
        now = time.monotonic()
        ids = []
        for job in jobs:
            job_id = uuid.uuid4().hex
            self.records[job_id] = _Record(job=job, submitted_at=now)
            self.queue.put_nowait(job_id)
            ids.append(job_id)
        return ids

    async def results(self, ids: list[str], wait_s: float) -> dict:
        records = self.records
        answer_by = time.monotonic() + wait_s
        known = [i for i in ids if i in records]
        unknown = [i for i in ids if i not in records]
        finished = sum(1 for i in known if records[i].result is not None)
        if known and wait_s > 0 and finished == 0:
            waiter = asyncio.get_running_loop().create_future()
            for job_id in known:
                records[job_id].waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), timeout=wait_s)
                await self._coalesce(known, 1, answer_by)
            except TimeoutError:
                pass
            finally:
                for job_id in known:
                    record = records.get(job_id)
                    if record is not None and waiter in record.waiters:
                        record.waiters.remove(waiter)
        elif known and wait_s > 0 and finished < len(known):
            # some finished while the client was away: still gather more, or a client that polls as soon as
            # it has an answer gets one or two results per request, each request costing O(its ids)
            await self._coalesce(known, finished, answer_by)
        done, pending = {}, []
        for job_id in known:
            record = self.records.get(job_id)
            if record is None:
                unknown.append(job_id)  # fetched by a concurrent request meanwhile
            elif record.result is None:
                pending.append(job_id)
            else:
                done[job_id] = record.result.to_dict()
                del self.records[job_id]
        return {"results": done, "pending": pending, "unknown": unknown}

    async def _coalesce(self, known: list[str], finished: int, answer_by: float) -> None:
        """Let more of ``known`` (``finished`` of them done) finish before answering, never past ``answer_by`` (the
        client's wait_s): fewer, larger responses. A client polls with every id it still waits for, so answering
        after each single result would cost O(batch) per result. O(1) per step: counts completions server-wide, and
        stops early once nothing is running or queued."""
        target = max(1, len(known) // COALESCE_FRACTION)
        if finished >= target:
            return
        expected_s = 1.5 * (target - finished) * self._exec_s_avg / self._runners
        deadline = min(answer_by, time.monotonic() + min(COALESCE_MAX_S, max(COALESCE_S, expected_s)))
        first = self.completed
        while True:
            await asyncio.sleep(COALESCE_S)
            idle = not self.running and self.queue.empty()
            if self.completed - first + finished >= target or idle or time.monotonic() >= deadline:
                return

    def health(self) -> dict:
        return {"status": "ok" if self.accepting else "draining", "isolation": self.isolation.name,
                "workers": len(self.slots), "queue_depth": self.queue.qsize(), "running": len(self.running)}

    def metrics(self) -> dict:
        now = time.monotonic()
        self._trim(now)
        window_s = min(60.0, max(1e-9, time.time() - self.started_at))
        return {**self.health(), "completed": self.completed, "rejected_429": self.rejected,
                "executions_per_s": round(len(self._recent) / window_s, 3),
                "avg_execution_s": round(self._exec_s_avg, 4), "by_status": dict(self.by_status),
                "results_held": sum(1 for r in self.records.values() if r.result is not None),
                "uptime_s": round(time.time() - self.started_at, 1)}

    # --- internals -----------------------------------------------------------------------------------------
    async def _worker(self, runner: JobRunner) -> None:
        while True:
            job_id = await self.queue.get()
            record = self.records.get(job_id)
            if record is None or record.result is not None:
                continue
            task = asyncio.create_task(runner.run(record.job))
            self.running[job_id] = task
            started = time.monotonic()
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():
                    task.cancel()  # the worker itself was cancelled: kill its sandbox too
                    with contextlib.suppress(BaseException):
                        await task
                    raise
                result = ExecResult(status="killed", passed=False if record.job.tests else None,
                                    tests_total=len(record.job.tests),
                                    detail="killed: the sandbox server shut down while it ran")
            except Exception as exc:  # a bug or an OS failure in the sandbox: never a verdict on the code
                log.exception("sandbox job %s failed", job_id)
                result = ExecResult.sandbox_failure(f"sandbox internal error: {exc!r}", len(record.job.tests))
            finally:
                self.running.pop(job_id, None)
            self._exec_s_avg = 0.9 * self._exec_s_avg + 0.1 * (time.monotonic() - started)
            self._finish(job_id, result)

    def _finish(self, job_id: str, result: ExecResult) -> None:
        record = self.records.get(job_id)
        if record is None:
            return
        record.result = result
        record.finished_at = time.monotonic()
        self.completed += 1
        self.by_status[result.status] += 1
        self._recent.append(record.finished_at)
        for waiter in record.waiters:
            if not waiter.done():
                waiter.set_result(None)
        record.waiters.clear()

    def _retry_after_s(self, excess: int) -> int:
        return max(1, math.ceil(excess * self._exec_s_avg / self._runners))

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0] < now - 60:
            self._recent.popleft()

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.cfg.result_ttl_s / 2))
            cutoff = time.monotonic() - self.cfg.result_ttl_s
            stale = [i for i, r in self.records.items() if r.finished_at is not None and r.finished_at < cutoff]
            for job_id in stale:
                del self.records[job_id]
            if stale:
                log.warning("dropped %d sandbox results nobody fetched within %s s", len(stale),
                            self.cfg.result_ttl_s)
            self._trim(time.monotonic())


# ---------------------------------------------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------------------------------------------

SERVICE_KEY = web.AppKey("service", SandboxService)


def _bad(message: str, status: int = 400, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


async def _submit(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        body = await request.json()
        raw_jobs = body["jobs"]
        if not isinstance(raw_jobs, list):
            raise TypeError("'jobs' must be a list")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        return _bad(f"expected {{'jobs': [...]}}: {exc}")
    jobs = []
    for index, raw in enumerate(raw_jobs):
        try:
            job = ExecJob.from_dict(raw)
            if len(job.code.encode()) > service.cfg.max_code_bytes:
                raise ValueError(f"code longer than {service.cfg.max_code_bytes} bytes")
        except (ValueError, TypeError) as exc:
            return _bad(f"job {index}: {exc}")
        jobs.append(job)
    try:
        ids = service.submit(jobs)
    except Draining:
        return _bad("the sandbox server is shutting down", 503, **{"Retry-After": "5"})
    except QueueFull as exc:
        if exc.too_big:
            return _bad(f"a batch of {len(jobs)} jobs is larger than the queue ({service.cfg.queue_max}); split it",
                        413)
        return _bad(str(exc), 429, **{"Retry-After": str(exc.retry_after_s)})
    return web.json_response({"ids": ids})


async def _results(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        body = await request.json()
        ids = [str(i) for i in body["ids"]]
        wait_s = min(max(float(body.get("wait_s", 0)), 0.0), 60.0)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return _bad(f"expected {{'ids': [...], 'wait_s': s}}: {exc}")
    return web.json_response(await service.results(ids, wait_s))


async def _health(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE_KEY].health())


async def _metrics(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE_KEY].metrics())


def build_app(service: SandboxService) -> web.Application:
    app = web.Application(client_max_size=256 << 20)  # batches of thousands of programs
    app[SERVICE_KEY] = service
    app.router.add_post("/v1/jobs", _submit)
    app.router.add_post("/v1/results", _results)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app


class RunningServer:
    """A started service plus its HTTP site; ``url`` is where it listens."""

    def __init__(self, service: SandboxService, runner: web.AppRunner, url: str, port: int) -> None:
        self.service = service
        self.runner = runner
        self.url = url
        self.port = port

    async def stop(self) -> None:
        await self.service.shutdown()
        await self.runner.cleanup()
        await self.service.isolation.close()
        release_slots(self.service.slots)


async def start_server(cfg: SandboxConfig) -> RunningServer:
    """Check the isolation, reserve worker uids, start workers and the HTTP site. Raises
    ``SandboxUnavailableError`` (with the reason) when the isolation cannot work here."""
    isolation = make_isolation(cfg)
    if cfg.isolation == "none":
        log.warning(UNSAFE_WARNING)
    slots = acquire_slots(cfg, cfg.workers)
    try:
        await isolation.check(slots[0])
        service = SandboxService(cfg, isolation, slots)
        runner = web.AppRunner(build_app(service), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port, backlog=1024)
        await site.start()
    except BaseException:
        await isolation.close()
        release_slots(slots)
        raise
    port = runner.addresses[0][1]
    service.start()
    host = cfg.host if cfg.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return RunningServer(service, runner, f"http://{host}:{port}", port)


async def serve_forever(cfg: SandboxConfig, on_started=None) -> None:
    """``sandbox serve``: run until SIGTERM/SIGINT, then shut down gracefully."""
    server = await start_server(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if on_started is not None:
            on_started(server)
        await stop.wait()
    finally:
        await server.stop()


# ---------------------------------------------------------------------------------------------------------------
# In-process server for tests and local reward/eval runs
# ---------------------------------------------------------------------------------------------------------------

class _LocalServer(tuple):
    """``(url, stop)``; also a context manager that stops the server on exit. ``.running``: the server."""

    running: RunningServer

    def __enter__(self) -> _LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self[1]()


def start_local_server(workers: int = 2, isolation: str = "bwrap", **overrides) -> _LocalServer:
    """Start a sandbox server on a free local port in a background thread.

    ``url, stop = start_local_server(2)`` or ``with start_local_server(2) as (url, stop): ...``; ``stop()`` is
    idempotent and shuts down gracefully. Raises ``SandboxUnavailableError`` if the isolation cannot work here.
    When ``MATHFIRST_SANDBOX_IMAGE`` names a container image (and isolation is bwrap), the server runs in that
    image instead (``container.start_container_server``; only ``workers`` applies there).
    """
    image = os.environ.get("MATHFIRST_SANDBOX_IMAGE")
    if image and isolation == "bwrap":
        from .container import start_container_server
        return start_container_server(workers, image)
    cfg = SandboxConfig(host="127.0.0.1", port=0, workers=workers, isolation=isolation, **overrides)
    loop = asyncio.new_event_loop()
    started: dict = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["server"] = loop.run_until_complete(start_server(cfg))
        except BaseException as exc:  # reported to the caller below
            started["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="sandbox-server", daemon=True)
    thread.start()
    ready.wait()
    if "error" in started:
        thread.join()
        loop.close()
        raise started["error"]
    server: RunningServer = started["server"]
    lock = threading.Lock()

    def stop() -> None:
        with lock:
            if loop.is_closed():
                return
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    atexit.register(stop)  # a caller that never stops it still releases the worker uids and folders
    handle = _LocalServer((server.url, stop))
    handle.running = server  # for tests that need to reach inside
    return handle
