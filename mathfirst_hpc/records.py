"""Typed records of everything that crosses a process or file boundary in a run, stated once.

Each record has ``to_dict``/``from_dict``; the dict is what is on disk (JSON unless said otherwise), with the same
keys as before these records existed, so older run dirs stay readable. ``RunPaths`` names the files.

    record          where it lives                                   written by -> read by
    RlState         checkpoint rank_XXXXX.pt (torch) + meta.json      learner -> loop resume, driver
    DriverRecord    rollouts/<stage>/iter_K/driver.json               loop.collect -> learner update
    IterationRecord one metrics.jsonl line per RL iteration           learner update -> analysis, report
    ShardEntry      manifest.json "shards"                            rollout/scoring -> resume, status
    JobEntry        manifest.json "jobs"                              launch -> resume, cancel, status
    RolloutResult   a rollout array task's return value (pickled)     launch/phases -> driver log
    LearnerResult   a learner update's return value (pickled)         loop / learner job -> loop
    LaunchRecord    launch.json                                       submit -> driver, resume

Simplification: ``LaunchRecord.profile`` keeps the cluster profile as its plain dict (``launch.driver.
launch_profile`` turns it back into a ``ClusterProfile``), so that this module stays below ``launch/``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from .atomic import write_json

if TYPE_CHECKING:  # torch stays out of light readers of the run dir (status, manifest)
    from .learner.base import PartialStep


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``cls`` present in ``data`` (unknown keys of newer writers are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


class DictRecord:
    """``to_dict``/``from_dict`` of a dataclass record: its fields as a dict, and back (unknown keys ignored)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**_known(cls, data))


class FileRecord(DictRecord):
    """A record that is a JSON file of its own (written atomically)."""

    def write(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> Self:
        return cls.from_dict(json.loads(Path(path).read_text()))


# ---- checkpoints -----------------------------------------------------------------------------------------------

def partial_for_rank(partial: PartialStep | None, rank: int) -> PartialStep | None:
    """The partial optimizer step rank ``rank`` resumes. Its saved gradients are the sum over ranks, and every
    non-sharded rank loads rank 0's file: only rank 0 restores them; the other ranks resume that step from zero
    gradients and metrics (else the step's all-reduce would count them once per rank)."""
    if partial is None or rank == 0:
        return partial
    import torch

    from .learner.base import PartialStep

    return PartialStep(partial.micro_done, {n: torch.zeros_like(g) for n, g in partial.grads.items()},
                       dict.fromkeys(partial.metrics, 0.0))


@dataclass
class RlState:
    """Where an RL stage stands, saved in every RL checkpoint.

    ``iteration`` is the iteration to run next (or being run, when ``mini_batch`` > 0 or ``partial`` is set),
    ``step`` the optimizer steps done, ``iteration_start_step`` the policy the iteration's rollouts were generated
    with (its shards are reused on resume), ``data_at_iteration_start`` the data cursor that redraws the
    iteration's prompts."""

    iteration: int = 0
    mini_batch: int = 0
    """Next mini-batch of ``iteration`` (0 = the iteration's update has not started)."""
    step: int = 0
    iteration_start_step: int = 0
    data_at_iteration_start: dict[str, Any] | None = None
    partial: PartialStep | None = None
    """An optimizer step interrupted between micro-batches (gradients summed over ranks). In the torch state file
    only, never in meta.json."""

    def to_dict(self) -> dict[str, Any]:
        """For the checkpoint's state file (torch.save)."""
        out = self.meta()
        if self.partial is not None:
            out["partial"] = self.partial
        return out

    def meta(self) -> dict[str, Any]:
        """JSON-safe: for meta.json, so that a driver learns the position without loading weights."""
        return {"iteration": self.iteration, "mini_batch": self.mini_batch, "step": self.step,
                "iteration_start_step": self.iteration_start_step,
                "data_at_iteration_start": self.data_at_iteration_start}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RlState:
        """From a state file or meta.json (older checkpoints lack ``iteration_start_step``: it was ``step``)."""
        step = int(data.get("step", 0))
        return cls(iteration=int(data.get("iteration", 0)), mini_batch=int(data.get("mini_batch", 0)), step=step,
                   iteration_start_step=int(data.get("iteration_start_step", step)),
                   data_at_iteration_start=data.get("data_at_iteration_start"), partial=data.get("partial"))

    def next_iteration(self, data_after: dict[str, Any] | None) -> RlState:
        """The state once this iteration's update is complete."""
        return RlState(self.iteration + 1, 0, self.step, self.step, data_after)


# ---- an iteration ----------------------------------------------------------------------------------------------

@dataclass
class DriverRecord(FileRecord):
    """``iter_K/driver.json``: an iteration's rollouts are collected (written after ``kept.h5``, as the marker)."""

    iteration: int
    policy_step: int
    """The optimizer step whose weights generated the iteration's shards."""
    data_at_iteration_start: dict[str, Any] | None
    data_after: dict[str, Any]
    """The data cursor after the iteration's prompts were drawn: the next iteration starts there."""
    kept_groups: int
    """Groups kept by dynamic sampling (0: no ``kept.h5``, the update is skipped)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Rollout metrics (rewards, accuracy per domain, kept fraction, lengths)."""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class IterationRecord:
    """One ``metrics.jsonl`` line of an RL iteration: rollout metrics plus the mean of the update's metrics.
    On disk the metrics are flat beside ``iteration`` and ``step`` (and ``stage``, ``time_unix``)."""

    iteration: int
    """Iterations complete (this one included)."""
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "step": self.step, **self.metrics}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IterationRecord:
        rest = {k: v for k, v in data.items() if k not in ("iteration", "step", "stage", "time_unix")}
        return cls(int(data["iteration"]), int(data["step"]), rest)


