"""The zygote's pure parts and the contract it relies on: it imports only the standard library (it runs as
``/usr/bin/python3 -I -S`` inside the sandbox, where no site-packages exist), exit codes follow bwrap's
convention, and the rlimits it sets are the ones ``prlimit`` would set."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mathfirst_hpc.sandbox import zygote
from mathfirst_hpc.sandbox.isolation import ZYGOTE_C, ZYGOTE_SOURCE, Limits, compiled_zygote, encode_job


def test_the_zygote_imports_only_the_standard_library() -> None:
    tree = ast.parse(ZYGOTE_SOURCE)
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert names and names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)
    assert ZYGOTE_SOURCE == (Path(zygote.__file__)).read_text(encoding="utf-8")


def test_the_zygote_source_runs_under_the_sandbox_interpreter_without_site() -> None:
    # No control socket: it must fail on the missing argument, not on an import.
    proc = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", ZYGOTE_SOURCE], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode != 0 and "IndexError" in proc.stderr and "ImportError" not in proc.stderr


def test_exit_codes_follow_bwraps_convention() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    assert zygote.exit_code(os.waitpid(pid, 0)[1]) == 3
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    os.kill(pid, signal.SIGKILL)
    assert zygote.exit_code(os.waitpid(pid, 0)[1]) == 128 + signal.SIGKILL


def test_rlimits_match_the_prlimit_arguments() -> None:
    limits = Limits(cpu_s=2.5, wall_s=6, memory_mb=256, file_size_mb=32, max_processes=64, max_output_bytes=1)
    rlimits = limits.rlimits()
    assert rlimits == {"cpu": 3, "as": 256 << 20, "fsize": 32 << 20, "nproc": 64, "core": 0}
    as_args = {arg.split("=")[0].lstrip("-"): int(arg.split("=")[1].split(":")[0]) for arg in limits.prlimit_args()}
    assert as_args == rlimits
    assert set(rlimits) == set(zygote.RLIMITS)


def test_job_messages_round_trip_and_malformed_ones_are_refused() -> None:
    rlimits = {"cpu": 3, "as": 256 << 20, "fsize": 1 << 20, "nproc": 64, "core": 0}
    bind = ("/.jobs/1", "/sandbox", "/.empty", "/.jobs")
    message = encode_job(["/usr/bin/python3", "-I", "/sandbox/main.py"], {"PATH": "/usr/bin", "X": "a=b"}, "/tmp",
                         rlimits, 64 << 20, 16 << 20, ["/sandbox/build"], bind)
    job = zygote.decode_job(message)
    assert job == {"bind": list(bind), "cwd": "/tmp", "tmp_bytes": 64 << 20, "shm_bytes": 16 << 20, "rlimits": rlimits,
                   "readonly": ["/sandbox/build"], "env": {"PATH": "/usr/bin", "X": "a=b"},
                   "argv": ["/usr/bin/python3", "-I", "/sandbox/main.py"]}
    with pytest.raises(ValueError):
        encode_job(["/bin/echo", "a\0b"], {}, "/tmp", rlimits, 1, 1, [])
    with pytest.raises(ValueError):
        zygote.decode_job(message.replace(b"\0" + str(64 << 20).encode() + b"\0", b"\0-1\0", 1))
    with pytest.raises(ValueError):
        zygote.decode_job(b"job\0\0\0\0\0/tmp\0" + b"1\0" * 7 + b"0\0" + b"0\0" + b"0")  # no argv


def test_the_c_zygote_compiles_warning_free_and_is_cached(tmp_path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler: the server uses zygote.py")
    proc = subprocess.run([compiler, "-O2", "-Wall", "-Wextra", "-o", str(tmp_path / "z"), str(ZYGOTE_C)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    first = compiled_zygote()
    assert first is not None and os.access(first, os.X_OK) and compiled_zygote() == first
    assert first.stat().st_mode & 0o022 == 0 and first.parent.stat().st_uid == os.geteuid()
