"""Atomic checkpoints: ``checkpoints/<stage>/step_000012/`` holding model, optimizer, scheduler, data cursor,
RNG states (python, numpy, torch), step and iteration.

A checkpoint is written into a temp folder, every file fsynced, ``meta.json`` (with the sha256 of every file)
written last, and the folder renamed into place. Discovery counts a folder only when its ``meta.json`` parses and
names files that exist, so a process killed mid-save leaves the previous checkpoint as ``latest``. Several ranks
(Megatron TP/PP) each write their own ``rank_XXXXX.pt`` into a shared staging folder; rank 0 finalises after a
barrier. ``final.json`` in the stage folder marks the checkpoint the next stage starts from.

Verification, in two strengths (``check_files``):

* quick (discovery, ``final_checkpoint``, plain ``status``): each file's size against ``meta.json``; a file up to
  ``QUICK_WHOLE_BYTES`` is hashed whole, a larger one by ``QUICK_WINDOWS`` windows of ``QUICK_WINDOW_BYTES``
  spread over the file (first and last included), against the windows' digest recorded at save time. About
  1 MiB read per file whatever its size. It catches a file that was truncated, extended, replaced or
  overwritten; it can miss a few flipped bytes between the windows of a large file.
* full (``load_rank_state``, ``status --verify``): the sha256 of every file. Resume hashes the files it reads
  (everything outside ``hf/``) in every process that loads, so all ranks reach the same verdict without a
  collective; ``status --verify`` hashes everything.

Nothing is cached between calls: every check reads the files again. A checkpoint failing the quick check is
not counted by discovery (resume, pruning and ``final_checkpoint`` skip it, with a warning naming the file); a
checkpoint failing the full check at load time is skipped in favour of the newest older one that passes. A step
folder whose meta.json is torn or names a missing file counts as damaged too: a finished save never leaves one.
Checkpoints saved before the windows digest existed get the size-free part only: small files hashed, large
files checked for existence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import TMP_PREFIX, atomic_path, fsync_dir, write_json
from .errors import CheckpointError

META = "meta.json"
FINAL = "final.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
QUICK_WHOLE_BYTES = 1 << 20
"""Files up to this size are hashed whole even by the quick check."""
QUICK_WINDOW_BYTES = 1 << 16
QUICK_WINDOWS = 16
_RESUME_SKIPS = ("hf/",)
"""Resume does not read the exported HF weights: its full check leaves them to ``status --verify``."""
log = logging.getLogger("mathfirst_hpc.checkpoint")


@dataclass(frozen=True)
class FileProblem:
    """One checkpoint (or shard) file that does not match what was recorded when it was written."""

    path: Path
    reason: str

    def describe(self, root: Path | None = None) -> str:
        shown = self.path
        if root is not None:
            try:
                shown = self.path.relative_to(root)
            except ValueError:
                pass
        return f"{shown}: {self.reason}"


def capture_rng() -> dict[str, Any]:
    import numpy as np
    import torch  # imported here: status and the manifest check checkpoints without paying torch's import
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch
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


def _window_digest(path: Path, size_bytes: int) -> str:
    """sha256 of the size and of QUICK_WINDOWS windows spread evenly over the file (first and last included)."""
    digest = hashlib.sha256(str(size_bytes).encode())
    last = max(size_bytes - QUICK_WINDOW_BYTES, 0)
    with open(path, "rb") as handle:
        for k in range(QUICK_WINDOWS):
            handle.seek(last * k // (QUICK_WINDOWS - 1))
            digest.update(handle.read(QUICK_WINDOW_BYTES))
    return digest.hexdigest()


def _quick_record(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    record: dict[str, Any] = {"bytes": size}
    if size > QUICK_WHOLE_BYTES:
        record["windows_sha256"] = _window_digest(path, size)
    return record


def staging_dir(target: Path) -> Path:
    """Deterministic temp folder beside ``target`` that every rank agrees on."""
    return target.parent / f"{TMP_PREFIX}{target.name}"


def write_rank_state(target: Path, state: dict[str, Any], rank: int = 0) -> Path:
    """Write one rank's part of a checkpoint into the staging folder (atomic per file)."""
    stage_dir = staging_dir(target)
    stage_dir.mkdir(parents=True, exist_ok=True)
    path = stage_dir / f"rank_{rank:05d}.pt"
    import torch
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def finalize_checkpoint(target: Path, meta: dict[str, Any], extra_dirs: tuple[str, ...] = ()) -> Path:
    """Rank 0, after every rank wrote its state: checksum, write meta.json last, rename into place."""
    stage_dir = staging_dir(target)
    if not stage_dir.exists():
        raise CheckpointError(f"nothing staged for {target}")
    files, quick = {}, {}
    for path in sorted(stage_dir.rglob("*")):
        if path.is_file() and path.name != META and not path.name.startswith(TMP_PREFIX):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            name = str(path.relative_to(stage_dir))
            files[name] = _sha256(path)
            quick[name] = _quick_record(path)
    for root, _dirs, _files in os.walk(stage_dir):
        fsync_dir(Path(root))
    write_json(stage_dir / META, {**meta, "files": files, "quick": quick})
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


