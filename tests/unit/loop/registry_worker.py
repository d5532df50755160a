"""Body of ``test_registry.py``'s combination tests, one process per (learner backend, rollout engine): builds a tiny
math_rl stage's learner and colocated engine exactly as ``run.run_rl`` does (``stage.build_backend`` and
``stage.make_engine``, i.e. through ``registry.py``), syncs the weights, samples, and checks that the engine samples
from the learner's weights: its log-probs equal the learner's ``forward_logprobs`` of the same tokens.

    python tests/unit/loop/registry_worker.py --learner megatron --engine hf --run-dir /tmp/r --out /tmp/r/out.json

With ``--rl-iterations N`` it then runs a whole colocated math_rl stage of N iterations (stopped once after its
first optimizer step, then resumed) through ``run.run_curriculum``.

Megatron runs on CPU under the test-only device shim (``tests/support/megatron_cpu_shim.py``), as a one-process
gloo group, like ``tests/integration/megatron``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # vLLM's engine core in this process (CPU build)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learner", required=True)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rl-iterations", type=int, default=0, help="then run a colocated math_rl stage")
    args = parser.parse_args()
    if args.learner == "megatron":
        from tests.support.megatron_cpu_shim import install

        install()
    import torch

    from mathfirst_hpc.learner.base import TokenBatch
    from mathfirst_hpc.models import prompt_ids
    from mathfirst_hpc.paths import RunPaths
    from mathfirst_hpc.rollout.base import SamplingParams
    from mathfirst_hpc.stage import build_backend, make_context, make_engine, resolve_stage_config, sync_weights

    torch.set_num_threads(1)
    paths = RunPaths(args.run_dir).make()
    overrides = [f"parallel.backend={args.learner}", f"rollout.backend={args.engine}", "data.synthetic_size=16",
                 "rollout.max_response_len=6", "dapo.overlong_buffer_len=2", "model.dtype=float32"]
    cfg = resolve_stage_config(paths, "math_rl", "tiny", overrides)
    ctx = make_context(paths, cfg, progress=False)
    backend = build_backend(ctx, None, total_steps=2)
    engine, shares = make_engine(ctx, backend)
    sync_s = sync_weights(engine, backend, shares)
    prompt = prompt_ids(ctx.tokenizer, [{"role": "user", "content": "what is 2 + 3?"}], 64)
    samples = engine.generate([prompt], SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=3))[0]
    gaps = []
    for sample in samples:
        ids = torch.tensor([sample.prompt_token_ids + sample.token_ids])
        ones = torch.ones_like(ids)
        learner = backend.forward_logprobs(TokenBatch(input_ids=ids, attention_mask=ones, loss_mask=ones))
        mine = learner[0, len(sample.prompt_token_ids):].float()
        gaps.append(float((mine - torch.tensor(sample.logprobs)).abs().max()))
    result = {"learner": type(backend).__name__, "engine": type(engine).__name__, "shares_weights": shares,
              "sync_s": sync_s, "samples": len(samples), "tokens": [len(s.token_ids) for s in samples],
              "max_logprob_gap": max(gaps), "rank": backend.rank, "sharded": backend.sharded}
    engine.close()
    backend.close()
    if args.rl_iterations:
        result["stage"] = run_stage_colocated(args, overrides)
    Path(args.out).write_text(json.dumps(result))


def run_stage_colocated(args: argparse.Namespace, overrides: list[str]) -> dict:
    """A whole colocated math_rl stage (``run.run_curriculum``: the RL loop with in-process runners), from the
    preset's seeded init, with a stop request inside it and a resume; returns what the run dir shows."""
    import json as _json

    from mathfirst_hpc.checkpoint import final_checkpoint, latest_checkpoint, read_meta
    from mathfirst_hpc.run import run_curriculum

    run_dir = Path(args.run_dir).parent / "stage"
    stage_overrides = overrides + ["start_from=base", f"steps={args.rl_iterations}", "checkpoint.every_steps=1",
                                   "rollout.prompts_per_batch=4", "dapo.mini_batches=2", "dapo.micro_batch_size=4",
                                   "dapo.dynamic_sampling=false"]  # a random model: keep even all-equal groups
    polls = {"n": 0}

    def stop_once() -> bool:  # after the first optimizer step of the run
        polls["n"] += 1
        return polls["n"] == 1

    first = run_curriculum(run_dir, ["math_rl"], overrides=stage_overrides, should_stop=stop_once, progress=False)
    stopped_at = read_meta(latest_checkpoint(run_dir / "checkpoints" / "math_rl"))
    second = run_curriculum(run_dir, ["math_rl"], overrides=stage_overrides, progress=False)
    final = final_checkpoint(run_dir / "checkpoints" / "math_rl")
    lines = [_json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"first": first["math_rl"], "second": second["math_rl"], "stopped_at": stopped_at,
            "final_meta": read_meta(final), "hf_export": (final / "hf" / "config.json").exists(),
            "rank_files": sorted(p.name for p in final.glob("rank_*.pt")),
            "iterations_logged": [r["iteration"] for r in lines if r.get("stage") == "math_rl"]}


if __name__ == "__main__":
    main()
