"""Execute one ``ExecJob`` in a worker slot: write its files, compile (C++), run its tests, judge, classify.

Used by the server's workers and by ``sandbox run`` alike, so both give the same status for the same program.
Every test execution is a fresh sandbox. I/O tests stop at the first failing test (a reward needs all to pass).
"""

from __future__ import annotations

import asyncio
import os
import signal

from . import harness
from .config import SandboxConfig
from .isolation import Isolation, JobDir, Limits, RawRun, Slot
from .types import ExecJob, ExecResult

_MEMORY_MARKERS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")
_FILE_LIMIT_MARKERS = ("File too large", "No space left on device")
_TRUNCATED = "\n...[truncated]"


def classify(raw: RawRun, limits: Limits, bwrap_codes: bool) -> tuple[str, str, int | None]:
    """(status, one-line detail, exit code with signals as negative numbers) of one process run."""
    exit_code = raw.exit_code
    if exit_code is not None and bwrap_codes and 128 < exit_code < 128 + 65:
        exit_code = -(exit_code - 128)  # bwrap reports a signal death as 128 + signal
    if raw.sandbox_failure:
        return "sandbox_error", raw.sandbox_failure, exit_code
    if raw.cancelled:
        return "killed", "killed: the server shut down while it ran", exit_code
    if raw.output_exceeded:
        return "output_limit", f"output exceeded {limits.max_output_bytes} bytes", exit_code
    if raw.wall_killed:
        return "timeout", f"wall-clock limit of {limits.wall_s:g} s", exit_code
    if exit_code == 0:
        return "ok", "", exit_code
    tail = raw.stderr[-4096:].decode(errors="replace")
    if exit_code is not None and exit_code < 0:
        sig = -exit_code
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and _cpu_limit_plausible(raw, limits)):
            return "timeout", f"CPU-time limit of {max(1, round(limits.cpu_s))} s", exit_code
        if sig == signal.SIGXFSZ:
            return "output_limit", f"file-size limit of {limits.file_size_mb} MiB", exit_code
        if sig == signal.SIGKILL:
            return "killed", "killed by SIGKILL", exit_code
        if sig == signal.SIGABRT and "bad_alloc" in tail:
            return "memory", f"memory limit of {limits.memory_mb} MiB", exit_code
        return "runtime_error", f"killed by {_signal_name(sig)}", exit_code
    if any(marker in tail for marker in _MEMORY_MARKERS):
        return "memory", f"memory limit of {limits.memory_mb} MiB", exit_code
    if any(marker in tail for marker in _FILE_LIMIT_MARKERS):
        return "output_limit", f"file-size limit of {limits.file_size_mb} MiB or /tmp full", exit_code
    return "runtime_error", f"exit code {exit_code}", exit_code


def _cpu_limit_plausible(raw: RawRun, limits: Limits) -> bool:
    # RLIMIT_CPU counts all threads, so with n cores it can trip after cpu_s / n wall seconds.
    return raw.wall_s >= 0.9 * max(1, round(limits.cpu_s)) / max(1, os.cpu_count() or 1)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _text(data: bytes, limit: int) -> str:
    text = data[:limit].decode(errors="replace")
    return text + _TRUNCATED if len(data) > limit else text