def _parse_meta(ckpt: Path) -> dict[str, Any] | None:
    """meta.json as a dict with a ``files`` dict of name -> sha256, or None when missing, torn or malformed."""
    try:
        meta = json.loads((ckpt / META).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    files = meta.get("files", {}) if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not all(isinstance(h, str) for h in files.values()):
        return None
    return meta


def recorded_files(ckpt: Path) -> dict[str, str] | None:
    """name -> sha256 of every file meta.json lists, or None when meta.json is missing, torn or malformed."""
    meta = _parse_meta(ckpt)
    return dict(meta["files"]) if meta is not None else None


def read_meta(ckpt: Path) -> dict[str, Any] | None:
    """meta.json of a complete checkpoint, or None when incomplete (missing/torn meta, missing files)."""
    meta = _parse_meta(ckpt)
    if meta is None or not all((ckpt / name).exists() for name in meta.get("files", {})):
        return None
    return meta


def _check_one(ckpt: Path, name: str, sha256: str, quick: dict[str, Any] | None, full: bool) -> str | None:
    """Why file ``name`` of ``ckpt`` does not match meta.json, or None when it does (see the module docstring)."""
    path = ckpt / name
    try:
        size = path.stat().st_size
        recorded = quick.get("bytes") if isinstance(quick, dict) else None
        if recorded is not None and size != recorded:
            return f"size {size} bytes, meta.json recorded {recorded}"
        if full or size <= QUICK_WHOLE_BYTES:
            return None if _sha256(path) == sha256 else "sha256 differs from meta.json"
        windows = quick.get("windows_sha256") if isinstance(quick, dict) else None
        if windows is not None and _window_digest(path, size) != windows:
            return "content differs from meta.json (sampled check)"
        return None
    except FileNotFoundError:
        return "missing (listed in meta.json)"
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"


def check_files(ckpt: Path, full: bool = False, skip: tuple[str, ...] = ()) -> list[FileProblem]:
    """Files of ``ckpt`` that do not match its meta.json (empty = healthy); ``full`` hashes every file, else the
    quick check. Names starting with a prefix in ``skip`` are not checked."""
    meta = _parse_meta(ckpt)
    if meta is None:
        return [FileProblem(ckpt / META, "missing, torn or malformed")]
    quick = meta.get("quick") if isinstance(meta.get("quick"), dict) else {}
    problems = []
    for name, sha256 in sorted(meta["files"].items()):
        if name.startswith(skip):
            continue
        reason = _check_one(ckpt, name, sha256, quick.get(name), full)
        if reason is not None:
            problems.append(FileProblem(ckpt / name, reason))
    return problems


def verify(ckpt: Path) -> bool:
    """Every file of a complete checkpoint matches its sha256 (reads them all)."""
    return read_meta(ckpt) is not None and not check_files(ckpt, full=True)


def checkpoint_dirs(stage_dir: Path) -> list[tuple[int, Path]]:
    """Every ``step_*`` folder of a stage, complete or not (staging folders excluded), by step ascending."""
    if not stage_dir.is_dir():
        return []
    out = []
    for child in stage_dir.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir():
            out.append((int(match.group(1)), child))
    return sorted(out)


def _warn_damaged(ckpt: Path, problems: list[FileProblem], instead: str) -> None:
    for problem in problems:
        log.warning("checkpoint %s is damaged: %s; %s", ckpt, problem.describe(ckpt.parent), instead)


def list_checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a stage that pass the quick check, by step ascending."""
    return [(step, path) for step, path in checkpoint_dirs(stage_dir) if not check_files(path)]


def latest_checkpoint(stage_dir: Path) -> Path | None:
    """The newest checkpoint that passes the quick check. Newer step folders that fail it (a file changed or
    missing, meta.json torn: a finished save leaves none of these) are skipped with a warning naming the file."""
    for _step, path in reversed(checkpoint_dirs(stage_dir)):
        problems = check_files(path)
        if not problems:
            return path
        _warn_damaged(path, problems, "skipping it, falling back to the previous checkpoint")
    return None


def load_rank_state(ckpt: Path, rank: int = 0) -> dict[str, Any]:
    """This rank's state of ``ckpt`` after a full check of every file resume reads (all ranks' state files, so
    every rank decides alike). A damaged checkpoint is skipped, with a warning naming the file, for the newest
    older checkpoint of the same stage folder that passes; none left raises CheckpointError."""
    match = _STEP_DIR.match(ckpt.name)
    older = [path for step, path in reversed(checkpoint_dirs(ckpt.parent))
             if match is not None and step < int(match.group(1))]
    damaged: list[FileProblem] = []
    for candidate in [ckpt, *older]:
        problems = check_files(candidate, full=True, skip=_RESUME_SKIPS)
        path = candidate / f"rank_{rank:05d}.pt"
        if not problems and path.exists():
            import torch
            return torch.load(path, map_location="cpu", weights_only=False)
        problems = problems or [FileProblem(path, f"missing (no state for rank {rank})")]
        damaged += problems
        _warn_damaged(candidate, problems, "not loading it, falling back to the previous checkpoint")
    raise CheckpointError(f"checkpoint {ckpt} cannot be loaded for rank {rank} and no older checkpoint passes "
                          "verification: " + "; ".join(p.describe(ckpt.parent) for p in damaged[:3]),
                          hint="mathfirst-hpc status --verify RUN_DIR lists every bad file; delete the damaged "
                               "checkpoint folder to restart the stage from its beginning")


def mark_final(stage_dir: Path, ckpt: Path) -> None:
    write_json(stage_dir / FINAL, {"checkpoint": ckpt.name, "meta": read_meta(ckpt)})


def final_name(stage_dir: Path) -> str | None:
    """The checkpoint folder name ``final.json`` records, or None (no final.json, or torn)."""
    try:
        name = json.loads((stage_dir / FINAL).read_text())["checkpoint"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def final_marker_problem(stage_dir: Path) -> FileProblem | None:
    """What is wrong with ``final.json`` itself (torn, or naming no checkpoint folder); None when fine or absent."""
    if not (stage_dir / FINAL).exists():
        return None
    name = final_name(stage_dir)
    if name is None:
        return FileProblem(stage_dir / FINAL, "torn or malformed")
    if not (stage_dir / name).is_dir():
        return FileProblem(stage_dir / name, "missing (named by final.json)")
    return None


def final_problems(stage_dir: Path) -> list[FileProblem]:
    """Why the checkpoint ``final.json`` names is not a usable final (quick check); empty when it is, or when
    the stage has no final.json at all (nothing is known to be wrong)."""
    marker = final_marker_problem(stage_dir)
    if marker is not None:
        return [marker]
    name = final_name(stage_dir)
    return check_files(stage_dir / name) if name is not None else []


def final_checkpoint(stage_dir: Path) -> Path | None:
    """The checkpoint ``final.json`` names when it is complete and passes the quick check, else None (a damaged
    one is reported with a warning)."""
    name = final_name(stage_dir)
    if name is None:
        return None
    problems = final_problems(stage_dir)
    if problems:
        _warn_damaged(stage_dir / name, problems, "it is not treated as final")
        return None
    return stage_dir / name


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
