"""Our DAPO step against TRL's GRPOTrainer (loss_type "dapo", epsilon 0.2, epsilon_high 0.28, beta 0) on the
same tiny Qwen3 (2 layers, hidden 128, the same in-memory BPE tokenizer), 8 prompts x 4 generations x 32 new
tokens, on the CPU, in the same run.

A step is what TRL's step is: generation + reward + one optimizer update. Ours also writes and reads its HDF5
shard (the real colocated path: ``collect_iteration`` + ``learner_update``); dynamic sampling is off for the
comparison. Both use the same reward function (our math verifier on the decoded completion).

    .venv/bin/python bench/bench_dapo_vs_trl.py [--steps 12] [--warmup 3] [--threads 2]

Prints the median seconds per step of both (after warm-up), and the ratio TRL / ours (goal: >= 1.5x).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings

import torch

warnings.filterwarnings("ignore")
logging.getLogger("mathfirst_hpc").setLevel(logging.ERROR)

PROMPTS, GENERATIONS, NEW_TOKENS = 8, 4, 32


def build(seed: int = 0):
    from mathfirst_hpc.config import ModelConfig
    from mathfirst_hpc.data.synthetic import corpus_texts, make_problems
    from mathfirst_hpc.models import build_model, train_tokenizer

    tok = train_tokenizer(corpus_texts(n=3000, seed=0), vocab_size=512)
    model = build_model(ModelConfig(preset="tiny-qwen3", vocab_size=512), tok, seed=seed)
    problems = make_problems("math", 256, seed=0)
    return tok, model, problems


def reward_fn_factory(problems):
    from mathfirst_hpc.config import RewardConfig
    from mathfirst_hpc.rewards import RewardRouter

    router = RewardRouter(RewardConfig())
    by_prompt = {p.prompt[0]["content"]: p for p in problems}

    def reward(prompts, completions, **_):
        out = []
        for prompt, completion in zip(prompts, completions):
            text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
            answer = completion[-1]["content"] if isinstance(completion, list) else completion
            out.append(router.score(by_prompt[text], answer).score)
        return out
    return router, reward


def bench_trl(steps: int, warmup: int) -> list[float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok, model, problems = build()
    _, reward = reward_fn_factory(problems)
    data = Dataset.from_list([{"prompt": p.prompt} for p in problems])
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(output_dir=out, loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0,
                         num_generations=GENERATIONS, per_device_train_batch_size=PROMPTS * GENERATIONS,
                         max_completion_length=NEW_TOKENS, max_steps=steps + warmup, learning_rate=5e-4,
                         use_cpu=True, bf16=False, report_to=[], save_strategy="no", logging_steps=10_000,
                         temperature=1.0, top_p=1.0, disable_tqdm=True, seed=0, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=data,
                              processing_class=tok, callbacks=[Timer()])
        trainer.train()
    return times[warmup:]


def bench_ours(steps: int, warmup: int) -> list[float]:
    from mathfirst_hpc.config import load_stage_config
    from mathfirst_hpc.manifest import Manifest
    from mathfirst_hpc.models import eos_ids
    from mathfirst_hpc.paths import RunPaths
    from mathfirst_hpc.rollout.hf import HFEngine
    from mathfirst_hpc.run import StageContext, collect_iteration, learner_update
    from mathfirst_hpc.learner.torch_backend import TorchBackend
    from mathfirst_hpc.data.mix import DomainMixer

    tok, model, problems = build()
    router, _ = reward_fn_factory(problems)
    cfg = load_stage_config("math_rl", overrides=[
        f"rollout.prompts_per_batch={PROMPTS}", f"rollout.n_per_prompt={GENERATIONS}",
        f"rollout.max_response_len={NEW_TOKENS}", "rollout.num_shards=1", "rollout.batch_size=64",
        "dapo.dynamic_sampling=false", "dapo.mini_batches=1", "dapo.micro_batch_size=32",
        "dapo.overlong_enable=false", "optim.lr=5e-4", "data.synthetic_size=256"])
    times = []
    with tempfile.TemporaryDirectory() as run_dir:
        paths = RunPaths(run_dir).make()
        ctx = StageContext(paths, cfg, tok, Manifest(paths), progress=False)
        backend = TorchBackend(model, cfg.optim, total_steps=steps + warmup)
        engine = HFEngine(backend.model, tok, eos_ids(tok), batch_size=64)
        mixer = DomainMixer(cfg.data, seed=0)
        for it in range(steps + warmup):
            start = time.perf_counter()
            batch = collect_iteration(ctx, engine, router, mixer, iteration=it, policy_step=it)
            learner_update(ctx, backend, batch.kept)
            times.append(time.perf_counter() - start)
    return times[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ours, trl = [], []
    for _ in range(2):  # alternate, so both see the same machine conditions
        trl += bench_trl(args.steps // 2, args.warmup)
        ours += bench_ours(args.steps // 2, args.warmup)
    med_ours, med_trl = statistics.median(ours), statistics.median(trl)
    print(f"tiny Qwen3 (2 layers, hidden 128, vocab 512), {PROMPTS} prompts x {GENERATIONS} generations x "
          f"{NEW_TOKENS} new tokens, {args.threads} threads, {len(ours)} measured steps each")
    print(f"TRL GRPOTrainer (dapo)  median {med_trl:.4f} s/step")
    print(f"mathfirst-hpc DAPO      median {med_ours:.4f} s/step")
    print(f"speed-up TRL/ours       {med_trl / med_ours:.2f}x (goal >= 1.5x)")


if __name__ == "__main__":
    main()
