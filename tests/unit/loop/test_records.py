"""The typed records (``mathfirst_hpc/records.py``): round trips, the on-disk formats older run dirs hold, and the
rank-0 rule for a half-done optimizer step."""

from __future__ import annotations

import json
import pickle

import torch

from mathfirst_hpc.learner.base import PartialStep
from mathfirst_hpc.records import (DriverRecord, IterationRecord, JobEntry, LaunchRecord, LearnerResult,
                                   RlState, RolloutResult, ShardEntry, partial_for_rank)


def test_rl_state_round_trip_and_meta_is_json() -> None:
    partial = PartialStep(1, {"w": torch.ones(2)}, {"loss": 0.5})
    state = RlState(3, 1, 7, 6, {"drawn": 12}, partial)
    assert RlState.from_dict(state.to_dict()) == state
    meta = json.loads(json.dumps(state.meta()))  # meta.json: no tensors
    assert "partial" not in meta and RlState.from_dict(meta) == RlState(3, 1, 7, 6, {"drawn": 12})


def test_rl_state_reads_checkpoints_of_older_writers() -> None:
    """Before iteration_start_step existed, an iteration always started at the saved step."""
    old = {"iteration": 2, "mini_batch": 0, "step": 5, "data_at_iteration_start": {"drawn": 8}, "backend": {}}
    assert RlState.from_dict(old) == RlState(2, 0, 5, 5, {"drawn": 8})


def test_next_iteration() -> None:
    done = RlState(3, 2, 9, 6, {"drawn": 12}).next_iteration({"drawn": 16})
    assert done == RlState(4, 0, 9, 9, {"drawn": 16})


def test_only_rank_0_restores_a_partial_step() -> None:
    partial = PartialStep(2, {"w": torch.full((2, 3), 4.0)}, {"loss": 1.5})
    assert partial_for_rank(partial, 0) is partial
    other = partial_for_rank(partial, 1)
    assert other.micro_done == 2 and torch.equal(other.grads["w"], torch.zeros(2, 3))
    assert other.metrics == {"loss": 0.0}
    assert torch.equal(partial.grads["w"], torch.full((2, 3), 4.0))  # the saved one is untouched
    assert partial_for_rank(None, 3) is None


def test_driver_record_reads_the_existing_driver_json_format(tmp_path) -> None:
    on_disk = {"iteration": 0, "policy_step": 0, "data_at_iteration_start": {"drawn": 0},
               "data_after": {"drawn": 8}, "kept_groups": 5, "metrics": {"reward_mean": 0.25, "gen_batches": 2},
               "timings": {"tasks/max_task_s": 3.0}, "written_by_a_newer_version": True}
    path = tmp_path / "driver.json"
    path.write_text(json.dumps(on_disk))
    record = DriverRecord.read(path)
    assert record.kept_groups == 5 and record.metrics["gen_batches"] == 2
    record.write(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again == {k: v for k, v in on_disk.items() if k != "written_by_a_newer_version"}


def test_manifest_entries_keep_their_json() -> None:
    shard = {"sha256": "ab", "samples": 16, "scored": True, "policy_step": 3}
    assert ShardEntry.from_dict(shard).to_dict() == shard
    job = {"kind": "rollout", "stage": "math_rl", "key": {"shard": 1}, "executor": "slurm", "folder": "x/%j",
           "submitted_unix": 1.5, "dependency": None}
    assert JobEntry.from_dict(job).to_dict() == job
    assert JobEntry.from_dict({"kind": "driver", "stage": "sft"}).executor == "slurm"  # older, shorter entries


def test_launch_record_and_iteration_record() -> None:
    launch = {"profile": {"partition": "gpu"}, "stages": ["sft"], "init_from": None, "preset": "tiny",
              "submitted_unix": 2.0, "mode": "allocation"}
    assert LaunchRecord.from_dict(launch).to_dict() == launch
    older = {k: v for k, v in launch.items() if k != "mode"}  # launch.json from before --mode: phases
    assert LaunchRecord.from_dict(older).mode == "phases"
    line = {"stage": "math_rl", "time_unix": 1.0, "iteration": 2, "step": 4, "loss": 0.1}
    record = IterationRecord.from_dict(line)
    assert record == IterationRecord(2, 4, {"loss": 0.1}) and record.to_dict() == {"iteration": 2, "step": 4,
                                                                                   "loss": 0.1}


def test_job_results_survive_pickling() -> None:
    """submitit pickles what a job returns; the driver unpickles it."""
    for result in (RolloutResult("rollouts/x.h5", {"generate_s": 1.0}),
                   LearnerResult(3, 9, final=True, timings={"train_s": 2.0})):
        again = pickle.loads(pickle.dumps(result))
        assert again == result and type(again).from_dict(again.to_dict()) == result
