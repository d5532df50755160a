"""``mathfirst-hpc sandbox serve|run``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import click

from ..errors import MathfirstError

_LANGUAGE_BY_SUFFIX = {".py": "python", ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp"}
isolation_option = click.option("--isolation", type=click.Choice(["bwrap", "none"]), default="bwrap",
                                 show_default=True,
                                 help="bwrap: a fresh namespace sandbox per execution; none: rlimits only (unsafe).")


@click.group()
def sandbox() -> None:
    """Code-execution sandbox: an isolated HTTP queue service and one-off runs."""


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: all interfaces).")
@click.option("--port", default=8765, show_default=True, type=int, help="TCP port (0: any free port).")
@click.option("--workers", default=2, show_default=True, type=int, help="Concurrent executions.")
@isolation_option
@click.option("--queue-max", default=10_000, show_default=True, type=int,
              help="Jobs waiting at most; beyond, submissions get HTTP 429.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Record the address in RUN_DIR/sandbox/address.json while serving.")
def serve(host: str, port: int, workers: int, isolation: str, queue_max: int, run_dir: Path | None) -> None:
    """Start the sandbox HTTP queue service (stops gracefully on SIGTERM/SIGINT)."""
    from ..sandbox.config import SandboxConfig
    from ..sandbox.launch import clear_address, record_address
    from ..sandbox.server import serve_forever  # warns itself when isolation is none

    cfg = SandboxConfig(host=host, port=port, workers=workers, isolation=isolation, queue_max=queue_max)

    def started(server) -> None:
        where = record_address(run_dir, cfg, server.port)["url"] if run_dir else server.url
        click.echo(f"sandbox server listening on {where} ({workers} workers, isolation {isolation})", err=True)

    try:
        asyncio.run(serve_forever(cfg, on_started=started))
    finally:
        if run_dir:
            clear_address(run_dir, os.getpid())


@sandbox.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--stdin", "stdin_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="File fed to the program's standard input.")
@click.option("--time-limit", "time_limit_s", default=5.0, show_default=True, type=float,
              help="CPU seconds (the wall-clock kill comes at 2x + 1 s).")
@click.option("--memory-mb", default=512, show_default=True, type=int, help="Address-space limit in MiB.")
@click.option("--language", type=click.Choice(["python", "cpp"]), default=None,
              help="Default: from the file suffix (.py, .cpp/.cc/.cxx).")
@isolation_option
def run_one(file: Path, stdin_file: Path | None, time_limit_s: float, memory_mb: int, language: str | None,
            isolation: str) -> None:
    """Run one program with the sandbox's isolation and print a JSON result."""
    from ..sandbox.config import SandboxConfig
    from ..sandbox.runner import run_one_sync
    from ..sandbox.server import UNSAFE_WARNING
    from ..sandbox.types import ExecJob

    language = language or _LANGUAGE_BY_SUFFIX.get(file.suffix)
    if language is None:
        raise MathfirstError(f"cannot tell the language of {file.name}", hint="pass --language python|cpp")
    if isolation == "none":
        click.echo(UNSAFE_WARNING, err=True)
    job = ExecJob(language=language, code=file.read_text(encoding="utf-8", errors="replace"),
                  stdin=stdin_file.read_text(encoding="utf-8", errors="replace") if stdin_file else "",
                  time_limit_s=time_limit_s, memory_mb=memory_mb)
    try:
        job.validate()
    except ValueError as exc:
        raise MathfirstError(str(exc)) from None
    result = run_one_sync(job, SandboxConfig(isolation=isolation))
    fields = ("status", "exit_code", "stdout", "stderr", "wall_s", "detail")
    click.echo(json.dumps({key: getattr(result, key) for key in fields}))
    sys.exit(1 if result.status == "sandbox_error" else 0)
