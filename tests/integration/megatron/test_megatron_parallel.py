"""Megatron backend under real multi-process runs on CPU (gloo, with the test-only device shim).

One ``torchrun --nproc-per-node 2`` job runs the TP=2, PP=2 (1F1B) and DP=2 cases (plus DP=2 with the
distributed optimizer) while a single process runs the TP=PP=DP=1 reference and the torch backend on the same HF
weights; the tests below compare what they wrote (see ``megatron_worker.py``). Each case trains 5 optimizer steps
with grad clipping, weight decay and a warmup + cosine LR, so a wrong gradient scale, a missed all-reduce or a
mis-sharded weight shows up in the loss, the grad norm or the final weights.

Run: ``.venv/bin/pytest tests/integration/megatron -m megatron`` (about 40 s on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("megatron.core")
pytestmark = [pytest.mark.megatron, pytest.mark.slow]

WORKER = Path(__file__).with_name("megatron_worker.py")
TOL = 1e-5
GRAD_NORM_RTOL = 5e-5
WEIGHT_ATOL = 5e-5
"""Final weights after 5 Adam steps (lr 1e-2, eps 1e-5): layouts differ by at most ~6e-6 (measured); a
mis-sharded or mis-scaled weight is off by ~lr = 1e-2, a weight-decay mismatch by ~1e-4 per step."""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("megatron")
    torchrun = Path(sys.executable).with_name("torchrun")
    jobs = {
        "world2": subprocess.Popen([str(torchrun), "--standalone", "--nproc-per-node", "2", str(WORKER),
                                    "--out", str(out), "--world", "2"], env=_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True),
        "world1": subprocess.Popen([sys.executable, str(WORKER), "--out", str(out), "--world", "1"], env=_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    }
    for name, job in jobs.items():
        log, _ = job.communicate(timeout=400)
        assert job.returncode == 0, f"{name} worker failed:\n{log[-6000:]}"
    return lambda case: torch.load(out / f"{case}.pt", weights_only=False)


def assert_same_training(ref: dict[str, Any], got: dict[str, Any], tol: float = TOL) -> None:
    assert len(got["metrics"]) == len(ref["metrics"]) == 5
    for step, (a, b) in enumerate(zip(ref["metrics"], got["metrics"], strict=True)):
        assert set(a) == set(b)
        assert abs(a["loss"] - b["loss"]) <= tol * max(1.0, abs(a["loss"])), (step, a["loss"], b["loss"])
        assert abs(a["grad_norm"] - b["grad_norm"]) <= GRAD_NORM_RTOL * a["grad_norm"] + 1e-7, (step, a, b)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
    for name, value in ref["final"].items():
        assert torch.allclose(got["final"][name], value, atol=WEIGHT_ATOL, rtol=0), name


def real_tokens(logprobs: torch.Tensor) -> torch.Tensor:
    """Positions of micro-batch 1 that are not padding (its row 1 ends with 3 pad tokens)."""
    keep = torch.ones_like(logprobs, dtype=torch.bool)
    keep[1, -3:] = False
    return logprobs[keep]


def test_tp2_trains_like_tp1(results: Any) -> None:
    ref, tp2 = results("ref_qwen3"), results("tp2")
    assert_same_training(ref, tp2)
    assert (real_tokens(tp2["logprobs"]) - real_tokens(ref["logprobs"])).abs().max() <= TOL


def test_pp2_1f1b_trains_like_pp1(results: Any) -> None:
    ref, pp2 = results("ref_llama_tied"), results("pp2")
    assert_same_training(ref, pp2)
    assert (real_tokens(pp2["logprobs"]) - real_tokens(ref["logprobs"])).abs().max() <= TOL


@pytest.mark.parametrize("case", ["dp2", "dp2_distopt"])
def test_dp2_trains_like_dp1(results: Any, case: str) -> None:
    assert_same_training(results("ref_qwen3_tied"), results(case))


@pytest.mark.parametrize("case", ["ref_qwen3", "ref_llama_tied", "ref_qwen3_tied", "tp2", "pp2", "dp2"])
def test_hf_megatron_hf_is_bit_identical(results: Any, case: str) -> None:
    assert results(case)["roundtrip_bad"] == []


def test_export_loads_in_transformers_with_the_trained_weights(results: Any) -> None:
    assert results("pp2")["export_bad"] == []


@pytest.mark.parametrize("case", ["ref_qwen3", "ref_llama_tied", "ref_qwen3_tied"])
def test_export_reloads_into_megatron_from_the_folder(results: Any, case: str) -> None:
    """``from_pretrained`` reads the safetensors lazily (tied models store no lm_head) and gets the same weights."""
    assert results(case)["reload_bad"] == []


def test_vocab_parallel_logprobs_equal_full_log_softmax(results: Any) -> None:
    check = results("tp2")["vocab"]
    assert check["tp"] == 2
    for key in ("logprobs", "entropy", "grad"):
        assert check[key] <= TOL, (key, check[key])


def test_checkpoint_at_tp2_resumes_exactly(results: Any) -> None:
    tp2 = results("tp2")
    assert tp2["resumed_metrics"] == tp2["metrics"][2:]
    for name, value in tp2["final"].items():
        assert torch.equal(tp2["resumed_final"][name], value), name


def test_distributed_optimizer_shard_resumes_exactly(results: Any) -> None:
    assert results("dp2_distopt")["resume_equal"] is True


def test_bf16_with_distributed_optimizer_resumes_exactly_from_disk(results: Any) -> None:
    """The GPU default path; 3 steps after the resume catch a wrong Adam step count, not only wrong moments."""
    run = results("ref_bf16_resume")
    assert run["final"]["model.norm.weight"].dtype == torch.bfloat16
    assert run["resumed_metrics"] == run["metrics"]
    for name, value in run["final"].items():
        assert torch.equal(run["resumed_final"][name], value), name


def test_activation_recompute_gives_the_same_steps(results: Any) -> None:
    """model.gradient_checkpointing maps to megatron's full-layer recompute; the numbers must not change."""
    run = results("ref_recompute")
    assert run["granularity"] == "full"
    assert run["metrics"] == results("ref_qwen3")["metrics"][:2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_cpu_without_the_test_shim_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Qwen3Config

    from mathfirst_hpc.config import OptimConfig, ParallelConfig
    from mathfirst_hpc.errors import ConfigError
    from mathfirst_hpc.learner.megatron.backend import CPU_SHIM_MARKER, MegatronBackend

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[3]))
    from tests.support import megatron_cpu_shim  # imported, not installed

    assert megatron_cpu_shim.MARKER == CPU_SHIM_MARKER
    assert not getattr(torch.cuda, CPU_SHIM_MARKER, False)  # the shim is installed only in the worker processes
    cfg = Qwen3Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, head_dim=16)
    with pytest.raises(ConfigError, match="needs CUDA GPUs") as err:
        MegatronBackend(cfg, {}, optim=OptimConfig(), parallel=ParallelConfig(backend="megatron"), total_steps=1)
    assert "parallel.backend=torch" in err.value.one_line()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("case", ["ref_qwen3", "ref_llama_tied", "ref_qwen3_tied"])
def test_switching_backend_changes_nothing(results: Any, case: str) -> None:
    """Megatron (TP=1) and the torch backend on the same HF weights: same log-probs, metrics names and values."""
    ref = results(case)
    assert (real_tokens(ref["logprobs"]) - real_tokens(ref["torch_logprobs"])).abs().max() <= TOL
    assert (ref["packed_logprobs"] - ref["torch_packed_logprobs"]).abs().max() <= TOL
    assert_same_training({"metrics": ref["torch_metrics"], "final": ref["torch_final"]}, ref, tol=2e-5)