# ---- manifest entries ------------------------------------------------------------------------------------------

@dataclass
class ShardEntry(DictRecord):
    """A complete rollout shard in the manifest (keyed by its path relative to the run dir)."""

    sha256: str
    samples: int
    scored: bool = False
    """Rewards are in the shard (``sha256`` is then the scored file's)."""
    policy_step: int = 0


@dataclass
class JobEntry(DictRecord):
    """A submitted job in the manifest (keyed by its job id)."""

    kind: str
    """driver | rollout | learner | eval"""
    stage: str
    key: dict[str, Any] = field(default_factory=dict)
    """The job's identity (stage, iteration, generation batch, shard, policy step): a restarted driver re-attaches
    to a live job with the same key instead of submitting it again."""
    executor: str = "slurm"
    folder: str = ""
    """submitit folder pattern of its logs (``%j`` = job id)."""
    submitted_unix: float = field(default_factory=time.time)
    dependency: str | None = None


# ---- job results -----------------------------------------------------------------------------------------------

@dataclass
class RolloutResult(DictRecord):
    """A rollout task's shard and where its time went (``load_s``, ``generate_s``, ``task_s``, ...)."""

    shard: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class LearnerResult(DictRecord):
    """What one iteration's learner update did."""

    iteration: int
    step: int
    """Optimizer steps done after it."""
    final: bool = False
    """The stage's last iteration is complete."""
    skipped: bool = False
    """Already done before a restart: nothing was trained."""
    preempted: bool = False
    """Stopped inside the iteration; an emergency checkpoint holds the position."""
    timings: dict[str, float] = field(default_factory=dict)


# ---- launch.json -----------------------------------------------------------------------------------------------

@dataclass
class LaunchRecord(FileRecord):
    """How the run was submitted: ``resume`` and every child job reuse it."""

    profile: dict[str, Any]
    """The resolved cluster profile (``launch.profiles.ClusterProfile`` as a dict)."""
    stages: list[str]
    init_from: str | None = None
    preset: str = "tiny"
    submitted_unix: float = field(default_factory=time.time)
    mode: str = "phases"
    """phases: a driver job per stage with rollout arrays and learner jobs; allocation: one job per stage."""


@dataclass
class ServiceRecord(FileRecord):
    """Where a reward service of the run listens (``RunPaths.service_address``): written by the service itself
    once it answers, read by the rollout tasks that score (``launch/services.py``)."""

    kind: str
    """judge | sandbox"""
    url: str
    """http://host:port, the OpenAI-compatible base URL for the judge."""
    host: str = ""
    port: int = 0
    pid: int = 0
    slurm_job_id: str | None = None
    model: str = "judge"
    """The model name the server answers to (``vllm serve`` uses the model path unless --served-model-name)."""
    started_unix: float = field(default_factory=time.time)

    @classmethod
    def read(cls, path: Path) -> ServiceRecord | None:  # type: ignore[override]
        """The record, or None when there is none (the service has not started, or stopped cleanly)."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError):
            return None
