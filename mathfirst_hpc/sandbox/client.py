"""Async batched client of the sandbox server, for the code reward and the code benchmarks.

    client = SandboxClient("http://127.0.0.1:8765")
    results = client.run_batch_sync([ExecJob(code=..., tests=[...])])      # or: await client.run_batch(jobs)
    scored = [r for r in results if r.scored]                               # sandbox_error = not scored

Results come back in job order. Flow control and failures:

- submissions go in chunks; **429** waits for ``Retry-After`` and tries again (as long as the server keeps
  making progress), **413** halves the chunk, **503**/connection errors/5xx back off exponentially
  (0.25 s, 0.5 s, 1 s, ...) for up to ``max_retries`` consecutive failures;
- results are long-polled; an id the server no longer knows (restart, expiry) is resubmitted;
- a result with status ``sandbox_error`` is resubmitted up to ``max_retries`` times, then returned as
  ``sandbox_error`` with ``passed=None``: callers must not count it as a wrong answer;
- if no job of the batch finishes for ``timeout_s`` seconds, the rest come back as ``sandbox_error``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass

import aiohttp

from .types import ExecJob, ExecResult

SUBMIT_CHUNK = 512
POLL_WAIT_S = 10.0


class _Unavailable(Exception):
    """The server could not be reached or kept failing: the affected jobs become sandbox_error."""


@dataclass
class _Slot:
    index: int
    job: ExecJob
    attempts: int = 0
    server_id: str | None = None


class SandboxClient:
    """Client of one sandbox server (``url`` = ``http://host:port``)."""

    def __init__(self, url: str, max_retries: int = 3, timeout_s: float = 60) -> None:
        self.url = url.rstrip("/")
        self.max_retries = max_retries
        self.timeout_s = timeout_s

    # --- public --------------------------------------------------------------------------------------------
    async def run_batch(self, jobs: list[ExecJob]) -> list[ExecResult]:
        results: list[ExecResult | None] = [None] * len(jobs)
        if not jobs:
            return []
        timeout = aiohttp.ClientTimeout(total=self.timeout_s + POLL_WAIT_S + 5)
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await _Batch(self, session, jobs, results).run()
        return [r if r is not None else ExecResult.sandbox_failure("no result") for r in results]

    def run_batch_sync(self, jobs: list[ExecJob]) -> list[ExecResult]:
        """Blocking ``run_batch``; works with or without an event loop running in this thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_batch(jobs))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.run_batch(jobs)).result()

    async def health(self) -> dict:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session:
            async with session.get(f"{self.url}/health") as response:
                response.raise_for_status()
                return await response.json()


class _Batch:
    """One ``run_batch`` call: submits, polls, resubmits, and fills ``results`` in place."""

    def __init__(self, client: SandboxClient, session: aiohttp.ClientSession, jobs: list[ExecJob],
                 results: list[ExecResult | None]) -> None:
        self.client = client
        self.session = session
        self.results = results
        self.todo: list[_Slot] = [_Slot(i, job) for i, job in enumerate(jobs)]
        self.in_flight: dict[str, _Slot] = {}
        self.chunk = SUBMIT_CHUNK
        self.last_progress = time.monotonic()

    async def run(self) -> None:
        while self.todo or self.in_flight:
            if time.monotonic() - self.last_progress > self.client.timeout_s:
                self._fail_all(f"no sandbox result for {self.client.timeout_s:g} s")
                return
            try:
                if self.todo:
                    await self._submit_some()
                if self.in_flight:
                    await self._poll(wait_s=0.0 if self.todo else POLL_WAIT_S)
            except _Unavailable as exc:
                self._fail_all(str(exc))
                return

    # --- submission ----------------------------------------------------------------------------------------
    async def _submit_some(self) -> None:
        chunk = self.todo[: self.chunk]
        status, body, retry_after = await self._request("POST", "/v1/jobs",
                                                        {"jobs": [s.job.to_dict() for s in chunk]})
        if status == 200:
            for slot, job_id in zip(chunk, body["ids"]):
                slot.server_id = job_id
                self.in_flight[job_id] = slot
            del self.todo[: len(chunk)]
        elif status == 429:
            # Wait while results drain; poll meanwhile so this batch's own finished jobs free the queue.
            if self.in_flight:
                await self._poll(wait_s=min(retry_after, POLL_WAIT_S))
            else:
                await asyncio.sleep(min(retry_after, POLL_WAIT_S))
        elif status == 413:
            if self.chunk == 1:
                raise _Unavailable("the sandbox server refuses even a single job (queue_max 0?)")
            self.chunk = max(1, self.chunk // 2)
        else:  # 400: a malformed job; the caller's bug, but a batch must still come back whole
            for slot in chunk:
                self.results[slot.index] = ExecResult.sandbox_failure(
                    f"rejected by the sandbox server: {body.get('error', status)}", len(slot.job.tests))
            del self.todo[: len(chunk)]

    # --- results -------------------------------------------------------------------------------------------
    async def _poll(self, wait_s: float) -> None:
        ids = list(self.in_flight)
        status, body, _ = await self._request("POST", "/v1/results", {"ids": ids, "wait_s": wait_s})
        if status != 200:
            raise _Unavailable(f"results request failed with HTTP {status}: {body.get('error', '')}")
        for job_id, data in body["results"].items():
            self._settle(self.in_flight.pop(job_id), ExecResult.from_dict(data))
        for job_id in body["unknown"]:
            slot = self.in_flight.pop(job_id, None)
            if slot is not None:
                self._retry_or_fail(slot, "the sandbox server lost the job (restart or expiry)")

    def _settle(self, slot: _Slot, result: ExecResult) -> None:
        self.last_progress = time.monotonic()
        if result.status == "sandbox_error":
            self._retry_or_fail(slot, result.detail)
        else:
            self.results[slot.index] = result

    def _retry_or_fail(self, slot: _Slot, why: str) -> None:
        slot.attempts += 1
        slot.server_id = None
        if slot.attempts > self.client.max_retries:
            self.results[slot.index] = ExecResult.sandbox_failure(
                f"sandbox failed {slot.attempts} times, not scored: {why}", len(slot.job.tests))
        else:
            self.todo.append(slot)

    def _fail_all(self, why: str) -> None:
        for slot in [*self.todo, *self.in_flight.values()]:
            self.results[slot.index] = ExecResult.sandbox_failure(f"not scored: {why}", len(slot.job.tests))
        self.todo.clear()
        self.in_flight.clear()

    # --- HTTP with backoff -------------------------------------------------------------------------------
    async def _request(self, method: str, path: str, payload: dict) -> tuple[int, dict, float]:
        """(status, json body, Retry-After seconds); retries connection errors, 5xx and 503 with backoff."""
        delay_s = 0.25
        last_error = ""
        for attempt in range(self.client.max_retries + 1):
            try:
                async with self.session.request(method, f"{self.client.url}{path}", json=payload) as response:
                    body = await response.json(content_type=None) if response.content_length != 0 else {}
                    retry_after = _retry_after_s(response.headers.get("Retry-After"))
                    if response.status < 500:
                        return response.status, body or {}, retry_after
                    last_error = f"HTTP {response.status}: {(body or {}).get('error', '')}"
                    delay_s = max(delay_s, retry_after if response.status == 503 else 0)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if attempt < self.client.max_retries:
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
        raise _Unavailable(f"sandbox server {self.client.url} unavailable after {self.client.max_retries + 1} "
                           f"tries ({last_error})")


def _retry_after_s(value: str | None) -> float:
    try:
        return max(0.05, float(value)) if value else 0.5
    except ValueError:
        return 0.5
