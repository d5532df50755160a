"""Run a function in a small pool of reusable worker processes with a wall-clock deadline per call.

Why: sympy can run for minutes on adversarial input, and ``signal.alarm`` works only in the main thread of the
main interpreter (the rollout/reward code runs in threads and in worker processes). A worker that passes its
deadline is killed (SIGKILL) and replaced lazily; the caller gets :class:`DeadlineExceeded`.

Usage::

    pool = DeadlinePool(workers=1, preload=("sympy",))
    value = pool.call(module_function, arg1, arg2, timeout_s=5.0)

Workers are plain subprocesses (``python -m mathfirst_hpc.rewards.deadline``) speaking length-prefixed pickles
over stdin/stdout, not ``multiprocessing`` children: they need no ``if __name__ == "__main__"`` guard in the
caller's script, do not re-import its main module, and can be started from daemonic multiprocessing workers
and from threads. Simplifications: a call goes to any idle worker, so at most ``workers`` calls run at once
and the others wait (waiting is not counted in the deadline); a worker costs ~0.5-1 s to start (sympy import).
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import traceback
from typing import IO, Any, Callable

_HEADER = struct.Struct("!I")


class DeadlineExceeded(Exception):
    """The call ran past its deadline; its worker was killed."""


class WorkerCrashed(Exception):
    """The worker process died (out of memory, segfault) or the function raised; the message says which."""


def _write(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("worker stream closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read(stream: IO[bytes]) -> Any:
    (size,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    return pickle.loads(_read_exact(stream, size))


def _serve() -> None:
    """Worker loop: read (module, name, args), call, write (ok, value)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() must not corrupt the protocol
    for module in sys.argv[1:]:
        importlib.import_module(module)
    _write(stdout, (True, "ready"))
    while True:
        try:
            module, name, args = _read(stdin)
        except EOFError:
            return
        try:
            fn = getattr(importlib.import_module(module), name)
            _write(stdout, (True, fn(*args)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
            _write(stdout, (False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))


class _Worker:
    def __init__(self, preload: tuple[str, ...]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mathfirst_hpc.rewards.deadline", *preload], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
        self.ready = False

    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready:
            self.receive(timeout_s)
            self.ready = True

    def receive(self, timeout_s: float) -> Any:
        readable, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not readable:
            raise DeadlineExceeded(f"no result within {timeout_s:g} s")
        try:
            ok, value = _read(self.process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            raise WorkerCrashed(f"worker died (exit {self.process.poll()}, {exc})") from None
        if not ok:
            raise WorkerCrashed(value)
        return value

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                stream.close()


class DeadlinePool:
    """``workers`` reusable processes; :meth:`call` runs ``fn(*args)`` in one of them with a deadline."""

    start_timeout_s = 60.0
    """Time allowed for a worker to start and import ``preload`` (not part of a call's deadline)."""

    def __init__(self, workers: int = 1, preload: tuple[str, ...] = ()) -> None:
        self._preload = preload
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._lock = threading.Lock()
        self._all: list[_Worker] = []
        for _ in range(workers):
            self._idle.put(None)  # a slot; its process starts on first use
        atexit.register(self.close)

    def _start(self) -> _Worker:
        worker = _Worker(self._preload)
        with self._lock:
            self._all.append(worker)
        worker.wait_ready(self.start_timeout_s)
        return worker

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)

    def warm(self) -> None:
        """Start every worker now (so that the first timed call does not pay for the start)."""
        slots = [self._idle.get() for _ in range(self._idle.qsize())]
        try:
            slots = [slot if slot is not None else self._start() for slot in slots]
        finally:
            for slot in slots:
                self._idle.put(slot)

    def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float) -> Any:
        """``fn(*args)`` in a worker (fn must be a module-level function). Raises DeadlineExceeded/WorkerCrashed."""
        worker = self._idle.get()
        healthy = False
        try:
            if worker is not None and worker.process.poll() is not None:
                self._retire(worker)
                worker = None
            if worker is None:
                worker = self._start()
            try:
                _write(worker.process.stdin, (fn.__module__, fn.__name__, args))
            except OSError as exc:
                raise WorkerCrashed(f"worker died before the call ({exc})") from None
            try:
                value = worker.receive(timeout_s)
            except WorkerCrashed as exc:
                healthy = "worker died" not in str(exc)  # the function raised: the worker itself is fine
                raise
            healthy = True
            return value
        finally:
            if not healthy and worker is not None:
                self._retire(worker)
                worker = None
            self._idle.put(worker)

    def close(self) -> None:
        with self._lock:
            workers, self._all = list(self._all), []
        for worker in workers:
            worker.kill()


if __name__ == "__main__":
    _serve()
