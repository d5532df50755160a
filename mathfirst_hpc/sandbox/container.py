"""The sandbox server inside its container image, started with podman on this machine.

    with start_container_server(workers=2) as (url, stop):      # podman, image localhost/mathfirst-sandbox
        SandboxClient(url).run_batch_sync(jobs)

The image comes from ``sandbox/build_image.sh`` (debootstrap base + ``sandbox/Dockerfile``, no registry). The
container runs the same server and the same bubblewrap isolation as the host (``isolation.py``), as root inside
with one ``mfsbx*`` user per worker; its port is published on the host's loopback only.

``start_local_server`` (``server.py``) starts this instead of an in-process server when the environment names an
image in ``MATHFIRST_SANDBOX_IMAGE`` (a cluster profile can export it in its ``setup`` lines, see
``slurm/profiles/local-dev-container.yaml``), so the reward and eval paths use the image unchanged.

Tested path (Debian 12 host, as root): podman 4.3 with ``--runtime runc`` (crun fails on cgroup-v1 hosts),
seccomp unconfined and ``unmask=ALL`` (bwrap inside creates user namespaces and mounts a fresh /proc), rlimits
passed explicitly (podman's defaults exceed what a root without CAP_SYS_RESOURCE may set). Apptainer
(``sandbox/sandbox.def``) is the path for clusters and is not tested here.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

from .isolation import SandboxUnavailableError

DEFAULT_IMAGE = "localhost/mathfirst-sandbox:latest"
IMAGE_ENV = "MATHFIRST_SANDBOX_IMAGE"
CONTAINER_PORT = 8765
NPROC_MAX = 32768  # runc could not set more than this as root without CAP_SYS_RESOURCE here


def podman_command(runtime: str = "runc") -> list[str]:
    return ["podman", "--runtime", runtime]


def why_unavailable(image: str = DEFAULT_IMAGE) -> str | None:
    """None when ``image`` can be run here with podman, else the reason (for skips and errors)."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc)"
    if os.geteuid() != 0:
        return "the sandbox container is tested with rootful podman only"
    probe = subprocess.run([*podman_command(), "image", "exists", image], capture_output=True, timeout=60,
                           check=False)
    if probe.returncode != 0:
        return f"image {image} not built (sudo sandbox/build_image.sh)"
    return None


def run_args(image: str, name: str, host_port: int, workers: int, env: dict[str, str] | None = None) -> list[str]:
    """``podman run`` for the server: detached, removed on exit, loopback-only port, what bwrap needs inside."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], NPROC_MAX)
    return [*podman_command(), "run", "--detach", "--rm", "--init", "--name", name,
            "--publish", f"127.0.0.1:{host_port}:{CONTAINER_PORT}",
            "--security-opt", "seccomp=unconfined", "--security-opt", "unmask=ALL",
            "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}",
            *[f"--env={key}={value}" for key, value in (env or {}).items()],
            image, "--workers", str(workers)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


class ContainerServer(tuple):
    """``(url, stop)`` like ``start_local_server``; also a context manager. ``name``, ``start_s``: the container
    and how long it took from ``podman run`` to a healthy server."""

    name: str
    start_s: float

    def __enter__(self) -> ContainerServer:
        return self

    def __exit__(self, *exc) -> None:
        self[1]()


def start_container_server(workers: int = 2, image: str | None = None, timeout_s: float = 120.0,
                           env: dict[str, str] | None = None) -> ContainerServer:
    """Start the server in a container and wait until ``/health`` answers; raises ``SandboxUnavailableError``
    (with the container's log) when it cannot run here. ``env``: extra variables of the server's environment."""
    image = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
    reason = why_unavailable(image)
    if reason:
        raise SandboxUnavailableError(f"sandbox container unavailable: {reason}",
                                      hint="sudo sandbox/build_image.sh builds the image")
    name = f"mathfirst-sandbox-{os.getpid()}-{secrets.token_hex(3)}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = subprocess.run(run_args(image, name, port, workers, env), capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    if proc.returncode != 0:
        raise SandboxUnavailableError(f"podman could not start {image}: {proc.stderr.strip()[-400:]}",
                                      hint="see sandbox/build_image.sh for the tested podman setup")

    stopped = []

    def stop() -> None:
        if stopped:
            return
        stopped.append(True)
        # SIGTERM: the server fails queued jobs, lets running ones finish, then exits; --rm removes it.
        subprocess.run([*podman_command(), "stop", "--time", "20", name], capture_output=True, timeout=60,
                       check=False)
        subprocess.run([*podman_command(), "rm", "--force", "--ignore", name], capture_output=True, timeout=60,
                       check=False)

    atexit.register(stop)  # a caller that never stops it still removes the container
    deadline = time.monotonic() + timeout_s
    while (health := _healthy(url)) is None:
        state = subprocess.run([*podman_command(), "inspect", "--format", "{{.State.Running}}", name],
                               capture_output=True, text=True, timeout=60, check=False).stdout.strip()
        if state != "true" or time.monotonic() > deadline:
            logs = subprocess.run([*podman_command(), "logs", name], capture_output=True, text=True, timeout=60,
                                  check=False)
            stop()
            raise SandboxUnavailableError(
                f"the sandbox container did not become healthy: {(logs.stdout + logs.stderr).strip()[-400:]}",
                hint="run it by hand as in sandbox/Dockerfile to see why")
        time.sleep(0.1)
    if health.get("isolation") != "bwrap":
        stop()
        raise SandboxUnavailableError(f"the sandbox container runs isolation {health.get('isolation')!r}")
    handle = ContainerServer((url, stop))
    handle.name = name
    handle.start_s = time.perf_counter() - started
    return handle
