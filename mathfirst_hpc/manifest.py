"""The run manifest (``RUN_DIR/manifest.json``): the run's index of what is complete.

It names, per stage: status (pending | running | final | failed), iteration and optimizer step, latest and
final checkpoint; the Slurm job ids of the run (``records.JobEntry``); every finished shard with its sha256
(``records.ShardEntry``). A file not named here is not complete. Updates take a file lock and replace the file atomically, so two processes updating at once
(a driver and a rollout task) lose nothing.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from . import STAGES
from .atomic import write_json
from .errors import RunDirError
from .paths import RunPaths
from .records import JobEntry, ShardEntry

MANIFEST_VERSION = 1


def _empty() -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "created_unix": time.time(),
        "stages": {s: {"status": "pending", "iteration": 0, "step": 0, "latest_checkpoint": None,
                       "final_checkpoint": None} for s in STAGES},
        "jobs": {},
        "shards": {},
    }


class Manifest:
    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths

    def read(self) -> dict[str, Any]:
        if not self.paths.manifest.exists():
            return _empty()
        try:
            return json.loads(self.paths.manifest.read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{self.paths.manifest} is not valid JSON ({exc})") from None

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read-modify-write under the lock; ``change`` edits the dict in place."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.paths.manifest_lock), timeout=120):
            data = self.read()
            before = copy.deepcopy(data)
            change(data)
            if data != before or not self.paths.manifest.exists():
                data["updated_unix"] = time.time()
                write_json(self.paths.manifest, data)
            return data

    # convenience -------------------------------------------------------------------------------------------------
    def stage(self, stage: str) -> dict[str, Any]:
        return self.read()["stages"][stage]

    def set_stage(self, stage: str, **fields: Any) -> dict[str, Any]:
        return self.update(lambda d: d["stages"][stage].update(fields))

    def _rel(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.paths.root))

    def record_shard(self, path: Path, entry: ShardEntry) -> None:
        """A newly written shard: its entry replaces any older one."""
        rel = self._rel(path)
        self.update(lambda d: d["shards"].__setitem__(rel, entry.to_dict()))

    def mark_scored(self, path: Path, sha256: str) -> None:
        """Rewards are in the recorded shard, whose file now has checksum ``sha256``."""
        rel = self._rel(path)
        self.update(lambda d: d["shards"][rel].update(sha256=sha256, scored=True))

    def shard_entry(self, path: Path) -> ShardEntry | None:
        entry = self.read()["shards"].get(self._rel(path))
        return ShardEntry.from_dict(entry) if entry is not None else None

    def shard_entries(self) -> dict[str, ShardEntry]:
        """Every recorded shard, by path relative to the run dir."""
        return {rel: ShardEntry.from_dict(e) for rel, e in self.read()["shards"].items()}

    def record_job(self, job_id: str, entry: JobEntry | None = None, **fields: Any) -> None:
        """A submitted job: ``entry``, or a JobEntry built from ``fields`` (kind, stage, key, ...)."""
        entry = entry if entry is not None else JobEntry(**fields)
        self.record_jobs({str(job_id): entry})

    def record_jobs(self, entries: dict[str, JobEntry]) -> None:
        """Several jobs at once (the tasks of one array), in one locked update."""
        rows = {str(job_id): e.to_dict() for job_id, e in entries.items()}
        self.update(lambda d: d["jobs"].update(rows))

    def jobs(self) -> dict[str, JobEntry]:
        """Every recorded job, by job id."""
        return {job_id: JobEntry.from_dict(e) for job_id, e in self.read()["jobs"].items()}

    def is_final(self, stage: str) -> bool:
        """Status final, unless the checkpoint final.json names fails the quick check: a damaged final is redone."""
        from .checkpoint import final_problems
        return self.stage(stage)["status"] == "final" and not final_problems(self.paths.checkpoints(stage))
