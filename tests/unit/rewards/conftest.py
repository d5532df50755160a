"""Fixtures for the reward tests: a local fake sandbox (trusted snippets only) and a router using it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mathfirst_hpc.config import RewardConfig
from mathfirst_hpc.rewards import RewardRouter
from mathfirst_hpc.sandbox.types import ExecJob, ExecResult


class LocalSandbox:
    """Runs python jobs with subprocess, no isolation: for the tests' own trusted snippets. Counts batches."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run_batch_sync(self, jobs: list[ExecJob]) -> list[ExecResult]:
        self.batches.append(len(jobs))
        return [self._run(job) for job in jobs]

    @staticmethod
    def _run(job: ExecJob) -> ExecResult:
        passed = 0
        for test in job.tests:
            if isinstance(test, dict):
                proc = subprocess.run([sys.executable, "-c", job.code], input=test["input"], capture_output=True,
                                      text=True, timeout=20)
                ok = proc.returncode == 0 and proc.stdout.split() == test["output"].split()
            else:
                proc = subprocess.run([sys.executable, "-c", job.code + "\n" + test], capture_output=True, text=True,
                                      timeout=20)
                ok = proc.returncode == 0
            if not ok:
                return ExecResult(status="runtime_error" if proc.returncode else "ok", exit_code=proc.returncode,
                                  passed=False, tests_passed=passed, tests_total=len(job.tests), detail="test failed")
            passed += 1
        return ExecResult(status="ok", exit_code=0, passed=True, tests_passed=passed, tests_total=len(job.tests))


class BrokenSandbox:
    def run_batch_sync(self, jobs: list[ExecJob]) -> list[ExecResult]:
        raise ConnectionError("sandbox server unreachable")


@pytest.fixture
def local_sandbox() -> LocalSandbox:
    return LocalSandbox()


@pytest.fixture
def router(local_sandbox: LocalSandbox) -> RewardRouter:
    return RewardRouter(RewardConfig(math_timeout_s=10.0), sandbox=local_sandbox)
