"""Megatron-core learner backend: tensor (TP), pipeline (PP) and data (DP) parallel training of a Qwen3 / Llama
model held as a Megatron GPTModel, behind the same ``LearnerBackend`` interface as the torch backend.

One process per GPU, started by torchrun or srun (``torch.distributed`` is initialised from the environment when
it is not already). Every rank builds its shard of the model from the full HF weights (``convert.py``), wraps it in
Megatron DDP, and builds Megatron's optimizer (Adam(W) with fp32 master weights, grad clipping; on a GPU the
distributed optimizer that shards its state over DP ranks). ``train_step`` runs megatron's forward/backward
schedule (1F1B when pp > 1) over the micro-batches; log-probs and entropy come from the vocab-parallel logits
(``logprobs.py``), never gathering the full vocabulary.

Conventions shared with ``learner/torch_backend.py`` so that switching ``parallel.backend`` changes nothing:

- The objective's loss is already normalised over the whole optimizer step (all micro-batches and DP ranks), so
  micro-batch losses are summed (the schedule's division by the number of micro-batches is off:
  ``calculate_per_token_loss`` with a token count of 0 and ``finalize_model_grads`` called without it) and DP
  gradients are all-reduced with SUM (Megatron DDP's 1/dp scaling is off by the same setting).
- AdamW hyper-parameters, weight decay on every parameter, clip by global norm, and the LR schedule
  (``torch_backend.lr_lambda``) are the same; metrics are the objective's, summed over this rank's micro-batches,
  plus ``lr`` (the LR used by this step) and ``grad_norm`` (before clipping).
- A DP rank's TP and PP peers must receive the same micro-batches: split data by :attr:`dp_rank` /
  :attr:`dp_size` and reduce global counts over :attr:`dp_group`.

CPU runs exist only in tests (``tests/support/megatron_cpu_shim.py`` patches megatron's CUDA assumptions); without
that shim a CPU run is refused with a pointer to the torch backend.

Simplifications: no sequence/context/expert parallelism, no virtual pipeline stages; packed SFT rows use the
block-diagonal mask with positions 0..T-1 (RoPE is relative, so within-example attention is unchanged).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

from ...atomic import atomic_path, write_text
from ...config import OptimConfig, ParallelConfig
from ...errors import ConfigError
from ...distributed import init_distributed
from ..base import LossFn, TokenBatch
from ..torch_backend import lr_lambda
from .convert import hf_to_megatron, stage_to_hf
from .logprobs import token_logprobs
from .model import ModelShape, build_gpt_model, transformer_config

CPU_SHIM_MARKER = "_mathfirst_megatron_cpu_shim"
"""Set on ``torch.cuda`` by the test-only CPU shim; a CPU run without it is refused."""
_ARCHITECTURES = {"qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LazySafetensors(Mapping[str, torch.Tensor]):
    """HF weights of a local model folder, read tensor by tensor on access (a rank reads only its shard's)."""

    def __init__(self, folder: Path | str) -> None:
        from safetensors import safe_open

        self.folder = Path(folder)
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise ConfigError(f"no *.safetensors weights in {self.folder}")
        self._handles = [safe_open(str(f), framework="pt") for f in files]
        self._where = {k: h for h in self._handles for k in h.keys()}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key == "lm_head.weight" and key not in self._where:  # tied models store only the embedding
            key = "model.embed_tokens.weight"
        return self._where[key].get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _init_process_group(dist_backend: str) -> None:
    """The default group from torchrun / Slurm / submitit / MPI (``distributed.py``), else a one-process group."""
    if dist.is_initialized():
        return
    init_distributed(dist_backend)
    if not dist.is_initialized():  # a single process: megatron still needs a group, with no port to collide on
        backend = ("nccl" if torch.cuda.is_available() else "gloo") if dist_backend == "auto" else dist_backend
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def _ensure_device() -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cuda", torch.cuda.current_device())
    if not getattr(torch.cuda, CPU_SHIM_MARKER, False):
        raise ConfigError("parallel.backend=megatron needs CUDA GPUs",
                          hint="on CPU use parallel.backend=torch (megatron runs on CPU only inside the test suite)")
    return torch.device("cpu")


def _model_parallel(tp: int, pp: int) -> None:
    """(Re)initialise megatron's process groups for this layout."""
    if parallel_state.model_parallel_is_initialized():
        same = (parallel_state.get_tensor_model_parallel_world_size() == tp
                and parallel_state.get_pipeline_model_parallel_world_size() == pp)
        if same:
            return
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)


