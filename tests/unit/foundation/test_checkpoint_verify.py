"""Verified checkpoints and shards: ``status --verify`` names each bad file, a damaged final is not final, and
resume falls back to the previous checkpoint with a warning naming the file.

The run dirs here are small but real: checkpoints written by ``checkpoint.save_checkpoint`` with ``final.json``,
shards by ``shards.write_shard`` recorded in the manifest, the manifest updated as ``run.py`` does.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mathfirst_hpc import checkpoint as ckpt
from mathfirst_hpc.cli import cli
from mathfirst_hpc.errors import CheckpointError
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.shards import Ragged, ShardData, write_shard
from mathfirst_hpc.status import collect_status, format_status, verify_run

STAGE = "sft"


def _shard(n: int = 8) -> ShardData:
    rng = np.random.default_rng(0)
    response = [rng.integers(0, 500, 5) for _ in range(n)]
    return ShardData(
        sample_id=np.arange(n), group_id=np.arange(n) // 4, prompt_uid=[f"p{i // 4}" for i in range(n)],
        domain=["math"] * n, data_source=["synthetic__math"] * n,
        prompt_tokens=Ragged.from_list([rng.integers(0, 500, 7) for _ in range(n)], np.int32),
        response_tokens=Ragged.from_list(response, np.int32),
        logprobs=Ragged.from_list([-rng.random(5) for _ in response], np.float32), finish_reason=["stop"] * n,
        score=np.ones(n, np.float32), reward=np.ones(n, np.float32), verdict=["correct"] * n, reason=[""] * n)


def make_run(root: Path, weights: int = 1000) -> RunPaths:
    """sft final at step 4 (checkpoints at steps 2 and 4), two math_rl shards recorded in the manifest."""
    paths = RunPaths(root).make()
    manifest = Manifest(paths)
    for step in (2, 4):
        state = {"backend": {"w": torch.full((weights,), float(step))}, "step": step}
        target = ckpt.save_checkpoint(paths.checkpoint(STAGE, step), state, {"stage": STAGE, "step": step})
        manifest.set_stage(STAGE, latest_checkpoint=str(target.relative_to(paths.root)), step=step)
    ckpt.mark_final(paths.checkpoints(STAGE), paths.checkpoint(STAGE, 4))
    manifest.set_stage(STAGE, status="final", final_checkpoint=f"checkpoints/{STAGE}/step_000004")
    for k in range(2):
        shard = paths.rollouts("math_rl") / "iter_000000" / f"shard_{k:03d}.h5"
        shard.parent.mkdir(parents=True, exist_ok=True)
        _record_shard(manifest, shard, write_shard(shard, _shard()))
    return paths


def _record_shard(manifest: Manifest, path: Path, sha256: str) -> None:
    """The manifest's on-disk shard entry, written through Manifest.update (independent of the entry helpers)."""
    rel = str(path.resolve().relative_to(manifest.paths.root))
    entry = {"sha256": sha256, "samples": 8, "scored": True, "policy_step": 0}
    manifest.update(lambda data: data["shards"].__setitem__(rel, entry))


def status_cli(*args: str):
    return CliRunner().invoke(cli, ["status", *args], catch_exceptions=False)


def bad_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("bad: ")]


def overwrite_random(path: Path, size_bytes: int | None = None) -> None:
    path.write_bytes(os.urandom(path.stat().st_size if size_bytes is None else size_bytes))


# ---------------------------------------------------------------------------------------------------------------
# status --verify
# ---------------------------------------------------------------------------------------------------------------

def test_clean_run_dir_verifies(tmp_path: Path) -> None:
    make_run(tmp_path)
    result = status_cli(str(tmp_path), "--verify")
    assert result.exit_code == 0, result.output
    assert bad_lines(result.output) == []
    assert "verified 2 checkpoint file(s) and 2 shard(s): all match their checksums" in result.output
    assert "final" in next(line for line in result.output.splitlines() if line.startswith(STAGE))


