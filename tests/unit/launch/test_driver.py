"""Driver and run-level rules that need no cluster: targets, the stage-dependency refusal, the position a driver
reads from meta.json, launch.json, the job classes' resubmission, job-state helpers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cloudpickle
import pytest

from mathfirst_hpc.errors import ConfigError, RunDirError
from mathfirst_hpc.launch import driver
from mathfirst_hpc.launch.driver import (Submitted, describe, launch_profile, read_launch, submit_stages,
                                         target_stages, write_launch)
from mathfirst_hpc.launch.jobs import DriverJob, LearnerJob, RolloutTask
from mathfirst_hpc.launch.profiles import load_profile
from mathfirst_hpc.launch.slurm_state import is_alive
from mathfirst_hpc.loop import latest_position
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.records import JobEntry, LaunchRecord, RlState


def test_targets() -> None:
    assert target_stages("all") == ["sft", "math_rl", "joint_rl"]
    assert target_stages("stage2") == ["math_rl"] and target_stages("joint_rl") == ["joint_rl"]
    with pytest.raises(ConfigError, match="unknown stage"):
        target_stages("stage4")


@pytest.mark.parametrize("target, previous", [("stage2", "sft \\(stage1\\)"), ("stage3", "math_rl \\(stage2\\)")])
def test_stage_without_final_previous_is_refused_before_writing(tmp_path: Path, target: str, previous: str) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(RunDirError, match=f"has no final {previous}") as info:
        submit_stages(run_dir, target, "local")
    assert "--init-from" in info.value.one_line()
    assert not run_dir.exists()  # refused before anything was written


def test_previous_stage_final_or_pending_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = RunPaths(tmp_path / "run").make()
    Manifest(paths).set_stage("math_rl", status="final")
    assert driver._check_start(paths, "joint_rl", None, {}, "stage3") is None
    Manifest(paths).set_stage("math_rl", status="running")
    # stage 2's driver still pending: stage 3 waits on it (afterok)
    assert driver._check_start(paths, "joint_rl", None, {"math_rl": ("41", "PENDING")}, "stage3") == "41"
    with pytest.raises(RunDirError):
        driver._check_start(paths, "joint_rl", None, {"math_rl": ("41", "FAILED")}, "stage3")
    assert driver._check_start(paths, "joint_rl", "/some/ckpt", {}, "stage3") is None
    assert driver._check_start(paths, "joint_rl", None, {}, "stage3", from_base=True) is None


def test_start_from_base_needs_no_previous_stage(tmp_path: Path) -> None:
    """A stage with ``start_from: base`` is not refused for lack of a final previous stage (the driver then
    starts it the way a colocated run does: ``stage.stage_start``)."""
    paths = RunPaths(tmp_path / "run")
    assert not driver._starts_from_base(paths, "math_rl", "tiny", [])
    assert driver._starts_from_base(paths, "math_rl", "tiny", ["math_rl:start_from=base"])
    from mathfirst_hpc.config import load_stage_config
    from mathfirst_hpc.stage import stage_start

    cfg = load_stage_config("math_rl", overrides=["start_from=base"])
    assert stage_start(paths, cfg, None) is None
    with pytest.raises(RunDirError, match="needs a final sft"):
        stage_start(paths, load_stage_config("math_rl"), None)


def test_init_from_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--init-from"):
        submit_stages(tmp_path / "run", "stage3", "local", init_from=str(tmp_path / "nope"))


def test_position_reads_meta_only(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    assert latest_position(paths, "math_rl") == RlState()
    from mathfirst_hpc import checkpoint as ckpt

    cursor = {"drawn": 12}
    state = RlState(iteration=2, mini_batch=1, step=7, iteration_start_step=6, data_at_iteration_start=cursor)
    # the weights file holds something else: the driver must not need it
    ckpt.save_checkpoint(paths.checkpoint("math_rl", 7), {"x": 1}, state.meta())
    assert latest_position(paths, "math_rl") == state


def test_position_of_an_older_checkpoint_takes_the_cursor_from_its_state(tmp_path: Path) -> None:
    """Checkpoints written before meta.json held the data cursor keep resuming (one state file read)."""
    paths = RunPaths(tmp_path)
    from mathfirst_hpc import checkpoint as ckpt

    ckpt.save_checkpoint(paths.checkpoint("math_rl", 3), {"data_at_iteration_start": {"drawn": 4}},
                         {"iteration": 1, "step": 3, "mini_batch": 0})
    assert latest_position(paths, "math_rl") == RlState(1, 0, 3, 3, {"drawn": 4})


def test_launch_record_round_trip(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    with pytest.raises(RunDirError, match="never submitted"):
        read_launch(paths)
    profile = load_profile("example-pyxis")
    write_launch(paths, profile, ["math_rl", "joint_rl"], None, "tiny")
    launch = read_launch(paths)
    assert isinstance(launch, LaunchRecord)
    assert launch.stages == ["math_rl", "joint_rl"] and launch.preset == "tiny" and launch_profile(launch) == profile
    on_disk = json.loads(paths.launch_file.read_text())  # the format resume and child jobs read
    assert on_disk["stages"] == ["math_rl", "joint_rl"] and on_disk["profile"]["partition"] == profile.partition


def test_job_entries_round_trip_through_the_manifest(tmp_path: Path) -> None:
    manifest = Manifest(RunPaths(tmp_path))
    manifest.record_job("41", JobEntry("driver", "math_rl", {"kind": "driver", "stage": "math_rl"}, "slurm", "f/%j"))
    manifest.record_job("42", kind="rollout", stage="math_rl")
    jobs = manifest.jobs()
    assert jobs["41"].kind == "driver" and jobs["41"].key == {"kind": "driver", "stage": "math_rl"}
    assert jobs["42"].executor == "slurm" and jobs["42"].dependency is None
    assert manifest.read()["jobs"]["41"]["folder"] == "f/%j"  # plain JSON on disk


def test_jobs_resubmit_the_same_call_and_pickle(tmp_path: Path) -> None:
    for job in (DriverJob(str(tmp_path), "sft"), RolloutTask(str(tmp_path), "math_rl", 1, 0, 4, 2),
                LearnerJob(str(tmp_path), "math_rl", 1, "gloo")):
        again = pickle.loads(cloudpickle.dumps(job))
        assert again.__dict__ == job.__dict__
        delayed = job.checkpoint()
        assert delayed.function is job and delayed.args == () and delayed.kwargs == {}
    assert DriverJob.polls_safe_points and LearnerJob.polls_safe_points and not RolloutTask.polls_safe_points


def test_job_state_helpers() -> None:
    assert is_alive("PENDING") and is_alive("RUNNING") and is_alive("REQUEUED")
    assert not is_alive("COMPLETED") and not is_alive("CANCELLED") and not is_alive("") and not is_alive("UNKNOWN")


def test_describe() -> None:
    text = describe([Submitted("sft", None, note="already final"), Submitted("math_rl", "12"),
                     Submitted("joint_rl", "13", dependency="12")])
    assert text.splitlines() == ["sft: already final", "math_rl: driver job 12", "joint_rl: driver job 13 after 12"]
    one_job = describe([Submitted("math_rl", "14", kind="allocation")])
    assert one_job == "math_rl: allocation job 14"


def test_unknown_submit_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="submit mode 'ray' is unknown"):
        submit_stages(tmp_path / "run", "stage1", "local", mode="ray")
    assert not (tmp_path / "run").exists()
