"""Prelaunch (``slurm.prelaunch``, ``launch/phases.py``) on the real local Slurm cluster: a stage 2 of two
iterations whose driver is killed (SIGKILL) once it has submitted iteration 1's learner (with iteration 0's learner
running or waiting, iteration 1's rollout array waiting for its plan), then resumed, ends as the same stage
without prelaunch does (weights bit for bit, steps, data cursor), and no job ran twice: the resumed driver
re-attached to the prelaunched jobs still alive."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mathfirst_hpc.launch.driver import resume_run, submit_stages
from mathfirst_hpc.launch.slurm_state import job_states
from mathfirst_hpc.paths import RunPaths

from .support import TINY, assert_same_weights, copy_run, final_meta, final_weights, jobs_of, wait_final, wait_for

pytestmark = pytest.mark.slurm
TWO_ITERATIONS = [*TINY, "math_rl:steps=2"]


def _learner_of(run_dir: Path, iteration: int) -> list[str]:
    return [j for j, i in jobs_of(run_dir, "learner", "math_rl").items() if i["key"]["iteration"] == iteration]


def _prelaunched_array(run_dir: Path, iteration: int) -> list[str]:
    return [j for j, i in jobs_of(run_dir, "rollout", "math_rl").items()
            if i["key"].get("prelaunch") and i["key"]["iteration"] == iteration]


def test_prelaunch_with_a_killed_driver_matches_no_prelaunch(sft_run: Path, tmp_path: Path) -> None:
    reference = copy_run(sft_run, tmp_path / "reference")
    submit_stages(reference, "stage2", "local-dev", overrides=TWO_ITERATIONS)
    run_dir = copy_run(sft_run, tmp_path / "prelaunch")
    driver = submit_stages(run_dir, "stage2", "local-dev",
                           overrides=[*TWO_ITERATIONS, "math_rl:slurm.prelaunch=true"])[0].job_id
    wait_for(lambda: _learner_of(run_dir, 1), 300, "iteration 1's prelaunched learner")
    subprocess.run(["scancel", "--signal=KILL", driver], check=True)
    wait_for(lambda: job_states([driver])[driver] in ("FAILED", "CANCELLED", "COMPLETED"), 60, "the driver's end")
    resume_run(run_dir)
    wait_final(run_dir, "math_rl", timeout_s=420)
    wait_final(reference, "math_rl", timeout_s=420)

    assert_same_weights(final_weights(run_dir, "math_rl"), final_weights(reference, "math_rl"))
    mine, ref = final_meta(run_dir, "math_rl"), final_meta(reference, "math_rl")
    assert (mine["step"], mine["iteration"]) == (ref["step"], ref["iteration"]) and mine["iteration"] == 2
    for iteration in (0, 1):
        plan = lambda d: json.loads(RunPaths(d).iteration_plan("math_rl", iteration).read_text())  # noqa: E731
        assert plan(run_dir)["data_after"] == plan(reference)["data_after"]  # the data cursor
    learners = jobs_of(run_dir, "learner", "math_rl")
    assert len(learners) == 2 and all(i["key"]["prelaunch"] for i in learners.values())
    keys = [json.dumps(i["key"], sort_keys=True) for kind in ("rollout", "learner")
            for i in jobs_of(run_dir, kind, "math_rl").values()]
    assert len(keys) == len(set(keys)), "a job was submitted twice"
    assert len(_prelaunched_array(run_dir, 1)) == 4  # iteration 1's generation batch 0 ran prelaunched
