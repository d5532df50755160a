"""TEST SUPPORT ONLY: a device shim that lets megatron-core run on CPU with the gloo backend.

megatron-core's forward/backward schedules, DDP buffers, optimizer and grad clipping hard-code CUDA
(``torch.cuda.current_device()``, ``device="cuda"`` literals, the CUDA RNG tracker, an assert that grads are
``torch.cuda.FloatTensor``). :func:`install` patches exactly those spots so that the real Megatron code paths
(TP column/row-parallel layers, 1F1B pipeline schedule, Megatron DDP, its optimizer and grad clipping) run on
CPU processes under ``torchrun``. It is imported only by tests (``tests/integration/megatron``) and by the CPU
smoke run ``bench/gpu_check.py --quick``; nothing under ``mathfirst_hpc/`` imports it, and it refuses to install
when CUDA is present, so it can never be on a GPU path.

What it patches, and why each patch is the smallest one that works:

- ``torch.cuda.current_device`` -> ``torch.device("cpu")`` and ``torch.cuda.synchronize`` -> no-op: megatron
  allocates buffers and rotary tables with ``device=torch.cuda.current_device()`` all over.
- the module-level ``torch`` of the schedules, optimizer, grad-clipping, grad-buffer and ``megatron.core.utils``
  (its fallback multi-tensor L2 norm) modules is replaced by a proxy whose tensor factories map
  ``device="cuda"`` to CPU (those modules use the literal).
- the CUDA RNG tracker functions use the CPU generator (``model_parallel_cuda_manual_seed`` and tracker forks).
- ``clip_grad_by_total_norm_fp32`` gets a CPU twin without the ``torch.cuda.FloatTensor`` assert.
- ``LanguageModule.setup_embeddings_and_output_layer`` (tied embeddings with PP > 1) calls ``Tensor.cuda()``;
  it runs with ``Tensor.cuda`` as the identity for the duration of that call only. Likewise the distributed
  optimizer's parameter-group builder and the bf16 optimizer's constructor run with ``Tensor.type()`` naming
  CPU tensors ``torch.cuda.*Tensor`` (their dtype checks compare those strings).

Usage (in a test process, before building any Megatron model)::

    from tests.support.megatron_cpu_shim import install
    install()
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

_installed = False
MARKER = "_mathfirst_megatron_cpu_shim"
"""Attribute set on ``torch.cuda`` once installed; the backend checks it to explain a CPU run without it."""


def _cpu_device(device: Any) -> Any:
    if device is None:
        return None
    text = str(device)
    return torch.device("cpu") if text == "cuda" or text.startswith("cuda:") or isinstance(device, int) else device


def _factory(name: str) -> Callable[..., torch.Tensor]:
    real = getattr(torch, name)

    @functools.wraps(real)
    def make(*args: Any, **kwargs: Any) -> torch.Tensor:
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        return real(*args, **kwargs)

    return make


class _CudaLiteralsToCpuTorch(types.ModuleType):
    """Stands in for ``torch`` inside a few megatron modules: same attributes, CPU tensor factories."""

    def __init__(self) -> None:
        super().__init__("torch")
        for name in ("tensor", "zeros", "ones", "empty", "full", "arange", "zeros_like", "empty_like"):
            setattr(self, name, _factory(name))

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def _cpu_rng_patches() -> None:
    from megatron.core.tensor_parallel import random as mrandom

    def get_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
        return torch.get_rng_state()

    def set_state(new_state: torch.Tensor, device: int = -1, graph_safe: bool = False) -> None:
        torch.set_rng_state(new_state)

    mrandom._get_cuda_rng_state = get_state
    mrandom._set_cuda_rng_state = set_state
    cuda_ns = types.SimpleNamespace(
        get_rng_state=lambda *a, **k: torch.get_rng_state(),
        manual_seed=lambda seed: torch.manual_seed(seed),
        set_rng_state=lambda state, *a, **k: torch.set_rng_state(state),
        current_device=lambda: torch.device("cpu"),
    )
    proxy = _CudaLiteralsToCpuTorch()
    proxy.cuda = cuda_ns  # type: ignore[attr-defined]
    mrandom.torch = proxy


def _clip_by_total_norm_cpu(parameters: Any, max_norm: float, total_norm: float,
                            use_decoupled_grad: bool = False) -> None:
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    grads = [getattr(p, attr).detach() for p in parameters if getattr(p, attr, None) is not None]
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if clip_coeff < 1.0 and grads:
        torch._foreach_mul_(grads, clip_coeff)


@contextlib.contextmanager
def _tensor_cuda_is_identity() -> Iterator[None]:
    real = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = real  # type: ignore[method-assign]


@contextlib.contextmanager
def _tensor_type_says_cuda() -> Iterator[None]:
    """``Tensor.type()`` (no argument) reports ``torch.cuda.*Tensor`` for CPU tensors, for megatron's type checks."""
    real = torch.Tensor.type

    def cuda_type(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        name = real(self, *args, **kwargs)
        if args or kwargs or not isinstance(name, str) or name.startswith("torch.cuda."):
            return name
        return name.replace("torch.", "torch.cuda.", 1)

    torch.Tensor.type = cuda_type  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.type = real  # type: ignore[method-assign]


def _during(context: Callable[[], Any], owner: Any, name: str) -> None:
    """Run ``owner.name`` (a function or classmethod) inside ``context()``."""
    attr = owner.__dict__[name]
    func = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr

    @functools.wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with context():
            return func(*args, **kwargs)

    setattr(owner, name, classmethod(wrapped) if isinstance(attr, classmethod) else
            staticmethod(wrapped) if isinstance(attr, staticmethod) else wrapped)


def install() -> None:
    """Patch megatron-core for CPU/gloo. Idempotent. Refuses on a machine with CUDA."""
    global _installed
    if _installed:
        return
    if torch.cuda.is_available():
        raise RuntimeError("megatron_cpu_shim is test support for CPU-only runs; refusing to patch a CUDA machine")
    torch.cuda.current_device = lambda: torch.device("cpu")  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]

    from megatron.core import utils as core_utils
    from megatron.core.distributed import param_and_grad_buffer
    from megatron.core.models.common.language_module import language_module
    from megatron.core.optimizer import clip_grads, distrib_optimizer, optimizer
    from megatron.core.pipeline_parallel import schedules

    proxy = _CudaLiteralsToCpuTorch()
    for module in (schedules, clip_grads, optimizer, param_and_grad_buffer, core_utils):
        module.torch = proxy
    clip_grads.clip_grad_by_total_norm_fp32 = _clip_by_total_norm_cpu
    optimizer.clip_grad_by_total_norm_fp32 = _clip_by_total_norm_cpu
    _cpu_rng_patches()

    _during(_tensor_cuda_is_identity, language_module.LanguageModule, "setup_embeddings_and_output_layer")
    _during(_tensor_type_says_cuda, distrib_optimizer.DistributedOptimizer, "_build_model_and_main_param_groups")
    _during(_tensor_type_says_cuda, optimizer.Float16OptimizerWithFloat16Params, "__init__")
    setattr(torch.cuda, MARKER, True)
    _installed = True
