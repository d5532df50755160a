"""Preemption and time limits: a signal only sets a flag; the training loop stops at its next safe point.

Slurm warns a job before killing it: ``--signal=USR1@lead`` sends SIGUSR1 ``lead`` seconds before the time limit
(and ``scancel --signal=USR1`` sends it by hand); preemption and ``scontrol requeue`` send SIGTERM, then SIGKILL
after the cluster's KillWait. Acting inside a signal handler would save a half-updated model, so
:func:`install` replaces the handlers with one that records the signal, and the loop polls::

    preemption.install()                              # once, at the start of a job that polls
    for micro_step in ...:
        ...
        if preemption.should_stop(save_time_s, margin_s, collective=True):   # a safe point
            save_checkpoint(...)
            preemption.exit_for_requeue()             # never returns

:func:`exit_for_requeue` hands over to submitit for SIGUSR1 and for a near time limit: submitit's own handler
(kept aside by :func:`install`) calls the job's ``checkpoint()``, pickles the resubmission and runs
``scontrol requeue``. After SIGTERM Slurm has already requeued (or cancelled) the job, so it only exits. The exit
is a ``SystemExit``, which submitit does not turn into a result file: the requeued job runs again.

:func:`time_left_s` reads ``SLURM_JOB_END_TIME`` (Slurm >= 23.02) or asks ``squeue`` once for the job's time
left (Slurm 22.05 does not export the end time). :func:`should_stop` is true once a signal arrived or the time
left is below the measured save time plus a margin.

In a multi-process job every rank gets the signal, but not at the same instant: ``collective=True`` agrees on
the flag with an all-reduce (MAX) so that every rank stops at the same safe point instead of one rank waiting
forever in the next collective.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


@dataclass
class _State:
    installed: bool = False
    signum: int | None = None
    received_at: float | None = None
    reason: str | None = None
    previous: dict[int, Any] = field(default_factory=dict)
    end_time: float | None = None
    end_time_job: str | None = None


_STATE = _State()


def _handler(signum: int, frame: FrameType | None) -> None:
    # Only record: the loop acts at its next safe point. The first signal wins (SIGTERM after USR1 changes nothing).
    if _STATE.signum is None:
        _STATE.signum = signum
        _STATE.received_at = time.time()
        _STATE.reason = signal.Signals(signum).name
    print(f"[preemption] received {signal.Signals(signum).name}: stopping at the next safe point",
          file=sys.stderr, flush=True)


def install(signals: tuple[int, ...] = HANDLED_SIGNALS) -> None:
    """Route ``signals`` to the flag. Call once per process, after submitit set up its own handlers."""
    for signum in signals:
        previous = signal.signal(signum, _handler)
        _STATE.previous.setdefault(signum, previous)
    _STATE.installed = True


def uninstall() -> None:
    """Give the signals back to their previous handlers (used by tests and at the end of a job)."""
    for signum, previous in _STATE.previous.items():
        signal.signal(signum, previous)
    _STATE.previous.clear()
    _STATE.installed = False


def reset() -> None:
    """Forget a recorded signal (tests; a job that resumes in the same process)."""
    _STATE.signum = _STATE.received_at = _STATE.reason = None


def request(reason: str) -> None:
    """Ask the loop to stop at its next safe point without a signal (time limit, tests)."""
    if _STATE.reason is None:
        _STATE.reason = reason
        _STATE.received_at = time.time()


def requested() -> bool:
    return _STATE.reason is not None


def reason() -> str | None:
    """SIGUSR1, SIGTERM, ... , 'time-limit', or None."""
    return _STATE.reason


# ---- time limit --------------------------------------------------------------------------------------------------

def parse_slurm_duration(text: str) -> float | None:
    """Slurm's ``[days-]hh:mm:ss`` / ``mm:ss`` / ``UNLIMITED`` -> seconds (None = no limit)."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INVALID", "NOT_SET"):
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _query_end_time(job_id: str) -> float | None:
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%L"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    left = parse_slurm_duration(out.splitlines()[0]) if out.strip() else None
    return None if left is None else time.time() + left


def time_left_s(now: float | None = None) -> float | None:
    """Seconds until the allocation ends, or None when unknown / unlimited / not under Slurm."""
    now = time.time() if now is None else now
    end = os.environ.get("SLURM_JOB_END_TIME")
    if end and re.fullmatch(r"\d+", end):
        return float(end) - now
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    if _STATE.end_time_job != job_id:  # asked once per job: the end time only moves when the job is requeued
        _STATE.end_time_job, _STATE.end_time = job_id, _query_end_time(job_id)
    return None if _STATE.end_time is None else _STATE.end_time - now


def should_stop(save_time_s: float = 0.0, margin_s: float = 60.0, collective: bool = False) -> bool:
    """True when the job must save and stop now: a signal arrived, or the time left is below
    ``save_time_s + margin_s``. With ``collective=True`` every rank of the default process group agrees."""
    if not requested():
        left = time_left_s()
        if left is not None and left < save_time_s + margin_s:
            request("time-limit")
    flag = requested()
    return agree(flag) if collective else flag


def agree(flag: bool) -> bool:
    """All-reduce MAX of a local flag over the default process group (identity without one)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return flag
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    if tensor.item() and not flag:
        request("peer-rank")
    return bool(tensor.item())


# ---- leaving -----------------------------------------------------------------------------------------------------

def _submitit_handler() -> Callable[[int, FrameType | None], None] | None:
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        handler = _STATE.previous.get(signum)
        if callable(handler) and getattr(handler, "__name__", "") == "checkpoint_and_try_requeue":
            return handler
    return None


def exit_for_requeue() -> None:
    """Leave after the state is saved. Never returns (raises SystemExit).

    SIGUSR1/USR2, time limit: submitit's handler calls ``checkpoint()``, requeues the job (rank 0 only) and
    exits. SIGTERM: Slurm requeued or cancelled the job already; just exit. Outside submitit: just exit.
    """
    reason_now = _STATE.reason or "stop"
    handler = _submitit_handler()
    if handler is not None and reason_now != "SIGTERM":
        signum = _STATE.signum if _STATE.signum in (signal.SIGUSR1, signal.SIGUSR2) else signal.SIGUSR1
        handler(signum, None)  # rank 0: checkpoint + scontrol requeue + sys.exit; other ranks return
    print(f"[preemption] state saved after {reason_now}: exiting for requeue", file=sys.stderr, flush=True)
    raise SystemExit(-1)
