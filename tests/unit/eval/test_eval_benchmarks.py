"""Every benchmark format loads from its fixture with the right domain/data_source and scores through the router."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest

from mathfirst_hpc.config import RewardConfig, SandboxClientConfig
from mathfirst_hpc.errors import ConfigError, DataError
from mathfirst_hpc.eval import benchmarks as B
from mathfirst_hpc.rewards import RewardRouter

EXPECTED = {  # name: (domain, data_source, rows in the fixture)
    "math500": ("math", "math__math", 2), "aime": ("math", "math__aime", 2),
    "humaneval": ("code", "codegen__humaneval", 2), "mbpp": ("code", "codegen__mbpp", 2),
    "livecodebench": ("code", "codegen__livecodebench", 2), "gpqa_diamond": ("stem", "stem__gpqa_diamond", 2),
    "supergpqa": ("stem", "stem__supergpqa", 2), "zebra_puzzle": ("logic", "logic__zebra_puzzle_dataset", 2),
    "arcagi": ("logic", "logic__arcagi1", 2), "codeio": ("simulation", "simulation__codeio", 2),
    "cruxeval_o": ("simulation", "simulation__cruxeval-o", 2), "cruxeval_i": ("simulation", "simulation__cruxeval-i", 2),
    "hitab": ("tabular", "table__hitab", 2), "multihiertt": ("tabular", "table__multihier", 2),
    "finqa": ("tabular", "table__finqa", 2),
}

ZEBRA = ['{"header": ["House", "Name", "Pet"], "rows": [["1", "Bob", "dog"], ["2", "Alice", "cat"]]}',
         '{"header": ["House", "Name", "Drink"], "rows": [["1", "Dave", "tea"], ["2", "Carol", "milk"]]}']
RIGHT = {  # one correct response per fixture row (GPQA letters come from the loader's shuffle)
    "math500": ["So \\boxed{\\frac{5}{6}}.", "x = \\boxed{4}"], "aime": ["\\boxed{24}", "\\boxed{9}"],
    "supergpqa": ["\\boxed{B}", "\\boxed{B}"],
    "zebra_puzzle": [f"\\boxed{{{z}}}" for z in ZEBRA],
    "arcagi": ["\\boxed{[[1, 1], [1, 0]]}", "\\boxed{[[5, 5]]}"],
    "codeio": ['```json\n{"output": {"evens": 2, "total": 10}}\n```', '```json\n{"output": "cba"}\n```'],
    "cruxeval_o": ["\\boxed{'cbax'}", "\\boxed{[2, 4, 6]}"], "cruxeval_i": ["\\boxed{'abc'}", "\\boxed{[1, 2, 3]}"],
    "hitab": ["\\boxed{1204}", "\\boxed{2019}"], "multihiertt": ["\\boxed{50}", "\\boxed{0.75}"],
    "finqa": ["\\boxed{0.25}", "\\boxed{0.05}"],
    "mbpp": ["```python\ndef min_of_two(a, b):\n    return a if a < b else b\n```",
             "```python\ndef is_palindrome(s):\n    return s == s[::-1]\n```"],
    "livecodebench": ["```python\na, b = map(int, input().split())\nprint(a + b)\n```",
                      "```python\nclass Solution:\n    def maxOf(self, nums: List[int]) -> int:\n        return max(nums)\n```"],
    "humaneval": ["```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```",
                  "```python\nfrom typing import List\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"],
}
WRONG = {
    "math500": ["\\boxed{\\frac{2}{5}}", "\\boxed{5}"], "aime": ["\\boxed{124}", "\\boxed{8}"],
    "supergpqa": ["\\boxed{A}", "\\boxed{C}"],
    "zebra_puzzle": [f"\\boxed{{{ZEBRA[0].replace('dog', 'cow')}}}", f"\\boxed{{{ZEBRA[1].replace('tea', 'gin')}}}"],
    "arcagi": ["\\boxed{[[0, 1], [1, 0]]}", "\\boxed{[[5]]}"],
    "codeio": ['```json\n{"output": {"evens": 1, "total": 10}}\n```', '```json\n{"output": "abc"}\n```'],
    "cruxeval_o": ["\\boxed{'abcx'}", "\\boxed{[2, 4]}"], "cruxeval_i": ["\\boxed{'cba'}", "\\boxed{[2, 4, 6]}"],
    "hitab": ["\\boxed{1100}", "\\boxed{employees}"], "multihiertt": ["\\boxed{150}", "\\boxed{1.33}"],
    "finqa": ["\\boxed{0.5}", "\\boxed{40}"],
    "mbpp": ["```python\ndef min_of_two(a, b):\n    return max(a, b)\n```",
             "```python\ndef is_palindrome(s):\n    return True\n```"],
    "livecodebench": ["```python\na, b = map(int, input().split())\nprint(a - b)\n```",
                      "```python\nclass Solution:\n    def maxOf(self, nums: List[int]) -> int:\n        return min(nums)\n```"],
    "humaneval": ["```python\ndef add(a, b):\n    return a - b\n```", "```python\ndef total(xs):\n    return 0\n```"],
}
CODE = {"mbpp", "livecodebench", "humaneval"}


def _gpqa_responses(problems, right: bool) -> list[str]:
    letters = [p.ground_truth for p in problems]
    return [f"\\boxed{{{l if right else chr(65 + (ord(l) - 64) % 4)}}}" for l in letters]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_loads_with_domain_and_source(name, bench_dir):
    domain, source, rows = EXPECTED[name]
    kind, _path = B.locate(name, bench_dir)
    assert kind == "native"
    problems = B.load_benchmark(name, bench_dir)
    assert len(problems) == rows
    for p in problems:
        assert (p.domain, p.data_source) == (domain, source)
        assert p.prompt[0]["role"] == "user" and p.prompt[0]["content"].strip()
        assert p.uid.startswith(f"{name}#") and p.extra_info["benchmark"] == name
    assert len({p.uid for p in problems}) == rows


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - CODE))
def test_fixture_scores_right_and_wrong(name, bench_dir):
    problems = B.load_benchmark(name, bench_dir)
    router = RewardRouter(RewardConfig())
    right = _gpqa_responses(problems, True) if name == "gpqa_diamond" else RIGHT[name]
    wrong = _gpqa_responses(problems, False) if name == "gpqa_diamond" else WRONG[name]
    assert [r.verdict for r in router.score_batch(problems, right)] == ["correct"] * len(problems)
    assert [r.verdict for r in router.score_batch(problems, wrong)] == ["incorrect"] * len(problems)


@pytest.mark.sandbox
@pytest.mark.parametrize("name", sorted(CODE))
def test_code_fixture_scores_through_sandbox(name, bench_dir, sandbox_url):
    problems = B.load_benchmark(name, bench_dir)
    router = RewardRouter(RewardConfig(sandbox=SandboxClientConfig(url=sandbox_url)))
    assert [r.verdict for r in router.score_batch(problems, RIGHT[name])] == ["correct", "correct"]
    assert [r.verdict for r in router.score_batch(problems, WRONG[name])] == ["incorrect", "incorrect"]


def test_reasoning360_parquet_layout_is_used_as_is(bench_dir):
    root = bench_dir / "reasoning360"
    assert B.locate("math500", root)[0] == "guru"
    math = B.load_benchmark("math500", root)
    assert [p.ground_truth for p in math] == ["7", "42"] and math[0].data_source == "math__math"
    gpqa = B.load_benchmark("gpqa", root)
    assert gpqa[0].domain == "stem" and gpqa[0].prompt[0]["content"].startswith("Which is a noble gas?")
    router = RewardRouter(RewardConfig())
    assert [r.verdict for r in router.score_batch(gpqa, ["\\boxed{A}", "\\boxed{A}"])] == ["correct", "incorrect"]


def test_humaneval_ships_in_the_package():
    problems = B.load_benchmark("humaneval", None)
    assert len(problems) == 164
    assert problems[0].extra_info["task_id"] == "HumanEval/0"
    assert "check(has_close_elements)" in json.loads(problems[0].ground_truth)["functional"]


def test_missing_file_names_expected_paths_and_format(tmp_path):
    with pytest.raises(DataError) as info:
        B.load_benchmark("gpqa_diamond", tmp_path)
    message = info.value.one_line()
    assert str(tmp_path / "gpqa_diamond.csv") in message
    assert "stem__gpqa_diamond*.parquet" in message and "Correct Answer" in message
    with pytest.raises(DataError, match="no --data-dir"):
        B.load_benchmark("math500", None)


def test_bad_rows_are_data_errors(tmp_path):
    (tmp_path / "math500.jsonl").write_text(json.dumps({"question_text": "1+1?"}) + "\n")
    with pytest.raises(DataError, match="row 0 has no 'problem' / 'question'"):
        B.load_benchmark("math500", tmp_path)
    (tmp_path / "test").mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([{"prompt": "x"}]), tmp_path / "test" / "table__finqa_1.parquet")
    with pytest.raises(DataError, match="not a Guru row"):
        B.load_benchmark("finqa", tmp_path)


def test_names_aliases_and_groups():
    assert B.resolve_benchmarks("math,gpqa,cruxeval") == ["math500", "gpqa_diamond", "cruxeval_i", "cruxeval_o"]
    assert B.resolve_benchmarks("all") == list(B.BENCHMARKS)
    with pytest.raises(ConfigError, match="unknown benchmark 'mmlu'"):
        B.resolve_benchmarks("math500,mmlu")


def test_livecodebench_private_tests_decode_and_refuse_pickled_objects(tmp_path, bench_dir):
    problems = B.load_benchmark("livecodebench", bench_dir)
    truth = json.loads(problems[0].ground_truth)
    assert truth["inputs"] == ["1 2\n", "10 20\n"]            # the second comes from the compressed private tests
    evil = base64.b64encode(zlib.compress(pickle.dumps(Path("/etc/passwd")))).decode()
    row = {"question_content": "x", "public_test_cases": "[]", "private_test_cases": evil}
    (tmp_path / "livecodebench.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="refusing to load"):
        B.load_benchmark("livecodebench", tmp_path)


def test_gpqa_shuffle_is_reproducible(bench_dir):
    first = [p.prompt[0]["content"] for p in B.load_benchmark("gpqa_diamond", bench_dir)]
    assert first == [p.prompt[0]["content"] for p in B.load_benchmark("gpqa_diamond", bench_dir)]
