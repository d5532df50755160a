"""The twin presets (``stages/twin``, ``stages/twin-pp``) keep the paper presets' structure, and the profile's
``rollout_python`` sends only the rollout arrays to vLLM's own environment. The twin itself runs on the local
cluster in ``tests/integration/slurm/test_twin_slurm.py``."""

from __future__ import annotations

from typing import Any

import pytest

from mathfirst_hpc.config import REPO_ROOT, load_stage_config, read_yaml, stage_yaml_path
from mathfirst_hpc.launch.jobspec import job_spec
from mathfirst_hpc.launch.profiles import ClusterProfile
from mathfirst_hpc.launch.services import services_needed

STAGES = ("sft", "math_rl", "joint_rl")
SHRUNK = ("model", "data")
"""Sections the twin sets differently on purpose: a built-in random-init model instead of a folder, generated
data instead of parquet files. Every other key of the paper preset is set in the twin, and no other."""


def _keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict) and key != "mix":
            out |= _keys(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_twin_sets_the_keys_of_the_qwen3_preset(stage: str) -> None:
    paper = {k for k in _keys(read_yaml(stage_yaml_path(stage, "qwen3-4b"))) if k.split(".")[0] not in SHRUNK}
    twin = {k for k in _keys(read_yaml(stage_yaml_path(stage, "twin"))) if k.split(".")[0] not in SHRUNK}
    assert twin == paper


@pytest.mark.parametrize("stage", STAGES)
def test_twin_runs_the_paper_job_graph(stage: str) -> None:
    paper = load_stage_config(stage, "qwen3-4b", check_files=False)
    twin = load_stage_config(stage, "twin", check_files=False)
    if stage == "sft":  # the twin's cold start adds small shares of the other domains (see stages/twin/sft.yaml)
        assert set(paper.data.mix) <= set(twin.data.mix) and twin.data.mix["math"].weight >= 0.7
    else:
        assert set(twin.data.mix) == set(paper.data.mix)
    assert twin.parallel.backend == "megatron" and twin.parallel.tp == 2 and twin.parallel.pp == 1
    if stage != "sft":
        assert twin.rollout.backend == paper.rollout.backend == "vllm"  # type: ignore[attr-defined]
        assert services_needed(twin) == services_needed(paper)
    pp = load_stage_config(stage, "twin-pp", check_files=False)
    assert (pp.parallel.tp, pp.parallel.pp, pp.parallel.nodes, pp.parallel.gpus_per_node) == (1, 2, 2, 1)


def test_joint_twin_needs_the_judge_and_the_sandbox_jobs() -> None:
    assert services_needed(load_stage_config("joint_rl", "twin", check_files=False)) == ["sandbox", "judge"]


def test_rollout_python_is_the_rollout_arrays_alone() -> None:
    cfg = load_stage_config("joint_rl", "twin", check_files=False)
    profile = ClusterProfile(name="p", python="/usr/bin/python3", rollout_python=".venv-vllm/bin/python")
    assert job_spec("rollout", cfg, profile).python_command() == str(REPO_ROOT / ".venv-vllm" / "bin" / "python")
    for role in ("driver", "learner", "judge", "sandbox"):
        assert job_spec(role, cfg, profile).python_command() == "/usr/bin/python3", role
    absolute = ClusterProfile(name="p", rollout_python="/opt/vllm/bin/python")
    assert job_spec("rollout", cfg, absolute).python_command() == "/opt/vllm/bin/python"
    assert job_spec("rollout", cfg, ClusterProfile(name="p")).python_command() is None
