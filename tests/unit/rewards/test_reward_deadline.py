"""Timeouts without signal.alarm: the sympy pool kills a call past its deadline, from threads and from daemonic
multiprocessing workers, and keeps serving afterwards."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import pytest

from mathfirst_hpc.rewards.deadline import DeadlineExceeded, DeadlinePool, WorkerCrashed
from mathfirst_hpc.rewards.math import MathVerifier


def test_call_past_deadline_is_killed_and_the_pool_recovers() -> None:
    pool = DeadlinePool(workers=1)
    try:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            pool.call(time.sleep, 30, timeout_s=0.5)
        assert time.monotonic() - start < 10
        assert pool.call(divmod, 7, 2, timeout_s=20) == (3, 1)
    finally:
        pool.close()


def test_an_exception_in_the_function_is_reported_and_the_worker_kept() -> None:
    pool = DeadlinePool(workers=1)
    try:
        with pytest.raises(WorkerCrashed, match="ZeroDivisionError"):
            pool.call(divmod, 1, 0, timeout_s=20)
        assert pool.call(divmod, 9, 4, timeout_s=20) == (2, 1)
    finally:
        pool.close()


def test_math_deadline_from_a_thread_gives_error_not_a_score() -> None:
    verifier = MathVerifier(timeout_s=1.0)
    verifier.verify("\\boxed{1}", "1+0*x")  # start the worker outside the measured call
    out = {}

    def run() -> None:
        start = time.monotonic()
        out["result"] = verifier.verify("\\boxed{9^{9^{9^{9}}}}", "5+0*x")
        out["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert out["result"].verdict in ("error", "incorrect")
    assert out["seconds"] < 20
    if out["result"].verdict == "error":
        assert "timed out" in out["result"].reason
    assert verifier.verify("\\boxed{x+x}", "2x").verdict == "correct"  # the pool still works


def _verify_in_worker(pair: tuple[str, str]) -> str:
    return MathVerifier(timeout_s=20).verify(*pair).verdict


def test_math_verifier_works_inside_a_daemonic_pool_worker() -> None:
    with mp.get_context("fork").Pool(1) as pool:  # pool workers are daemonic: they may not fork children
        verdicts = pool.map(_verify_in_worker, [("\\boxed{(x+1)^2}", "x^2+2x+1"), ("\\boxed{1+1/e}", "1-1/e")])
    assert verdicts == ["correct", "incorrect"]


def test_many_threads_share_the_pool() -> None:
    verifier = MathVerifier(timeout_s=20)
    pairs = [("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", "correct"), ("\\boxed{\\sqrt{6}}", "2\\sqrt{2}", "incorrect")] * 4
    results: list[str] = [""] * len(pairs)

    def run(k: int) -> None:
        results[k] = verifier.verify(pairs[k][0], pairs[k][1]).verdict

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [p[2] for p in pairs]
