"""``JobSpec``: one job's resources in generic names, and the one place where they become submitit/Slurm
parameters (:meth:`JobSpec.slurm_parameters`) or local-executor parameters (:meth:`JobSpec.local_parameters`).

:func:`job_spec` sizes the three kinds of job of a stage from the stage config and the cluster profile:

========  =====================================================  ==============================================
role      resources                                              time limit
========  =====================================================  ==============================================
driver    1 task, 1 CPU, <= 4 GB, cpu_partition, no GPU          slurm.driver_time_min
rollout   1 task per array element, slurm.rollout_gpus GPUs      slurm.rollout_time_min
          (profile ``rollout_python``: vLLM's own environment)
learner   parallel.nodes x parallel.gpus_per_node tasks          slurm.learner_time_min
sandbox   1 task, reward.sandbox.workers CPUs, cpu_partition     slurm.driver_time_min (lives as long as the stage)
judge     1 task; 1 GPU for judge.backend vllm (GPU profiles)    slurm.driver_time_min
========  =====================================================  ==============================================

The two service roles (``launch/services.py``) run on the host Python for the sandbox, in the profile's container
for the judge (vLLM lives in the training image).

Every job asks for ``--signal=USR1@<signal_lead_s>`` and ``--requeue``, and its batch script exports
``SUBMITIT_PREEMPT_SIGNAL=USR1`` so that submitit inside the job binds its checkpoint handler to that signal.
Containers: Apptainer wraps the Python command (``apptainer exec [--nv] --bind .. IMAGE python``); pyxis adds
``--container-image``/``--container-mounts`` to the ``srun`` line.

Usage::

    spec = job_spec("learner", cfg, profile)            # named job_name("math_rl", "learner"): mf-math_rl-learner
    executor.update_parameters(**spec.slurm_parameters())
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..config import REPO_ROOT, StageConfig
from ..errors import ConfigError
from .profiles import ClusterProfile, ContainerProfile

Role = Literal["driver", "rollout", "learner", "allocation", "sandbox", "judge"]
PREEMPT_SIGNAL = "USR1"
DRIVER_MEM_GB = 4


def job_name(stage: str, role: str) -> str:
    """The Slurm job name of a stage's job: ``mf-<stage>-<role>`` (what ``squeue`` shows; the dry run prints it)."""
    return f"mf-{stage}-{role}"


@dataclass(kw_only=True)
class JobSpec:
    name: str
    time_min: int
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem_gb: int | None = None
    """Per node; None = the partition's default."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    signal_lead_s: int = 120
    setup: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """Exported at the top of the batch script (after ``setup``)."""
    container: ContainerProfile = field(default_factory=ContainerProfile)
    python: str | None = None
    """Python on the node outside a container; None = the submitting interpreter."""
    dependency: str | None = None
    """Slurm dependency, e.g. ``afterok:1234``."""
    array_parallelism: int = 64
    """Array tasks running at once (``--array=0-N%P``)."""

    def with_(self, **changes: Any) -> "JobSpec":
        return replace(self, **changes)

    # ---- the one mapping to submitit / Slurm ----------------------------------------------------------------------
    def setup_lines(self) -> list[str]:
        env = {"SUBMITIT_PREEMPT_SIGNAL": PREEMPT_SIGNAL, "PYTHONUNBUFFERED": "1", **self.env}
        return list(self.setup) + [f"export {key}={shlex.quote(value)}" for key, value in env.items()]

    def python_command(self) -> str | None:
        """The interpreter submitit puts in front of ``-m submitit.core._submit``; None = submitit's default."""
        c = self.container
        if c.kind == "apptainer":
            args = ["apptainer", "exec"]
            if self.gpus_per_node and c.gpu:
                args.append("--nv")
            for mount in c.mounts:
                args += ["--bind", mount]
            return shlex.join([*args, str(c.image), c.python])
        if c.kind == "pyxis":
            return c.python
        return self.python

    def srun_args(self) -> list[str]:
        c = self.container
        if c.kind != "pyxis":
            return []
        args = [f"--container-image={c.image}"]
        if c.mounts:
            args.append(f"--container-mounts={','.join(c.mounts)}")
        return args

    def slurm_parameters(self) -> dict[str, Any]:
        """Keyword arguments of ``submitit.SlurmExecutor.update_parameters``."""
        params: dict[str, Any] = {
            "job_name": self.name,
            "time": self.time_min,
            "nodes": self.nodes,
            "ntasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "setup": self.setup_lines(),
            "array_parallelism": self.array_parallelism,
            "stderr_to_stdout": True,
            # submitit writes --signal from SUBMITIT_PREEMPT_SIGNAL of *this* process; state it explicitly.
            "additional_parameters": {"signal": f"{PREEMPT_SIGNAL}@{self.signal_lead_s}", "requeue": True},
        }
        if self.dependency:  # a failed dependency cancels this job instead of leaving it pending forever
            params["additional_parameters"]["kill-on-invalid-dep"] = "yes"
        optional = {"gpus_per_node": self.gpus_per_node or None,
                    "mem": f"{self.mem_gb}GB" if self.mem_gb else None,
                    "partition": self.partition, "account": self.account, "qos": self.qos,
                    "constraint": self.constraint, "dependency": self.dependency,
                    "srun_args": self.srun_args() or None}
        params.update({key: value for key, value in optional.items() if value is not None})
        return params

    def local_parameters(self) -> dict[str, Any]:
        """Keyword arguments of ``submitit.LocalExecutor.update_parameters`` (one machine: nodes fold into tasks)."""
        return {"timeout_min": self.time_min, "tasks_per_node": self.nodes * self.tasks_per_node,
                "gpus_per_node": self.gpus_per_node * self.nodes, "signal_delay_s": self.signal_lead_s,
                "setup": self.setup_lines(), "stderr_to_stdout": True}


