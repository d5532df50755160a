"""GPU check of the scale path (issue 7): one script, at most ~8 minutes on one H100/H200.

Prints one line per figure, with the named baseline from the same run and the ratio:

1. Megatron-core training step on a Qwen3-0.6B-shaped random model (bf16, TP=PP=DP=1, distributed optimizer,
   DAPO loss, 4 micro-batches of 4 x 1024 tokens): seconds/step, tokens/s and model FLOPs utilisation against
   the card's dense bf16 peak; baseline: the torch backend (HF model + AdamW) on the same work.
2. vLLM generation throughput, 64 prompts x 8 samples x 512 new tokens on the same model (the learner's HF
   export), and the weight-sync time (gather of HF weights from Megatron + in-place reload into vLLM);
   "vllm: not installed" when vLLM is absent.
3. The HF engine (``rollout/hf.py``) on the same generation work, as vLLM's baseline. It is stopped after
   ``--hf-budget-s`` and reports the tokens/s of the batches it finished.

Each part runs in its own try/except, so one failure is printed and the rest is still measured. The figures go
to ``$OUT/gpu_check.json`` when ``OUT`` is set (and to ``--json``).

megatron-core is usually not installed on the GPU machines: when ``import megatron.core`` fails the script
installs a carried wheel (``--megatron-wheels`` / ``MATHFIRST_MEGATRON_WHEELS``, default ``bench/wheels``; made
here with ``pip download megatron-core==0.16.1 --no-deps --only-binary=:all: --python-version 3.1X -d
bench/wheels``) into a temp folder with ``pip --no-deps --no-index``, or reports it missing.

    python bench/gpu_check.py                 # on the GPU machine (the lead runs it with bench/wheels carried)
    python bench/gpu_check.py --quick         # CPU smoke run with tiny shapes (uses the test-only megatron shim)

FLOPs convention: 6 x (matmul parameters incl. the LM head) per trained token plus causal attention
6 x layers x heads x head_dim x seq_len (half of the full score matrix).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package need not be installed on the GPU machine

import torch  # noqa: E402

PEAK_BF16_FLOPS = {"H200": 989.4e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989.4e12, "A100": 312e12}
"""Dense bf16 tensor-core peak by device-name substring (first match wins; H100 = SXM)."""

QWEN3_06B = dict(model_type="qwen3", vocab_size=151936, hidden_size=1024, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, intermediate_size=3072,
                 max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True,
                 rope_theta=1000000.0)
TINY = dict(model_type="qwen3", vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, intermediate_size=256, max_position_embeddings=2048,
            rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=1000000.0)


def log(line: str) -> None:
    print(line, flush=True)


def part(name: str, results: dict[str, Any], fn: Callable[[], dict[str, Any] | None]) -> None:
    """Run one measurement; record its figures or its error, never stop the script."""
    start = time.perf_counter()
    try:
        figures = fn() or {}
        results[name] = {**figures, "wall_s": round(time.perf_counter() - start, 2)}
    except Exception as exc:  # noqa: BLE001 - a failed part must not lose the others
        log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc(limit=6)
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -----------------------------------------------------------------------------------------------------------------
# Setup
# -----------------------------------------------------------------------------------------------------------------

def ensure_megatron(wheels: Path) -> str:
    """Import megatron.core, installing a carried wheel into a temp folder when needed. Returns a status line."""
    try:
        import megatron.core  # noqa: F401
        from megatron.core import package_info
        return f"megatron-core {package_info.__version__} (installed)"
    except ImportError:
        pass
    found = sorted(wheels.glob("megatron_core-*.whl")) if wheels.is_dir() else ([wheels] if wheels.is_file() else [])
    if not found:
        raise RuntimeError(f"megatron-core not installed and no wheel at {wheels} (carry bench/wheels)")
    target = Path(tempfile.mkdtemp(prefix="mcore-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    source = str(wheels) if wheels.is_dir() else str(wheels.parent)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--find-links", source,
           "--target", str(target), "megatron-core"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    how = "pip"
    if done.returncode != 0:  # e.g. no wheel for this Python: the pure-Python part of any wheel is enough here
        with zipfile.ZipFile(found[-1]) as wheel:
            wheel.extractall(target)
        how = f"unzipped {found[-1].name} (pip said: {done.stderr.strip().splitlines()[-1:] or ['?']})"
    sys.path.insert(0, str(target))
    from megatron.core import package_info
    return f"megatron-core {package_info.__version__} from carried wheel ({how})"


def device_line() -> tuple[str, float | None]:
    if not torch.cuda.is_available():
        cpu = platform.processor() or platform.machine()
        return f"cpu ({cpu}, {os.cpu_count()} cores), torch {torch.__version__}", None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    peak_text = f"{peak / 1e12:.0f} TFLOP/s bf16 dense peak" if peak else "peak unknown: MFU not computed"
    return f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}; {peak_text}", peak


def hf_config(spec: dict[str, Any]) -> Any:
    from transformers import Qwen3Config
    # rope_theta as a keyword: transformers 4.x stores it as is, 5.x moves it into rope_parameters
    return Qwen3Config(**{k: v for k, v in spec.items() if k != "model_type"})


def random_hf_model(spec: dict[str, Any], dtype: torch.dtype, device: str) -> Any:
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    with torch.device(device):  # dtype by .to(): transformers 4.x calls the from_config keyword torch_dtype
        return AutoModelForCausalLM.from_config(hf_config(spec), attn_implementation="sdpa").to(dtype)


def train_flops_per_token(spec: dict[str, Any], seq_len: int) -> float:
    h, d, L = spec["hidden_size"], spec["head_dim"], spec["num_hidden_layers"]
    q, kv, ffn, vocab = spec["num_attention_heads"], spec["num_key_value_heads"], spec["intermediate_size"], \
        spec["vocab_size"]
    matmul = L * (h * q * d + 2 * h * kv * d + q * d * h + 3 * h * ffn) + h * vocab
    return 6.0 * matmul + 6.0 * L * q * d * seq_len


def rl_micro_batches(n: int, rows: int, seq_len: int, vocab: int, prompt_len: int) -> list[Any]:
    from mathfirst_hpc.learner.base import TokenBatch
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (rows, seq_len), generator=g)
        attention = torch.ones_like(ids)
        loss_mask = attention.clone()
        loss_mask[:, :prompt_len] = 0
        old = -2 * torch.rand(rows, seq_len, generator=g) * loss_mask
        out.append(TokenBatch(ids, attention, loss_mask, old_logprobs=old, advantages=torch.randn(rows, generator=g)))
    return out


def dapo_loss(batches: list[Any]) -> Any:
    from mathfirst_hpc.config import DapoConfig
    from mathfirst_hpc.learner.dapo import make_dapo_loss
    tokens = sum(float(b.loss_mask.sum()) for b in batches)
    return make_dapo_loss(DapoConfig(), tokens, sum(b.num_sequences for b in batches))


def time_steps(step: Callable[[], Any], warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


# -----------------------------------------------------------------------------------------------------------------
# Parts
# -----------------------------------------------------------------------------------------------------------------

class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.spec = TINY if self.quick else QWEN3_06B
        self.on_gpu = torch.cuda.is_available()
        self.device = "cuda" if self.on_gpu else "cpu"
        self.dtype = torch.bfloat16 if self.on_gpu else torch.float32
        self.seq_len = 64 if self.quick else 1024
        self.rows = 2 if self.quick else 4
        self.micro = 2 if self.quick else 4
        self.gen = dict(prompts=4, n=2, new_tokens=16, prompt_len=16) if self.quick else \
            dict(prompts=64, n=8, new_tokens=512, prompt_len=64)
        self.steps = (1, 2) if self.quick else (2, 5)
        self.peak: float | None = None
        self.backend: Any = None
        self.results: dict[str, Any] = {}

    def work_tokens(self) -> int:
        return self.micro * self.rows * self.seq_len

    def megatron_step(self) -> dict[str, Any]:
        from mathfirst_hpc.config import OptimConfig, ParallelConfig
        if not self.on_gpu:  # CPU smoke run only: megatron-core needs the test-support shim on CPU
            from tests.support.megatron_cpu_shim import install
            install()
        from mathfirst_hpc.learner.megatron.backend import MegatronBackend

        model = random_hf_model(self.spec, self.dtype, self.device)
        dtype_name = str(self.dtype).removeprefix("torch.")
        self.backend = MegatronBackend.from_hf_model(
            model, optim=OptimConfig(lr=1e-5), parallel=ParallelConfig(backend="megatron"), total_steps=100,
            dtype=dtype_name)
        del model
        gc.collect()
        batches = rl_micro_batches(self.micro, self.rows, self.seq_len, self.spec["vocab_size"], self.seq_len // 4)
        loss_fn = dapo_loss(batches)
        step_s = time_steps(lambda: self.backend.train_step(batches, loss_fn), *self.steps)
        return self._train_figures("megatron", step_s, distributed_optimizer=self.on_gpu)

    def torch_step(self) -> dict[str, Any]:
        from mathfirst_hpc.config import OptimConfig
        from mathfirst_hpc.learner.torch_backend import TorchBackend
        backend = TorchBackend(random_hf_model(self.spec, self.dtype, self.device), OptimConfig(lr=1e-5),
                               total_steps=100, device=self.device)
        batches = rl_micro_batches(self.micro, self.rows, self.seq_len, self.spec["vocab_size"], self.seq_len // 4)
        loss_fn = dapo_loss(batches)
        step_s = time_steps(lambda: backend.train_step(batches, loss_fn), *self.steps)
        self.hf_model = backend.model  # reused by the HF engine part
        return self._train_figures("torch", step_s)

    def _train_figures(self, name: str, step_s: float, **extra: Any) -> dict[str, Any]:
        tokens_s = self.work_tokens() / step_s
        flops = train_flops_per_token(self.spec, self.seq_len) * tokens_s
        mfu = flops / self.peak if self.peak else None
        figures = {"step_s": step_s, "tokens_per_s": tokens_s, "model_tflops": flops / 1e12, "mfu": mfu,
                   "tokens_per_step": self.work_tokens(), **extra}
        if self.on_gpu:
            figures["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        mfu_text = f"MFU {100 * mfu:.1f}%" if mfu is not None else "MFU n/a"
        label = {"megatron": "megatron train step", "torch": "torch backend train step (baseline)"}[name]
        ratio = ""
        if name == "torch" and "tokens_per_s" in self.results.get("megatron_step", {}):
            ratio = f"; megatron/torch = {self.results['megatron_step']['tokens_per_s'] / tokens_s:.2f}x"
        log(f"{label} ({'Qwen3-0.6B' if not self.quick else 'tiny'} shape, {str(self.dtype)[6:]}, "
            f"{self.micro} x {self.rows}x{self.seq_len} tokens): {step_s:.3f} s/step, {tokens_s:,.0f} tokens/s, "
            f"{flops / 1e12:.1f} TFLOP/s, {mfu_text}{ratio}")
        return figures

    def vllm(self) -> dict[str, Any]:
        try:
            import vllm
        except ImportError:
            log("vllm: not installed (generation throughput and weight sync not measured)")
            if self.backend is None:
                return {"installed": False}
            start = time.perf_counter()
            self.backend.hf_state_dict()
            gather_s = time.perf_counter() - start
            log(f"weight gather from megatron (HF names, to CPU): {gather_s:.2f} s")
            return {"installed": False, "gather_s": gather_s}
        from mathfirst_hpc.config import RolloutConfig
        from mathfirst_hpc.models import train_tokenizer
        from mathfirst_hpc.rollout.base import SamplingParams
        from mathfirst_hpc.rollout.vllm import VLLMEngine

        export = Path(tempfile.mkdtemp(prefix="hf-export-"))
        atexit.register(shutil.rmtree, export, ignore_errors=True)
        if self.backend is not None:
            self.backend.export_hf(export)
            weights_fn = self.backend.hf_state_dict
        else:  # no megatron: vLLM still measured, on the same random model saved by transformers
            model = random_hf_model(self.spec, self.dtype, "cpu")
            model.save_pretrained(str(export))
            weights_fn = model.state_dict
        train_tokenizer(["a b c d e f g"] * 8, vocab_size=300).save_pretrained(str(export))
        g = self.gen
        cfg = RolloutConfig(max_prompt_len=g["prompt_len"], max_response_len=g["new_tokens"],
                            gpu_memory_utilization=0.45)
        engine = VLLMEngine(export, cfg, dtype="bfloat16" if self.on_gpu else "float32")
        prompts = self._prompts()
        sampling = SamplingParams(n=g["n"], temperature=1.0, max_new_tokens=g["new_tokens"], seed=0)
        engine.generate(prompts[:2], sampling)  # warm-up
        engine.generate(prompts, sampling)
        tokens_s = engine.last_generated_tokens / engine.last_generate_s
        start = time.perf_counter()
        weights = weights_fn()
        gathered = time.perf_counter()
        engine.update_weights(weights)
        sync()
        done = time.perf_counter()
        engine.close()
        log(f"vllm {vllm.__version__}: {g['prompts']} prompts x {g['n']} x {g['new_tokens']} tokens: "
            f"{engine.last_generated_tokens:,} tokens in {engine.last_generate_s:.1f} s = {tokens_s:,.0f} tokens/s")
        source = "megatron" if self.backend is not None else "hf model"
        log(f"weight sync {source} -> vllm: {done - start:.2f} s (gather {gathered - start:.2f} s, "
            f"reload {done - gathered:.2f} s)")
        return {"installed": True, "version": vllm.__version__, "tokens_per_s": tokens_s,
                "tokens": engine.last_generated_tokens, "sync_s": done - start, "gather_s": gathered - start}

    def _prompts(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, self.spec["vocab_size"], (self.gen["prompts"], self.gen["prompt_len"]), generator=g)
        return ids.tolist()

    def hf_engine(self) -> dict[str, Any]:
        from mathfirst_hpc.rollout.base import SamplingParams
        from mathfirst_hpc.rollout.hf import HFEngine

        class IdsOnly:  # the engine needs a pad id and decode(); no tokenizer matters for throughput
            pad_token_id = 0

            def decode(self, ids: list[int], **_: Any) -> str:
                return ""

        model = getattr(self, "hf_model", None) or random_hf_model(self.spec, self.dtype, self.device)
        g = self.gen
        # an EOS id outside the vocabulary: every sequence runs to max_new_tokens, as in the vLLM part
        engine = HFEngine(model, IdsOnly(), eos_token_ids=[self.spec["vocab_size"]],
                          batch_size=self.args.hf_batch_size, device=self.device)
        sampling = SamplingParams(n=g["n"], temperature=1.0, max_new_tokens=g["new_tokens"], seed=0)
        prompts = self._prompts()
        per_batch = max(1, self.args.hf_batch_size // g["n"])
        engine.generate(prompts[:1], SamplingParams(n=1, max_new_tokens=4))  # warm-up
        tokens, elapsed, done_prompts = 0, 0.0, 0
        for lo in range(0, len(prompts), per_batch):
            engine.generate(prompts[lo:lo + per_batch], sampling)
            tokens += engine.last_generated_tokens
            elapsed += engine.last_generate_s
            done_prompts += len(prompts[lo:lo + per_batch])
            if elapsed > self.args.hf_budget_s:
                break
        tokens_s = tokens / elapsed
        vllm_figs = self.results.get("vllm", {})
        ratio = f"; vllm/hf = {vllm_figs['tokens_per_s'] / tokens_s:.1f}x" if "tokens_per_s" in vllm_figs else ""
        log(f"hf engine (baseline): {g['prompts']} prompts x {g['n']} x {g['new_tokens']} tokens, batch "
            f"{self.args.hf_batch_size}: {tokens_s:,.0f} tokens/s (measured on {done_prompts}/{g['prompts']} prompts, "
            f"{tokens:,} tokens in {elapsed:.1f} s){ratio}")
        return {"tokens_per_s": tokens_s, "tokens": tokens, "prompts_measured": done_prompts, "seconds": elapsed}

    def release_megatron(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        gc.collect()
        if self.on_gpu:
            torch.cuda.empty_cache()

    def run(self) -> dict[str, Any]:
        line, self.peak = device_line()
        log(f"device: {line}")
        self.results["device"] = {"line": line, "peak_flops": self.peak}
        try:
            status = ensure_megatron(Path(self.args.megatron_wheels))
            log(status)
            self.results["megatron_core"] = status
            part("megatron_step", self.results, self.megatron_step)
        except Exception as exc:  # noqa: BLE001
            log(f"megatron-core: unavailable: {exc}")
            self.results["megatron_core"] = f"unavailable: {exc}"
        part("vllm", self.results, self.vllm)
        self.release_megatron()
        part("torch_step", self.results, self.torch_step)
        part("hf_engine", self.results, self.hf_engine)
        return self.results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes on CPU: proves the script runs")
    parser.add_argument("--megatron-wheels", default=os.environ.get("MATHFIRST_MEGATRON_WHEELS",
                                                                     str(ROOT / "bench" / "wheels")),
                        help="folder (or file) of megatron-core wheels used when it is not installed")
    parser.add_argument("--hf-batch-size", type=int, default=128, help="sequences per HF engine batch")
    parser.add_argument("--hf-budget-s", type=float, default=120.0,
                        help="stop the HF engine after the batch that passes this many seconds")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    start = time.perf_counter()
    results = Check(args).run()
    results["total_s"] = round(time.perf_counter() - start, 1)
    log(f"total: {results['total_s']} s")
    targets = [Path(args.json)] if args.json else []
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / "gpu_check.json")
    from mathfirst_hpc.atomic import write_json
    for target in targets:
        write_json(target, results)
        log(f"figures written to {target}")


if __name__ == "__main__":
    main()
