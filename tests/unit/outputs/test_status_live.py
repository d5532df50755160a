"""Live status: progress out of the configured total, per-domain reward/accuracy, kept and error fractions,
ETA from recent iteration times, jobs by state; ``status --watch`` redraws, ``status --json`` carries the same."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from mathfirst_hpc.atomic import append_jsonl, write_text
from mathfirst_hpc.cli import cli
from mathfirst_hpc.config import dump_yaml, load_stage_config
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.status import collect_status, format_live, watch

JOINT = ["steps=10", "rollout.prompts_per_batch=4", "rollout.n_per_prompt=5"]  # 20 responses per gen batch


def make_live_run(root) -> RunPaths:
    """sft final, joint_rl running at iteration 4 of 10, one iteration every 30 s."""
    paths = RunPaths(root).make()
    write_text(paths.stage_config("sft"), dump_yaml(load_stage_config("sft", "tiny", ["steps=6"],
                                                                      check_files=False)))
    write_text(paths.stage_config("joint_rl"), dump_yaml(load_stage_config("joint_rl", "tiny", JOINT,
                                                                           check_files=False)))
    manifest = Manifest(paths)
    manifest.set_stage("sft", status="final", step=6)
    manifest.set_stage("joint_rl", status="running", iteration=2, step=4)
    for step in range(1, 7):
        append_jsonl(paths.metrics, {"stage": "sft", "step": step, "loss": 1.0 / step, "time_unix": 100.0 + step})
    for it in range(1, 5):
        append_jsonl(paths.metrics, {
            "stage": "joint_rl", "iteration": it, "step": 2 * it, "time_unix": 1000.0 + 30 * it,
            "reward_mean": 0.1 * it, "accuracy": 0.05 * it, "reward_mean/math": 0.5, "accuracy/math": 0.4,
            "reward_mean/code": 0.2, "accuracy/code": 0.1, "kept_group_fraction": 0.75, "gen_batches": 2,
            "verifier_errors": 4, "unparseable": 10})
    return paths


def test_progress_fractions_and_eta(tmp_path) -> None:
    info = collect_status(make_live_run(tmp_path).root)
    sft, joint = info["stages"]["sft"]["progress"], info["stages"]["joint_rl"]["progress"]
    assert (sft["done"], sft["total"], sft["unit"]) == (6, 6, "step")
    assert (joint["done"], joint["total"], joint["unit"]) == (4, 10, "iteration")
    assert joint["per_domain"] == {"code": {"reward": 0.2, "accuracy": 0.1}, "math": {"reward": 0.5, "accuracy": 0.4}}
    assert joint["kept_group_fraction"] == 0.75
    assert joint["error_fraction"] == pytest.approx(4 / 40) and joint["unparseable_fraction"] == pytest.approx(10 / 40)
    assert joint["seconds_per_iteration"] == pytest.approx(30.0)
    assert joint["eta_s"] == pytest.approx(6 * 30.0)
    assert info["stages"]["math_rl"]["progress"]["total"] is None  # not configured yet
    assert info["jobs_by_state"] == {}


def test_jobs_by_state(tmp_path, monkeypatch) -> None:
    paths = make_live_run(tmp_path)
    from mathfirst_hpc import status
    Manifest(paths).update(lambda m: m["jobs"].update({"11": {"kind": "driver"}, "12": {"kind": "learner"},
                                                       "13": {"kind": "rollout"}}))
    monkeypatch.setattr(status, "_slurm_states", lambda ids: {"11": "RUNNING", "12": "PENDING", "13": "RUNNING"})
    info = collect_status(paths.root)
    assert info["jobs_by_state"] == {"PENDING": 1, "RUNNING": 2}
    assert "Slurm jobs: PENDING 1, RUNNING 2" in format_live(info)


def test_watch_redraws_and_reads_new_lines(tmp_path) -> None:
    paths = make_live_run(tmp_path)
    out = io.StringIO()
    assert watch(paths.root, interval_s=0.01, count=2, out=out) == 2
    screens = out.getvalue()
    assert screens.count("joint_rl") >= 4  # two screens, each with the table row and the domain line
    assert "4/10 iteration" in screens and "3m00s" in screens and "math 0.50/0.40" in screens
    append_jsonl(paths.metrics, {"stage": "joint_rl", "iteration": 5, "step": 10, "time_unix": 1150.0})
    out = io.StringIO()
    watch(paths.root, interval_s=0.01, count=1, out=out)
    assert "5/10 iteration" in out.getvalue()


def test_watch_stops_cleanly_on_ctrl_c(tmp_path, monkeypatch) -> None:
    paths = make_live_run(tmp_path)

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr("mathfirst_hpc.status.time.sleep", interrupt)
    assert watch(paths.root, interval_s=1.0, out=io.StringIO()) == 1


def test_cli_watch_json_and_verify(tmp_path) -> None:
    paths = make_live_run(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["status", str(paths.root), "--watch", "--interval", "0.1", "--count", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("4/10 iteration") == 2
    result = runner.invoke(cli, ["status", str(paths.root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["stages"]["joint_rl"]["progress"]["eta_s"] == pytest.approx(180.0)
    assert "jobs_by_state" in data
    result = runner.invoke(cli, ["status", str(paths.root), "--json", "--verify"])
    assert result.exit_code == 0 and "verify" in json.loads(result.output)
    result = runner.invoke(cli, ["status", str(tmp_path / "nope"), "--watch", "--count", "1"])
    assert result.exit_code == 2 and "not a run directory" in result.output