@pytest.mark.parametrize("same_size", [True, False])
def test_overwritten_final_rank_file_is_named_and_not_final(tmp_path: Path, same_size: bool, caplog) -> None:
    paths = make_run(tmp_path)
    bad = paths.checkpoint(STAGE, 4) / "rank_00000.pt"
    overwrite_random(bad, None if same_size else 1234)

    result = status_cli(str(tmp_path), "--verify")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = bad_lines(result.output)
    assert len(lines) == 1 and lines[0].startswith(f"bad: checkpoints/{STAGE}/step_000004/rank_00000.pt: "), lines

    # plain status (quick check only) no longer calls the stage final
    plain = status_cli(str(tmp_path))
    assert plain.exit_code == 0
    row = next(line for line in plain.output.splitlines() if line.startswith(STAGE))
    assert row.split()[1] == "damaged", row
    assert f"checkpoints/{STAGE}/step_000004/rank_00000.pt" in plain.output
    # ... and neither does the run: the manifest check, final.json, discovery
    assert not Manifest(paths).is_final(STAGE)
    with caplog.at_level(logging.WARNING, logger="mathfirst_hpc.checkpoint"):
        assert ckpt.final_checkpoint(paths.checkpoints(STAGE)) is None
        assert ckpt.latest_checkpoint(paths.checkpoints(STAGE)) == paths.checkpoint(STAGE, 2)
    assert "rank_00000.pt" in caplog.text and "step_000004" in caplog.text
    assert [s for s, _ in ckpt.list_checkpoints(paths.checkpoints(STAGE))] == [2]


def test_resume_falls_back_to_previous_checkpoint_with_a_warning(tmp_path: Path, caplog) -> None:
    paths = make_run(tmp_path)
    overwrite_random(paths.checkpoint(STAGE, 4) / "rank_00000.pt")
    with caplog.at_level(logging.WARNING, logger="mathfirst_hpc.checkpoint"):
        state = ckpt.load_rank_state(paths.checkpoint(STAGE, 4))  # what run.py's load_latest would hand it
    assert state["step"] == 2 and torch.equal(state["backend"]["w"], torch.full((1000,), 2.0))
    assert "step_000004/rank_00000.pt" in caplog.text and "falling back" in caplog.text


