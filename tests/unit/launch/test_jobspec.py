"""JobSpec -> submitit/Slurm parameters, the batch file (golden), and sizing from stage config + profile."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mathfirst_hpc.config import MathRlStage
from mathfirst_hpc.errors import ConfigError
from mathfirst_hpc.launch.executors import attach_job, batch_script, make_executor
from mathfirst_hpc.launch.jobspec import JobSpec, job_spec
from mathfirst_hpc.launch.profiles import ClusterProfile, ContainerProfile, load_profile

GOLDEN = Path(__file__).parent / "golden" / "learner_pyxis.sbatch"


def test_slurm_parameters_map_generic_names() -> None:
    spec = JobSpec(name="mf-x", time_min=30, nodes=2, tasks_per_node=4, cpus_per_task=8, gpus_per_node=4,
                   mem_gb=64, partition="gpu", account="acc", qos="high", constraint="a100",
                   signal_lead_s=90, dependency="afterok:12", setup=["module load cuda"], env={"A": "b c"})
    params = spec.slurm_parameters()
    assert params["nodes"] == 2 and params["ntasks_per_node"] == 4 and params["gpus_per_node"] == 4
    assert params["mem"] == "64GB" and params["time"] == 30 and params["dependency"] == "afterok:12"
    assert params["additional_parameters"] == {"signal": "USR1@90", "requeue": True, "kill-on-invalid-dep": "yes"}
    assert params["setup"][0] == "module load cuda"
    assert "export SUBMITIT_PREEMPT_SIGNAL=USR1" in params["setup"] and "export A='b c'" in params["setup"]
    assert "srun_args" not in params  # no container


def test_unset_values_are_left_out() -> None:
    params = JobSpec(name="n", time_min=5).slurm_parameters()
    for key in ("gpus_per_node", "mem", "partition", "account", "qos", "constraint", "dependency"):
        assert key not in params


def test_containers() -> None:
    apptainer = JobSpec(name="n", time_min=5, gpus_per_node=1,
                        container=ContainerProfile(kind="apptainer", image="docker://x/y", mounts=["/scratch"]))
    assert apptainer.python_command() == "apptainer exec --nv --bind /scratch docker://x/y python"
    pyxis = JobSpec(name="n", time_min=5, container=ContainerProfile(kind="pyxis", image="nvcr.io#a", mounts=["/l:/l"]))
    assert pyxis.python_command() == "python"
    assert pyxis.slurm_parameters()["srun_args"] == ["--container-image=nvcr.io#a", "--container-mounts=/l:/l"]


def test_local_parameters_fold_nodes_into_tasks() -> None:
    params = JobSpec(name="n", time_min=7, nodes=2, tasks_per_node=2).local_parameters()
    assert params["tasks_per_node"] == 4 and params["timeout_min"] == 7


def test_job_spec_roles_from_stage_and_profile() -> None:
    cfg = MathRlStage()
    cfg.parallel.nodes, cfg.parallel.gpus_per_node, cfg.parallel.dp = 2, 4, 8
    profile = ClusterProfile(name="c", partition="gpu", cpu_partition="cpu", gpus_per_node=8, mem_gb=200,
                             time_limit_min=100, signal_lead_s=45)
    driver = job_spec("driver", cfg, profile)
    assert (driver.partition, driver.gpus_per_node, driver.cpus_per_task) == ("cpu", 0, 1)
    assert driver.time_min == 100 and driver.mem_gb == 4  # capped by the profile / light driver
    learner = job_spec("learner", cfg, profile)
    assert (learner.nodes, learner.tasks_per_node, learner.gpus_per_node) == (2, 4, 4)
    assert learner.partition == "gpu" and learner.signal_lead_s == 45 and learner.mem_gb == 200
    rollout = job_spec("rollout", cfg, profile)
    assert rollout.gpus_per_node == cfg.slurm.rollout_gpus and rollout.array_parallelism == 64
    cpu_only = job_spec("learner", cfg, load_profile("local-dev"))
    assert cpu_only.gpus_per_node == 0 and cpu_only.tasks_per_node == 4 and cpu_only.mem_gb == 1
    # one-allocation mode: the learner's nodes and tasks, for as long as the stage's driver would run
    cfg.slurm.driver_time_min, cfg.slurm.learner_time_min = 90, 30
    allocation = job_spec("allocation", cfg, profile)
    assert (allocation.nodes, allocation.tasks_per_node, allocation.gpus_per_node) == (2, 4, 4)
    assert allocation.time_min == 90 and job_spec("learner", cfg, profile).time_min == 30


def test_job_spec_refuses_more_gpus_than_nodes_have() -> None:
    cfg = MathRlStage()
    cfg.parallel.gpus_per_node, cfg.parallel.dp = 8, 8
    with pytest.raises(ConfigError, match="GPUs per node"):
        job_spec("learner", cfg, ClusterProfile(name="small", gpus_per_node=4))


def _normalise(text: str, folder: Path) -> str:
    text = text.replace(str(folder), "FOLDER")
    return re.sub(r"^(\S*python\S*|/\S+) -u -m submitit", "PYTHON -u -m submitit", text, flags=re.M)


def test_batch_file_golden(tmp_path: Path) -> None:
    spec = JobSpec(name="mf-math_rl-learner", time_min=240, nodes=2, tasks_per_node=8, cpus_per_task=12,
                   gpus_per_node=8, mem_gb=800, partition="batch", account="proj", signal_lead_s=300,
                   setup=["module load cuda/12.4"], container=ContainerProfile(kind="pyxis", image="nvcr.io#pt",
                                                                              mounts=["/lustre:/lustre"]))
    text = _normalise(batch_script(spec, tmp_path / "%j"), tmp_path)
    if os.environ.get("MATHFIRST_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "batch file changed; rerun with MATHFIRST_UPDATE_GOLDEN=1 if intended"
    assert "#SBATCH --signal=USR1@300" in text and "#SBATCH --requeue" in text


def test_executor_choice_is_explicit(tmp_path: Path) -> None:
    spec = JobSpec(name="n", time_min=5)
    assert type(make_executor("local", tmp_path, spec)).__name__ == "LocalExecutor"
    assert type(make_executor("slurm", tmp_path, spec)).__name__ == "SlurmExecutor"
    with pytest.raises(ConfigError, match="unknown executor 'auto'"):
        make_executor("auto", tmp_path, spec)
    assert attach_job("slurm", tmp_path, "12_3").job_id == "12_3"
