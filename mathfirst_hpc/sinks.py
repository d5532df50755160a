"""Metric sinks: TensorBoard and Weights & Biases (offline) fed from ``metrics.jsonl``, the source of truth.

``logging.sinks: [jsonl, tensorboard, wandb]``. ``stage.log_metrics`` appends a line to metrics.jsonl and then
calls :func:`publish`, which *replays* to each configured sink the lines it has not written yet. A sink never
sees a value that metrics.jsonl does not hold, so a requeue or a ``kill -9`` cannot make them disagree:

- TensorBoard (``RUN_DIR/tb/<stage>/``, ``torch.utils.tensorboard``) shows every line at once. It remembers the
  ``time_unix`` of the last line it flushed in ``tb/<stage>/written.json`` (renamed into place after each
  flush). Lines newer than that are written; each process opens its writer with ``purge_step`` = the first
  step it writes, so that TensorBoard's reader drops the points a killed process wrote past its last checkpoint
  (``stage.load_latest`` truncated them from metrics.jsonl and the redone steps log them again) or wrote just
  before dying.
- W&B (``WANDB_MODE=offline``, ``RUN_DIR/wandb/``, one run per stage with a fixed id, the ``wandb`` extra)
  cannot delete a point, so it only gets the lines a checkpoint covers (:func:`covered`: up to the manifest's
  latest checkpoint, or all of a final stage): those a resume never redoes. What it already holds is read back
  from its own offline files (``wandb_history``), so a kill between logging and any bookkeeping cannot duplicate
  a point.
  ``stage.save_stage_checkpoint`` calls :func:`publish` too, so W&B catches up at each checkpoint.
  Upload later with ``wandb sync RUN_DIR/wandb/offline-run-*``.

The x axis is ``iteration`` for RL stages (one line per iteration; an iteration that keeps no group has no
optimizer step) and ``step`` for SFT. Numeric fields become scalars named as in metrics.jsonl (``reward/math``
groups under ``reward``); ``stage``, ``time_unix``, ``step`` and ``iteration`` are not plotted.

One writer per step: metrics are logged by rank 0 of the process that trains (the colocated run, or the Slurm
learner job, one at a time); :func:`publish` also holds a file lock per stage. Simplifications: "newer" compares
``time_unix`` across processes, so clocks of the nodes that log one stage must agree to well under the time
between a kill and the restart's first step; a fallback to an older checkpoint because the newest is damaged can
leave W&B with points the redone steps log again (TensorBoard purges them).

Cost: each publish reads only the lines appended since the previous one (``stage_rows``); a few ms per line with
TensorBoard (``bench/bench_outputs.py sinks``). With only jsonl configured it returns at once.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from filelock import FileLock

from .atomic import TMP_PREFIX
from .errors import ConfigError
from .paths import RunPaths

NOT_PLOTTED = frozenset({"stage", "time_unix", "step", "iteration"})
Committed = tuple[int, int | None] | None
"""(step, iteration) of the stage's latest checkpoint in the manifest; None: the stage is final."""


class Sink(Protocol):
    """Where metrics are replayed to. ``publish`` picks the lines this sink has not written and writes them."""

    def publish(self, rows: list[dict[str, Any]], committed: Committed) -> None:
        """``rows``: the stage's metrics.jsonl lines in order; ``committed``: where the latest checkpoint stands
        (None = it covers all of them, the stage is final)."""
        ...

    def write(self, step: int, record: dict[str, float]) -> None:
        ...

    def close(self) -> None:
        ...


# ---------------------------------------------------------------------------------------------------------------
# paths (the sinks own these folders; paths.py's layout names them)
# ---------------------------------------------------------------------------------------------------------------

def tb_dir(paths: RunPaths, stage: str) -> Path:
    return paths.root / "tb" / stage


def wandb_root(paths: RunPaths) -> Path:
    """wandb.init(dir=RUN_DIR) writes RUN_DIR/wandb/offline-run-<time>-<id>/run-<id>.wandb."""
    return paths.root / "wandb"


