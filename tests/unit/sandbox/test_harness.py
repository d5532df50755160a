"""Output comparison, the function-call harness marker, and status classification of raw runs."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from mathfirst_hpc.sandbox import harness
from mathfirst_hpc.sandbox.isolation import Limits, RawRun
from mathfirst_hpc.sandbox.runner import classify

LIMITS = Limits(cpu_s=2, wall_s=5, memory_mb=256, file_size_mb=8, max_processes=32, max_output_bytes=1000)


@pytest.mark.parametrize("actual, expected, same", [
    ("1 2\n3\n", "1 2\n3", True),
    ("1  2 \r\n\n3\n\n", "1 2\n3\n", True),
    ("1 2 3", "1 2\n3", False),  # line structure matters
    ("YES", "yes", False),  # case matters
    ("1.0", "1", False),
    ("", "", True),
])
def test_outputs_match_is_whitespace_tolerant_only(actual: str, expected: str, same: bool) -> None:
    assert harness.outputs_match(actual, expected) is same


def _run_harness(tmp_path, code: str, tests: list[str]) -> tuple[int, str, str]:
    (tmp_path / harness.PY_MAIN).write_text(code)
    nonce = harness.new_nonce()
    (tmp_path / harness.PY_HARNESS).write_text(harness.python_harness(str(tmp_path), tests, nonce))
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / harness.PY_HARNESS)], capture_output=True,
                          text=True, timeout=30)
    return proc.returncode, proc.stdout, nonce


def test_harness_counts_passing_tests_and_prints_the_marker_last(tmp_path) -> None:
    code, out, nonce = _run_harness(tmp_path, "def f(x):\n    print('hi')\n    return x + 1\n",
                                    ["assert f(1) == 2", "assert f(1) == 3", "assert f(0) == 1"])
    assert code == 0
    assert harness.parse_marker(out, nonce) == (2, 3)
    assert harness.strip_marker(out, nonce) == "hi\nhi\nhi\n"


@pytest.mark.parametrize("cheat", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_a_program_that_exits_early_passes_nothing(tmp_path, cheat: str) -> None:
    code, out, nonce = _run_harness(tmp_path, "def f(x):\n    return 0\n" + cheat, ["assert f(1) == 2"])
    assert code == 0 and harness.parse_marker(out, nonce) is None


def test_a_forged_marker_with_the_wrong_nonce_is_ignored(tmp_path) -> None:
    _code, out, nonce = _run_harness(tmp_path, "print('deadbeef 1 1')", ["assert False"])
    assert harness.parse_marker(out, nonce) == (0, 1)
    assert harness.parse_marker("deadbeef 1 1\n", nonce) is None


def test_cpp_tests_are_appended_to_the_source() -> None:
    assert harness.cpp_with_tests("int f(){return 1;}", ["int main(){}"]).endswith("int main(){}\n")
    assert harness.cpp_with_tests("x", []) == "x"


@pytest.mark.parametrize("raw, bwrap_codes, status", [
    (RawRun(exit_code=0), True, "ok"),
    (RawRun(exit_code=1, stderr=b"Traceback...\nValueError: x\n"), True, "runtime_error"),
    (RawRun(exit_code=1, stderr=b"Traceback...\nMemoryError\n"), True, "memory"),
    (RawRun(exit_code=128 + signal.SIGABRT, stderr=b"what():  std::bad_alloc\n"), True, "memory"),
    (RawRun(exit_code=128 + signal.SIGKILL, wall_s=2.1), True, "timeout"),  # CPU rlimit hard kill
    (RawRun(exit_code=128 + signal.SIGKILL, wall_s=0.01), True, "killed"),  # killed itself at once
    (RawRun(exit_code=-signal.SIGXCPU), False, "timeout"),
    (RawRun(exit_code=128 + signal.SIGXFSZ), True, "output_limit"),
    (RawRun(exit_code=1, stderr=b"OSError: [Errno 27] File too large\n"), True, "output_limit"),
    (RawRun(exit_code=128 + signal.SIGSEGV), True, "runtime_error"),
    (RawRun(exit_code=-9, wall_killed=True), False, "timeout"),
    (RawRun(exit_code=-9, output_exceeded=True), False, "output_limit"),
    (RawRun(exit_code=None, cancelled=True), True, "killed"),
    (RawRun(exit_code=1, stderr=b"bwrap: oops", sandbox_failure="bwrap could not set up"), True, "sandbox_error"),
])
def test_classify(raw: RawRun, bwrap_codes: bool, status: str) -> None:
    assert classify(raw, LIMITS, bwrap_codes)[0] == status


def test_classify_reports_signals_as_negative_exit_codes() -> None:
    assert classify(RawRun(exit_code=128 + 11), LIMITS, True)[2] == -11
    assert classify(RawRun(exit_code=3), LIMITS, True)[2] == 3
