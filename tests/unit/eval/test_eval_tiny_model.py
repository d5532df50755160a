"""A tiny random-init model through the whole harness on the CPU (HF engine, real verifiers), the stage
comparison of a run dir (base rebuilt from the preset + the final sft checkpoint), and the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mathfirst_hpc import checkpoint as ckpt
from mathfirst_hpc.cli import cli
from mathfirst_hpc.eval import harness as H
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run dir with the tiny preset's sft config and tokenizer and a final sft checkpoint (random weights)."""
    from mathfirst_hpc.models import build_model
    from mathfirst_hpc.run import ensure_tokenizer, resolve_stage_config

    paths = RunPaths(tmp_path_factory.mktemp("run")).make()
    cfg = resolve_stage_config(paths, "sft", "tiny")
    tokenizer = ensure_tokenizer(paths, cfg)
    target = paths.checkpoint("sft", 3)
    ckpt.write_rank_state(target, {"note": "test"})
    model = build_model(cfg.model, tokenizer, seed=123)
    model.save_pretrained(str(ckpt.staging_dir(target) / "hf"))
    tokenizer.save_pretrained(str(ckpt.staging_dir(target) / "hf"))
    ckpt.finalize_checkpoint(target, {"stage": "sft", "step": 3, "final": True})
    ckpt.mark_final(paths.checkpoints("sft"), target)
    Manifest(paths).set_stage("sft", status="final", final_checkpoint=str(target.relative_to(paths.root)))
    return paths


def test_stage_targets_of_a_run_dir(tiny_run):
    targets = H.stage_targets(tiny_run.root)
    assert [t.label for t in targets] == ["base", "sft"]
    assert targets[0].preset_run_dir == str(tiny_run.root) and targets[0].hf_path is None
    assert targets[1].hf_path.endswith("checkpoints/sft/step_000003/hf")


@pytest.mark.slow
def test_tiny_model_runs_the_harness_end_to_end_on_cpu(tiny_run, bench_dir, tmp_path):
    cfg = H.EvalConfig(benchmarks=["math500", "gpqa_diamond"], data_dir=str(bench_dir), n=2,
                       max_new_tokens=12, chunk_size=2, temperature=1.0)
    out = tiny_run.eval_dir
    table = H.evaluate(cfg, out, run_dir=str(tiny_run.root))
    assert table["checkpoints"] == ["base", "sft"]
    assert (out / "base" / "model" / "config.json").exists()          # the rebuilt preset, saved once
    for label in ("base", "sft"):
        rows = [json.loads(line) for p in sorted((out / label).glob("*/chunk_*.jsonl"))
                for line in p.read_text().splitlines()]
        assert len(rows) == 2 * 2 * 2
        assert all(r["verdict"] in ("correct", "incorrect", "unparseable") for r in rows)
        assert all(0 < r["response_tokens"] <= 12 for r in rows)
    # random weights: different models give different responses
    base = (out / "base" / "math500" / "chunk_00000.jsonl").read_text()
    assert base != (out / "sft" / "math500" / "chunk_00000.jsonl").read_text()
    # same seed, same model: a second evaluation into a fresh folder reproduces the responses
    again = H.EvalConfig(**{**cfg.__dict__, "benchmarks": ["math500"]})
    H.evaluate_target(H.EvalPaths(tmp_path), H.EvalTarget("base", hf_path=str(out / "base" / "model")), again)
    assert (tmp_path / "base" / "math500" / "chunk_00000.jsonl").read_text() == base


@pytest.mark.slow
def test_cli_eval_prints_one_column_per_checkpoint(tiny_run, bench_dir, tmp_path):
    sft = tiny_run.checkpoint("sft", 3)
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", f"first={sft}", "--checkpoint", f"again={sft}",
                                      "-b", "math500", "--data-dir", str(bench_dir), "--n", "1",
                                      "--max-new-tokens", "6", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "| benchmark | first | again |" in result.output
    assert (tmp_path / "o" / "comparison.csv").read_text().startswith("row,kind,first,again")


def test_cli_missing_benchmark_file_is_one_line_exit_2(tiny_run, tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(tiny_run.checkpoint("sft", 3)), "-b", "finqa",
                                      "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "finqa.json" in result.output and "expected format" in result.output


@pytest.mark.slow
def test_job_array_through_the_local_profile_then_resume(tiny_run, bench_dir, tmp_path):
    """The --profile path: missing chunks run as a submitit job array (local executor: subprocesses)."""
    cfg = H.EvalConfig(benchmarks=["math500", "aime"], data_dir=str(bench_dir), n=1, max_new_tokens=6,
                       chunk_size=1, array_tasks=2)
    target = H.EvalTarget("sft", hf_path=str(tiny_run.checkpoint("sft", 3) / "hf"))
    paths = H.EvalPaths(tmp_path)
    summary = H.evaluate_target(paths, target, cfg, profile="local")
    assert summary["benchmarks"]["math500"]["problems"] == 2 and summary["benchmarks"]["aime"]["problems"] == 2
    logs = sorted((tmp_path / "logs" / "submitit" / "sft").glob("*_log.out"))
    assert len(logs) == 2                                   # array_tasks=2: two tasks, each loading the model once
    assert len(list(tmp_path.glob("sft/*/chunk_*.jsonl"))) == 4
    # a finished evaluation submits nothing more
    H.run_array(paths, target, cfg, H.make_chunks(cfg), "local")
    assert sorted((tmp_path / "logs" / "submitit" / "sft").glob("*_log.out")) == logs
