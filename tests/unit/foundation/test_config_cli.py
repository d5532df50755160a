"""Config round trip and every bad-input case, through the real CLI (subprocess: exit code and one line)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from mathfirst_hpc import config

CLI = [sys.executable, "-m", "mathfirst_hpc.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stage", ["stage1", "sft", "stage2", "math-rl", "stage3", "joint_rl"])
@pytest.mark.parametrize("preset", ["tiny", "qwen3-4b", "llama3.1-8b"])
def test_round_trip(stage: str, preset: str, tmp_path) -> None:
    cfg = config.load_stage_config(stage, preset=preset, check_files=False)
    path = tmp_path / "resolved.yaml"
    path.write_text(config.dump_yaml(cfg))
    again = config.load_resolved(path)
    assert config.to_dict(again) == config.to_dict(cfg)


def test_config_show_with_overrides() -> None:
    out = cli("config", "show", "stage2", "rollout.n_per_prompt=6", "dapo.loss_agg_mode=seq-mean-token-sum")
    assert out.returncode == 0, out.stderr
    data = yaml.safe_load(out.stdout)
    assert data["rollout"]["n_per_prompt"] == 6
    assert data["dapo"]["loss_agg_mode"] == "seq-mean-token-sum"
    assert data["dapo"]["clip_ratio_low"] == 0.2 and data["dapo"]["clip_ratio_high"] == 0.28
    assert data["dapo"]["kl_coef"] == 0.0


def test_paper_scale_joint_mix_has_six_domains() -> None:
    cfg = config.load_stage_config("stage3", preset="qwen3-4b", check_files=False)
    assert set(cfg.data.mix) == {"math", "stem", "code", "simulation", "logic", "tabular"}
    assert cfg.parallel.tp * cfg.parallel.pp * cfg.parallel.dp == cfg.parallel.nodes * cfg.parallel.gpus_per_node


BAD = [
    (["stage2", "dapo.clip_ratio_hgh=0.3"], "dapo.clip_ratio_hgh: unknown key (did you mean dapo.clip_ratio_high?)"),
    (["stage2", "rollout.n_per_prompt=four"], "rollout.n_per_prompt: expected an integer"),
    (["stage2", "rollout.top_p=1.5"], "rollout.top_p: must be in (0, 1]"),
    (["stage2", "dapo.loss_agg_mode=mean"], "dapo.loss_agg_mode: must be one of"),
    (["stage2", "parallel.dp=2"], "tp*pp*dp = 1*1*2 = 2 must equal nodes*gpus_per_node = 1*1 = 1"),
    (["stage2", "data.mix.math.files=[nope.parquet]", "data.mix.math.generators=[]", "--check-files"],
     "file not found"),
    (["stage2", "data.mix.math.files=[nope.parquet]"], "set files or generators, not both"),
    (["stage1", "model.preset=null", "model.path=/no/such/model", "--check-files"], "local model folder not found"),
    (["stage9"], "unknown stage 'stage9'"),
    (["stage2", "novalue"], "is not key=value"),
    (["stage2", "data.mix.poetry.weight=1"], "data.mix.poetry: unknown domain"),
    (["stage2", "dapo.clip_ratio_c=0.5"], "dapo.clip_ratio_c: dual-clip bound must be > 1"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    out = cli("config", "show", *args)
    assert out.returncode == 2, out.stdout
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0]


def test_missing_argument_is_a_usage_error() -> None:
    out = cli("cancel")
    assert out.returncode == 2 and "Missing argument 'RUN_DIR'" in out.stderr
    assert "Traceback" not in out.stderr


def test_help_lists_every_command() -> None:
    out = cli("--help")
    for command in ("run", "submit", "status", "resume", "cancel", "eval", "analyze", "sandbox", "reward",
                    "shards", "config", "report"):
        assert f"  {command} " in out.stdout


def test_yaml_base_chain(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text("stage: math_rl\nsteps: 7\nrollout: {n_per_prompt: 3}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nrollout: {temperature: 0.7}\n")
    cfg = config.load_stage_config("math_rl", config_path=tmp_path / "b.yaml")
    assert (cfg.steps, cfg.rollout.n_per_prompt, cfg.rollout.temperature) == (7, 3, 0.7)
