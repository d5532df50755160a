"""Model cards: every HF export of a real run carries README.md with the base model, the curriculum (config
hashes, resolved YAML), the data mix and, once eval has run, the held-out and benchmark tables; the folder loads
with transformers; rewriting the card never makes the checkpoint look damaged."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from mathfirst_hpc.checkpoint import checkpoint_dirs, final_checkpoint
from mathfirst_hpc.modelcard import base_model, build_card, refresh_cards
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.status import verify_run

pytestmark = pytest.mark.slow  # the tiny_run fixture trains for about 30 s once


def card_of(run: Path, stage: str) -> str:
    return (final_checkpoint(run / "checkpoints" / stage) / "hf" / "README.md").read_text()


@pytest.fixture()
def run(tiny_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def test_every_export_has_a_card_that_loads(tiny_run) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    for stage in ("sft", "math_rl"):
        for _step, ckpt in checkpoint_dirs(tiny_run / "checkpoints" / stage):
            assert (ckpt / "hf" / "README.md").exists(), ckpt
    hf = final_checkpoint(tiny_run / "checkpoints" / "math_rl") / "hf"
    model = AutoModelForCausalLM.from_pretrained(hf)
    tokenizer = AutoTokenizer.from_pretrained(hf)
    assert model.config.vocab_size >= len(tokenizer) > 0
    card = card_of(tiny_run, "math_rl")
    assert card.startswith("---\n") and "license:" not in card.split("---")[1]  # random init: no license
    for section in ("## Base model", "## Curriculum", "## Data mix", "## Resolved configs", "## Use"):
        assert section in card, section
    assert "random-init `tiny-qwen3` preset" in card and "(final)" in card
    for stage in ("sft", "math_rl"):
        text = (tiny_run / "config" / f"{stage}.yaml").read_text()
        assert hashlib.sha256(text.encode()).hexdigest()[:16] in card
        assert text.strip().splitlines()[-1] in card  # the resolved YAML is inside
    assert "math 100% (chain_sum)" in card
    assert "## Held-out" not in card and "## Benchmarks" not in card  # no eval yet


def test_heldout_eval_refreshes_final_cards_and_checkpoints_stay_verified(run) -> None:
    from mathfirst_hpc.eval.heldout import evaluate_heldout
    table = evaluate_heldout(run, samples=1, size=4)
    card = card_of(run, "math_rl")
    assert "## Held-out accuracy (%)" in card
    assert f"| math | {100 * table['sft']['math']:.1f} | {100 * table['math_rl']['math']:.1f} |" in card
    assert "## Held-out accuracy (%)" in card_of(run, "sft")
    result = verify_run(run)
    assert result.problems == [], [p.describe(run) for p in result.problems]


def test_benchmark_table_and_known_license(run) -> None:
    paths = RunPaths(run)
    (paths.eval_dir).mkdir(exist_ok=True)
    (paths.eval_dir / "comparison.md").write_text("pass@1 (%) per checkpoint\n\n| benchmark | base | sft |\n"
                                                  "|---|---:|---:|\n| MATH-500 | 1.0 | 2.0 |\n")
    assert len(refresh_cards(run)) == 2
    assert "## Benchmarks" in card_of(run, "sft") and "| MATH-500 | 1.0 | 2.0 |" in card_of(run, "sft")
    from mathfirst_hpc.config import load_stage_config
    cfg = load_stage_config("math_rl", "smollm2-135m", check_files=False)
    base = base_model(paths, [("math_rl", cfg, "")], {"stages": {}})
    assert (base["hf_id"], base["license"]) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
    local = run / "my-base"
    local.mkdir()
    (local / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# a model\n")
    cfg.model.path = str(local)
    assert base_model(paths, [("math_rl", cfg, "")], {"stages": {}})["license"] == "mit"
    card = build_card(paths, "math_rl", 4, final=True)
    assert "## Benchmarks" in card


def test_benchmark_eval_of_the_run_refreshes_cards(run) -> None:
    """``eval --run-dir`` (harness.evaluate) rewrites the final cards with RUN_DIR/eval/comparison.md."""
    from mathfirst_hpc.eval import harness as H
    fixtures = Path(__file__).resolve().parents[2] / "fixtures" / "benchmarks"
    cfg = H.EvalConfig(benchmarks=["math500"], data_dir=str(fixtures), n=1, max_new_tokens=4, chunk_size=2,
                       limit=2)
    table = H.evaluate(cfg, RunPaths(run).eval_dir, run_dir=str(run))
    assert table["checkpoints"] == ["base", "sft", "math_rl"]
    card = card_of(run, "math_rl")
    assert "## Benchmarks" in card and "MATH-500" in card and "| benchmark | base | sft | math_rl |" in card
