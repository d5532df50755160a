"""The real sandbox server (bwrap isolation): queue under load, 429, distinct uids per worker, C++, sandbox
failures reported as not scored, refusal to start without isolation, and ``sandbox serve`` end to end
(address recorded in the run dir, graceful SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.sandbox import ExecJob, SandboxClient, start_local_server
from mathfirst_hpc.sandbox.isolation import SandboxUnavailableError
from mathfirst_hpc.sandbox.launch import find_server

pytestmark = [pytest.mark.sandbox,
              pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap missing: run sandbox/setup_system.sh")]
CLI = str(Path(sys.executable).with_name("mathfirst-hpc"))


@pytest.fixture(scope="module")
def server():
    try:
        handle = start_local_server(2, "bwrap", shutdown_linger_s=0.2)
    except SandboxUnavailableError as exc:
        pytest.skip(f"sandbox unavailable here: {exc.one_line()}")
    with handle as (url, _stop):
        yield url


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_python_styles_through_the_server(server) -> None:
    jobs = [ExecJob(code="print(int(input()) * 2)", tests=[{"input": "2", "output": "4"}, {"input": "5", "output": "10"}]),
            ExecJob(code="print(int(input()) * 3)", tests=[{"input": "2", "output": "4"}]),
            ExecJob(code="def add(a, b):\n    return a + b\n", tests=["assert add(1, 2) == 3", "assert add(0, 0) == 0"]),
            ExecJob(code="def add(a, b):\n    return a - b\n", tests=["assert add(1, 2) == 3", "assert add(0, 0) == 0"]),
            ExecJob(code="print('hi')")]
    results = SandboxClient(server).run_batch_sync(jobs)
    assert [r.passed for r in results] == [True, False, True, False, None]
    assert [(r.tests_passed, r.tests_total) for r in results] == [(2, 2), (0, 1), (2, 2), (1, 2), (0, 0)]
    assert results[1].detail == "test 0: wrong answer" and results[4].stdout == "hi\n"


def test_cpp_through_the_server(server) -> None:
    add = "#include <iostream>\nint main(){long a,b; std::cin>>a>>b; std::cout<<a+b<<\"\\n\";}\n"
    func = "#include <cassert>\nint sq(int x){return x*x;}\n"
    jobs = [ExecJob(language="cpp", code=add, tests=[{"input": "2 3", "output": "5"}, {"input": "-1 1", "output": "0"}]),
            ExecJob(language="cpp", code=func, tests=["int main(){ assert(sq(3) == 9); return 0; }"]),
            ExecJob(language="cpp", code=func, tests=["int main(){ assert(sq(3) == 8); return 0; }"]),
            ExecJob(language="cpp", code="int main() { return undefined_name; }", tests=["// nothing"]),
            ExecJob(language="cpp", code="#include <vector>\nint main(){ std::vector<char> v; while(true) v.resize(v.size()*2+1024); }",
                    memory_mb=128)]
    results = SandboxClient(server).run_batch_sync(jobs)
    assert [r.passed for r in results[:4]] == [True, True, False, False]
    assert results[2].status == "runtime_error" and results[3].detail == "compilation failed"
    assert results[4].status == "memory"


def test_concurrent_workers_run_as_distinct_unprivileged_uids(server) -> None:
    code = "import os, time\ntime.sleep(0.5)\nprint(os.getuid())"
    results = SandboxClient(server).run_batch_sync([ExecJob(code=code) for _ in range(4)])
    uids = {int(r.stdout) for r in results}
    assert len(uids) == 2 and 0 not in uids


def test_health_answers_within_a_second_with_2000_jobs_queued_then_shutdown_fails_them_explicitly() -> None:
    url, stop = start_local_server(2, "bwrap", shutdown_grace_s=5, shutdown_linger_s=2)
    jobs = [ExecJob(code="import time\ntime.sleep(0.3)", expected_output="").to_dict() for _ in range(2000)]

    async def body() -> dict:
        async with aiohttp.ClientSession() as http:
            ids = (await (await http.post(f"{url}/v1/jobs", json={"jobs": jobs})).json())["ids"]
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            health = await (await http.get(f"{url}/health")).json()
            latency_s = time.perf_counter() - started
            stopping = asyncio.get_running_loop().run_in_executor(None, stop)
            results: dict = {}
            while len(results) < len(ids):
                try:
                    reply = await (await http.post(f"{url}/v1/results", json={"ids": ids, "wait_s": 1})).json()
                except aiohttp.ClientError:
                    break
                results.update(reply["results"])
            await stopping
            return {"health": health, "latency_s": latency_s, "results": [results.get(i) for i in ids]}

    got = asyncio.run(body())
    assert got["latency_s"] < 1.0 and got["health"]["queue_depth"] > 1900
    statuses = [r["status"] for r in got["results"] if r is not None]
    assert len(statuses) == 2000
    assert statuses.count("ok") >= 2  # the running ones finished
    assert statuses.count("ok") + statuses.count("sandbox_error") == 2000  # the rest: not run, not wrong
    assert all(r["passed"] is None for r in got["results"] if r["status"] == "sandbox_error")


def test_full_queue_gets_429_with_retry_after_and_the_client_waits_it_out() -> None:
    with start_local_server(1, "bwrap", queue_max=5, shutdown_linger_s=0.2) as (url, _stop):
        body = json.dumps({"jobs": [ExecJob(code="import time\ntime.sleep(0.2)").to_dict()] * 5}).encode()
        request = urllib.request.Request(f"{url}/v1/jobs", data=body, headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 429 and int(refused.value.headers["Retry-After"]) >= 1
        results = SandboxClient(url, timeout_s=30).run_batch_sync([ExecJob(code="print(1)")] * 12)
        assert [r.status for r in results] == ["ok"] * 12
        assert _get(f"{url}/metrics")["rejected_429"] >= 5


@pytest.mark.parametrize("zygote", ["c", "python"])
def test_nothing_of_a_job_survives_into_the_next_one_on_the_same_worker(zygote: str) -> None:
    """One worker's jobs share its long-lived sandbox (the zygote): files in /tmp and /dev/shm, SysV IPC and
    background processes of one job must be gone when the next starts."""
    leave = ("import os, subprocess, sys\n"
             "open('/tmp/leak', 'w').write('x'); open('/dev/shm/leak', 'w').write('x')\n"
             "import ctypes; libc = ctypes.CDLL(None); print(libc.shmget(0x4d46, 4096, 0o1666))\n"
             "subprocess.Popen(['sleep', '987.5'], start_new_session=True, stdout=subprocess.DEVNULL,"
             " stderr=subprocess.DEVNULL)\n")
    look = ("import os, ctypes\n"
            "print(sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm')))\n"
            "print(ctypes.CDLL(None).shmget(0x4d46, 0, 0))\n"
            "print([open(f'/proc/{p}/cmdline','rb').read() for p in os.listdir('/proc') if p.isdigit()])\n")
    with start_local_server(1, "bwrap", shutdown_linger_s=0.2, zygote=zygote) as (url, _stop):
        first, second = SandboxClient(url).run_batch_sync([ExecJob(code=leave), ExecJob(code=look)])
    assert first.status == "ok" and int(first.stdout) >= 0, first  # the segment was created
    listing, segment, processes = second.stdout.splitlines()
    assert listing == "[] []"
    assert int(segment) == -1  # no such segment: a fresh ipc namespace
    assert "987.5" not in processes, processes


def test_the_python_zygote_runs_the_same_jobs_the_same_way() -> None:
    """zygote.py is the fallback where no C compiler exists: same protocol, same outcomes."""
    jobs = [ExecJob(code="print(int(input()) * 2)", tests=[{"input": "2", "output": "4"}]),
            ExecJob(code="import os\nprint(os.getuid(), os.getpid(), sorted(os.listdir('/tmp')))"),
            ExecJob(code="while True:\n    pass\n", time_limit_s=1),
            ExecJob(code="import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"),
            ExecJob(code="blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n", memory_mb=128),
            ExecJob(language="cpp", code="#include <cstdio>\nint main(){ return std::remove(\"/sandbox/build/a.out\") == 0; }",
                    tests=["// nothing"])]
    outcomes = {}
    for zygote in ("c", "python"):
        with start_local_server(1, "bwrap", shutdown_linger_s=0.2, zygote=zygote) as (url, _stop):
            results = SandboxClient(url).run_batch_sync(jobs)
        # (the uid is left out: another sandbox server on this machine may hold the first worker user)
        outcomes[zygote] = [(r.status, r.passed, r.stdout.split()[1:] if i == 1 else r.stdout if i != 3 else "")
                            for i, r in enumerate(results)]
    assert outcomes["c"] == outcomes["python"]
    assert [status for status, _, _ in outcomes["c"]] == ["ok", "ok", "timeout", "output_limit", "memory", "ok"]
    assert outcomes["c"][1][2] == ["2", "[]"]  # pid 2 of its own namespace, an empty /tmp
    assert outcomes["c"][5][1] is True  # the compiled binary could not delete itself: /sandbox/build is read-only


def test_a_broken_sandbox_is_reported_not_scored_never_wrong() -> None:
    handle = start_local_server(1, "bwrap", shutdown_linger_s=0.2)
    with handle as (url, _stop):
        # Break each job's setup after the start-up check: the program's exec now fails inside the zygote.
        handle.running.service.isolation.cfg.python = "/nonexistent/python3"
        results = SandboxClient(url, max_retries=2).run_batch_sync(
            [ExecJob(code="print(1)", tests=[{"input": "", "output": "1"}])])
        assert results[0].status == "sandbox_error" and results[0].passed is None and not results[0].scored
        assert "not scored" in results[0].detail and "did not start" in results[0].detail
        assert "/nonexistent/python3" in results[0].detail
        assert _get(f"{url}/metrics")["by_status"]["sandbox_error"] == 3  # first try + 2 retries


def test_a_dead_zygote_is_replaced_and_a_job_it_ran_is_not_scored() -> None:
    handle = start_local_server(1, "bwrap", shutdown_linger_s=0.2)
    with handle as (url, _stop):
        isolation = handle.running.service.isolation
        client = SandboxClient(url, max_retries=0)
        assert client.run_batch_sync([ExecJob(code="print(1)", expected_output="1")])[0].passed is True
        zygote = isolation._zygotes[0]
        os.killpg(zygote.proc.pid, signal.SIGKILL)  # the whole per-worker sandbox dies between jobs
        time.sleep(0.5)
        again = client.run_batch_sync([ExecJob(code="print(1)", expected_output="1")])[0]
        assert again.passed is True and isolation._zygotes[0] is not zygote  # nothing ran: handed to a new one
        # Dying while a job runs is not retried: that job is reported unscored, the next one gets a new zygote.
        zygote = isolation._zygotes[0]
        threading.Timer(1.0, os.killpg, (zygote.proc.pid, signal.SIGKILL)).start()
        broken = client.run_batch_sync([ExecJob(code="import time\ntime.sleep(5)", time_limit_s=10)])[0]
        assert broken.status == "sandbox_error" and "sandbox failed" in broken.detail and broken.passed is None
        assert client.run_batch_sync([ExecJob(code="print(1)", expected_output="1")])[0].passed is True


def test_server_refuses_to_start_without_bwrap() -> None:
    with pytest.raises(SandboxUnavailableError, match="not installed"):
        start_local_server(1, "bwrap", bwrap="no-such-bwrap")
    folder = Path(tempfile.mkdtemp(prefix="fake-bwrap-"))  # readable by the sandbox users
    try:
        folder.chmod(0o755)
        fake = folder / "bwrap"  # what bwrap says when user namespaces are off
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
        fake.chmod(0o755)
        with pytest.raises(SandboxUnavailableError) as refused:
            start_local_server(1, "bwrap", bwrap=str(fake))
        assert "No permissions to creating new namespace" in str(refused.value)
        assert "user namespaces" in refused.value.one_line()
    finally:
        shutil.rmtree(folder)


def test_isolation_none_runs_and_warns(caplog) -> None:
    with start_local_server(1, "none", shutdown_linger_s=0.2) as (url, _stop):
        result = SandboxClient(url).run_batch_sync([ExecJob(code="print(6 * 7)", expected_output="42")])[0]
    assert result.passed is True
    assert "isolation is 'none'" in caplog.text


def test_serve_records_its_address_and_stops_gracefully_on_sigterm(tmp_path) -> None:
    proc = subprocess.Popen([CLI, "sandbox", "serve", "--port", "0", "--workers", "1", "--run-dir", str(tmp_path)],
                            stderr=subprocess.PIPE, text=True)
    try:
        address = RunPaths(tmp_path).sandbox_address
        deadline = time.monotonic() + 60
        while find_server(tmp_path) is None:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        url = json.loads(address.read_text())["url"]
        result = SandboxClient(url).run_batch_sync([ExecJob(code="print(1)", expected_output="1")])[0]
        assert result.passed is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not address.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "listening on" in proc.stderr.read()


def test_serve_refusal_is_one_line_exit_2() -> None:
    env = {**os.environ, "PATH": "/nonexistent"}  # no bwrap on PATH
    proc = subprocess.run([CLI, "sandbox", "serve", "--port", "0"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: bubblewrap") and proc.stderr.count("\n") == 1