def test_silent_corruption_in_a_large_file_is_caught_by_load_and_verify(tmp_path: Path, caplog) -> None:
    """One flipped byte between the quick check's windows: plain status cannot see it (documented), the full
    check at load time and --verify do."""
    paths = make_run(tmp_path, weights=2_000_000)  # 8 MB state files: the quick check samples windows
    bad = paths.checkpoint(STAGE, 4) / "rank_00000.pt"
    size = bad.stat().st_size
    assert size > ckpt.QUICK_WHOLE_BYTES
    last = size - ckpt.QUICK_WINDOW_BYTES  # windows start at last * k // (QUICK_WINDOWS - 1): flip between two
    offset = (last * 7 // (ckpt.QUICK_WINDOWS - 1) + ckpt.QUICK_WINDOW_BYTES + last * 8 // (ckpt.QUICK_WINDOWS - 1)) // 2
    with open(bad, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert ckpt.check_files(paths.checkpoint(STAGE, 4)) == []  # the quick check's documented blind spot
    assert [p.reason for p in ckpt.check_files(paths.checkpoint(STAGE, 4), full=True)] == [
        "sha256 differs from meta.json"]
    with caplog.at_level(logging.WARNING, logger="mathfirst_hpc.checkpoint"):
        state = ckpt.load_rank_state(ckpt.latest_checkpoint(paths.checkpoints(STAGE)))
    assert state["step"] == 2 and "step_000004/rank_00000.pt" in caplog.text
    result = status_cli(str(tmp_path), "--verify")
    assert result.exit_code == 1 and len(bad_lines(result.output)) == 1


def test_sampled_windows_catch_a_replaced_large_file(tmp_path: Path) -> None:
    paths = make_run(tmp_path, weights=2_000_000)
    overwrite_random(paths.checkpoint(STAGE, 4) / "rank_00000.pt")  # same size, different content
    problems = ckpt.check_files(paths.checkpoint(STAGE, 4))
    assert [p.reason for p in problems] == ["content differs from meta.json (sampled check)"]


def test_no_healthy_checkpoint_left_is_a_clear_error(tmp_path: Path) -> None:
    paths = make_run(tmp_path)
    for step in (2, 4):
        overwrite_random(paths.checkpoint(STAGE, step) / "rank_00000.pt")
    with pytest.raises(CheckpointError, match="no older checkpoint passes") as info:
        ckpt.load_rank_state(paths.checkpoint(STAGE, 4))
    assert "status --verify" in info.value.one_line()


def test_a_deleted_state_file_is_named_and_skipped(tmp_path: Path, caplog) -> None:
    paths = make_run(tmp_path)
    (paths.checkpoint(STAGE, 4) / "rank_00000.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="mathfirst_hpc.checkpoint"):
        assert ckpt.latest_checkpoint(paths.checkpoints(STAGE)) == paths.checkpoint(STAGE, 2)
        assert ckpt.load_rank_state(paths.checkpoint(STAGE, 4))["step"] == 2
    assert "step_000004/rank_00000.pt: missing (listed in meta.json)" in caplog.text
    assert not Manifest(paths).is_final(STAGE)


def test_truncated_and_missing_shards_are_named(tmp_path: Path) -> None:
    paths = make_run(tmp_path)
    first, second = sorted((paths.rollouts("math_rl") / "iter_000000").glob("*.h5"))
    raw = first.read_bytes()
    first.write_bytes(raw[: len(raw) // 2])
    second.unlink()
    result = status_cli(str(tmp_path), "--verify")
    assert result.exit_code == 1
    assert bad_lines(result.output) == [
        "bad: rollouts/math_rl/iter_000000/shard_000.h5: sha256 differs from manifest.json (modified or truncated)",
        "bad: rollouts/math_rl/iter_000000/shard_001.h5: missing (recorded in manifest.json)"]


def test_every_kind_of_damage_is_one_line(tmp_path: Path) -> None:
    paths = make_run(tmp_path)
    (paths.checkpoint(STAGE, 2) / "meta.json").write_text('{"step": 2, "fil')  # torn meta
    (paths.checkpoints(STAGE) / "final.json").write_text("{")  # torn final marker
    (paths.checkpoint(STAGE, 4) / "rank_00000.pt").unlink()
    result = status_cli(str(tmp_path), "--verify", "--json")
    assert result.exit_code == 1
    info = json.loads(result.output)
    assert sorted(b["path"] for b in info["verify"]["bad"]) == [
        f"checkpoints/{STAGE}/final.json", f"checkpoints/{STAGE}/step_000002/meta.json",
        f"checkpoints/{STAGE}/step_000004/rank_00000.pt"]
    assert info["stages"][STAGE]["status"] == "damaged"


def test_not_a_run_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", str(tmp_path), "--verify"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "not a run directory" in result.output


def test_plain_status_does_not_hash_large_files(tmp_path: Path, monkeypatch) -> None:
    """Plain status reads about QUICK_WINDOWS windows per large file, never the whole file."""
    paths = make_run(tmp_path, weights=2_000_000)
    calls = []
    monkeypatch.setattr(ckpt, "_sha256", lambda path: calls.append(path) or "x")
    text = format_status(collect_status(paths.root))
    assert calls == [] and "damaged" not in text
    assert verify_run(paths.root).problems  # the full check does hash (here against the patched digest)


# ---------------------------------------------------------------------------------------------------------------
# the real run loop
# ---------------------------------------------------------------------------------------------------------------

SFT = ["sft:steps=4", "sft.batch_size=8", "sft.micro_batch_size=4", "sft:checkpoint.every_steps=2",
       "data.synthetic_size=256"]


@pytest.mark.slow  # about 10 s: two short SFT runs of the tiny preset
def test_run_redoes_a_stage_whose_final_checkpoint_is_damaged(tmp_path: Path, caplog) -> None:
    from safetensors.torch import load_file

    from mathfirst_hpc.atomic import read_jsonl
    from mathfirst_hpc.run import run_curriculum

    torch.set_num_threads(1)
    assert run_curriculum(tmp_path, ["sft"], overrides=SFT, progress=False) == {"sft": "final"}
    final = tmp_path / "checkpoints" / STAGE / "step_000004"
    reference = load_file(str(final / "hf" / "model.safetensors"))
    overwrite_random(final / "rank_00000.pt")
    assert status_cli(str(tmp_path), "--verify").exit_code == 1

    with caplog.at_level(logging.WARNING, logger="mathfirst_hpc.checkpoint"):
        assert run_curriculum(tmp_path, ["sft"], overrides=SFT, progress=False) == {"sft": "final"}
    assert "step_000004/rank_00000.pt" in caplog.text  # the fall back to step 2 named the bad file
    again = load_file(str(final / "hf" / "model.safetensors"))
    assert again.keys() == reference.keys() and all(torch.equal(again[k], reference[k]) for k in again)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["stage"] == STAGE] == [1, 2, 3, 4]
    result = status_cli(str(tmp_path), "--verify")
    assert result.exit_code == 0, result.output
    assert Manifest(RunPaths(tmp_path)).is_final(STAGE)
