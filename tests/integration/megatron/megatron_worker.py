"""Multi-process body of the Megatron tests: run under ``torchrun --standalone --nproc-per-node 2`` (TP=2, PP=2,
DP=2 cases) or as a plain single process (the TP=PP=DP=1 reference and the torch backend on the same weights).

Every case trains the same tiny model on the same micro-batches for 5 optimizer steps and writes what the tests
compare (per-step metrics, log-probs, HF-named weights, round-trip and resume checks) to ``OUT/<case>.pt`` from
global rank 0. The megatron CPU shim (test support) is installed before megatron-core is used.

    torchrun --standalone --nproc-per-node 2 tests/integration/megatron/megatron_worker.py --out /tmp/mg --world 2
    python tests/integration/megatron/megatron_worker.py --out /tmp/mg --world 1
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from tests.support.megatron_cpu_shim import install  # noqa: E402

install()

from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config  # noqa: E402

from mathfirst_hpc import checkpoint  # noqa: E402
from mathfirst_hpc.config import DapoConfig, OptimConfig, ParallelConfig  # noqa: E402
from mathfirst_hpc.learner.base import TokenBatch  # noqa: E402
from mathfirst_hpc.learner.dapo import make_dapo_loss  # noqa: E402
from mathfirst_hpc.learner.megatron.backend import MegatronBackend  # noqa: E402
from mathfirst_hpc.learner.sft import SftExample, collate_packed, make_sft_loss  # noqa: E402
from mathfirst_hpc.learner.torch_backend import TorchBackend, token_logprobs  # noqa: E402

STEPS = 5
TEMPERATURE = 0.9
VOCAB = 512
# Adam eps 1e-5 (not 1e-8): with near-zero gradients a tiny eps turns rounding differences between layouts into
# visible update differences, which would force loose weight tolerances in the tests.
OPTIM = OptimConfig(lr=1e-2, grad_clip=1.0, weight_decay=0.01, schedule="cosine", warmup_steps=1, eps=1e-5)

# name -> (architecture, tied embeddings, objective)
MODELS = {
    "qwen3": ("qwen3", False, "sft"),
    "llama_tied": ("llama", True, "sft"),
    "qwen3_tied": ("qwen3", True, "dapo"),
}


def hf_model(name: str) -> Any:
    arch, tied, _ = MODELS[name]
    common = dict(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, intermediate_size=256, tie_word_embeddings=tied)
    cfg = Qwen3Config(**common) if arch == "qwen3" else LlamaConfig(**common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")
    with torch.no_grad():  # norms start at 1: perturb them so that a swapped norm weight cannot go unnoticed
        for key, value in model.named_parameters():
            if key.endswith("norm.weight"):
                value.add_(0.1 * torch.randn_like(value))
    return model


@functools.cache
def micro_batches_cached() -> tuple[TokenBatch, ...]:
    """4 micro-batches of 2 rows, lengths 10 and 12, right padded, with RL fields for the DAPO loss.

    The rollout log-probs are the initial policy's (from the HF model, as a rollout engine would return them), so
    the DAPO ratio starts at 1 and the clip boundaries are crossed only by training, as in a real update.
    """
    g = torch.Generator().manual_seed(1)
    policy = hf_model("qwen3_tied")
    out = []
    for i in range(4):
        width = 10 if i % 2 == 0 else 12
        ids = torch.randint(0, VOCAB, (2, width), generator=g)
        attention = torch.ones(2, width, dtype=torch.long)
        attention[1, width - 3:] = 0
        loss_mask = attention.clone()
        loss_mask[:, :4] = 0
        with torch.no_grad():
            logits = policy(input_ids=ids, attention_mask=attention).logits
        old = token_logprobs(logits, ids, TEMPERATURE)[0] * loss_mask
        adv = torch.randn(2, generator=g)
        out.append(TokenBatch(ids, attention, loss_mask, old_logprobs=old, advantages=adv, temperature=TEMPERATURE))
    return tuple(out)


def packed_batch() -> TokenBatch:
    """SFT rows packed several examples per row (block-diagonal causal mask, positions restarting per example)."""
    g = torch.Generator().manual_seed(2)
    examples = [SftExample(torch.randint(0, VOCAB, (n,), generator=g).tolist(), [0] * 3 + [1] * (n - 3))
                for n in (7, 5, 9, 4, 6)]
    return collate_packed(examples, pad_id=0, row_len=16)


def micro_batches() -> list[TokenBatch]:
    return list(micro_batches_cached())


def loss_for(name: str, batches: list[TokenBatch]) -> Any:
    tokens = sum(float(b.loss_mask.sum()) for b in batches)
    seqs = sum(b.num_sequences for b in batches)
    if MODELS[name][2] == "dapo":
        return make_dapo_loss(DapoConfig(), tokens, seqs)
    return make_sft_loss(tokens)


def megatron(name: str, tp: int = 1, pp: int = 1, dp: int = 1, **kwargs: Any) -> MegatronBackend:
    parallel = ParallelConfig(backend="megatron", tp=tp, pp=pp, dp=dp, gpus_per_node=tp * pp * dp,
                              dist_backend="gloo")
    return MegatronBackend.from_hf_model(hf_model(name), optim=OPTIM, parallel=parallel, total_steps=STEPS,
                                         **kwargs)


def roundtrip(backend: MegatronBackend, name: str) -> list[str]:
    """Names whose HF -> Megatron -> HF tensor is not bit-identical (or missing / extra)."""
    original = hf_model(name).state_dict()
    back = backend.hf_state_dict()
    bad = sorted(set(original) ^ set(back))
    return bad + [k for k in original if k in back and not torch.equal(original[k], back[k])]


def train(backend: Any, name: str, batches: list[TokenBatch], steps: int = STEPS) -> list[dict[str, float]]:
    loss_fn = loss_for(name, micro_batches())  # global counts over the whole step, whichever rank holds what
    return [backend.train_step(batches, loss_fn) for _ in range(steps)]


def save(out: Path, case: str, result: dict[str, Any]) -> None:
    if dist.get_rank() == 0:
        torch.save(result, out / f"{case}.pt")


# ---------------------------------------------------------------------------------------------------------------
# Single process: the reference every parallel layout is compared with, and the torch backend
# ---------------------------------------------------------------------------------------------------------------

def reference(out: Path) -> None:
    for name in MODELS:
        mg = megatron(name)
        result = {"roundtrip_bad": roundtrip(mg, name), "logprobs": mg.forward_logprobs(micro_batches()[1]),
                  "packed_logprobs": mg.forward_logprobs(packed_batch()), "metrics": train(mg, name, micro_batches())}
        result["final"] = mg.hf_state_dict()
        mg.export_hf(out / f"export_{name}")
        mg.close()
        reloaded = MegatronBackend.from_pretrained(out / f"export_{name}", optim=OPTIM, total_steps=STEPS,
                                                   parallel=ParallelConfig(backend="megatron", dist_backend="gloo"))
        result["reload_bad"] = [k for k, v in reloaded.hf_state_dict().items()
                                if not torch.equal(v, result["final"][k])]
        reloaded.close()
        torch_backend = TorchBackend(hf_model(name), OPTIM, total_steps=STEPS)
        result["torch_logprobs"] = torch_backend.forward_logprobs(micro_batches()[1])
        result["torch_packed_logprobs"] = torch_backend.forward_logprobs(packed_batch())
        result["torch_metrics"] = train(torch_backend, name, micro_batches())
        result["torch_final"] = torch_backend.hf_state_dict()
        save(out, f"ref_{name}", result)
    save(out, "ref_bf16_resume", bf16_resume(out))
    recompute = megatron("qwen3", gradient_checkpointing=True)
    save(out, "ref_recompute", {"metrics": train(recompute, "qwen3", micro_batches(), steps=2),
                                "granularity": recompute.config.recompute_granularity})
    recompute.close()


def bf16_resume(out: Path) -> dict[str, Any]:
    """The GPU default (bf16 weights, fp32 master copies in the distributed optimizer) resumes exactly from disk."""
    name = "qwen3_tied"
    mg = megatron(name, dtype="bfloat16", distributed_optimizer=True)
    first = train(mg, name, micro_batches(), steps=2)
    ckpt = out / "ckpt_bf16" / "step_000002"
    checkpoint.save_checkpoint(ckpt, {"learner": mg.state_dict()}, {"step": 2})
    result = {"first": first, "metrics": train(mg, name, micro_batches(), steps=3), "final": mg.hf_state_dict()}
    mg.close()
    resumed = megatron(name, dtype="bfloat16", distributed_optimizer=True)
    resumed.load_state_dict(checkpoint.load_rank_state(ckpt)["learner"])
    result |= {"resumed_metrics": train(resumed, name, micro_batches(), steps=3),
               "resumed_final": resumed.hf_state_dict()}
    resumed.close()
    return result


# ---------------------------------------------------------------------------------------------------------------
# Two processes
# ---------------------------------------------------------------------------------------------------------------

def vocab_parallel_check() -> dict[str, float]:
    """Log-probs, entropy and their gradients from TP=2 vocab shards vs log_softmax over the full vocabulary."""
    from megatron.core import parallel_state

    from mathfirst_hpc.learner.megatron.logprobs import vocab_parallel_logprobs

    g = torch.Generator().manual_seed(3)
    full = torch.randn(3, 7, VOCAB, generator=g) * 4
    targets = torch.randint(0, VOCAB, (3, 7), generator=g)
    w_lp, w_ent = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    ref_logits = full.clone().requires_grad_()
    logp_all = torch.log_softmax(ref_logits / 0.7, dim=-1)
    ref_lp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    ref_ent = -(logp_all.exp() * logp_all).sum(-1)
    ((ref_lp * w_lp).sum() + (ref_ent * w_ent).sum()).backward()
    rank, size = parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()
    mine = full.chunk(size, dim=-1)[rank].clone().requires_grad_()
    lp, ent = vocab_parallel_logprobs(mine, targets, temperature=0.7)
    ((lp * w_lp).sum() + (ent * w_ent).sum()).backward()
    lp, ent = lp.detach(), ent.detach()
    return {"tp": size, "logprobs": float((lp - ref_lp).abs().max()), "entropy": float((ent - ref_ent).abs().max()),
            "grad": float((mine.grad - ref_logits.grad.chunk(size, dim=-1)[rank]).abs().max())}


def case_tp2(out: Path) -> None:
    name = "qwen3"
    mg = megatron(name, tp=2)
    result: dict[str, Any] = {"vocab": vocab_parallel_check(), "roundtrip_bad": roundtrip(mg, name),
                              "logprobs": mg.forward_logprobs(micro_batches()[1])}
    result["metrics"] = train(mg, name, micro_batches(), steps=2)
    ckpt = out / "ckpt_tp2" / "step_000002"
    checkpoint.write_rank_state(ckpt, {"learner": mg.state_dict()}, rank=dist.get_rank())
    dist.barrier()
    if dist.get_rank() == 0:
        checkpoint.finalize_checkpoint(ckpt, {"step": 2})
    dist.barrier()
    result["metrics"] += train(mg, name, micro_batches(), steps=STEPS - 2)
    result["final"] = mg.hf_state_dict()
    mg.close()

    resumed = megatron(name, tp=2)
    resumed.load_state_dict(checkpoint.load_rank_state(ckpt, rank=dist.get_rank())["learner"])
    result["resumed_metrics"] = train(resumed, name, micro_batches(), steps=STEPS - 2)
    result["resumed_final"] = resumed.hf_state_dict()
    resumed.close()
    save(out, "tp2", result)


def case_pp2(out: Path) -> None:
    name = "llama_tied"
    mg = megatron(name, pp=2)
    result: dict[str, Any] = {"roundtrip_bad": roundtrip(mg, name),
                              "logprobs": mg.forward_logprobs(micro_batches()[1]),
                              "metrics": train(mg, name, micro_batches())}
    result["final"] = mg.hf_state_dict()
    mg.export_hf(out / "export_pp2")
    if dist.get_rank() == 0:
        loaded = AutoModelForCausalLM.from_pretrained(str(out / "export_pp2"), dtype=torch.float32)
        exported = loaded.state_dict()
        result["export_bad"] = sorted(set(exported) ^ set(result["final"])) + [
            k for k in exported if k in result["final"] and not torch.equal(exported[k], result["final"][k])]
    mg.close()
    save(out, "pp2", result)


def case_dp2(out: Path, distributed_optimizer: bool) -> None:
    name = "qwen3_tied"
    mg = megatron(name, dp=2, distributed_optimizer=distributed_optimizer)
    mine = micro_batches()[2 * mg.dp_rank: 2 * mg.dp_rank + 2]
    result = {"roundtrip_bad": roundtrip(mg, name), "metrics": train(mg, name, mine), "dp_rank": mg.dp_rank}
    result["final"] = mg.hf_state_dict()
    if distributed_optimizer:  # the optimizer shard must survive a save/load round trip on each rank
        state = mg.state_dict()
        resumed = megatron(name, dp=2, distributed_optimizer=True)
        resumed.load_state_dict(state)
        a, b = train(mg, name, mine, steps=2), train(resumed, name, mine, steps=2)
        result["resume_equal"] = a == b
        resumed.close()
    mg.close()
    # losses are per-rank sums (like the torch backend): add both ranks' to compare with DP=1
    for metrics in result["metrics"]:
        for key in ("loss", "entropy"):
            t = torch.tensor(metrics[key], dtype=torch.float64)
            dist.all_reduce(t)
            metrics[key] = float(t)
    save(out, "dp2_distopt" if distributed_optimizer else "dp2", result)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--world", type=int, choices=(1, 2), required=True)
    parser.add_argument("--cases", default="tp2,pp2,dp2,dp2_distopt")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.world == 1:
        reference(args.out)
        return
    dist.init_process_group("gloo")
    cases = {"tp2": case_tp2, "pp2": case_pp2, "dp2": lambda o: case_dp2(o, False),
             "dp2_distopt": lambda o: case_dp2(o, True)}
    for case in args.cases.split(","):
        cases[case](args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
