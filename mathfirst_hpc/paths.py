"""``RunPaths``: the one owner of every path inside a run directory. Nobody else joins path strings.

Layout::

    RUN_DIR/
      manifest.json                 stage status, iteration, checkpoints, job ids, shard checksums
      manifest.json.lock            file lock serialising manifest updates
      metrics.jsonl                 one JSON line per optimizer step / iteration, with "stage"
      config/<stage>.yaml           the resolved config of each stage (resume reads it)
      tokenizer/                    the tokenizer trained for the run (tiny preset) or copied from the model
      launch.json                   how the run was submitted (``records.LaunchRecord``)
      logs/                         driver and learner logs; submitit job folders logs/submitit/<stage>/<job id>/
      rollouts/<stage>/iter_000007/gen_01_problems.json   prompts of generation batch 1 (the plan rollout tasks read)
      rollouts/<stage>/iter_000007/shard_1003.h5         generation batch 1, shard 3 (``gen_shard``)
      rollouts/<stage>/iter_000007/kept.h5               the groups dynamic sampling kept (the learner reads it)
      rollouts/<stage>/iter_000007/driver.json           the iteration is collected (``records.DriverRecord``)
      checkpoints/<stage>/step_000012/   model, optimizer, cursor, RNG, position; complete once meta.json is inside
      engine/<stage>/               HF weights a colocated vLLM engine starts from
      sandbox/address.json          where the stage's sandbox server listens
      services/judge.json           where the judge server listens (``records.ServiceRecord``, ``service_address``)
      eval/                         offline evaluation outputs
      tb/<stage>/, wandb/           TensorBoard events and offline W&B runs (logging.sinks; paths in sinks.py)
      report/                       report.html, report.md and plots
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root).resolve())

    # run level -------------------------------------------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def manifest_lock(self) -> Path:
        return self.root / "manifest.json.lock"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def submitit_dir(self) -> Path:
        return self.logs / "submitit"

    def job_logs(self, group: str) -> Path:
        """submitit folder of a stage's (or ``eval``'s) jobs; ``%j`` is the job id, filled in by submitit."""
        return self.submitit_dir / group / "%j"

    @property
    def sandbox_address(self) -> Path:
        return self.root / "sandbox" / "address.json"

    def service_address(self, kind: str) -> Path:
        """``records.ServiceRecord`` of a reward service job (the judge); the sandbox keeps ``sandbox_address``."""
        return self.root / "services" / f"{kind}.json"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    # stage level -----------------------------------------------------------------------------------------------
    def stage_config(self, stage: str) -> Path:
        return self.root / "config" / f"{stage}.yaml"

    def checkpoints(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def checkpoint(self, stage: str, step: int) -> Path:
        return self.checkpoints(stage) / f"step_{step:06d}"

    def rollouts(self, stage: str) -> Path:
        return self.root / "rollouts" / stage

    def iteration_dir(self, stage: str, iteration: int) -> Path:
        return self.rollouts(stage) / f"iter_{iteration:06d}"

    def shard(self, stage: str, iteration: int, shard_index: int) -> Path:
        return self.iteration_dir(stage, iteration) / f"shard_{shard_index:03d}.h5"

    def gen_shard(self, stage: str, iteration: int, gen_batch: int, shard_index: int) -> Path:
        """Shard ``shard_index`` of generation batch ``gen_batch`` (dynamic sampling's top-ups are batches 1, 2...);
        named ``shard_{gen_batch * 1000 + shard_index:03d}.h5``."""
        return self.shard(stage, iteration, gen_batch * 1000 + shard_index)

    def plan(self, stage: str, iteration: int, gen_batch: int) -> Path:
        """The prompts of a generation batch (JSON list of ``data.base.Problem``), drawn once by the loop."""
        return self.iteration_dir(stage, iteration) / f"gen_{gen_batch:02d}_problems.json"

    def hf_export(self, stage: str, step: int) -> Path:
        """HF-format weights the next rollout array loads (phases mode)."""
        return self.checkpoint(stage, step) / "hf"

    # run level, written by submit / the driver ------------------------------------------------------------------
    @property
    def launch_file(self) -> Path:
        """The cluster profile and executor the run was submitted with (resume and child jobs reuse them)."""
        return self.root / "launch.json"

    def iteration_plan(self, stage: str, iteration: int) -> Path:
        """``driver.json``, the ``records.DriverRecord`` of a collected iteration: data cursor before/after, policy
        step, kept groups, rollout metrics. Written in every mode (colocated too)."""
        return self.iteration_dir(stage, iteration) / "driver.json"

    def kept_batch(self, stage: str, iteration: int) -> Path:
        """The groups kept by dynamic sampling, as one shard the learner job reads."""
        return self.iteration_dir(stage, iteration) / "kept.h5"

    def driver_log(self, stage: str) -> Path:
        """One JSON line per iteration: where the driver's wall time went (scheduling, tasks, rewards)."""
        return self.logs / f"driver_{stage}.jsonl"

    def engine_weights(self, stage: str) -> Path:
        """HF folder a colocated vLLM engine starts from (later updates are pushed in place)."""
        return self.root / "engine" / stage

    def make(self) -> "RunPaths":
        for path in (self.root, self.logs, self.root / "config"):
            path.mkdir(parents=True, exist_ok=True)
        return self