def _cap(value_min: int, cap_min: int | None) -> int:
    return value_min if cap_min is None else min(value_min, cap_min)


def job_spec(role: Role, cfg: StageConfig, profile: ClusterProfile, name: str | None = None,
             env: dict[str, str] | None = None) -> JobSpec:
    """Size a job of ``role`` for ``cfg`` on the cluster described by ``profile``."""
    s, p = cfg.slurm, profile
    mem_gb = p.mem_gb if p.mem_gb is not None else s.mem_gb
    cpus = p.cpus_per_task if p.cpus_per_task is not None else s.cpus_per_task
    common = dict(name=name or job_name(cfg.stage, role), account=p.account, qos=p.qos, setup=list(p.setup),
                  env=dict(env or {}), container=p.container, python=p.python,
                  signal_lead_s=p.signal_lead_s if p.signal_lead_s is not None else s.signal_lead_s)
    if role == "driver":
        # A light CPU job on the host Python: it only submits and waits (no container, no GPU).
        return JobSpec(**{**common, "container": ContainerProfile()}, time_min=_cap(s.driver_time_min,
                       p.time_limit_min), cpus_per_task=1, mem_gb=min(mem_gb, DRIVER_MEM_GB),
                       partition=p.cpu_partition or p.partition)
    if role == "rollout":
        gpus = min(s.rollout_gpus, p.gpus_per_node) if p.gpus_per_node else 0
        if p.rollout_python:  # vLLM in an environment of its own (profiles.ClusterProfile.rollout_python)
            common["python"] = str(REPO_ROOT / p.rollout_python)  # an absolute path stays as it is
        return JobSpec(**common, time_min=_cap(s.rollout_time_min, p.time_limit_min), cpus_per_task=cpus,
                       gpus_per_node=gpus, mem_gb=mem_gb, partition=p.partition, constraint=p.constraint,
                       array_parallelism=s.rollout_array_parallelism)
    if role in ("learner", "allocation"):
        # allocation: a whole stage in one job (generation and training take turns on the same devices), sized
        # like the learner, for as long as a driver would run
        par = cfg.parallel
        time_min = s.driver_time_min if role == "allocation" else s.learner_time_min
        if p.gpus_per_node and par.gpus_per_node > p.gpus_per_node:
            raise ConfigError(f"parallel.gpus_per_node={par.gpus_per_node} but profile {p.name} has "
                              f"{p.gpus_per_node} GPUs per node", hint="lower it or raise parallel.nodes")
        return JobSpec(**common, time_min=_cap(time_min, p.time_limit_min), nodes=par.nodes,
                       tasks_per_node=par.gpus_per_node, cpus_per_task=cpus,
                       gpus_per_node=par.gpus_per_node if p.gpus_per_node else 0, mem_gb=mem_gb,
                       partition=p.partition, constraint=p.constraint)
    if role == "sandbox":
        workers = cfg.reward.sandbox.workers  # type: ignore[attr-defined]
        return JobSpec(**{**common, "container": ContainerProfile()}, time_min=_cap(s.driver_time_min,
                       p.time_limit_min), cpus_per_task=workers, mem_gb=mem_gb,
                       partition=p.cpu_partition or p.partition)
    if role == "judge":
        on_gpu = cfg.reward.judge.backend == "vllm" and p.gpus_per_node > 0  # type: ignore[attr-defined]
        return JobSpec(**common, time_min=_cap(s.driver_time_min, p.time_limit_min), cpus_per_task=cpus,
                       gpus_per_node=1 if on_gpu else 0, mem_gb=mem_gb,
                       partition=p.partition if on_gpu else (p.cpu_partition or p.partition),
                       constraint=p.constraint if on_gpu else None)
    raise ValueError(f"unknown job role {role!r}")
