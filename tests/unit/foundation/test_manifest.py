"""Two processes updating the manifest at once lose nothing (file lock + atomic replace)."""

from __future__ import annotations

import multiprocessing as mp

from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths


def _writer(root: str, tag: str, n: int) -> None:
    manifest = Manifest(RunPaths(root))
    for i in range(n):
        manifest.record_job(f"{tag}-{i}", kind="rollout", stage="math_rl")


def test_concurrent_updates_keep_both(tmp_path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), tag, 40)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    jobs = Manifest(RunPaths(tmp_path)).read()["jobs"]
    assert len(jobs) == 80
    assert {j.split("-")[0] for j in jobs} == {"a", "b"}


def test_stage_fields(tmp_path) -> None:
    manifest = Manifest(RunPaths(tmp_path))
    assert not manifest.is_final("sft")
    manifest.set_stage("sft", status="final", final_checkpoint="checkpoints/sft/step_000003")
    assert manifest.is_final("sft") and manifest.stage("math_rl")["status"] == "pending"
