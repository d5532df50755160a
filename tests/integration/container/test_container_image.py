"""The sandbox container image built here (``sandbox/build_image.sh``: debootstrap base, ``podman import``,
``sandbox/Dockerfile`` on top) and the server running in it: health, per-worker uids, the profile that names the
image, and a clean stop. The hostile-code and HumanEval checks against the container live beside their host
versions (``test_sandbox_hostile.py``, ``test_sandbox_humaneval.py``, parameter ``container``).

Marked ``container``: needs rootful podman and the image; skipped, saying why, without them."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from mathfirst_hpc.launch.profiles import load_profile
from mathfirst_hpc.sandbox import ExecJob, SandboxClient, start_local_server
from mathfirst_hpc.sandbox.container import (DEFAULT_IMAGE, IMAGE_ENV, podman_command, start_container_server,
                                             why_unavailable)
from mathfirst_hpc.sandbox.isolation import SandboxUnavailableError

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="module")
def image() -> str:
    reason = why_unavailable()
    if reason:
        pytest.skip(f"sandbox container unavailable: {reason}")
    return DEFAULT_IMAGE


def _running(name: str) -> bool:
    names = subprocess.run([*podman_command(), "ps", "--format", "{{.Names}}"], capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()
    return name in names


def test_the_profile_exports_the_image_and_start_local_server_uses_it(image, monkeypatch) -> None:
    setup = load_profile("local-dev-container").setup
    exported = [line.split("=", 1)[1] for line in setup if line.startswith(f"export {IMAGE_ENV}=")]
    assert exported == [image]
    monkeypatch.setenv(IMAGE_ENV, exported[0])
    handle = start_local_server(2, "bwrap")
    with handle as (url, _stop):
        assert _running(handle.name)
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            health = json.loads(response.read())
        assert health["isolation"] == "bwrap" and health["workers"] == 2
        code = "import os, time\ntime.sleep(0.5)\nprint(os.getuid())"
        results = SandboxClient(url).run_batch_sync([ExecJob(code=code) for _ in range(4)])
        uids = {int(r.stdout) for r in results}
        assert len(uids) == 2 and 0 not in uids  # one unprivileged uid per worker inside the container too
    deadline = time.monotonic() + 30
    while _running(handle.name):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    print(f"container start to healthy: {handle.start_s:.2f} s")


def test_cpp_and_limits_in_the_container(image) -> None:
    add = "#include <iostream>\nint main(){long a,b; std::cin>>a>>b; std::cout<<a+b<<\"\\n\";}\n"
    with start_container_server(1, image) as (url, _stop):
        results = SandboxClient(url).run_batch_sync([
            ExecJob(language="cpp", code=add, tests=[{"input": "2 3", "output": "5"}]),
            ExecJob(code="while True:\n    pass\n", time_limit_s=1),
            ExecJob(code="import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n")])
    assert results[0].passed is True
    assert results[1].status == "timeout"
    assert results[2].status == "runtime_error" and "unreachable" in results[2].stderr


def test_a_missing_image_is_refused_with_a_hint(image) -> None:
    with pytest.raises(SandboxUnavailableError) as refused:
        start_container_server(1, "localhost/mathfirst-no-such-image:latest")
    assert "not built" in str(refused.value) and "build_image.sh" in refused.value.one_line()