def _finalize_grads_without_token_scaling(model: list[torch.nn.Module], num_tokens: Any = None,
                                          pg_collection: Any = None, force_all_reduce: bool = False) -> None:
    """DP/embedding grad all-reduces of megatron, without its division by the token count (see module doc)."""
    finalize_model_grads(model, None, pg_collection=pg_collection, force_all_reduce=force_all_reduce)


def _inner_optimizers(optimizer: Any) -> list[Any]:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _cpu_copy(obj: Any) -> Any:
    """Nested dicts/lists/tuples with every tensor copied to CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _unshare_adam_steps(opt: Any) -> None:
    """Give every parameter its own Adam ``step`` tensor after a load.

    Without Apex/Transformer Engine, megatron's distributed optimizer loads one ``step`` tensor into the state of
    every parameter; torch's Adam increments it in place once per parameter, so the bias correction of the next
    steps would be wrong (measured: step 20 instead of 3 after resuming at step 2).
    """
    inner = getattr(opt, "optimizer", None)
    for state in getattr(inner, "state", {}).values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].clone()


def _dist_opt_shard(opt: Any) -> dict[Any, Any]:
    """This DP rank's distributed-optimizer shard (fp32 master weights, Adam moments) as CPU copies.

    megatron returns live references without the ``padding`` flag its own loader filters on; every entry of
    this representation is a real parameter range, so each is marked ``padding=False``.
    """
    state = opt.get_parameter_state_dp_reshardable()
    for key, per_dtype in state.items():
        if not isinstance(key, int):
            continue
        for buckets in per_dtype.values():
            for bucket in buckets:
                for i, entry in enumerate(bucket):
                    bucket[i] = _cpu_copy(entry) | {"padding": False}
    return state


class MegatronBackend:
    """LearnerBackend over megatron-core. Build with :meth:`from_hf_model` or :meth:`from_pretrained` (the
    registry, ``registry.py``, picks one from the config)."""

    sharded = True
    """Every rank holds its own TP/PP (and distributed-optimizer) shard and writes its own checkpoint file."""
    supports_partial_steps = False
    """Megatron's schedule runs all micro-batches of a step at once: it stops only between optimizer steps."""

    def __init__(self, hf_config: Any, hf_state: Mapping[str, torch.Tensor], *, optim: OptimConfig,
                 parallel: ParallelConfig, total_steps: int, dtype: str = "float32", seed: int = 0,
                 gradient_checkpointing: bool = False, distributed_optimizer: bool | None = None) -> None:
        self.device = _ensure_device()
        _init_process_group(parallel.dist_backend)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.tp, self.pp = parallel.tp, parallel.pp
        if self.world_size % (self.tp * self.pp) != 0 or self.world_size // (self.tp * self.pp) != parallel.dp:
            raise ConfigError(f"parallel: tp*pp*dp = {self.tp}*{self.pp}*{parallel.dp} does not match the "
                              f"{self.world_size} started processes")
        self.hf_config = hf_config
        self.shape = ModelShape.from_hf_config(hf_config)
        self.shape.check_parallel(self.tp, self.pp)
        self.dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
        _model_parallel(self.tp, self.pp)
        model_parallel_cuda_manual_seed(seed)
        self.tp_rank = parallel_state.get_tensor_model_parallel_rank()
        self.pp_rank = parallel_state.get_pipeline_model_parallel_rank()
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.dp_group = parallel_state.get_data_parallel_group()
        self.is_last_stage = self.pp_rank == self.pp - 1

        self.config = transformer_config(self.shape, tp=self.tp, pp=self.pp, dtype=self.dtype,
                                         use_cpu_init=self.device.type == "cpu", recompute=gradient_checkpointing)
        # perform_initialization stays on although the HF weights overwrite every parameter: megatron tags
        # TP-sharded weights (``tensor_model_parallel``) only inside its init functions, and the grad norm
        # (clipping) would count each TP shard as a duplicate without those tags.
        self.model = build_gpt_model(self.shape, self.config, pre_process=self.pp_rank == 0,
                                     post_process=self.is_last_stage)
        # Megatron-LM's Float16Module does the same: the torch RMSNorm fallback is built in fp32, and mixed
        # dtypes would give the distributed optimizer two buffers (and the model other numerics than HF's).
        self.model.to(device=self.device, dtype=self.dtype)
        self._load_hf(hf_state)

        use_dist_opt = (self.device.type == "cuda") if distributed_optimizer is None else distributed_optimizer
        ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                                   use_distributed_optimizer=use_dist_opt)
        self.ddp = DistributedDataParallel(config=self.config, ddp_config=ddp_config, module=self.model)
        self.ddp.broadcast_params()
        self.optim_cfg = optim
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(optimizer="adam", lr=optim.lr, weight_decay=optim.weight_decay,
                            adam_beta1=optim.beta1, adam_beta2=optim.beta2, adam_eps=optim.eps,
                            clip_grad=optim.grad_clip, bf16=self.dtype == torch.bfloat16,
                            fp16=self.dtype == torch.float16, params_dtype=self.dtype,
                            use_distributed_optimizer=use_dist_opt),
            [self.ddp],
            # {}: one param group with weight decay on every parameter, as torch's AdamW in the torch backend
            # (megatron's default skips norms and biases, through wd_mult, which only its LR scheduler applies).
            config_overrides={},
        )
        self.config.no_sync_func = self.ddp.no_sync
        self.config.finalize_model_grads_func = _finalize_grads_without_token_scaling
        self.config.grad_scale_func = self.optimizer.scale_loss
        self._lr_factor = lr_lambda(optim, total_steps)
        self.step = 0

    # Construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_hf_model(cls, model: Any, **kwargs: Any) -> MegatronBackend:
        """From an in-memory transformers model (e.g. the tiny preset); every rank must hold the same weights."""
        return cls(model.config, model.state_dict(), **kwargs)

    @classmethod
    def from_pretrained(cls, folder: Path | str, **kwargs: Any) -> MegatronBackend:
        """From a local HF folder; each rank reads only the tensors of its own shard."""
        from transformers import AutoConfig

        folder = Path(folder).expanduser()
        if not (folder / "config.json").exists():
            raise ConfigError(f"model.path: no config.json in {folder}")
        return cls(AutoConfig.from_pretrained(str(folder), local_files_only=True), LazySafetensors(folder), **kwargs)

    def _load_hf(self, hf_state: Mapping[str, torch.Tensor]) -> None:
        shard = hf_to_megatron(hf_state, self.shape, tp_rank=self.tp_rank, tp=self.tp, pp_rank=self.pp_rank,
                               pp=self.pp)
        missing, unexpected = self.model.load_state_dict(shard, strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        if missing or unexpected:
            raise RuntimeError(f"HF->Megatron conversion mismatch: missing {missing}, unexpected {unexpected}")

    # Forward -----------------------------------------------------------------------------------------------------
    def _model_inputs(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        ids = batch.input_ids.to(self.device)
        positions = torch.arange(ids.shape[1], device=self.device).unsqueeze(0).expand_as(ids)
        mask = None
        if batch.attention_mask.dim() == 4:  # packed rows: bool, True = may attend; megatron's True = masked
            mask = ~batch.attention_mask.to(self.device, torch.bool)
        return ids, positions, mask

    def _forward_step(self, loss_fn: LossFn | None, data: Iterator[TokenBatch], model: torch.nn.Module
                      ) -> tuple[torch.Tensor, Any]:
        batch = next(data)
        ids, positions, mask = self._model_inputs(batch)
        output = model(ids, positions, attention_mask=mask)
        return output, partial(self._loss, loss_fn, batch.to(self.device))

    def _loss(self, loss_fn: LossFn | None, batch: TokenBatch, logits: torch.Tensor,
              non_loss_data: bool = False) -> Any:
        """Last stage: vocab-parallel log-probs -> the objective. Forward-only calls collect log-probs instead."""
        if non_loss_data:
            logp, _ = token_logprobs(logits, batch.input_ids, batch.temperature, with_entropy=False)
            return logp.detach()
        logp, entropy = token_logprobs(logits, batch.input_ids, batch.temperature)
        loss, metrics = loss_fn(logp, entropy, batch)
        # (loss, num_tokens, metrics): with calculate_per_token_loss the schedule leaves the loss unscaled.
        return loss, torch.zeros((), dtype=torch.int, device=logits.device), metrics

    def _run_schedule(self, micro_batches: list[TokenBatch], loss_fn: LossFn | None, forward_only: bool
                      ) -> list[Any]:
        longest = max(int(m.input_ids.shape[1]) for m in micro_batches)
        widest = max(int(m.input_ids.shape[0]) for m in micro_batches)
        return get_forward_backward_func()(
            forward_step_func=partial(self._forward_step, loss_fn),
            data_iterator=iter(micro_batches),
            model=[self.ddp],
            num_microbatches=len(micro_batches),
            seq_length=longest,
            micro_batch_size=widest,
            decoder_seq_length=longest,
            forward_only=forward_only,
            collect_non_loss_data=forward_only,
        )

    def _from_last_stage(self, value: Any) -> Any:
        """Broadcast a picklable value from the last pipeline stage to every stage of this pipeline."""
        if self.pp == 1:
            return value
        group = parallel_state.get_pipeline_model_parallel_group()
        box = [value]
        dist.broadcast_object_list(box, src=parallel_state.get_pipeline_model_parallel_last_rank(), group=group,
                                   device=self.device)
        return box[0]

    @torch.no_grad()
    def forward_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        self.ddp.eval()
        store = self._run_schedule([batch], None, forward_only=True)
        self.ddp.train()
        logp = store[0].cpu() if self.is_last_stage else None
        return self._from_last_stage(logp)

    # Training ----------------------------------------------------------------------------------------------------
    def train_step(self, micro_batches: list[TokenBatch], loss_fn: LossFn, interrupt: Any = None,
                   partial: Any = None) -> dict[str, float]:
        """One optimizer step. ``interrupt`` is not polled (see ``supports_partial_steps``); ``partial`` must be
        None, since this backend never writes a mid-step checkpoint."""
        if partial is not None:
            raise ValueError("MegatronBackend cannot resume a partial optimizer step (supports_partial_steps)")
        if not micro_batches:  # megatron's schedule runs at least one micro-batch; the DP peers would hang
            raise ValueError(f"train_step: DP rank {self.dp_rank} got no micro-batch (fewer rows than DP ranks?)")
        self.ddp.train()
        self.ddp.zero_grad_buffer()
        self.optimizer.zero_grad()
        lr = self.optim_cfg.lr * self._lr_factor(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        store = self._run_schedule(micro_batches, loss_fn, forward_only=False)
        totals: dict[str, float] = {}
        for metrics in store:
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        totals = self._from_last_stage(totals if self.is_last_stage else None)
        _ok, grad_norm, _zeros = self.optimizer.step()
        self.step += 1
        return {**totals, "lr": lr, "grad_norm": float(grad_norm)}

    # Checkpoints -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """This rank's model shard, optimizer (incl. distributed-optimizer shard) and schedule step."""
        model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                 if isinstance(v, torch.Tensor)}
        optimizers = []
        for opt in _inner_optimizers(self.optimizer):
            entry = {"state": _cpu_copy(opt.state_dict())}  # megatron/torch hand out live references
            if hasattr(opt, "get_parameter_state_dp_reshardable"):
                entry["param_state"] = _dist_opt_shard(opt)
            optimizers.append(entry)
        layout = {"tp": self.tp, "pp": self.pp, "dp": self.dp_size, "tp_rank": self.tp_rank,
                  "pp_rank": self.pp_rank, "dp_rank": self.dp_rank}
        return {"model": model, "optimizer": optimizers, "scheduler": {"step": self.step}, "layout": layout}

    @torch.no_grad()  # fp32 master shards are views of the (grad-requiring) parameters
    def load_state_dict(self, state: dict[str, Any]) -> None:
        layout = state.get("layout", {})
        mine = {"tp": self.tp, "pp": self.pp, "tp_rank": self.tp_rank, "pp_rank": self.pp_rank}
        if any(layout.get(k) != v for k, v in mine.items()):
            raise ConfigError(f"checkpoint shard was written with layout {layout}, this rank is {mine}",
                              hint="resume with the same parallel.tp/pp, or start from the HF export")
        for name, tensor in self.model.state_dict().items():
            if isinstance(tensor, torch.Tensor) and name in state["model"]:
                tensor.copy_(state["model"][name])
        for opt, entry in zip(_inner_optimizers(self.optimizer), state["optimizer"], strict=True):
            opt.load_state_dict(entry["state"])
            if "param_state" in entry:  # distributed optimizer: this DP rank's fp32 master weights and moments
                opt.load_parameter_state_from_dp_reshardable(entry["param_state"])
            _unshare_adam_steps(opt)
        self.step = int(state["scheduler"]["step"])

    # Weights for rollouts ----------------------------------------------------------------------------------------
    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Full HF-named weights (on CPU) on every rank: TP all-gather, then each PP stage broadcasts its part."""
        local = {k: v.detach() for k, v in self.model.state_dict().items()
                 if isinstance(v, torch.Tensor) and not k.endswith("_extra_state")}
        tp_group = parallel_state.get_tensor_model_parallel_group()
        parts: list[dict[str, torch.Tensor]] = [{} for _ in range(self.tp)]
        for name, tensor in local.items():
            gathered = [torch.empty_like(tensor) for _ in range(self.tp)]
            dist.all_gather(gathered, tensor.contiguous(), group=tp_group)
            for t in range(self.tp):
                parts[t][name] = gathered[t].cpu()
        mine = stage_to_hf(parts, self.shape, pp_rank=self.pp_rank, pp=self.pp)
        if self.pp == 1:
            return mine
        pp_group = parallel_state.get_pipeline_model_parallel_group()
        full: dict[str, torch.Tensor] = {}
        for stage, src in enumerate(dist.get_process_group_ranks(pp_group)):
            meta = [[(k, tuple(v.shape), v.dtype) for k, v in mine.items()] if stage == self.pp_rank else None]
            dist.broadcast_object_list(meta, src=src, group=pp_group, device=self.device)
            for name, size, dtype in meta[0]:
                buf = mine[name].to(self.device) if stage == self.pp_rank else torch.empty(
                    size, dtype=dtype, device=self.device)
                dist.broadcast(buf, src=src, group=pp_group)
                full[name] = buf.cpu()
        return full

    def export_hf(self, path: Path) -> None:
        """config.json + model.safetensors written by global rank 0 (every rank must call this)."""
        from safetensors.torch import save_file

        weights = self.hf_state_dict()
        if self.rank == 0:
            path = Path(path)
            path.mkdir(parents=True, exist_ok=True)
            if self.shape.tie_word_embeddings:
                weights.pop("lm_head.weight", None)
            with atomic_path(path / "model.safetensors") as tmp:
                save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp), metadata={"format": "pt"})
            config = self.hf_config.to_dict() if hasattr(self.hf_config, "to_dict") else dict(self.hf_config)
            dtype_keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype"]  # 5.x / 4.x name
            config.update(dict.fromkeys(dtype_keys, str(self.dtype).removeprefix("torch.")))
            config["architectures"] = config.get("architectures") or [_ARCHITECTURES[self.shape.model_type]]
            write_text(path / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        dist.barrier()

    def shared_model(self) -> None:
        """No transformers model to share: a colocated HF engine keeps its own copy, synced by hf_state_dict."""
        return None

    def close(self) -> None:
        """Release megatron's process groups (the default group stays for the caller)."""
        parallel_state.destroy_model_parallel()
