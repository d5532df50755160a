"""``shards export``: one parquet row per response of a real run's shards, readable by pandas and datasets, equal
to the shards it came from; written atomically; user mistakes are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from mathfirst_hpc.cli import cli
from mathfirst_hpc.export import export_rollouts, stage_shards
from mathfirst_hpc.models import eos_ids, load_tokenizer
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.shards import read_shard

pytestmark = pytest.mark.slow  # the tiny_run fixture trains for about 30 s once

COLUMNS = {"prompt", "response", "domain", "data_source", "reward", "verdict", "reason", "length", "iteration",
           "policy_step"}


def test_round_trip_real_shards(tiny_run, tmp_path) -> None:
    import pandas as pd
    out = tmp_path / "rollouts.parquet"
    result = export_rollouts(tiny_run, "math_rl", out)
    shards = stage_shards(RunPaths(tiny_run), "math_rl")
    data = [read_shard(path) for path, _, _ in shards]
    assert result.rows == sum(len(d) for d in data) > 0 and result.shards == len(shards)
    df = pd.read_parquet(out)
    assert COLUMNS <= set(df.columns) and len(df) == result.rows
    assert sorted(df.iteration.unique()) == [0, 1]
    first, tokenizer = data[0], load_tokenizer(RunPaths(tiny_run).tokenizer_dir)
    rows = df[(df.iteration == first.attrs["iteration"]) & (df.gen_batch == first.attrs["gen_batch"])
              & (df.shard_index == first.attrs["shard_index"])]
    assert rows.sample_id.tolist() == first.sample_id.tolist()
    assert rows.reward.tolist() == pytest.approx(first.reward.tolist())
    assert rows.verdict.tolist() == first.verdict and rows.reason.tolist() == first.reason
    assert rows.length.tolist() == first.response_length.tolist()
    eos = set(eos_ids(tokenizer))
    assert rows.response.iloc[3] == tokenizer.decode([t for t in first.response_tokens[3] if t not in eos])
    assert rows.prompt.tolist() == [tokenizer.decode(first.prompt_tokens[i].tolist()) for i in range(len(first))]
    assert rows.prompt.nunique() == len(set(first.group_id.tolist())) > 1  # one prompt per group
    assert rows.policy_step.tolist() == [shards[0][1]] * len(rows)
    # the kept flag agrees with kept.h5
    kept = read_shard(RunPaths(tiny_run).kept_batch("math_rl", 0))
    assert set(df[(df.iteration == 0) & df.kept].sample_id) == set(kept.sample_id.tolist())


def test_opens_with_datasets(tiny_run, tmp_path) -> None:
    import datasets
    out = tmp_path / "rollouts.parquet"
    export_rollouts(tiny_run, "math_rl", out)
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert COLUMNS <= set(ds.column_names) and len(ds) > 0
    assert isinstance(ds[0]["response"], str) and isinstance(ds[0]["reward"], float)
    assert np.isfinite(ds["reward"]).all()


def test_cli_export_prints_throughput_and_rejects_mistakes(tiny_run, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "out.parquet"
    result = runner.invoke(cli, ["shards", "export", str(tiny_run), "--stage", "2", "--format", "parquet",
                                 str(out)])
    assert result.exit_code == 0, result.output
    assert "rows/s" in result.output and out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    result = runner.invoke(cli, ["shards", "export", str(tiny_run), "--stage", "sft", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "no complete rollout shards of stage sft" in result.output
    assert not (tmp_path / "x.parquet").exists()
    result = runner.invoke(cli, ["shards", "export", str(tmp_path), "--stage", "2", str(tmp_path / "y.parquet")])
    assert result.exit_code == 2 and "not a run directory" in result.output


def test_corrupt_shard_fails_and_leaves_no_file(tiny_run, tmp_path) -> None:
    import shutil

    from mathfirst_hpc.errors import ShardError
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = stage_shards(RunPaths(run), "math_rl")[-1][0]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ShardError, match="checksum"):
        export_rollouts(run, "math_rl", tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_rl_lines_say_where_each_iteration_went(tiny_run: Path) -> None:
    """Every RL line of metrics.jsonl carries time/<part> seconds (what bench_orchestration and a TensorBoard user
    read): the collection's parts from driver.json, the update's from the learner."""
    from mathfirst_hpc.atomic import read_jsonl

    rows = [r for r in read_jsonl(tiny_run / "metrics.jsonl") if r["stage"] == "math_rl"]
    assert len(rows) == 2
    for row in rows:
        assert row["time/generate_s"] > 0 and row["time/train_s"] > 0 and row["time/collect_s"] > 0
        assert row["time/collect_s"] >= row["time/generate_s"]
