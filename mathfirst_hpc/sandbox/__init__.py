"""Code-execution sandbox: per-execution isolation (bubblewrap + rlimits + unprivileged uids), an asyncio HTTP
queue service, and an async batched client.

- ``types.py``      ExecJob / ExecResult and the statuses (the wire format)
- ``isolation.py``  one process in fresh namespaces inside its worker's bwrap sandbox: what is and is not isolated
- ``zygote.py``     the per-worker launcher inside that sandbox (stdlib only, run by the system python3)
- ``harness.py``    stdin/stdout and function-call (HumanEval-style) test harnesses
- ``runner.py``     one job: compile, run its tests, classify; shared by the server and ``sandbox run``
- ``server.py``     the aiohttp queue service and ``start_local_server``
- ``client.py``     ``SandboxClient``: batched, retrying; sandbox_error means "not scored"
- ``launch.py``     the server's address in the run dir
- ``container.py``  the server inside its container image (podman; image from ``sandbox/build_image.sh``)
"""

from .client import SandboxClient
from .server import start_local_server
from .types import STATUSES, ExecJob, ExecResult

__all__ = ["STATUSES", "ExecJob", "ExecResult", "SandboxClient", "start_local_server"]
