"""Atomic checkpoints: kill -9 mid-save leaves the previous one as latest; keep-last-k; final marker; RNG."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time

import numpy as np
import torch

from mathfirst_hpc import checkpoint as ckpt


def _save_forever(root: str, ready) -> None:
    state = {"model": {"w": torch.randn(2_000_000)}, "data": {"cursor": 99}}
    ready.set()
    step = 2
    while True:
        ckpt.save_checkpoint(ckpt.Path(root) / f"step_{step:06d}", state, {"step": step})
        step += 1


def test_kill_mid_save_keeps_previous_latest(tmp_path) -> None:
    first = ckpt.save_checkpoint(tmp_path / "step_000001", {"model": {"w": torch.ones(3)}, "data": {"cursor": 5}},
                                 {"step": 1})
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_save_forever, args=(str(tmp_path), ready))
    child.start()
    ready.wait(60)
    deadline = time.time() + 30
    # wait until the child is inside a save (a staging folder exists), then kill -9 it there
    while time.time() < deadline and not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir()):
        time.sleep(0.001)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest is not None
    state = ckpt.load_rank_state(latest)
    assert ckpt.verify(latest)
    if latest == first:
        assert state["data"]["cursor"] == 5
    else:
        assert state["data"]["cursor"] == 99
    # the half-written staging folder is never counted
    assert all(not p.name.startswith(".tmp-") for _, p in ckpt.list_checkpoints(tmp_path))


def test_torn_meta_is_incomplete(tmp_path) -> None:
    good = ckpt.save_checkpoint(tmp_path / "step_000001", {"x": 1}, {"step": 1})
    bad = ckpt.save_checkpoint(tmp_path / "step_000002", {"x": 2}, {"step": 2})
    (bad / "meta.json").write_text('{"step": 2, "fil')
    assert ckpt.latest_checkpoint(tmp_path) == good
    (bad / "meta.json").unlink()
    assert ckpt.latest_checkpoint(tmp_path) == good


def test_keep_last_and_final(tmp_path) -> None:
    for step in range(1, 6):
        ckpt.save_checkpoint(tmp_path / f"step_{step:06d}", {"s": step}, {"step": step})
    ckpt.mark_final(tmp_path, tmp_path / "step_000002")
    ckpt.prune(tmp_path, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4, 5]
    assert ckpt.final_checkpoint(tmp_path) == tmp_path / "step_000002"


def test_rng_round_trip() -> None:
    state = ckpt.capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
