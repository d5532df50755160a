"""Golden files: the batch file of every job of the paper presets, as ``submit --dry-run`` and the drivers write them.

One file per paper preset x example cluster profile, ``tests/golden/dry_run_<preset>_<profile>.txt``, holds:

- every batch file that ``mathfirst-hpc submit all --dry-run --preset P --profile C`` prints, cut from the command's
  real output (the CLI, run in-process through click's test runner): per stage its driver, then the jobs the
  driver submits (the learner; the rollout array of ``rollout.num_shards`` tasks; the reward services the mix
  needs: the sandbox, the judge server);
- and, for ``--mode allocation`` (``dry_run_<preset>_<profile>_allocation.txt``), the one job per stage.

The resolved config that the dry run prints after each batch file is not compared (tests/unit/foundation covers
configs). Machine-specific text is masked so the files hold on a fresh clone: the run dir (``RUN_DIR``), the
interpreter (``PYTHON``) and the checkout (``REPO``); the files contain no user names or times.

A failure means a batch file changed. When the change is intended, regenerate and read the diff::

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/launch/test_golden_dry_run.py
    git diff tests/golden
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mathfirst_hpc.atomic import write_text
from mathfirst_hpc.cli import cli

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "golden"
REPO = GOLDEN_DIR.parents[1]
CASES = {
    # preset, profile: overrides. The presets ask for 8-GPU nodes; on the smaller nodes of the Apptainer (4 GPUs)
    # and modules (2 GPUs) examples the same TP x DP layout spreads over more nodes, as a user would set it.
    ("qwen3-4b", "example-pyxis"): [],
    ("llama3.1-8b", "example-pyxis"): [],
    ("qwen3-4b", "example-apptainer"): ["parallel.nodes=2", "parallel.gpus_per_node=4"],
    ("llama3.1-8b", "example-apptainer"): ["parallel.nodes=4", "parallel.gpus_per_node=4"],
    ("qwen3-4b", "example-modules"): ["parallel.nodes=4", "parallel.gpus_per_node=2"],
    ("llama3.1-8b", "example-modules"): ["parallel.nodes=8", "parallel.gpus_per_node=2"],
}
STAGES = ("sft", "math_rl", "joint_rl")
ALLOCATION_CASES = [("qwen3-4b", "example-pyxis"), ("llama3.1-8b", "example-pyxis")]
SECTION = re.compile(r"^# (?:(?P<what>.+) batch file|resolved config)$")


def mask(text: str, run_dir: Path) -> str:
    """Replace what differs between machines and checkouts by stable names."""
    for real, name in ((str(run_dir.resolve()), "RUN_DIR"), (str(run_dir), "RUN_DIR"),
                       (shlex.quote(sys.executable), "PYTHON"), (sys.executable, "PYTHON"), (str(REPO), "REPO")):
        text = text.replace(real, name)
    return text


def printed_batch_files(output: str) -> list[tuple[str, str]]:
    """(title, text) of each ``# <what> batch file`` section of the dry-run output; other sections dropped."""
    sections: list[tuple[str, list[str]]] = []
    keep = False
    for line in output.splitlines():
        match = SECTION.match(line)
        if match:
            keep = match["what"] is not None
            if keep:
                sections.append((f"{match['what']} batch file", []))
            continue
        if keep:
            sections[-1][1].append(line)
    return [(title, "\n".join(lines).strip("\n")) for title, lines in sections]


@pytest.fixture(autouse=True)
def _no_live_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden files describe the example clusters, not the one this machine may be running (make test starts
    a local cluster whose only partition is 'debug'): the live sinfo partition check is not what they pin."""
    from mathfirst_hpc.launch import profiles

    monkeypatch.setattr(profiles, "cluster_partitions", lambda timeout_s=15.0: None)


def render(preset: str, profile: str, run_dir: Path, mode: str = "phases") -> str:
    overrides = CASES[preset, profile]
    args = ["submit", "all", "--run-dir", str(run_dir), "--dry-run", "--preset", preset, "--profile", profile,
            *(["--mode", mode] if mode != "phases" else []), *overrides]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not run_dir.exists(), "a dry run must not write the run dir"
    printed = printed_batch_files(result.output)
    assert len(printed) >= len(STAGES), f"expected a batch file per stage, got {len(printed)}:\n{result.output}"
    parts = [f"#### mathfirst-hpc {' '.join(args).replace(str(run_dir), 'RUN_DIR')}"]
    sections = [(f"printed: {title} {i + 1} of {len(printed)}", text) for i, (title, text) in enumerate(printed)]
    for title, text in sections:
        assert text.startswith("#!/bin/bash") and "#SBATCH --requeue" in text, f"{title}:\n{text}"
        parts.append(f"==== {title}\n{text}")
    return mask("\n\n".join(parts) + "\n", run_dir)


@pytest.mark.parametrize("preset, profile", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_dry_run_batch_files_match_golden(preset: str, profile: str, tmp_path: Path) -> None:
    text = render(preset, profile, tmp_path / "run")
    golden = GOLDEN_DIR / f"dry_run_{preset}_{profile}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        write_text(golden, text)
    assert golden.exists(), f"{golden} is missing; create it with UPDATE_GOLDEN=1"
    assert text == golden.read_text(), (f"batch files of {preset} on {profile} changed; if intended, rerun with "
                                        f"UPDATE_GOLDEN=1 and review git diff {golden.relative_to(REPO)}")


@pytest.mark.parametrize("preset, profile", ALLOCATION_CASES, ids=[f"{a}-{b}" for a, b in ALLOCATION_CASES])
def test_allocation_mode_dry_run_matches_golden(preset: str, profile: str, tmp_path: Path) -> None:
    text = render(preset, profile, tmp_path / "run", mode="allocation")
    golden = GOLDEN_DIR / f"dry_run_{preset}_{profile}_allocation.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        write_text(golden, text)
    assert golden.exists(), f"{golden} is missing; create it with UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"allocation batch files of {preset} on {profile} changed"


def test_masking_leaves_no_machine_paths(tmp_path: Path) -> None:
    text = render("qwen3-4b", "example-pyxis", tmp_path / "run")
    for real in (str(tmp_path), sys.executable, str(REPO)):
        assert real not in text
    assert "RUN_DIR/" in text and "PYTHON -u -m submitit.core._submit" in text


def test_golden_files_pin_the_paper_scale_jobs() -> None:
    """The golden files themselves say what a reviewer checks first: sizes from the preset and the profile."""
    text = (GOLDEN_DIR / "dry_run_qwen3-4b_example-pyxis.txt").read_text()
    assert "#SBATCH --array=0-15%16" in text  # rollout.num_shards=16, slurm.rollout_array_parallelism=16
    assert "#SBATCH --gpus-per-node=8" in text and "#SBATCH --ntasks-per-node=8" in text  # TP2 x DP4 learner
    assert "--container-image=nvcr.io#nvidia/pytorch:24.05-py3" in text
    llama = (GOLDEN_DIR / "dry_run_llama3.1-8b_example-pyxis.txt").read_text()
    assert "#SBATCH --nodes=2" in llama  # TP4 x DP4 over two 8-GPU nodes
    apptainer = (GOLDEN_DIR / "dry_run_qwen3-4b_example-apptainer.txt").read_text()
    assert "apptainer exec --nv --bind /scratch --bind /home" in apptainer  # GPU jobs get --nv in the container