def wandb_run_id(paths: RunPaths, stage: str) -> str:
    """The same id for every process of a stage (each writes its own offline segment; ``wandb sync`` merges)."""
    return f"{stage}-{hashlib.sha256(str(paths.root).encode()).hexdigest()[:10]}"


def x_value(row: dict[str, Any]) -> int:
    """The x of a line: its iteration (RL) or optimizer step (SFT)."""
    return int(row["iteration"] if "iteration" in row else row.get("step", 0))


def scalars(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The plottable numbers of a line (nested mappings flattened with '/'; None, strings and NaN-free)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if not prefix and key in NOT_PLOTTED:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalars(value, name + "/"))
        elif isinstance(value, (bool, int, float)):
            out[name] = float(value)
    return out


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard
# ---------------------------------------------------------------------------------------------------------------

class TensorBoardSink:
    """SummaryWriter into RUN_DIR/tb/<stage>; opened lazily with ``purge_step`` at the first step it writes."""

    def __init__(self, paths: RunPaths, stage: str, cfg: Any) -> None:
        self.dir = tb_dir(paths, stage)
        self.state_file = self.dir / "written.json"
        self.writer: Any = None
        self.last_x: int | None = None

    def _written_time(self) -> float:
        try:
            return float(json.loads(self.state_file.read_text())["time_unix"])
        except (FileNotFoundError, KeyError, ValueError):
            return float("-inf")

    def publish(self, rows: list[dict[str, Any]], committed: Committed) -> None:
        since = self._written_time()
        new = _tail_while(rows, lambda r: float(r.get("time_unix", 0.0)) > since)
        if not new:
            return
        first = x_value(new[0])
        if self.writer is None or self.last_x is None or first <= self.last_x:
            self._open(purge_step=first)
        for row in new:
            self.write(x_value(row), scalars(row))
        self.writer.flush()
        _replace_text(self.state_file, json.dumps({"time_unix": new[-1]["time_unix"], "x": self.last_x}))

    def _open(self, purge_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.close()
        self.dir.mkdir(parents=True, exist_ok=True)
        _after_newest_event_file(self.dir)
        self.writer = SummaryWriter(str(self.dir), purge_step=purge_step)

    def write(self, step: int, record: dict[str, float]) -> None:
        for tag, value in record.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.last_x = step

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _tail_while(rows: list[dict[str, Any]], newer: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The last rows for which ``newer`` holds, in order (a stage's lines are in time and x order, so the scan
    stops at the first older one instead of reading the whole history at every step)."""
    start = len(rows)
    while start > 0 and newer(rows[start - 1]):
        start -= 1
    return rows[start:]


def _replace_text(path: Path, text: str) -> None:
    """Atomic (temp file + rename) but not fsynced: written.json only has to be a lower bound of what TensorBoard
    holds. Lost or stale after a crash, the next writer rewrites a few more points (purged first), never a wrong
    curve; an fsync here would cost more than the rest of a publish."""
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{os.getpid()}"
    tmp.write_text(text)
    os.replace(tmp, path)


def _after_newest_event_file(folder: Path) -> None:
    """Event files are read in name order and named by the second they were opened: a writer opened in the same
    second as the previous one (another pid) could sort before it and lose its purge. Wait for the next second."""
    newest = max((int(m.group(1)) for p in folder.glob("events.out.tfevents.*")
                  if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", p.name))), default=0)
    while int(time.time()) <= newest:
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------------
# Weights & Biases, offline
# ---------------------------------------------------------------------------------------------------------------

class WandbSink:
    """One offline W&B run per stage (fixed id, resume='allow'); only checkpoint-covered lines."""

    def __init__(self, paths: RunPaths, stage: str, cfg: Any) -> None:
        if importlib.util.find_spec("wandb") is None:  # imported when the first point is written
            raise ConfigError("logging.sinks has wandb but the wandb package is not installed",
                              hint="pip install -e '.[wandb]', or drop wandb from logging.sinks")
        self.paths, self.stage, self.project = paths, stage, cfg.wandb_project
        self.run: Any = None
        self.last_x: int | None = None

    def publish(self, rows: list[dict[str, Any]], committed: Committed) -> None:
        if self.last_x is None:  # once per process: what earlier processes' segments already hold
            steps = [step for step, _ in wandb_history(self.paths, self.stage)]
            self.last_x = max(steps, default=-1)
        last_x = self.last_x
        new = [r for r in _tail_while(rows, lambda r: x_value(r) > last_x)
               if covered(r, committed)]
        for row in new:
            self.write(x_value(row), scalars(row))

    def _open(self) -> None:
        import wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=self.project, dir=str(self.paths.root), id=wandb_run_id(self.paths, self.stage),
                              name=f"{self.paths.root.name}/{self.stage}", group=self.paths.root.name,
                              job_type=self.stage, resume="allow", mode="offline", reinit="create_new")

    def write(self, step: int, record: dict[str, float]) -> None:
        if self.run is None:
            wandb_root(self.paths).mkdir(parents=True, exist_ok=True)
            self._open()
        self.run.log(record, step=step)
        self.last_x = step

    def close(self) -> None:
        """Finish the run and wait (up to 10 s) until its service process has written the last point: finish()
        returns before the transaction log is complete, and the next process reads that log back."""
        if self.run is None:
            return
        self.run.finish()
        self.run = None
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if max((step for step, _ in wandb_history(self.paths, self.stage)), default=-1) >= (self.last_x or 0):
                return
            time.sleep(0.05)


def _leveldb_records(data: bytes) -> Iterator[bytes]:
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte ':W&B' header, then LevelDB log
    blocks of 32 KiB holding chunks (crc32c 4, length 2, type 1: full/first/middle/last). A torn tail (a
    killed writer) ends the scan. Checksums are not verified (stdlib has no crc32c)."""
    block, header, pos, parts = 32768, 7, 7, b""
    if data[:4] != b":W&B":
        return
    while pos + header <= len(data):
        if block - pos % block < header:  # the block's tail is zero padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        if kind == 0 and length == 0:  # padding to the end of the block
            pos += block - pos % block
            continue
        chunk = data[pos + header:pos + header + length]
        if len(chunk) < length:
            return
        pos += header + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            parts = chunk
        elif kind == 3:
            parts += chunk
        elif kind == 4:
            yield parts + chunk
            parts = b""


def _segments(paths: RunPaths, run_id: str) -> list[Path]:
    """The stage's offline segments, oldest first. wandb names them offline-run-<YYYYmmdd_HHMMSS>-<id>, and adds
    -1, -2, ... when two processes start the same id within one second (a fast resume), so the suffix sorts too."""
    pattern = re.compile(rf"offline-run-(\d{{8}}_\d{{6}})-{re.escape(run_id)}(?:-(\d+))?")
    found = []
    for directory in wandb_root(paths).glob(f"offline-run-*{run_id}*"):
        match = pattern.fullmatch(directory.name)
        log_path = directory / f"run-{run_id}.wandb"
        if match and log_path.is_file():
            found.append(((match.group(1), int(match.group(2) or 0)), log_path))
    return [log_path for _, log_path in sorted(found)]


def wandb_history(paths: RunPaths, stage: str) -> list[tuple[int, dict[str, Any]]]:
    """(step, {key: value}) of every history row in the stage's offline W&B segments, oldest segment first."""
    from wandb.proto import wandb_internal_pb2 as pb
    run_id = wandb_run_id(paths, stage)
    rows = []
    for path in _segments(paths, run_id):
        for raw in _leveldb_records(path.read_bytes()):
            record = pb.Record()
            try:
                record.ParseFromString(raw)
            except Exception:  # noqa: BLE001 - a torn record from a killed writer
                break
            if record.WhichOneof("record_type") == "history":
                values = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                          for item in record.history.item}
                rows.append((int(values.get("_step", record.history.step.num)), values))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the registry and the one entry point
# ---------------------------------------------------------------------------------------------------------------

SINKS: dict[str, type] = {"tensorboard": TensorBoardSink, "wandb": WandbSink}
"""Sink name (``logging.sinks``) -> class(paths, stage, logging_cfg). ``jsonl`` is metrics.jsonl itself."""

_open_sinks: dict[tuple[Path, str, str], Sink] = {}


def _committed(paths: RunPaths, stage: str) -> Committed:
    """Where the stage's latest checkpoint stands (None: the stage is final, it covers all of metrics.jsonl)."""
    from .manifest import Manifest
    entry = Manifest(paths).read()["stages"].get(stage, {})
    if entry.get("status") == "final":
        return None
    iteration = entry.get("iteration")
    return int(entry.get("step") or 0), None if iteration is None else int(iteration)


def covered(row: dict[str, Any], committed: Committed) -> bool:
    """Whether the checkpoint covers a metrics.jsonl line (a resume never redoes it). An RL line by its iteration:
    one that keeps no group makes no optimizer step, so its line has the step of the line before it, which a
    checkpoint of the previous iteration covers. Line ``iteration`` = K iterations done; a checkpoint's = the next
    to run (inside it for an emergency checkpoint). An SFT line, or a manifest without an iteration: by step."""
    if committed is None:
        return True
    step, iteration = committed
    if "iteration" in row and iteration is not None:
        return int(row["iteration"]) <= iteration
    return int(row.get("step", 0)) <= step


_tails: dict[Path, tuple[int, int, bytes, dict[str, list[dict[str, Any]]]]] = {}
"""metrics.jsonl path -> (inode, bytes parsed, the last parsed line, its rows by stage): what this process read."""


def stage_rows(path: Path, stage: str) -> list[dict[str, Any]]:
    """The stage's metrics.jsonl lines, in order. Reads only what was appended since the last call; a file
    replaced since (``stage.load_latest`` truncates it by an atomic rewrite: another inode, or the last line read
    no longer where it was) is read again in full. A torn last line is left for the next call."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        _tails.pop(path, None)
        return []
    inode, offset, last, by_stage = _tails.get(path, (-1, 0, b"", {}))
    with open(path, "rb") as handle:
        if inode == stat.st_ino and stat.st_size >= offset:
            handle.seek(offset - len(last))
            if handle.read(len(last)) != last:
                inode = -1
        if inode != stat.st_ino or stat.st_size < offset:
            offset, last, by_stage = 0, b"", {}
            handle.seek(0)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            by_stage.setdefault(str(row.get("stage")), []).append(row)
        last = line
    _tails[path] = (stat.st_ino, offset + end, last, by_stage)
    return by_stage.get(stage, [])


def publish(paths: RunPaths, stage: str, cfg: Any) -> None:
    """Replay the stage's metrics.jsonl lines each configured sink has not written yet (``cfg``: LoggingConfig).
    A no-op when only jsonl is configured."""
    names = [name for name in cfg.sinks if name != "jsonl"]
    if not names:
        return
    (paths.root / "tb").mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.root / "tb" / f".{stage}.lock"), timeout=300):
        rows = stage_rows(paths.metrics, stage)
        committed = _committed(paths, stage) if "wandb" in names else None
        for name in names:
            key = (paths.root, stage, name)
            if key not in _open_sinks:
                _open_sinks[key] = SINKS[name](paths, stage, cfg)
            _open_sinks[key].publish(rows, committed)


def close_all() -> None:
    """Close every sink this process opened (also at exit)."""
    while _open_sinks:
        _key, sink = _open_sinks.popitem()
        sink.close()


atexit.register(close_all)
