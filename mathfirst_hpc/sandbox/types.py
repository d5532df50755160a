"""The two records that cross the sandbox boundary: an execution request and its result.

``ExecJob`` is what a caller (the code reward, the eval harness, ``sandbox run``) asks for; ``ExecResult`` is what
comes back, through the HTTP API or in-process. Both are plain dataclasses with ``to_dict``/``from_dict`` so the
JSON wire format is stated here once.

Statuses (``ExecResult.status``):

- ``ok``            the program (or, with tests, every test run) exited 0 within its limits
- ``runtime_error`` it exited non-zero or was killed by its own signal (a failed assertion, an exception)
- ``timeout``       it hit the CPU-time or wall-clock limit
- ``memory``        it hit the address-space limit (MemoryError, ``std::bad_alloc``, failed mmap)
- ``output_limit``  stdout/stderr or a written file went past its size limit
- ``killed``        it was killed from outside for another reason (the server shut down, a process limit kill)
- ``sandbox_error`` the sandbox itself failed (bwrap could not start, the server was unreachable, the job
                    expired): *not* a verdict on the code. ``passed`` is then ``None`` and callers must count
                    the sample as not scored, never as wrong.

``passed`` is ``True``/``False`` when tests (or an expected output) were given and the run was a real verdict,
``None`` when there was nothing to check or the sandbox failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

Status = Literal["ok", "runtime_error", "timeout", "memory", "output_limit", "killed", "sandbox_error"]
STATUSES: tuple[str, ...] = ("ok", "runtime_error", "timeout", "memory", "output_limit", "killed", "sandbox_error")
LANGUAGES: tuple[str, ...] = ("python", "cpp")

# A test is either an I/O pair ``{"input": str, "output": str}`` (stdin/stdout style, whitespace-tolerant
# comparison) or a string of assertion code appended after the program (HumanEval / MBPP function-call style).
Test = dict[str, str] | str


@dataclass
class ExecJob:
    """One program to run in the sandbox."""

    language: str = "python"
    """``python`` or ``cpp`` (compiled with g++ inside the sandbox)."""
    code: str = ""
    """The program source."""
    stdin: str = ""
    """Fed to the program when there are no I/O tests."""
    tests: list[Test] = field(default_factory=list)
    """I/O pairs (each run as its own execution) or assertion snippets (all appended to one program run)."""
    expected_output: str | None = None
    """Shortcut for one I/O test with ``stdin`` as input: compared whitespace-tolerantly."""
    time_limit_s: float = 5.0
    """Per execution: CPU seconds (RLIMIT_CPU, whole seconds, at least 1) and the wall-clock kill (2x + 1 s by
    default). Each I/O test is its own execution; assertion tests share one (program and all its tests)."""
    memory_mb: int = 512
    """Address-space limit (RLIMIT_AS) of the program."""

    def to_dict(self) -> dict[str, Any]:
        # flat, as asdict would give it (tests copied), without asdict's recursive deep copy
        data = {name: getattr(self, name) for name in _JOB_FIELDS}
        data["tests"] = [dict(test) if isinstance(test, dict) else test for test in self.tests]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecJob:
        unknown = sorted(set(data) - _JOB_FIELD_SET)
        if unknown:
            raise ValueError(f"unknown job fields {unknown}; valid: {sorted(_JOB_FIELD_SET)}")
        job = cls(**data)
        job.validate()
        return job

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field (the server answers 400 with it)."""
        if self.language not in LANGUAGES:
            raise ValueError(f"language {self.language!r} not supported; use one of {list(LANGUAGES)}")
        if not isinstance(self.code, str) or not isinstance(self.stdin, str):
            raise ValueError("code and stdin must be strings")
        if not isinstance(self.tests, list):
            raise ValueError("tests must be a list of {'input','output'} objects or assertion strings")
        kinds = {type(test) for test in self.tests}
        if len(kinds) > 1:
            raise ValueError("tests must be all I/O pairs or all assertion strings, not a mix")
        if self.tests and self.expected_output is not None:
            raise ValueError("give tests or expected_output, not both")
        for test in self.tests:
            if isinstance(test, dict):
                if set(test) - {"input", "output"} or not all(isinstance(v, str) for v in test.values()):
                    raise ValueError("an I/O test is {'input': str, 'output': str}")
            elif not isinstance(test, str):
                raise ValueError("a test is an {'input','output'} object or an assertion string")
        if not 0 < float(self.time_limit_s) <= 600:
            raise ValueError("time_limit_s must be in (0, 600]")
        if not 16 <= int(self.memory_mb) <= 65536:
            raise ValueError("memory_mb must be in [16, 65536]")


@dataclass
class ExecResult:
    """What happened to one ``ExecJob``."""

    status: str = "sandbox_error"
    """One of ``STATUSES``; for a job with several I/O tests, the first non-ok test's status."""
    exit_code: int | None = None
    """Exit code of the (last) program run; negative = killed by that signal; None if it never ran."""
    stdout: str = ""
    """Captured stdout of the (last or first failing) run, truncated at the output limit."""
    stderr: str = ""
    """Captured stderr, truncated likewise (compiler errors land here for C++)."""
    wall_s: float = 0.0
    """Wall seconds of all runs of this job together (sandbox start-up included)."""
    passed: bool | None = None
    """All tests passed; None when there were no tests or the sandbox failed (= not scored)."""
    tests_passed: int = 0
    tests_total: int = 0
    detail: str = ""
    """One line on why: the failing test, the limit that was hit, or the sandbox failure."""

    @property
    def scored(self) -> bool:
        """False for sandbox failures: such a sample must not count as a wrong answer."""
        return self.status != "sandbox_error"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _RESULT_FIELDS}  # flat: cheaper than asdict's deep copy

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecResult:
        return cls(**{k: v for k, v in data.items() if k in _RESULT_FIELD_SET})

    @classmethod
    def sandbox_failure(cls, detail: str, tests_total: int = 0) -> ExecResult:
        return cls(status="sandbox_error", passed=None, tests_total=tests_total, detail=detail)


_JOB_FIELDS = tuple(f.name for f in fields(ExecJob))
_JOB_FIELD_SET = frozenset(_JOB_FIELDS)
_RESULT_FIELDS = tuple(f.name for f in fields(ExecResult))
_RESULT_FIELD_SET = frozenset(_RESULT_FIELDS)
