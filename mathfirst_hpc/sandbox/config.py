"""Settings of the sandbox server and of each execution's limits (one keyword-only dataclass).

The per-job limits a caller may choose (``time_limit_s``, ``memory_mb``) travel in ``ExecJob``; everything else is
the server's policy and lives here. ``SandboxConfig()`` is what ``sandbox serve`` and ``sandbox run`` use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError


@dataclass(kw_only=True)
class SandboxConfig:
    # --- service -------------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8765
    """0 = pick a free port (the chosen one is printed and recorded)."""
    workers: int = 2
    """Concurrent executions; each has its own unprivileged uid when the server runs as root."""
    isolation: Literal["bwrap", "none"] = "bwrap"
    """``none`` runs programs without namespaces (rlimits only): for machines without bwrap, never for RL."""
    queue_max: int = 10_000
    """Jobs waiting to run; a submission that does not fit is answered 429 with Retry-After."""
    result_ttl_s: float = 900.0
    """Finished results not fetched within this time are dropped."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM: running jobs get this long to finish, then are killed and reported ``killed``."""
    shutdown_linger_s: float = 5.0
    """After the last job ends, results stay fetchable this long (or until all are fetched)."""

    # --- per-execution limits ------------------------------------------------------------------------------
    wall_factor: float = 2.0
    wall_slack_s: float = 1.0
    """Wall-clock kill at ``time_limit_s * wall_factor + wall_slack_s`` (CPU limit is ``time_limit_s``)."""
    max_output_bytes: int = 1 << 20
    """Per stream (stdout, stderr): beyond this the process is killed and the status is ``output_limit``."""
    returned_output_bytes: int = 16 << 10
    """Per stream, how much of the captured output a result carries back (comparison uses all of it)."""
    tmp_size_mb: int = 64
    """Size of the private tmpfs mounted at /tmp (bwrap only)."""
    file_size_mb: int = 32
    """RLIMIT_FSIZE: largest file a program may write."""
    max_processes: int = 64
    """RLIMIT_NPROC (threads count too)."""
    max_code_bytes: int = 1 << 20
    compile_time_limit_s: float = 20.0
    compile_memory_mb: int = 2048

    # --- where things are ----------------------------------------------------------------------------------
    python: str = "/usr/bin/python3"
    """The interpreter inside the sandbox: a system one, since home and project folders are not mounted."""
    gxx: str = "/usr/bin/g++"
    bwrap: str = "bwrap"
    prlimit: str = "/usr/bin/prlimit"
    shell: str = "/bin/sh"
    """Launcher inside the sandbox: prints the start marker, then execs prlimit and the program."""
    zygote: Literal["auto", "c", "python"] = "auto"
    """The per-worker launcher inside bwrap: ``c`` (zygote.c, compiled once with the host's C compiler and cached),
    ``python`` (zygote.py, ~2 ms more CPU per execution) or ``auto`` (c when a compiler exists)."""
    user_prefix: str = "mfsbx"
    """Worker i runs as user ``{user_prefix}{i}`` when the server runs as root (sandbox/setup_system.sh)."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"sandbox workers must be >= 1, got {self.workers}")
        if self.zygote not in ("auto", "c", "python"):
            raise ConfigError(f"sandbox zygote must be 'auto', 'c' or 'python', got {self.zygote!r}")
        if self.isolation not in ("bwrap", "none"):
            raise ConfigError(f"sandbox isolation must be 'bwrap' or 'none', got {self.isolation!r}")
        if self.queue_max < 1:
            raise ConfigError("sandbox queue_max must be >= 1")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} out of range")
        if self.returned_output_bytes > self.max_output_bytes:
            raise ConfigError("returned_output_bytes must not exceed max_output_bytes")
