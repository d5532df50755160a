"""Our DAPO step against TRL's GRPOTrainer (loss_type "dapo", epsilon 0.2, epsilon_high 0.28, beta 0) on the
same tiny Qwen3 (2 layers, hidden 128, the same in-memory BPE tokenizer), 8 prompts x 4 generations x 32 new
tokens, on the CPU, in the same run.

A step is what TRL's step is: generation + reward + one optimizer update. Ours also writes and reads its HDF5
shard (the real colocated path, through the functions the RL loop uses: ``collect_iteration`` +
``learner_update``); dynamic sampling is off for the comparison. Both use the same reward function (our math
verifier on the decoded completion).

    .venv/bin/python bench/bench_dapo_vs_trl.py [--steps 12] [--warmup 3] [--threads 2]

Output, in order:
1. what each side computes per step, measured on one warm-up step by counting the passes through the model's
   token embedding (every forward pass, HF or our lean decode step, embeds its input once), split into
   generation prefill / generation decode / no-grad forwards outside generation (old log-probs, reference) /
   learner forwards with gradient; plus each side's generation method and old-log-prob source;
2. where our step spends its time (median per part);
3. the median seconds per step of both (after warm-up; the two sides alternate twice so both see the same machine
   conditions), and the ratio TRL / ours (goal: >= 2.0x on a quiet machine).

Why taking old log-probs from the rollout is the same work as TRL's: with one optimizer step per generation
(``num_iterations=1``, ``steps_per_generation == gradient_accumulation_steps``) TRL computes no old-log-prob
forward either; it sets old = logp.detach(), so its ratio is exactly 1. Ours uses the rollout's log-probs of the
same weights, which equal the learner's teacher-forced log-probs to float rounding (< 1e-5, tested in
``tests/unit/rollout/test_rollout_logprobs.py``), so the ratio is 1 to ~1e-6 and the clipped objective and its
gradient are the same (tested in ``tests/unit/learner/test_torch_backend.py``).

Neither side does work the other skips beyond that: TRL repeats each prompt in its prefill and its learner pass
(4 identical copies), ours runs it once per prompt in both (prefill once + repeated KV cache; a shared-prompt
learner pass whose gradient equals the plain forward's). Those are our optimisations, not less output: the
same 8 x 4 x 32 sampled tokens, rewards, and one AdamW step over the same loss.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections import Counter
from typing import Any, Callable

import torch

warnings.filterwarnings("ignore")
logging.getLogger("mathfirst_hpc").setLevel(logging.ERROR)

PROMPTS, GENERATIONS, NEW_TOKENS = 8, 4, 32
GOAL = 2.0


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


# ---- counting forward passes -----------------------------------------------------------------------------------

class PassCounter:
    """Records (phase, grad enabled, rows, tokens per row) for every pass through ``model``'s token embedding.
    ``phase`` is "generation" inside the wrapped generate call, else "outside"."""

    def __init__(self, model: Any) -> None:
        self.phase = "outside"
        self.events: list[tuple[str, bool, int, int]] = []
        self._handle = model.get_input_embeddings().register_forward_hook(self._hook)

    def _hook(self, module: Any, args: tuple, output: Any) -> None:
        ids = args[0]
        self.events.append((self.phase, torch.is_grad_enabled(), int(ids.shape[0]),
                            int(ids.shape[1]) if ids.dim() > 1 else 1))

    def generating(self, fn: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            self.phase = "generation"
            try:
                return fn(*args, **kwargs)
            finally:
                self.phase = "outside"
        return wrapped

    def close(self) -> None:
        self._handle.remove()

    def summary(self) -> dict[str, str]:
        def describe(events: list[tuple[str, bool, int, int]]) -> str:
            if not events:
                return "0"
            shapes = Counter(f"{rows}x{tokens}" for _, _, rows, tokens in events)
            return f"{len(events)} (" + ", ".join(f"{n} x [{s}]" for s, n in shapes.items()) + ")"
        gen = [e for e in self.events if e[0] == "generation"]
        out = [e for e in self.events if e[0] != "generation"]
        return {
            "generation prefill passes": describe([e for e in gen if e[3] > 1]),
            "generation decode passes": describe([e for e in gen if e[3] == 1]),
            "no-grad forwards outside generation (old log-probs, reference)": describe([e for e in out if not e[1]]),
            "learner forwards with gradient (each with one backward)": describe([e for e in out if e[1]]),
        }


# ---- TRL ---------------------------------------------------------------------------------------------------------

def bench_trl(steps: int, warmup: int, report: dict[str, Any] | None = None) -> list[float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok, model, problems = build()
    _, reward = reward_fn_factory(problems)
    data = Dataset.from_list([{"prompt": p.prompt} for p in problems])
    times: list[float] = []
    counter = PassCounter(model) if report is not None else None
    if counter is not None:
        model.generate = counter.generating(model.generate)  # TRL generates with this very object

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if counter is not None:
                counter.events.clear()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.start)
            if counter is not None and len(times) == 1:  # one warm-up step counted, then no hook overhead
                report["passes"] = counter.summary()
                counter.close()

    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(output_dir=out, loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0,
                         num_generations=GENERATIONS, per_device_train_batch_size=PROMPTS * GENERATIONS,
                         max_completion_length=NEW_TOKENS, max_steps=steps + warmup, learning_rate=5e-4,
                         use_cpu=True, bf16=False, report_to=[], save_strategy="no", logging_steps=10_000,
                         temperature=1.0, top_p=1.0, disable_tqdm=True, seed=0, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=data,
                              processing_class=tok, callbacks=[Timer()])
        with contextlib.redirect_stdout(io.StringIO()):  # TRL prints its final metrics dict
            trainer.train()
    if report is not None:
        report["method"] = trl_method(trainer)
    return times[warmup:]


def trl_method(trainer: Any) -> dict[str, str]:
    """TRL's generation settings and its old-log-prob rule, read from the trainer itself."""
    gen = trainer.generation_config
    args = trainer.args
    settings = ", ".join(f"{k}={getattr(gen, k, None)}" for k in
                         ("do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                          "max_new_tokens", "cache_implementation"))
    # TRL's rule (GRPOTrainer._generate_and_score_completions): old log-probs get their own forward only when
    # generation and optimizer steps are misaligned, or with vLLM importance-sampling correction
    generate_every = args.steps_per_generation * trainer.num_iterations
    recomputed = args.gradient_accumulation_steps % generate_every != 0 or bool(getattr(trainer, "use_vllm", False))
    old = ("recomputed with an extra no-grad forward" if recomputed else
           f"not computed: old = logp.detach(), ratio exactly 1 (num_iterations={trainer.num_iterations}, "
           f"steps_per_generation={args.steps_per_generation}, "
           f"gradient_accumulation_steps={args.gradient_accumulation_steps})")
    return {"generation": f"model.generate over {PROMPTS * GENERATIONS} rows (each prompt repeated "
                          f"{GENERATIONS}x, left padded); {settings}",
            "old log-probs": old,
            "learner": "one forward + backward of every row (left-padded prompt + completion, attention mask), "
                       "log-probs of the completion tokens (fused_lm_head)"}


# ---- ours ----------------------------------------------------------------------------------------------------------

def _our_loop_functions() -> tuple[Callable, Callable, Callable, Callable]:
    """``collect_iteration``, ``learner_update`` and the backend/engine builders the RL loop uses (the loop was
    being split into loop.py / stage.py / registry.py; both layouts are accepted)."""
    from mathfirst_hpc.run import collect_iteration
    try:
        from mathfirst_hpc.loop import learner_update
    except ImportError:
        from mathfirst_hpc.run import learner_update
    try:
        from mathfirst_hpc.registry import WeightsSource, build_engine, build_learner

        def learner(cfg, model, total):
            return build_learner(cfg, WeightsSource(model=model), total, device="cpu")

        def engine(cfg, tok, backend):
            return build_engine(cfg.rollout, tok, WeightsSource(model=backend.model))
    except ImportError:
        from mathfirst_hpc.learner.torch_backend import TorchBackend
        from mathfirst_hpc.models import eos_ids
        from mathfirst_hpc.rollout.hf import HFEngine

        def learner(cfg, model, total):
            return TorchBackend(model, cfg.optim, total_steps=total)

        def engine(cfg, tok, backend):
            return HFEngine(backend.model, tok, eos_ids(tok), batch_size=cfg.rollout.batch_size)
    return collect_iteration, learner_update, learner, engine


def _stage_context(paths, cfg, tok):
    from mathfirst_hpc.manifest import Manifest
    try:
        from mathfirst_hpc.stage import StageContext
    except ImportError:
        from mathfirst_hpc.run import StageContext
    return StageContext(paths, cfg, tok, Manifest(paths), progress=False)


class SameProblems:
    """The mixer's ``next_batch`` over TRL's dataset (``build``'s 256 math problems, shuffled with a seed), so
    that both sides draw their prompts from the same problems whatever the stage config's data mix is."""

    def __init__(self, problems: list, seed: int = 0) -> None:
        order = torch.randperm(len(problems), generator=torch.Generator().manual_seed(seed)).tolist()
        self.problems, self.cursor = [problems[i] for i in order], 0

    def next_batch(self, n: int) -> list:
        out = [self.problems[(self.cursor + i) % len(self.problems)] for i in range(n)]
        self.cursor += n
        return out


def bench_ours(steps: int, warmup: int, report: dict[str, Any] | None = None,
               parts: dict[str, list[float]] | None = None) -> list[float]:
    from mathfirst_hpc.config import load_stage_config
    from mathfirst_hpc.paths import RunPaths

    collect_iteration, learner_update, make_learner, make_engine = _our_loop_functions()
    tok, model, problems = build()
    router, _ = reward_fn_factory(problems)
    cfg = load_stage_config("math_rl", overrides=[
        f"rollout.prompts_per_batch={PROMPTS}", f"rollout.n_per_prompt={GENERATIONS}",
        f"rollout.max_response_len={NEW_TOKENS}", "rollout.num_shards=1", "rollout.batch_size=64",
        "dapo.dynamic_sampling=false", "dapo.mini_batches=1", "dapo.micro_batch_size=32",
        "dapo.overlong_enable=false", "optim.lr=5e-4"])
    times = []
    with tempfile.TemporaryDirectory() as run_dir:
        paths = RunPaths(run_dir).make()
        ctx = _stage_context(paths, cfg, tok)
        backend = make_learner(cfg, model, steps + warmup)
        engine = make_engine(cfg, tok, backend)
        mixer = SameProblems(problems)
        counter = None
        if report is not None:
            counter = PassCounter(backend.model)
            engine.generate = counter.generating(engine.generate)
        for it in range(steps + warmup):
            ctx.timings.clear()
            start = time.perf_counter()
            batch = collect_iteration(ctx, engine, router, mixer, iteration=it, policy_step=it)
            learn_start = time.perf_counter()
            learner_update(ctx, backend, batch.kept)
            end = time.perf_counter()
            times.append(end - start)
            if counter is not None:  # the first (warm-up) step only
                report["passes"] = counter.summary()
                counter.close()
                del engine.generate
                counter = None
            if parts is not None and it >= warmup:
                _record_parts(parts, ctx.timings, learn_start - start, end - learn_start, end - start)
    if report is not None:
        report["method"] = {
            "generation": f"HFEngine: one lean prefill per prompt ({PROMPTS} rows, rollout/fast_decode.py) "
                          f"writing its keys/values into the preallocated cache rows of its {GENERATIONS} "
                          f"samples, then lean decode steps (same file) over that cache, all rows at once; "
                          f"temperature={cfg.rollout.temperature}, top_p={cfg.rollout.top_p}, inverse-CDF sampling "
                          f"(one uniform per row), log-prob = log_softmax of the sampled token",
            "old log-probs": "taken from the rollout (log_softmax of each sampled token, stored in the shard); "
                             "equal to the learner's teacher-forced log-probs to < 1e-5 (tested)",
            "learner": "one forward + backward: each prompt once (the prefill-like pass) and each sample's "
                       "response attending to its prompt's keys/values (the two learner passes counted above); in the "
                       "last layer the prompt pass makes keys/values at every prompt token but the query, attention "
                       "output and MLP at its last token only (nothing else of it reaches the loss); head and "
                       "log-softmax on the response tokens only; same gradient as the plain forward to float "
                       "rounding (tested)"}
    return times[warmup:]


def _record_parts(parts: dict[str, list[float]], timings: dict[str, float], collect_s: float, learn_s: float,
                  total_s: float) -> None:
    gen = timings.get("generate_s", 0.0)
    rows = {"generation (engine.generate)": gen,
            "shard write": timings.get("rollout_s", 0.0) - gen,
            "reward + shard read/rewrite": timings.get("reward_s", 0.0) + timings.get("shard_io_s", 0.0),
            "plan (prompt draw + plan file)": timings.get("plan_s", 0.0),
            "learner update (batches, fwd/bwd, clip, AdamW)": learn_s}
    rows["other (python between parts)"] = total_s - sum(rows.values())
    for key, value in rows.items():
        parts.setdefault(key, []).append(value)


# ---- output --------------------------------------------------------------------------------------------------------

def print_work_table(trl: dict[str, Any], ours: dict[str, Any]) -> None:
    print("What each side computes per step (passes counted on one warm-up step; [rows x tokens per row]):")
    for key in trl["passes"]:
        print(f"  {key}")
        print(f"    TRL : {trl['passes'][key]}")
        print(f"    ours: {ours['passes'][key]}")
    for key in ("generation", "old log-probs", "learner"):
        print(f"  {key}")
        print(f"    TRL : {trl['method'][key]}")
        print(f"    ours: {ours['method'][key]}")
    print("  reference model: none on either side (TRL beta=0; ours kl_coef=0)")
    print()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    load_before = os.getloadavg()
    ours, trl, rounds = [], [], []
    trl_report: dict[str, Any] = {}
    our_report: dict[str, Any] = {}
    parts: dict[str, list[float]] = {}
    for round_ in range(2):  # alternate, so both see the same machine conditions
        t = bench_trl(args.steps // 2, args.warmup, trl_report if round_ == 0 else None)
        o = bench_ours(args.steps // 2, args.warmup, our_report if round_ == 0 else None, parts)
        trl, ours = trl + t, ours + o
        rounds.append(statistics.median(t) / statistics.median(o))
    print_work_table(trl_report, our_report)
    print("Where our step spends its time (median s):")
    for key, values in parts.items():
        print(f"  {key:48s} {statistics.median(values):.4f}")
    print()
    med_ours, med_trl = statistics.median(ours), statistics.median(trl)
    load_after = os.getloadavg()
    print(f"tiny Qwen3 (2 layers, hidden 128, vocab 512), {PROMPTS} prompts x {GENERATIONS} generations x "
          f"{NEW_TOKENS} new tokens, {args.threads} threads, {len(ours)} measured steps each")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}  "
          f"(a loaded machine is not a measurement of the goal)")
    print(f"TRL GRPOTrainer (dapo)  median {med_trl:.4f} s/step")
    print(f"mathfirst-hpc DAPO      median {med_ours:.4f} s/step")
    print(f"per round TRL/ours      {', '.join(f'{r:.2f}x' for r in rounds)}")
    print(f"speed-up TRL/ours       {med_trl / med_ours:.2f}x (goal >= {GOAL}x on a quiet machine)")


if __name__ == "__main__":
    main()
