"""The zygote's pure parts and the contract it relies on: it imports only the standard library (it runs as
``/usr/bin/python3 -I -S`` inside the sandbox, where no site-packages exist), exit codes follow bwrap's
convention, and the rlimits it sets are the ones ``prlimit`` would set."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

from mathfirst_hpc.sandbox import zygote
from mathfirst_hpc.sandbox.isolation import ZYGOTE_SOURCE, Limits


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
