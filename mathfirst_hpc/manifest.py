"""The run manifest (``RUN_DIR/manifest.json``): the run's index of what is complete.

It names, per stage: status (pending | running | final | failed), iteration and optimizer step, latest and
final checkpoint; the Slurm job ids of the run; every finished shard with its sha256. A file not named here is
not complete. Updates take a file lock and replace the file atomically, so two processes updating at once
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

    def record_shard(self, path: Path, **entry: Any) -> None:
        """A newly written shard: its entry (sha256, samples, scored, ...) replaces any older one."""
        rel = self._rel(path)
        self.update(lambda d: d["shards"].__setitem__(rel, dict(entry)))

    def update_shard(self, path: Path, **fields: Any) -> None:
        """Change fields of a recorded shard's entry (e.g. its new sha256 once rewards are in)."""
        rel = self._rel(path)
        self.update(lambda d: d["shards"][rel].update(fields))

    def shard_entry(self, path: Path) -> dict[str, Any] | None:
        return self.read()["shards"].get(self._rel(path))

    def record_job(self, job_id: str, **info: Any) -> None:
        self.update(lambda d: d["jobs"].__setitem__(str(job_id), {"submitted_unix": time.time(), **info}))

    def is_final(self, stage: str) -> bool:
        """Status final, unless the checkpoint final.json names fails the quick check: a damaged final is redone."""
        from .checkpoint import final_problems
        return self.stage(stage)["status"] == "final" and not final_problems(self.paths.checkpoints(stage))
