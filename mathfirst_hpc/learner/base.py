"""The learner backend interface. ``torch`` (one process or torch.distributed DDP) and ``megatron``
(Megatron-core TP/PP/DP) implement it; the SFT and DAPO objectives in ``learner/sft.py`` and
``learner/dapo.py`` are written once against it.

Batches are right-padded token rows. ``loss_fn`` receives per-token log-probs (and entropy) of ``input_ids``
under the current policy, aligned so that ``logprobs[:, t]`` is log p(input_ids[:, t] | input_ids[:, :t]) and
``logprobs[:, 0] == 0``; it returns a scalar loss already normalised for the *whole* optimizer step (the
objective computes the normaliser over every micro-batch and DP rank first), plus float metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch


@dataclass
class TokenBatch:
    input_ids: torch.Tensor
    """[B, T] prompt + response tokens, right padded."""
    attention_mask: torch.Tensor
    """[B, T] 1 on real tokens; or [B, 1, T, T] bool block-diagonal causal mask for packed SFT rows."""
    loss_mask: torch.Tensor
    """[B, T] 1 on the tokens whose log-prob is trained (response / assistant tokens)."""
    old_logprobs: torch.Tensor | None = None
    """[B, T] rollout log-probs of the same tokens (RL only), 0 where loss_mask is 0."""
    advantages: torch.Tensor | None = None
    """[B] per-sequence advantage (RL only)."""
    ref_logprobs: torch.Tensor | None = None
    """[B, T] reference-policy log-probs, only when a KL term is on."""
    position_ids: torch.Tensor | None = None
    """[B, T]; None = derived from a 2-D attention_mask. Packed rows restart positions per example."""
    temperature: float = 1.0
    """Logits are divided by this before log_softmax, as at sampling time (RL); 1.0 for SFT."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "TokenBatch":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return TokenBatch(**moved)

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class PartialStep:
    """An optimizer step interrupted at a micro-batch boundary (emergency checkpoint on preemption)."""

    micro_done: int
    """Micro-batches whose gradients are in ``grads``."""
    grads: dict[str, torch.Tensor]
    metrics: dict[str, float]


class MicroStepInterrupt(Exception):
    """Raised by ``train_step`` when its ``interrupt`` callback fires between micro-batches."""

    def __init__(self, partial: PartialStep) -> None:
        super().__init__(f"interrupted after {partial.micro_done} micro-batches")
        self.partial = partial


LossFn = Callable[[torch.Tensor, torch.Tensor, TokenBatch], tuple[torch.Tensor, dict[str, float]]]
"""(logprobs [B,T], entropy [B,T], batch) -> (loss, metrics)."""


class LearnerBackend(Protocol):
    """Everything the RL loop and the checkpoint code need from a learner; built only by ``registry.py``."""

    rank: int
    """Global rank of this process."""
    world_size: int
    dp_rank: int
    """Data-parallel rank: the rows of a mini-batch this rank trains on are ``rows[dp_rank::dp_size]``."""
    dp_size: int
    dp_group: Any
    """Process group over which global token/sequence counts are reduced (None = the default group)."""
    sharded: bool
    """True when ranks hold different parts of the state (TP/PP): every rank writes its own checkpoint file.
    False: every rank holds the whole state and only rank 0 writes it."""
    supports_partial_steps: bool
    """True when ``train_step`` honours ``interrupt``/``partial`` (emergency saves between micro-batches); False:
    it stops only at optimizer-step boundaries and ``partial`` must be None."""

    def forward_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        """Per-token log-probs [B, T] without gradient (for KL references and checks)."""
        ...

    def train_step(self, micro_batches: list[TokenBatch], loss_fn: LossFn,
                   interrupt: Callable[[], bool] | None = None,
                   partial: PartialStep | None = None) -> dict[str, float]:
        """Forward/backward every micro-batch, all-reduce, clip, optimizer + scheduler step.
        Returns summed loss metrics plus ``grad_norm`` and ``lr``. With ``supports_partial_steps``, ``interrupt()``
        is polled between micro-batches and a true answer raises :class:`MicroStepInterrupt`; ``partial``
        resumes such a step (on rank 0 only its gradients count: they are already summed over ranks)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and scheduler state for ``checkpoint.save_checkpoint`` (this rank's shard)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...

    def export_hf(self, path: Path) -> None:
        """Write HF-format weights (config.json + safetensors) that the rollout engines load."""
        ...

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Full HF-named weights (gathered across TP/PP) for in-place rollout weight sync."""
        ...

    def shared_model(self) -> Any:
        """The transformers model this learner trains in place, which a colocated HF engine may generate with
        directly (no weight sync); None when the learner holds no such model (Megatron)."""
        ...

    def close(self) -> None:
        """Release what the backend holds beyond memory (model-parallel groups)."""
        ...
