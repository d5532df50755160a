"""HDF5 shard round trip with ragged arrays, truncation and checksum rejection, streaming, the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mathfirst_hpc.errors import ShardError
from mathfirst_hpc.shards import Ragged, ShardData, inspect_shards, iter_shards, read_shard, sha256_file, write_shard


def make_shard(n: int = 12, seed: int = 0) -> ShardData:
    rng = np.random.default_rng(seed)
    prompt = [rng.integers(0, 500, rng.integers(1, 30)) for _ in range(n)]
    response = [rng.integers(0, 500, rng.integers(0, 40)) for _ in range(n)]
    return ShardData(
        sample_id=np.arange(n), group_id=np.arange(n) // 4, prompt_uid=[f"p{i // 4}" for i in range(n)],
        domain=["math" if i % 3 else "code" for i in range(n)], data_source=["synthetic__math"] * n,
        prompt_tokens=Ragged.from_list(prompt, np.int32), response_tokens=Ragged.from_list(response, np.int32),
        logprobs=Ragged.from_list([-rng.random(len(r)) for r in response], np.float32),
        finish_reason=["stop" if i % 2 else "length" for i in range(n)],
        score=rng.random(n).astype(np.float32), reward=rng.random(n).astype(np.float32),
        verdict=[("correct", "incorrect", "unparseable")[i % 3] for i in range(n)], reason=[f"réason {i}" for i in range(n)])


def test_round_trip_ragged(tmp_path) -> None:
    data = make_shard()
    sha = write_shard(tmp_path / "s.h5", data, iteration=3, policy_checkpoint="step_000002", seed=7)
    back = read_shard(tmp_path / "s.h5", expected_sha256=sha)
    assert back.response_tokens.tolist() == data.response_tokens.tolist()
    assert back.prompt_tokens.tolist() == data.prompt_tokens.tolist()
    assert all(np.allclose(back.logprobs[i], data.logprobs[i]) for i in range(len(data)))
    assert back.domain == data.domain and back.verdict == data.verdict and back.reason == data.reason
    assert back.finish_reason == data.finish_reason and back.prompt_uid == data.prompt_uid
    assert np.array_equal(back.group_id, data.group_id)
    assert back.attrs["iteration"] == 3 and back.attrs["policy_checkpoint"] == "step_000002"
    assert back.attrs["schema_version"] == 1 and "host" in back.attrs
    assert list(back.response_length) == [len(r) for r in data.response_tokens.tolist()]


def test_truncated_shard_rejected(tmp_path) -> None:
    path = tmp_path / "s.h5"
    write_shard(path, make_shard(200))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ShardError, match="truncated or corrupt"):
        read_shard(path)


def test_checksum_mismatch_rejected(tmp_path) -> None:
    path = tmp_path / "s.h5"
    sha = write_shard(path, make_shard())
    write_shard(path, make_shard(seed=1))
    with pytest.raises(ShardError, match="checksum"):
        read_shard(path, expected_sha256=sha)


def test_write_is_atomic_no_temp_left(tmp_path) -> None:
    data = make_shard()
    data.reason = data.reason[:-1]  # inconsistent columns: write must fail and leave nothing behind
    with pytest.raises(ValueError):
        write_shard(tmp_path / "s.h5", data)
    assert list(tmp_path.iterdir()) == []


def test_streaming_and_inspect(tmp_path) -> None:
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"shard_{k:03d}.h5")
        write_shard(paths[-1], make_shard(seed=k))
    assert sum(len(s) for s in iter_shards(paths)) == 36
    info = inspect_shards(paths)
    assert info["samples"] == 36 and set(info["mean_reward_by_domain"]) == {"math", "code"}
    out = subprocess.run([sys.executable, "-m", "mathfirst_hpc.cli", "shards", "inspect", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "samples: 36" in out.stdout and "response_length" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "mathfirst_hpc.cli", "shards", "inspect", str(tmp_path / "x.h5")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no such shard" in bad.stderr


def test_select_and_concat() -> None:
    data = make_shard()
    part = data.select(np.array([4, 5, 6, 7]))
    both = ShardData.concat([part, part])
    assert len(both) == 8 and both.response_tokens[4].tolist() == data.response_tokens[4].tolist()
    assert sha256_file  # used by the manifest
