"""Rollouts as a table: ``mathfirst-hpc shards export RUN_DIR --stage joint_rl --format parquet OUT``.

One row per generated response of the stage, from every generation shard the manifest records as complete
(checksum verified while reading), in iteration / generation batch / shard order:

    iteration, gen_batch, shard_index, policy_step   where and with which weights it was generated
    sample_id, group_id, prompt_uid                  ids (group = the prompt's DAPO group)
    prompt, response                                 text: the chat-templated prompt, the response without EOS
                                                     (what the verifier read), decoded with the run's tokenizer
    domain, data_source                              the data item's domain and source
    reward, score, verdict, reason                   training reward (score + overlong penalty), verifier output
    length, prompt_length, finish_reason             response / prompt tokens, why generation stopped
    kept                                             dynamic sampling kept its group for the update (kept.h5)

Shards stream one at a time into a ``pyarrow.parquet.ParquetWriter`` (one row group per shard; memory holds one
shard) under a temp name, renamed when complete (``atomic.atomic_path``). The file opens with pandas
(``pd.read_parquet``) and ``datasets.load_dataset("parquet", data_files=OUT)``. Unscored shards export with
verdict ``unscored`` and NaN rewards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .errors import RunDirError, ShardError
from .manifest import Manifest
from .paths import RunPaths
from .shards import Ragged, ShardData, read_shard

FORMATS = ("parquet",)


@dataclass
class ExportResult:
    rows: int
    shards: int
    seconds: float
    path: Path

    @property
    def rows_per_s(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


def _schema() -> Any:
    import pyarrow as pa
    return pa.schema([
        ("iteration", pa.int32()), ("gen_batch", pa.int32()), ("shard_index", pa.int32()),
        ("policy_step", pa.int64()), ("sample_id", pa.int64()), ("group_id", pa.int64()),
        ("prompt_uid", pa.string()), ("prompt", pa.string()), ("response", pa.string()),
        ("domain", pa.string()), ("data_source", pa.string()), ("reward", pa.float32()), ("score", pa.float32()),
        ("verdict", pa.string()), ("reason", pa.string()), ("length", pa.int32()), ("prompt_length", pa.int32()),
        ("finish_reason", pa.string()), ("kept", pa.bool_())])


def stage_shards(paths: RunPaths, stage: str) -> list[tuple[Path, int, str]]:
    """(path, policy step, sha256) of the stage's complete generation shards, in iteration/batch/shard order."""
    prefix = f"rollouts/{stage}/"
    entries = [(rel, e) for rel, e in Manifest(paths).shard_entries().items()
               if rel.startswith(prefix) and Path(rel).name.startswith("shard_")]
    return [(paths.root / rel, e.policy_step, e.sha256) for rel, e in sorted(entries)]


def _texts(tokenizer: Any, tokens: Ragged, drop: set[int]) -> list[str]:
    """Decode every row at once (the fast tokenizer batches in Rust); ``drop``: token ids left out (EOS)."""
    flat, offsets = tokens.flat, tokens.offsets
    if drop:
        keep = ~np.isin(flat, list(drop))
        flat = flat[keep]
        offsets = np.concatenate([[0], np.cumsum(keep)])[offsets]
    rows = [r.tolist() for r in np.split(flat, offsets[1:-1])] if len(offsets) > 1 else []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer.batch_decode(rows, skip_special_tokens=False)
    # the Rust tokenizer's decode_batch: what tokenizer.decode does row by row, without transformers' per-token
    # type checks (those cost more than the decoding itself)
    texts = backend.decode_batch(rows, skip_special_tokens=False)
    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        texts = [tokenizer.clean_up_tokenization(t) for t in texts]
    return texts


def _group_prompts(data: ShardData, tokenizer: Any) -> list[str]:
    """The prompt text of every row, decoded once per group (a group's samples share their prompt)."""
    _groups, first, inverse = np.unique(data.group_id, return_index=True, return_inverse=True)
    texts = _texts(tokenizer, data.prompt_tokens.take(first), set())
    return [texts[i] for i in inverse.reshape(-1)]


def _kept_ids(paths: RunPaths, stage: str, iteration: int, cache: dict[int, set[int]]) -> set[int]:
    if iteration not in cache:
        kept = paths.kept_batch(stage, iteration)
        cache[iteration] = set(read_shard(kept).sample_id.tolist()) if kept.exists() else set()
    return cache[iteration]


def shard_table(data: ShardData, tokenizer: Any, eos: set[int], policy_step: int, kept: set[int]) -> Any:
    """One shard's rows as a pyarrow Table with the export schema."""
    import pyarrow as pa
    n, attrs = len(data), data.attrs
    column = lambda value, dtype: np.full(n, value, dtype=dtype)  # noqa: E731
    return pa.table({
        "iteration": column(int(attrs.get("iteration", -1)), np.int32),
        "gen_batch": column(int(attrs.get("gen_batch", 0) or 0), np.int32),
        "shard_index": column(int(attrs.get("shard_index", 0) or 0), np.int32),
        "policy_step": column(policy_step, np.int64),
        "sample_id": data.sample_id.astype(np.int64), "group_id": data.group_id.astype(np.int64),
        "prompt_uid": data.prompt_uid,
        "prompt": _group_prompts(data, tokenizer),
        "response": _texts(tokenizer, data.response_tokens, eos),
        "domain": data.domain, "data_source": data.data_source,
        "reward": np.asarray(data.reward, np.float32), "score": np.asarray(data.score, np.float32),
        "verdict": data.verdict, "reason": data.reason,
        "length": data.response_length.astype(np.int32),
        "prompt_length": data.prompt_tokens.lengths().astype(np.int32),
        "finish_reason": data.finish_reason,
        "kept": np.isin(data.sample_id, list(kept)) if kept else np.zeros(n, dtype=bool),
    }, schema=_schema())


def export_rollouts(run_dir: str | Path, stage: str, out: str | Path, fmt: str = "parquet") -> ExportResult:
    """Write the stage's rollouts to ``out`` (atomically); returns rows, shards and the time taken."""
    import pyarrow.parquet as pq

    from .models import eos_ids, load_tokenizer

    if fmt not in FORMATS:
        raise RunDirError(f"unknown export format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    paths = RunPaths(run_dir)
    if not paths.manifest.exists():
        raise RunDirError(f"{paths.root} is not a run directory (no manifest.json)")
    shards = stage_shards(paths, stage)
    if not shards:
        raise ShardError(f"no complete rollout shards of stage {stage} in {paths.root}",
                         hint="export an RL stage (math_rl, joint_rl) that has run at least one iteration")
    if not (paths.tokenizer_dir / "tokenizer.json").exists():
        raise RunDirError(f"{paths.tokenizer_dir} holds no tokenizer to decode the shards with")
    tokenizer = load_tokenizer(paths.tokenizer_dir)
    eos = set(eos_ids(tokenizer))
    start, rows, kept_cache = time.perf_counter(), 0, {}
    out = Path(out)
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(str(tmp), _schema(), compression="zstd") as writer:
            for path, policy_step, sha256 in shards:
                data = read_shard(path, sha256)
                kept = _kept_ids(paths, stage, int(data.attrs.get("iteration", -1)), kept_cache)
                writer.write_table(shard_table(data, tokenizer, eos, policy_step, kept))
                rows += len(data)
    return ExportResult(rows, len(shards), time.perf_counter() - start, out)
