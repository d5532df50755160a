"""Small job bodies for the Slurm tests, pickled by value (the job process cannot import tests/)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import cloudpickle

from mathfirst_hpc.atomic import append_jsonl, read_jsonl, write_json
from mathfirst_hpc.launch import preemption
from mathfirst_hpc.launch.jobs import DistributedJob, MathfirstJob

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class AllReduceJob(DistributedJob):
    """Every task adds rank + 1 with gloo; returns what it saw."""

    def run(self) -> dict:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(tensor)
        return {"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": tensor.item(),
                "node": os.environ.get("SLURMD_NODENAME"), "master": os.environ.get("MASTER_ADDR"),
                "host": socket.gethostname()}


class StepLoop(MathfirstJob):
    """A loop of side-effecting steps that saves its cursor only at the end or when told to stop.

    Each step appends a line (like an optimizer step). Without a handled stop at a safe point, a requeued job
    restarts from the last saved cursor and repeats steps: the tests check that every step appears once.
    """

    polls_safe_points = True

    def __init__(self, folder: str, n_steps: int, step_s: float) -> None:
        self.folder, self.n_steps, self.step_s = Path(folder), n_steps, step_s

    def run(self) -> int:
        cursor = self.folder / "cursor.json"
        start = json.loads(cursor.read_text())["step"] if cursor.exists() else 0
        for step in range(start, self.n_steps):
            time.sleep(self.step_s)
            append_jsonl(self.folder / "steps.jsonl", {"step": step, "job": os.environ.get("SLURM_JOB_ID"),
                                                        "restart": int(os.environ.get("SLURM_RESTART_COUNT", 0))})
            if preemption.should_stop(save_time_s=0, margin_s=0):  # safe point: between steps
                write_json(cursor, {"step": step + 1})
                append_jsonl(self.folder / "stops.jsonl", {"step": step, "reason": preemption.reason()})
                preemption.exit_for_requeue()
        write_json(cursor, {"step": self.n_steps})
        return self.n_steps


def steps_logged(folder: Path) -> list[dict]:
    return read_jsonl(folder / "steps.jsonl")


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.3):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


# ---- stages on the local cluster -----------------------------------------------------------------------------------

TINY = [
    "sft:steps=2", "sft:sft.batch_size=8", "sft:sft.micro_batch_size=8", "sft:sft.max_seq_len=96",
    "sft:checkpoint.every_steps=2",
    "math_rl:steps=1", "math_rl:rollout.num_shards=4", "math_rl:rollout.prompts_per_batch=8",
    "math_rl:rollout.n_per_prompt=4", "math_rl:rollout.max_response_len=16", "math_rl:dapo.overlong_buffer_len=4",
    "math_rl:dapo.max_gen_batches=2", "math_rl:dapo.mini_batches=4", "math_rl:dapo.micro_batch_size=2",
    "math_rl:checkpoint.keep_last=3", "data.synthetic_size=2048",
]
"""A stage 1 of two optimizer steps; a stage 2 of one iteration: a 4-task rollout array, a second one when dynamic
sampling keeps fewer than 8 groups, then up to 4 mini-batches (optimizer steps) of at least 2 micro-batches
(a group is 4 samples). A 2k data pool: every job builds it, and the preset's 32k takes seconds per job."""


def manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


def jobs_of(run_dir: Path, kind: str, stage: str | None = None) -> dict[str, dict]:
    return {j: i for j, i in manifest(run_dir)["jobs"].items()
            if i.get("kind") == kind and (stage is None or i.get("stage") == stage)}


def log_of(run_dir: Path, job_id: str) -> str:
    info = manifest(run_dir)["jobs"][job_id]
    folder = Path(info["folder"].replace("%j", job_id))
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.out")))


def copy_run(base: Path, dest: Path) -> Path:
    """A copy of a run dir to go on from (its lock files left behind)."""
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("*.lock"))
    return dest


def wait_final(run_dir: Path, stage: str, timeout_s: float = 240, kind: str = "driver") -> None:
    """Until the stage is final and its driver job (``kind="allocation"``: its one job) COMPLETED; fails early,
    with the job's log, when it ended otherwise."""
    from mathfirst_hpc.launch.slurm_state import is_alive, job_states

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        drivers = jobs_of(run_dir, kind, stage)
        newest = max(drivers, key=lambda j: drivers[j]["submitted_unix"])
        state = job_states([newest])[newest]
        final = manifest(run_dir)["stages"][stage]["status"] == "final"
        if state == "COMPLETED" and final:
            return
        if state != "UNKNOWN" and not is_alive(state):
            raise AssertionError(f"driver {newest} of {stage} ended {state} (final: {final}):\n"
                                 f"{log_of(run_dir, newest)[-3000:]}")
        time.sleep(1)
    raise AssertionError(f"stage {stage} not final after {timeout_s} s")


def final_weights(run_dir: Path, stage: str) -> dict:
    from safetensors.torch import load_file

    final = manifest(run_dir)["stages"][stage]["final_checkpoint"]
    return load_file(str(Path(run_dir) / final / "hf" / "model.safetensors"))


def final_meta(run_dir: Path, stage: str) -> dict:
    final = manifest(run_dir)["stages"][stage]["final_checkpoint"]
    return json.loads((Path(run_dir) / final / "meta.json").read_text())


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    import torch

    assert a.keys() == b.keys()
    for name in a:
        if atol:
            assert torch.allclose(a[name], b[name], atol=atol, rtol=0), name
        else:
            assert torch.equal(a[name], b[name]), f"{name} differs (max {float((a[name] - b[name]).abs().max())})"


def tiny_judge(folder: Path) -> Path:
    """A random-init HF judge model folder: a judge server answers with it (its verdicts unparseable), which is
    all a run needs to exercise the judge path."""
    from mathfirst_hpc.config import ModelConfig
    from mathfirst_hpc.models import build_model, train_tokenizer

    tokenizer = train_tokenizer(["Reference answer: 100 C Student answer: 100 Verdict: CORRECT"] * 20,
                                vocab_size=300)
    model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                    intermediate_size=64, vocab_size=300), tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def ran_on_both_nodes(job_id: str, timeout_s: float = 60) -> bool:
    """The job's accounting record names both nodes (n[1-2]). Right after a job ends, sacct may still show only its
    first node (the record is completed a moment later), so wait for it."""
    import subprocess

    def nodes() -> bool:
        out = subprocess.run(["sacct", "-n", "-X", "-o", "NodeList", "-j", str(job_id)], capture_output=True,
                             text=True).stdout
        return "n[1-2]" in out

    return bool(wait_for(nodes, timeout_s, f"job {job_id}'s accounting record to name both nodes", poll_s=1.0))

