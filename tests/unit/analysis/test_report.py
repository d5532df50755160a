"""The report builds from a fixture run dir (manifest, metrics.jsonl, eval comparison, skills) and its HTML embeds
every plot it wrote; missing parts are reported, not crashed on."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mathfirst_hpc.analysis import plots
from mathfirst_hpc.analysis.report import build_report
from mathfirst_hpc.atomic import read_jsonl
from mathfirst_hpc.cli import cli
from mathfirst_hpc.errors import RunDirError

FIXTURE_RUN = Path(__file__).parent / "fixture_run"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, target)
    return target


def test_report_embeds_every_plot_it_wrote(run_dir):
    written = build_report(run_dir)
    names = sorted(p.name for p in written["plots"])
    assert names == sorted(["reward_per_domain.png", "response_length.png", "kept_group_fraction.png",
                            "overlong_fraction.png", "sft_loss.png", "benchmarks_per_stage.png",
                            "skills_per_stage_pattern.png"])
    html = written["html"].read_text()
    markdown = written["markdown"].read_text()
    on_disk = sorted((run_dir / "report").glob("*.png"))
    assert [p.name for p in on_disk] == sorted(names)
    for png in on_disk:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert base64.b64encode(data).decode() in html, png.name      # embedded, self-contained
        assert f"]({png.name})" in markdown
    assert "<img" in html and "src='http" not in html and "src=\"http" not in html
    for text in ("math_rl", "MATH-500", "47.0", "Backtracking", "running"):
        assert text in html and text in markdown, text


def test_report_of_an_empty_run_dir_says_what_is_missing(tmp_path):
    written = build_report(tmp_path)
    html = written["html"].read_text()
    assert written["plots"] == []
    assert "no evaluation yet" in html and "no skills analysis yet" in html and "no manifest.json" in html
    with pytest.raises(RunDirError):
        build_report(tmp_path / "absent")


def test_rl_series_joins_stages_and_drops_resume_duplicates(run_dir):
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    metrics.append({**[m for m in metrics if m["stage"] == "math_rl"][-1], "time_unix": 2e9})   # logged twice
    records, spans = plots.rl_series(metrics)
    assert spans == [("math_rl", 0, 12), ("joint_rl", 12, 27)]
    assert [r["x"] for r in records] == list(range(1, 28))


def test_cli_report(run_dir):
    result = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output and "7 plot(s)" in result.output
