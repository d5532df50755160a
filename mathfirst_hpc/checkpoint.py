"""Atomic checkpoints: ``checkpoints/<stage>/step_000012/`` holding model, optimizer, scheduler, data cursor,
RNG states (python, numpy, torch), step and iteration.

A checkpoint is written into a temp folder, every file fsynced, ``meta.json`` (with the sha256 of every file)
written last, and the folder renamed into place. Discovery counts a folder only when its ``meta.json`` parses and
names files that exist, so a process killed mid-save leaves the previous checkpoint as ``latest``. Several ranks
(Megatron TP/PP) each write their own ``rank_XXXXX.pt`` into a shared staging folder; rank 0 finalises after a
barrier. ``final.json`` in the stage folder marks the checkpoint the next stage starts from.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import TMP_PREFIX, atomic_path, fsync_dir, write_json
from .errors import CheckpointError

META = "meta.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def staging_dir(target: Path) -> Path:
    """Deterministic temp folder beside ``target`` that every rank agrees on."""
    return target.parent / f"{TMP_PREFIX}{target.name}"


def write_rank_state(target: Path, state: dict[str, Any], rank: int = 0) -> Path:
    """Write one rank's part of a checkpoint into the staging folder (atomic per file)."""
    stage_dir = staging_dir(target)
    stage_dir.mkdir(parents=True, exist_ok=True)
    path = stage_dir / f"rank_{rank:05d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def finalize_checkpoint(target: Path, meta: dict[str, Any], extra_dirs: tuple[str, ...] = ()) -> Path:
    """Rank 0, after every rank wrote its state: checksum, write meta.json last, rename into place."""
    stage_dir = staging_dir(target)
    if not stage_dir.exists():
        raise CheckpointError(f"nothing staged for {target}")
    files = {}
    for path in sorted(stage_dir.rglob("*")):
        if path.is_file() and path.name != META and not path.name.startswith(TMP_PREFIX):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            files[str(path.relative_to(stage_dir))] = _sha256(path)
    for root, _dirs, _files in os.walk(stage_dir):
        fsync_dir(Path(root))
    write_json(stage_dir / META, {**meta, "files": files})
    old = None
    if target.exists():  # an older save of the same step (e.g. before an emergency mid-step save): swap it
        old = target.parent / f"{TMP_PREFIX}old-{target.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(stage_dir, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def save_checkpoint(target: Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Single-writer save: ``state`` (model, optimizer, scheduler, cursor, rng, ...) + ``meta`` (step, iteration)."""
    shutil.rmtree(staging_dir(target), ignore_errors=True)
    write_rank_state(target, state, rank=0)
    return finalize_checkpoint(target, meta)


def read_meta(ckpt: Path) -> dict[str, Any] | None:
    """meta.json of a complete checkpoint, or None when incomplete (missing/torn meta, missing files)."""
    try:
        meta = json.loads((ckpt / META).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not all((ckpt / name).exists() for name in meta.get("files", {})):
        return None
    return meta


def verify(ckpt: Path) -> bool:
    meta = read_meta(ckpt)
    return meta is not None and all(_sha256(ckpt / n) == h for n, h in meta["files"].items())


def list_checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a stage, by step ascending."""
    if not stage_dir.exists():
        return []
    out = []
    for child in stage_dir.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and read_meta(child) is not None:
            out.append((int(match.group(1)), child))
    return sorted(out)


def latest_checkpoint(stage_dir: Path) -> Path | None:
    ckpts = list_checkpoints(stage_dir)
    return ckpts[-1][1] if ckpts else None


def load_rank_state(ckpt: Path, rank: int = 0) -> dict[str, Any]:
    path = ckpt / f"rank_{rank:05d}.pt"
    if read_meta(ckpt) is None or not path.exists():
        raise CheckpointError(f"checkpoint {ckpt} is incomplete or has no state for rank {rank}")
    return torch.load(path, map_location="cpu", weights_only=False)


def mark_final(stage_dir: Path, ckpt: Path) -> None:
    write_json(stage_dir / "final.json", {"checkpoint": ckpt.name, "meta": read_meta(ckpt)})


def final_checkpoint(stage_dir: Path) -> Path | None:
    try:
        name = json.loads((stage_dir / "final.json").read_text())["checkpoint"]
    except (OSError, json.JSONDecodeError, KeyError):
        return None
    ckpt = stage_dir / name
    return ckpt if read_meta(ckpt) is not None else None


def prune(stage_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints (never the final one) and stale temp dirs."""
    final = final_checkpoint(stage_dir)
    ckpts = list_checkpoints(stage_dir)
    removed = []
    for _step, path in ckpts[:-keep_last] if keep_last > 0 else ckpts:
        if final is not None and path.resolve() == final.resolve():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
