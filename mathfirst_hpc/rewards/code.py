"""Code verifier: run the response's last fenced code block against the reference tests in the sandbox.

Reference (``reward_model.ground_truth``, a JSON string or dict, Guru ``codegen__*`` conventions):

- ``{"inputs": [stdin, ...], "outputs": [stdout, ...]}``: stdin/stdout tests (whitespace-tolerant, compared by
  the sandbox);
- ``{"fn_name": "f", "inputs": [[args...], ...], "outputs": [value, ...]}``: function-call tests, turned into
  ``assert f(*args) == value`` snippets;
- ``{"functional": "assert f(1) == 2\\n..."}``: assertion code appended after the program (HumanEval / MBPP);
  ``extra_info.prefix`` or ``import_prefix`` (imports the reference assumes) is put before the program.

Score 1 only when every test passes. No code block -> ``unparseable``. A sandbox failure (unreachable server,
bwrap cannot start, expired job) -> verdict ``error``: never a 0 the policy would learn from. All jobs of a
batch go to the sandbox in one ``run_batch_sync`` call.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Sequence

from ..sandbox.types import ExecJob, ExecResult
from .base import RewardResult
from .extract import last_fenced_block

_LANGUAGES = {"": "python", "python": "python", "py": "python", "python3": "python", "cpp": "cpp", "c++": "cpp",
              "cc": "cpp"}


class SandboxRunner(Protocol):
    def run_batch_sync(self, jobs: list[ExecJob]) -> list[ExecResult]: ...


class CodeTestsError(ValueError):
    """The reference tests are not in a supported format (a data problem, reported as verdict 'error')."""


def _tests(ground_truth: Any) -> list[Any]:
    gt = json.loads(ground_truth) if isinstance(ground_truth, str) else dict(ground_truth)
    if "functional" in gt:
        prefix = gt.get("import_prefix", "")
        return [(prefix + "\n" if prefix else "") + gt["functional"]]
    if "inputs" in gt and "outputs" in gt:
        inputs, outputs = list(gt["inputs"]), list(gt["outputs"])
        if len(inputs) != len(outputs) or not inputs:
            raise CodeTestsError(f"{len(inputs)} inputs but {len(outputs)} outputs")
        fn_name = gt.get("fn_name")
        if fn_name:
            return [f"assert {fn_name}(*{args!r}) == {want!r}" if isinstance(args, list)
                    else f"assert {fn_name}({args!r}) == {want!r}" for args, want in zip(inputs, outputs)]
        return [{"input": str(i), "output": str(o)} for i, o in zip(inputs, outputs)]
    raise CodeTestsError(f"unsupported test format with keys {sorted(gt)[:5]}")


class CodeVerifier:
    def __init__(self, sandbox: SandboxRunner | None, time_limit_s: float = 5.0, memory_mb: int = 512) -> None:
        self.sandbox = sandbox
        self.time_limit_s = time_limit_s
        self.memory_mb = memory_mb

    def build_job(self, response: str, ground_truth: Any, extra_info: dict[str, Any]) -> ExecJob | RewardResult:
        """The sandbox job for one response, or the final result when there is nothing to run."""
        block = last_fenced_block(response)
        if block is None or not block[1].strip():
            return RewardResult(0.0, "unparseable", "no fenced code block in response")
        language = _LANGUAGES.get(block[0])
        if language is None:
            return RewardResult(0.0, "incorrect", f"code block language {block[0]!r} is not python or cpp")
        try:
            tests = _tests(ground_truth)
        except (CodeTestsError, ValueError, TypeError, KeyError) as exc:
            return RewardResult(0.0, "error", f"bad reference tests: {exc}"[:160])
        prefix = extra_info.get("prefix") or extra_info.get("import_prefix") or ""
        code = (prefix + "\n" + block[1]) if prefix and language == "python" else block[1]
        if language == "cpp" and tests and isinstance(tests[0], str):
            return RewardResult(0.0, "incorrect", "assertion tests need a python solution")
        return ExecJob(language=language, code=code, tests=tests, time_limit_s=self.time_limit_s,
                       memory_mb=self.memory_mb)

    def verify_batch(self, responses: Sequence[str], ground_truths: Sequence[Any],
                     extra_infos: Sequence[dict[str, Any]]) -> list[RewardResult]:
        prepared = [self.build_job(r, g, e or {}) for r, g, e in zip(responses, ground_truths, extra_infos)]
        jobs = [p for p in prepared if isinstance(p, ExecJob)]
        if not jobs:
            return list(prepared)  # type: ignore[arg-type]
        if self.sandbox is None:
            results: list[ExecResult] = [ExecResult.sandbox_failure("no sandbox configured (reward.sandbox.url)")
                                         for _ in jobs]
        else:
            try:
                results = list(self.sandbox.run_batch_sync(jobs))
            except Exception as exc:  # noqa: BLE001 - any client failure is a sandbox failure, not a 0
                results = [ExecResult.sandbox_failure(f"{type(exc).__name__}: {exc}"[:160]) for _ in jobs]
            if len(results) != len(jobs):
                results = [ExecResult.sandbox_failure(f"sandbox returned {len(results)} results for {len(jobs)} jobs")
                           for _ in jobs]
        it = iter(results)
        return [self._result(next(it)) if isinstance(p, ExecJob) else p for p in prepared]

    @staticmethod
    def _result(result: ExecResult) -> RewardResult:
        if result.status == "sandbox_error" or (result.passed is None):
            return RewardResult(0.0, "error", f"sandbox: {result.detail or result.status}"[:160])
        if result.passed:
            return RewardResult(1.0, "correct", f"{result.tests_passed}/{result.tests_total} tests passed")
        summary = f"{result.status}: {result.tests_passed}/{result.tests_total} passed; {result.detail}"
        return RewardResult(0.0, "incorrect", summary[:160])
