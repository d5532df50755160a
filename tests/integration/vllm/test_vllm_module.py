"""The parts of rollout/vllm.py that need no vLLM: they run in the main venv, without the `vllm` marker."""

from __future__ import annotations

import sys

import pytest
import torch

from mathfirst_hpc.config import RolloutConfig
from mathfirst_hpc.errors import ConfigError
from mathfirst_hpc.rollout import vllm as vllm_engine


def test_module_import_does_not_import_vllm():
    assert "vllm" not in sys.modules


def test_missing_model_folder_is_a_config_error_before_vllm_is_touched(tmp_path):
    with pytest.raises(ConfigError, match="config.json missing"):
        vllm_engine.VLLMEngine(tmp_path / "no_export", RolloutConfig(backend="vllm"))
    assert "vllm" not in sys.modules


def test_tied_state_dict_gets_lm_head_for_vllm():
    embed = torch.randn(8, 4, requires_grad=True)
    weights = dict(vllm_engine.hf_weights_for_vllm({"model.embed_tokens.weight": embed,
                                                    "model.norm.weight": torch.ones(4)}))
    assert set(weights) == {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    assert torch.equal(weights["lm_head.weight"], embed) and not weights["lm_head.weight"].requires_grad


def test_untied_lm_head_is_kept_as_is():
    head = torch.randn(8, 4)
    weights = dict(vllm_engine.hf_weights_for_vllm({"model.embed_tokens.weight": torch.zeros(8, 4),
                                                    "lm_head.weight": head}))
    assert torch.equal(weights["lm_head.weight"], head)


class _FakeWorker(vllm_engine.WeightSyncExtension):
    """What the extension relies on in a vLLM worker: ``reload_weights(weights_iterator=...)``."""

    def reload_weights(self, weights_iterator):
        self.reloaded = dict(weights_iterator)


def test_weights_cross_as_bytes_in_chunks_and_come_back_exact():
    weights = {"a": torch.randn(3, 5, dtype=torch.bfloat16), "b": torch.randn(7), "scalar": torch.tensor(2.5),
               "c": torch.arange(12, dtype=torch.float16).reshape(2, 6)}
    chunks = list(vllm_engine._weight_chunks(list(weights.items()), chunk_bytes=20))
    assert len(chunks) > 1 and all(isinstance(raw, bytes) for chunk in chunks for *_, raw in chunk)
    worker = _FakeWorker()
    for chunk in chunks:
        worker.mathfirst_receive_weights(chunk)
    assert worker.mathfirst_commit_weights() == len(weights)
    assert set(worker.reloaded) == set(weights)
    for name, tensor in weights.items():
        back = worker.reloaded[name]
        assert back.dtype == tensor.dtype and back.shape == tensor.shape and torch.equal(back, tensor)
    assert worker.mathfirst_commit_weights() == 0  # nothing pending after a commit
