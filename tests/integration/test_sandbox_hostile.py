"""Hostile programs, one behaviour per test, each run through ``mathfirst-hpc sandbox run`` (a real CLI process)
and through the HTTP server: both must contain it and report the same status.

All cases run once per server (CLI processes a few at a time, the server as one batch); each test then checks
one case. Every test runs twice: against the in-process server on this host (with the CLI route), and against
the server inside the sandbox container image (marked ``container``: needs rootful podman and the image from
``sandbox/build_image.sh``; skipped, saying why, without them). Needs bubblewrap, user namespaces and the
sandbox users (``sandbox/setup_system.sh``).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mathfirst_hpc.sandbox import ExecJob, SandboxClient, start_local_server
from mathfirst_hpc.sandbox.container import start_container_server, why_unavailable
from mathfirst_hpc.sandbox.isolation import SandboxUnavailableError

pytestmark = [pytest.mark.sandbox, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap missing: run sandbox/setup_system.sh")]

REPO = Path(__file__).resolve().parents[2]
SECRET = "mf-sandbox-secret-7f3a9c"
ORPHAN_MARK = "987.125"  # `sleep 987.125`: a process we can look for on the host afterwards
CLI = [str(Path(sys.executable).with_name("mathfirst-hpc")), "sandbox", "run"]


@dataclass
class Case:
    code: str
    expected: set[str]
    stdin: str = ""
    time_limit_s: float = 5.0
    memory_mb: int = 256
    results: dict = field(default_factory=dict)  # route -> {"status", "stdout", "wall_s", ...}


def _cases(listen_port: int, host_dir: Path) -> dict[str, Case]:
    def py(src: str) -> str:
        return textwrap.dedent(src).strip() + "\n"

    return {
        "infinite_loop": Case(py("while True:\n    pass"), {"timeout"}, time_limit_s=1),
        "sleep_loop": Case(py("import time\nwhile True:\n    time.sleep(0.05)"), {"timeout"}, time_limit_s=1),
        "memory_bomb": Case(py("""
            blocks = []
            while True:
                blocks.append(bytearray(16 << 20))
            """), {"memory"}),
        "fork_bomb": Case(py("""
            import os
            while True:
                os.fork()
            """), {"runtime_error", "timeout"}, time_limit_s=2),
        "network_loopback": Case(py(f"""
            import socket
            socket.create_connection(("127.0.0.1", {listen_port}), timeout=2)
            print("connected")
            """), {"runtime_error"}),
        "dns": Case(py("""
            import socket
            print(socket.gethostbyname("pypi.org"))
            """), {"runtime_error"}),
        "write_outside_tmp": Case(py(f"""
            for path in [{str(host_dir / 'escape.txt')!r}, "/usr/escape", "/sandbox/escape", "/escape",
                         "/etc/escape", "/dev/escape", "/sandbox/build/escape", "/proc/escape"]:
                try:
                    open(path, "w").write("x")
                    print("WROTE", path)
                except OSError:
                    pass
            open("/tmp/inside.txt", "w").write("fine")
            print("TMP OK")
            open("/escape", "w")
            """), {"runtime_error"}),
        "read_shadow": Case(py("print(open('/etc/shadow').read())"), {"runtime_error"}),
        "server_environment": Case(py("""
            import glob, os
            print(dict(os.environ))
            for path in ["/proc/1/environ", *glob.glob("/proc/*/environ")]:
                try:
                    print(path, open(path, "rb").read())
                except OSError as exc:
                    print(path, exc)
            """), {"ok"}),
        "project_folder": Case(py(f"""
            import os
            for path in [{str(REPO)!r}, {str(host_dir)!r}, "/root", "/home", "/work"]:
                try:
                    print("SAW", path, os.listdir(path))
                except OSError:
                    pass
            open({str(REPO / 'pyproject.toml')!r}).read()
            """), {"runtime_error"}),
        "huge_output": Case(py("""
            import sys
            while True:
                sys.stdout.write("x" * 65536)
            """), {"output_limit"}),
        "orphan_child": Case(py(f"""
            import subprocess
            subprocess.Popen(["sleep", "{ORPHAN_MARK}"], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print("left a child behind")
            """), {"ok"}),
        "attack_the_launcher": Case(py("""
            import os, signal
            for path in ["/proc/1/environ", "/proc/1/mem"]:
                try:
                    open(path, "rb").read(1)
                    print("READ", path)
                except OSError:
                    pass
            for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):
                try:
                    os.kill(1, sig)
                except OSError:
                    pass
            print("init alive", os.path.exists("/proc/1"))
            """), {"ok"}),
        "stdin_echo": Case(py("""
            import sys
            print(sys.stdin.read()[::-1])
            """), {"ok"}, stdin="abc\ndef"),
        "stdin_closed": Case(py("print(input())"), {"runtime_error"}),
        "not_root": Case(py("""
            import os
            caps = [l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1]
            assert os.getuid() != 0 and os.geteuid() != 0 and int(caps, 16) == 0, (os.getuid(), caps)
            print(os.getuid())
            """), {"ok"}),
    }


def _run_cli(case: Case, workdir: Path, name: str) -> dict:
    source = workdir / f"{name}.py"
    source.write_text(case.code)
    args = [*CLI, str(source), "--time-limit", str(case.time_limit_s), "--memory-mb", str(case.memory_mb)]
    if case.stdin:
        (workdir / f"{name}.in").write_text(case.stdin)
        args += ["--stdin", str(workdir / f"{name}.in")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MF_SECRET": SECRET})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module", params=["host", pytest.param("container", marks=pytest.mark.container)])
def outcome(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hostile")
    host_dir = tmp_path_factory.mktemp("host_secret")
    (host_dir / "secret.txt").write_text(SECRET)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    cases = _cases(listener.getsockname()[1], host_dir)
    os.environ["MF_SECRET"] = SECRET  # the in-process server's environment holds the secret too
    try:
        if request.param == "container":
            reason = why_unavailable()
            if reason:
                pytest.skip(f"sandbox container unavailable: {reason}")
            server = start_container_server(2, env={"MF_SECRET": SECRET})  # the containerized server's env too
        else:
            try:
                server = start_local_server(2, "bwrap", shutdown_linger_s=0.2)
            except SandboxUnavailableError as exc:
                pytest.skip(f"sandbox unavailable here: {exc.one_line()}")
        with server as (url, _stop), concurrent.futures.ThreadPoolExecutor(3) as pool:
            cli = ({name: pool.submit(_run_cli, case, workdir, name) for name, case in cases.items()}
                   if request.param == "host" else {})
            jobs = [ExecJob(code=c.code, stdin=c.stdin, time_limit_s=c.time_limit_s, memory_mb=c.memory_mb)
                    for c in cases.values()]
            for case, result in zip(cases.values(), SandboxClient(url).run_batch_sync(jobs)):
                case.results["server"] = result.to_dict()
            for name, future in cli.items():
                cases[name].results["cli"] = future.result()
    finally:
        os.environ.pop("MF_SECRET", None)
    try:
        accepted = listener.accept()
        accepted[0].close()
        connections = 1
    except BlockingIOError:
        connections = 0
    listener.close()
    return {"cases": cases, "connections": connections, "host_dir": host_dir, "where": request.param}


def _check(outcome, name: str) -> Case:
    case = outcome["cases"][name]
    statuses = {route: r["status"] for route, r in case.results.items()}
    assert set(statuses) == ({"cli", "server"} if outcome["where"] == "host" else {"server"})
    assert len(set(statuses.values())) == 1, (statuses, case.results)
    assert statuses["server"] in case.expected, case.results
    for result in case.results.values():
        assert SECRET not in result["stdout"] + result["stderr"]
    return case


def test_infinite_loop_hits_the_cpu_limit(outcome) -> None:
    case = _check(outcome, "infinite_loop")
    assert all(r["wall_s"] < 10 for r in case.results.values())


def test_sleep_loop_hits_the_wall_clock_limit(outcome) -> None:
    case = _check(outcome, "sleep_loop")
    assert all("wall-clock" in r["detail"] for r in case.results.values())


def test_memory_bomb_hits_the_memory_limit(outcome) -> None:
    _check(outcome, "memory_bomb")


def test_fork_bomb_is_contained(outcome) -> None:
    case = _check(outcome, "fork_bomb")
    assert all(r["wall_s"] < 10 for r in case.results.values())


def test_no_network_not_even_the_hosts_loopback(outcome) -> None:
    case = _check(outcome, "network_loopback")
    assert outcome["connections"] == 0
    assert all("connected" not in r["stdout"] for r in case.results.values())


def test_no_dns(outcome) -> None:
    _check(outcome, "dns")


def test_writes_outside_tmp_fail(outcome) -> None:
    case = _check(outcome, "write_outside_tmp")
    for result in case.results.values():
        assert "WROTE" not in result["stdout"] and "TMP OK" in result["stdout"]
    assert not (outcome["host_dir"] / "escape.txt").exists()


def test_etc_shadow_is_unreadable(outcome) -> None:
    case = _check(outcome, "read_shadow")
    assert all("root:" not in r["stdout"] for r in case.results.values())


def test_server_environment_is_invisible(outcome) -> None:
    case = _check(outcome, "server_environment")
    assert all("/proc/1/environ" in r["stdout"] for r in case.results.values())  # it looked, found nothing


def test_project_home_and_run_folders_are_invisible(outcome) -> None:
    case = _check(outcome, "project_folder")
    assert all("SAW" not in r["stdout"] for r in case.results.values())


def test_huge_output_is_cut_at_the_limit(outcome) -> None:
    case = _check(outcome, "huge_output")
    assert all(len(r["stdout"]) < (64 << 10) for r in case.results.values())  # returned part is truncated


def test_orphaned_background_child_does_not_outlive_the_job(outcome) -> None:
    case = _check(outcome, "orphan_child")
    assert all(r["wall_s"] < 5 for r in case.results.values())
    survivors = []
    for proc in Path("/proc").iterdir():
        try:
            if ORPHAN_MARK.encode() in (proc / "cmdline").read_bytes():
                survivors.append(proc.name)
        except OSError:
            continue
    assert survivors == []


def test_the_namespace_init_can_be_neither_read_nor_signalled(outcome) -> None:
    case = _check(outcome, "attack_the_launcher")
    for result in case.results.values():
        assert "READ" not in result["stdout"] and "init alive True" in result["stdout"]


def test_stdin_is_delivered(outcome) -> None:
    case = _check(outcome, "stdin_echo")
    assert all(r["stdout"] == "fed\ncba\n" for r in case.results.values())


def test_closed_stdin_gives_eof_not_a_hang(outcome) -> None:
    case = _check(outcome, "stdin_closed")
    assert all("EOFError" in r["stderr"] for r in case.results.values())


def test_programs_run_unprivileged(outcome) -> None:
    case = _check(outcome, "not_root")
    assert all(int(r["stdout"]) != 0 for r in case.results.values())
