"""Models and tokenizers: any Hugging Face causal LM from a local folder, or a random-init tiny preset
(Qwen3 / Llama architecture) with a byte-level BPE tokenizer trained in memory on the run's corpus.

Nothing is ever fetched from a hub: ``local_files_only`` everywhere and HF_HUB_OFFLINE set on import.

    tok = train_tokenizer(texts, vocab_size=512)
    model = build_model(cfg.model, tok)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (AutoModelForCausalLM, LlamaConfig, PreTrainedModel,  # noqa: E402
                          PreTrainedTokenizerFast, Qwen3Config)

from transformers.utils import logging as hf_logging  # noqa: E402

from .config import ModelConfig, resolve_model_path  # noqa: E402

hf_logging.disable_progress_bar()  # our own bars show progress; per-file load/save bars are noise
from .errors import ConfigError  # noqa: E402

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]

# ChatML, as Qwen uses it: the assistant turn ends with <|im_end|>, which is also the EOS for generation.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

PRESETS = {"tiny-qwen3": "qwen3", "tiny-llama": "llama"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained in memory, with ChatML special tokens and chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, bos_token=None,
                                   unk_token=None)
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "left"
    return fast


def _gguf_args(path: Path) -> tuple[str, dict[str, str]]:
    """(folder, extra from_pretrained kwargs): a .gguf file is read by transformers' GGUF loader (needs gguf)."""
    if path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    return str(path), {}


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerFast:
    path = resolve_model_path(path)
    if path.suffix != ".gguf" and not (path / "tokenizer.json").exists() \
            and not (path / "tokenizer_config.json").exists():
        raise ConfigError(f"tokenizer not found in {path} (a local folder with tokenizer.json is needed)")
    if path.suffix == ".gguf" and not path.exists():
        raise ConfigError(f"model file not found: {path}")
    from transformers import AutoTokenizer

    folder, extra = _gguf_args(path)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)
    if tok.chat_template is None:
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def preset_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast):
    """A transformers config for a tiny preset, sized from ``cfg`` and the tokenizer's vocab."""
    arch = PRESETS.get(cfg.preset or "")
    if arch is None:
        raise ConfigError(f"model.preset: unknown preset {cfg.preset!r}", hint=f"choose from {', '.join(PRESETS)}")
    common = dict(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                  num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                  intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=None, tie_word_embeddings=True)
    if arch == "qwen3":
        return Qwen3Config(head_dim=cfg.hidden_size // cfg.num_heads, **common)
    return LlamaConfig(**common)


def build_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> PreTrainedModel:
    """Random-init preset (seeded) or a local HF folder."""
    if cfg.path is not None and cfg.preset is None:
        return load_model(cfg.path, cfg.dtype)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(preset_config(cfg, tokenizer), dtype=_DTYPES[cfg.dtype],
                                             attn_implementation="sdpa")
    return model


def load_model(path: Path | str, dtype: str = "float32") -> PreTrainedModel:
    """A local HF folder, or a GGUF file (dequantized to ``dtype`` by transformers; ~18 s for SmolLM2-135M)."""
    path = resolve_model_path(path)
    if path.suffix == ".gguf" and not path.exists():
        raise ConfigError(f"model.path: no GGUF file at {path}")
    if path.suffix != ".gguf" and not (path / "config.json").exists():
        raise ConfigError(f"model.path: no local model at {path} (need config.json + weights; "
                          "models are never downloaded from a hub)")
    folder, extra = _gguf_args(path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=_DTYPES[dtype], local_files_only=True,
                                                 attn_implementation="sdpa", **extra)
    if extra:
        # transformers dequantized every GGUF tensor into a plain ``dtype`` parameter, but still tags the model as
        # "quantized with gguf", which refuses save_pretrained: drop the tag so it trains and exports as usual
        model.hf_quantizer = None
        model.is_quantized = False
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
    return model


def prompt_ids(tokenizer: PreTrainedTokenizerFast, messages: list[dict[str, str]], max_len: int) -> list[int]:
    """Chat-templated prompt tokens ending with the assistant header; left-truncated to ``max_len``."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # some transformers versions return a BatchEncoding
        ids = ids["input_ids"]
    ids = list(ids)
    return ids[-max_len:]


def eos_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end >= 0 and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)
