"""Test harnesses: how a job's tests become programs, and how their output is judged.

Two styles, as in the code-RL datasets (Guru/PrimeIntellect, TACO, LiveCodeBench, HumanEval/MBPP):

- **stdin/stdout**: a test is ``{"input": ..., "output": ...}``; the program runs once per test with the input
  on stdin; its stdout matches when, ignoring blank lines, each line has the same whitespace-separated tokens
  (trailing spaces, ``\\r\\n`` and runs of spaces do not matter; case and number formatting do).
- **function call** (HumanEval style): a test is a string of Python (assertions, or a ``check`` function and its
  call); the program and all test strings run in one interpreter, test strings one after another in the
  program's globals. Python: the harness counts the strings that raise nothing and, last, prints a per-job
  random marker line ``<nonce> <passed> <total>``; the job passes only when that marker says all passed, so a
  program that exits early (``sys.exit(0)``, ``os._exit(0)``) passes nothing. C++: the test strings are appended
  to the source (e.g. a ``main`` with asserts) and the job passes when it exits 0.

Not covered: a program that deliberately reads the harness (its own process memory) to forge the marker. The
tests run in the program's process, as in every function-call harness.
"""

from __future__ import annotations

import secrets

PY_MAIN = "main.py"
PY_HARNESS = "harness.py"
CPP_MAIN = "main.cpp"


def outputs_match(actual: str, expected: str) -> bool:
    """Whitespace-tolerant comparison of a program's stdout with the expected output."""
    return _tokens(actual) == _tokens(expected)


def _tokens(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def new_nonce() -> str:
    return secrets.token_hex(16)


def python_harness(root: str, tests: list[str], nonce: str) -> str:
    """The driver program: runs ``{root}/main.py`` as ``__main__``, then each test string; prints the marker."""
    return f'''import sys as _sys, traceback as _tb
def _mf_run():
    path = {f"{root}/{PY_MAIN}"!r}
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    namespace = {{"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}}
    exec(compile(source, path, "exec"), namespace)
    tests = {tests!r}
    passed = 0
    for index, test in enumerate(tests):
        try:
            exec(compile(test, "<test %d>" % index, "exec"), namespace)
            passed += 1
        except Exception:
            _tb.print_exc()
    _sys.stdout.flush()
    _sys.__stdout__.write("\\n{nonce} %d %d\\n" % (passed, len(tests)))
    _sys.__stdout__.flush()
_mf_run()
'''


def parse_marker(stdout: str, nonce: str) -> tuple[int, int] | None:
    """(passed, total) from the harness's last line, or None when the harness did not finish."""
    lines = stdout.rstrip("\n").splitlines()
    if not lines:
        return None
    parts = lines[-1].split()
    if len(parts) != 3 or parts[0] != nonce or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])


def strip_marker(stdout: str, nonce: str) -> str:
    """The program's own output, without the harness marker line."""
    head, sep, _ = stdout.rpartition(f"\n{nonce} ")
    return head if sep else stdout


def cpp_with_tests(code: str, tests: list[str]) -> str:
    return code if not tests else code + "\n\n" + "\n\n".join(tests) + "\n"


def cpp_compile_argv(gxx: str, source: str, binary: str) -> list[str]:
    return [gxx, "-std=c++17", "-O2", "-pipe", "-o", binary, source]
