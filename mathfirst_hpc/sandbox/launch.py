"""Where a run's sandbox server lives: record its address in the run dir, and find it again.

``sandbox serve --run-dir RUN`` (what ``sandbox/sandbox.sbatch`` runs on a Slurm node) writes
``RunPaths(RUN).sandbox_address`` atomically once the server answers, and removes it on a clean shutdown. The
rewards step calls ``find_server(RUN)``: the recorded URL if its ``/health`` answers, else ``None`` (then start
one, e.g. ``start_local_server``). The file:

    {"url": "http://node17:8765", "host": "node17", "port": 8765, "pid": 1234, "workers": 16,
     "isolation": "bwrap", "slurm_job_id": "4242", "started_at": "2025-...Z"}
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..atomic import write_json
from ..paths import RunPaths
from .config import SandboxConfig


def advertised_host(bind_host: str) -> str:
    """The name other nodes should use: the node's hostname when bound to all interfaces."""
    if bind_host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return bind_host


def record_address(run_dir: Path | str, cfg: SandboxConfig, port: int) -> dict:
    host = advertised_host(cfg.host)
    info = {"url": f"http://{host}:{port}", "host": host, "port": port, "pid": os.getpid(),
            "workers": cfg.workers, "isolation": cfg.isolation,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(RunPaths(run_dir).sandbox_address, info)
    return info


def clear_address(run_dir: Path | str, pid: int | None = None) -> None:
    """Remove the record if it is still ours (a newer server may have replaced it)."""
    path = RunPaths(run_dir).sandbox_address
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    if pid is None or info.get("pid") == pid:
        path.unlink(missing_ok=True)


def read_address(run_dir: Path | str) -> dict | None:
    try:
        return json.loads(RunPaths(run_dir).sandbox_address.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def find_server(run_dir: Path | str, timeout_s: float = 2.0) -> str | None:
    """The recorded server's URL if it answers ``/health`` now, else None."""
    info = read_address(run_dir)
    if not info or "url" not in info:
        return None
    try:
        with urllib.request.urlopen(f"{info['url']}/health", timeout=timeout_s) as response:
            return info["url"] if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None
