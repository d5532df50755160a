"""``mathfirst-hpc reward check|score`` and answer extraction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mathfirst_hpc.cli import cli
from mathfirst_hpc.rewards.extract import final_answer, last_boxed, last_fenced_block


def test_check_prints_one_json_object() -> None:
    out = CliRunner().invoke(cli, ["reward", "check", "--domain", "math", "--reference", "1-1/e",
                                   "--response", "so \\boxed{1+1/e}"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"score": 0.0, "verdict": "incorrect", "reason": json.loads(out.output)["reason"]}


def test_check_unknown_domain_is_one_line_exit_2() -> None:
    out = CliRunner().invoke(cli, ["reward", "check", "-d", "poems", "-r", "1", "-s", "1"])
    assert out.exit_code == 2
    assert "unknown data_source 'poems'" in out.output and "Traceback" not in out.output


def test_score_writes_rows_with_verdicts(tmp_path: Path) -> None:
    rows = [{"data_source": "math__x", "response": "\\boxed{2}", "reward_model": {"ground_truth": "2"}},
            {"data_source": "stem__gpqa", "response": "Answer: C", "reward_model": {"ground_truth": "B"}},
            {"data_source": "table__hitab", "response": "nothing", "reward_model": {"ground_truth": "3"}}]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = CliRunner().invoke(cli, ["reward", "score", str(src), str(dst)])
    assert out.exit_code == 0, out.output
    scored = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["verdict"] for r in scored] == ["correct", "incorrect", "unparseable"]
    assert scored[0]["data_source"] == "math__x" and scored[0]["score"] == 1.0
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 3 and summary["verdicts"]["correct"] == 1


@pytest.mark.parametrize("line,problem", [
    ('{"data_source": "math__x", "reward_model": {"ground_truth": "2"}}', "needs data_source, response"),
    ('{"data_source": "nope", "response": "1", "reward_model": {"ground_truth": "2"}}', "unknown data_source"),
    ("not json", "not JSON"),
])
def test_score_bad_rows_name_the_line(tmp_path: Path, line: str, problem: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"data_source": "math__x", "response": "1", "reward_model": {"ground_truth": "1"}}\n' + line + "\n")
    out = CliRunner().invoke(cli, ["reward", "score", str(src), str(tmp_path / "out.jsonl")])
    assert out.exit_code == 2 and "in.jsonl:2" in out.output and problem in out.output
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("text,answer", [
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"), ("a \\boxed{1} b \\boxed{{2}}", "{2}"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"), ("\\boxed 7.", "7"), ("no box", None), ("\\boxed{1", None),
])
def test_last_boxed_handles_nesting(text: str, answer: str | None) -> None:
    assert last_boxed(text) == answer


def test_final_answer_forms_and_think_blocks() -> None:
    assert final_answer("The final answer is $\\frac{1}{2}$.") == "\\frac{1}{2}"
    assert final_answer("<think>\\boxed{3}</think>So the answer is: **4**.") == "4"
    assert final_answer("<answer>\\boxed{5}</answer>") == "5"
    assert final_answer("I am not sure about the answer here") is None


def test_last_fenced_block() -> None:
    text = "```python\nprint(1)\n```\nthen\n```cpp\nint main(){}\n```"
    assert last_fenced_block(text) == ("cpp", "int main(){}")
    assert last_fenced_block("```python\nunclosed") is None