class JobRunner:
    """Runs jobs for one slot with one isolation."""

    def __init__(self, cfg: SandboxConfig, isolation: Isolation, slot: Slot, lane: int = 0) -> None:
        self.cfg = cfg
        self.isolation = isolation
        self.slot = slot
        self.lane = lane
        """Which of the slot's job folders this runner writes (``Isolation.lanes`` runners share one slot)."""

    async def run(self, job: ExecJob) -> ExecResult:
        job_dir = self.isolation.new_job_dir(self.slot, self.lane)
        try:
            return await self._run(job, job_dir)
        finally:
            self.isolation.release_job_dir(job_dir)

    async def _run(self, job: ExecJob, job_dir: JobDir) -> ExecResult:
        limits = Limits.for_job(self.cfg, float(job.time_limit_s), int(job.memory_mb))
        io_tests = [t for t in job.tests if isinstance(t, dict)]
        assert_tests = [t for t in job.tests if isinstance(t, str)]
        if job.expected_output is not None:
            io_tests = [{"input": job.stdin, "output": job.expected_output}]
        result = ExecResult(status="ok", tests_total=len(io_tests) + len(assert_tests))
        if job.language == "cpp":
            argv = await self._compile(job, job_dir, assert_tests, result)
            if argv is None:
                return result
        else:
            _write(job_dir, harness.PY_MAIN, job.code)
            argv = [self.cfg.python, "-I", f"{job_dir.root}/{harness.PY_MAIN}"]
        if io_tests:
            return await self._run_io_tests(job_dir, argv, io_tests, limits, result)
        if assert_tests and job.language == "python":
            return await self._run_python_asserts(job, job_dir, assert_tests, limits, result)
        await self._exec(job_dir, argv, job.stdin, limits, result)
        if assert_tests:  # C++: the tests are compiled into the program
            result.passed = result.status == "ok"
            result.tests_passed = len(assert_tests) if result.passed else 0
        return result

    async def _exec(self, job_dir: JobDir, argv: list[str], stdin: str, limits: Limits,
                    result: ExecResult) -> RawRun:
        raw = await self.isolation.run(self.slot, job_dir, argv, stdin.encode(), limits)
        status, detail, exit_code = classify(raw, limits, self.isolation.signal_exit_codes)
        keep = self.cfg.returned_output_bytes
        result.status, result.detail, result.exit_code = status, detail, exit_code
        result.stdout, result.stderr = _text(raw.stdout, keep), _text(raw.stderr, keep)
        result.wall_s += raw.wall_s
        if status == "sandbox_error":
            result.passed = None
        return raw

    async def _compile(self, job: ExecJob, job_dir: JobDir, assert_tests: list[str],
                       result: ExecResult) -> list[str] | None:
        if not os.access(self.cfg.gxx, os.X_OK):
            result.status, result.detail = "sandbox_error", f"{self.cfg.gxx} is not installed on the sandbox host"
            return None
        _write(job_dir, harness.CPP_MAIN, harness.cpp_with_tests(job.code, assert_tests))
        build = self.isolation.make_writable(self.slot, job_dir, "build")
        binary = f"{build}/a.out"
        limits = Limits.for_job(self.cfg, self.cfg.compile_time_limit_s, self.cfg.compile_memory_mb)
        limits.file_size_mb = max(limits.file_size_mb, 64)
        argv = harness.cpp_compile_argv(self.cfg.gxx, f"{job_dir.root}/{harness.CPP_MAIN}", binary)
        await self._exec(job_dir, argv, "", limits, result)
        if result.status == "ok":
            self.isolation.seal(self.slot, job_dir, "build")  # the program itself writes only to /tmp
            result.stdout = result.stderr = ""
            return [binary]
        if result.status == "sandbox_error":
            return None
        if result.status == "runtime_error":
            result.detail = "compilation failed"
        else:
            result.detail = f"compilation: {result.detail}"
        result.passed = False if result.tests_total else None
        return None

    async def _run_io_tests(self, job_dir: JobDir, argv: list[str], tests: list[dict[str, str]],
                            limits: Limits, result: ExecResult) -> ExecResult:
        for index, test in enumerate(tests):
            raw = await self._exec(job_dir, argv, test.get("input", ""), limits, result)
            if result.status == "sandbox_error":
                return result
            if result.status != "ok":
                result.passed = False
                result.detail = f"test {index}: {result.detail}"
                return result
            if not harness.outputs_match(raw.stdout.decode(errors="replace"), test.get("output", "")):
                result.passed = False
                result.detail = f"test {index}: wrong answer"
                return result
            result.tests_passed += 1
        result.passed = True
        return result

    async def _run_python_asserts(self, job: ExecJob, job_dir: JobDir, tests: list[str], limits: Limits,
                                  result: ExecResult) -> ExecResult:
        nonce = harness.new_nonce()
        _write(job_dir, harness.PY_HARNESS, harness.python_harness(job_dir.root, tests, nonce))
        argv = [self.cfg.python, "-I", f"{job_dir.root}/{harness.PY_HARNESS}"]
        raw = await self._exec(job_dir, argv, job.stdin, limits, result)
        if result.status == "sandbox_error":
            return result
        stdout = raw.stdout.decode(errors="replace")
        marker = harness.parse_marker(stdout, nonce) if result.status == "ok" else None
        result.stdout = _text(harness.strip_marker(stdout, nonce).encode(), self.cfg.returned_output_bytes)
        if marker is None:
            result.passed = False
            if result.status == "ok":
                result.detail = "the program exited before its tests finished"
            return result
        result.tests_passed = marker[0]
        result.passed = marker[0] == marker[1] == len(tests)
        if not result.passed:
            result.detail = f"{len(tests) - marker[0]} of {len(tests)} tests failed"
        return result


def _write(job_dir: JobDir, name: str, text: str) -> None:
    fd = os.open(f"{job_dir.host}/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)  # whatever the umask
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


async def run_one(job: ExecJob, cfg: SandboxConfig) -> ExecResult:
    """One job with a worker slot of its own (``sandbox run``): the same isolation and runner as the server."""
    from .isolation import acquire_slots, make_isolation, release_slots

    job.validate()
    isolation = make_isolation(cfg)
    slots = acquire_slots(cfg, 1)
    try:
        return await JobRunner(cfg, isolation, slots[0]).run(job)
    finally:
        await isolation.close()
        release_slots(slots)


def run_one_sync(job: ExecJob, cfg: SandboxConfig) -> ExecResult:
    return asyncio.run(run_one(job, cfg))
