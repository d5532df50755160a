"""The two backend registries, each a visible dict chosen by a config string, and the one place backends are built:

    LEARNER_BACKENDS[parallel.backend]   "torch" | "megatron"  -> a ``learner.base.LearnerBackend``
    ROLLOUT_ENGINES[rollout.backend]     "hf" | "vllm"         -> a ``rollout.base.RolloutEngine``

Callers: ``run.py`` (colocated learner and engine), ``launch/phases.py`` (a rollout task's engine, a learner job's
backend), ``eval/harness.py`` (an evaluation engine). Nobody else constructs a backend.

Adding a learner backend ``foo``: write ``learner/foo.py`` with a class that has every member of
``LearnerBackend``; add ``_build_foo(cfg, source, total_steps, device)`` below (import the module inside it, so
that its heavy dependencies load only when chosen) and the line ``"foo": _build_foo`` to ``LEARNER_BACKENDS``; add
``"foo"`` to ``ParallelConfig.backend``'s ``Literal`` in ``config.py``. ``tests/unit/loop/test_registry.py``
then builds it next to every rollout engine. A rollout engine is added the same way (``rollout/foo.py``,
``_build_foo_engine``, one line in ``ROLLOUT_ENGINES``, ``RolloutConfig.backend``).

Two thin adapters fill the Protocol members that the torch backend and the HF engine lack without changing their
modules (another owner tunes their internals): ``TorchLearner`` (data-parallel rank/size, ``sharded``,
``shared_model``, ``close``) and ``HFRollout`` (``sleep``/``wake_up`` that do nothing: it frees no memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable

from .config import RolloutConfig, StageConfig
from .errors import ConfigError
from .learner.base import LearnerBackend
from .rollout.base import RolloutEngine


@dataclass(frozen=True)
class WeightsSource:
    """Where a backend's starting weights come from: an HF folder, or an HF model already in memory."""

    folder: Path | None = None
    """config.json + weights (+ tokenizer for an engine), e.g. a checkpoint's ``hf/`` export."""
    model: Any = None
    """A transformers model; the HF engine generates with this very object (colocated torch learner)."""

    def __post_init__(self) -> None:
        if (self.folder is None) == (self.model is None):
            raise ValueError("WeightsSource: give exactly one of folder and model")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---- learner backends ------------------------------------------------------------------------------------------

@cache
def _torch_learner_class() -> type:
    from .learner.torch_backend import TorchBackend

    class TorchLearner(TorchBackend):
        """TorchBackend plus the LearnerBackend members it does not define (pure data parallel: every rank is a
        DP rank, and every rank holds the full state)."""

        sharded = False

        @property
        def dp_rank(self) -> int:
            return self.rank

        @property
        def dp_size(self) -> int:
            return self.world_size

        def shared_model(self) -> Any:
            return self.model

        def close(self) -> None:
            pass

    return TorchLearner


def _build_torch(cfg: StageConfig, source: WeightsSource, total_steps: int, device: str | None) -> LearnerBackend:
    from .models import load_model

    model = source.model if source.model is not None else load_model(source.folder, cfg.model.dtype)
    return _torch_learner_class()(model, cfg.optim, total_steps, device=device or default_device())


def _build_megatron(cfg: StageConfig, source: WeightsSource, total_steps: int,
                    device: str | None) -> LearnerBackend:
    from .learner.megatron.backend import MegatronBackend  # imported only when chosen

    kwargs = dict(optim=cfg.optim, parallel=cfg.parallel, total_steps=total_steps, dtype=cfg.model.dtype,
                  seed=cfg.seed, gradient_checkpointing=cfg.model.gradient_checkpointing)
    if source.folder is not None:  # each rank reads only its own shard's tensors
        return MegatronBackend.from_pretrained(source.folder, **kwargs)
    return MegatronBackend.from_hf_model(source.model, **kwargs)


LEARNER_BACKENDS: dict[str, Callable[[StageConfig, WeightsSource, int, str | None], LearnerBackend]] = {
    "torch": _build_torch,
    "megatron": _build_megatron,
}


def build_learner(cfg: StageConfig, source: WeightsSource, total_steps: int,
                  device: str | None = None) -> LearnerBackend:
    """The learner backend named by ``cfg.parallel.backend``, starting from ``source``'s weights."""
    return _lookup(LEARNER_BACKENDS, cfg.parallel.backend, "parallel.backend")(cfg, source, total_steps, device)


# ---- rollout engines -------------------------------------------------------------------------------------------

@cache
def _hf_rollout_class() -> type:
    from .rollout.hf import HFEngine

    class HFRollout(HFEngine):
        """HFEngine plus sleep/wake_up, which do nothing: the engine holds no memory beyond the model's."""

        def sleep(self) -> None:
            pass

        def wake_up(self) -> None:
            pass

    return HFRollout


@dataclass(frozen=True)
class EngineOptions:
    """How an engine is run, beside its sampling config."""

    dtype: str | None = None
    """None: the engine's default (HF: float32, vLLM: the folder's dtype, run in 16 bits)."""
    seed: int = 0
    colocated: bool = False
    """The learner shares the accelerators: vLLM enables sleep mode (GPU only)."""
    device: str | None = None
    """HF engine only; None = CUDA when available, else CPU (an in-memory model stays where it is)."""


def _build_hf_engine(rollout: RolloutConfig, tokenizer: Any, source: WeightsSource,
                     options: EngineOptions) -> RolloutEngine:
    from .models import eos_ids, load_model

    if source.model is not None:
        model, device = source.model, options.device
    else:
        device = options.device or default_device()
        model = load_model(source.folder, options.dtype or "float32").to(device)
    return _hf_rollout_class()(model, tokenizer, eos_ids(tokenizer), batch_size=rollout.batch_size, device=device)


def _build_vllm_engine(rollout: RolloutConfig, tokenizer: Any, source: WeightsSource,
                       options: EngineOptions) -> RolloutEngine:
    from .models import eos_ids

    if source.folder is None:
        raise ConfigError("rollout.backend=vllm loads weights from an HF folder, not from a model in memory",
                          hint="export the policy with LearnerBackend.export_hf and pass that folder")
    from .rollout.vllm import VLLMEngine  # imported only when chosen

    return VLLMEngine(str(source.folder), rollout, dtype=options.dtype or "auto", eos_token_ids=eos_ids(tokenizer),
                      seed=options.seed, colocated=options.colocated)


IN_MEMORY_ENGINES = frozenset({"hf"})
"""Engines that can generate with a transformers model object (``WeightsSource(model=...)``); the others load an
HF folder."""

ROLLOUT_ENGINES: dict[str, Callable[[RolloutConfig, Any, WeightsSource, EngineOptions], RolloutEngine]] = {
    "hf": _build_hf_engine,
    "vllm": _build_vllm_engine,
}


def build_engine(rollout: RolloutConfig, tokenizer: Any, source: WeightsSource,
                 options: EngineOptions = EngineOptions()) -> RolloutEngine:
    """The rollout engine named by ``rollout.backend``, generating with ``source``'s weights."""
    return _lookup(ROLLOUT_ENGINES, rollout.backend, "rollout.backend")(rollout, tokenizer, source, options)


def _lookup(table: dict[str, Any], name: str, key: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"{key}={name!r} is not a registered backend",
                          hint=f"choose one of {', '.join(sorted(table))}") from None
