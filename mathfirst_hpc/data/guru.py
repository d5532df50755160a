"""Load Guru-style rows (the verl / Reasoning360 parquet schema) from local parquet or jsonl files.

Row schema::

    data_source   str                      e.g. 'math__deepscaler', 'codegen__leetcode2k', 'table__hitab'
    prompt        list of {role, content}  chat messages (a plain string is taken as one user message)
    ability       str                      optional; used for routing when data_source has no known prefix
    reward_model  {ground_truth, style}    ground_truth: str, list, or dict (code tests, zebra tables)
    extra_info    dict                     optional; 'index' gives the row its stable uid

Usage::

    problems = load_problems("data/math_train.parquet")

Files are read with ``datasets`` (``Dataset.from_parquet`` / ``from_json``, in memory: no cache folder is
written). Every problem in a row is a :class:`DataError` naming the file, the row and the column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import Problem

REQUIRED_COLUMNS = ("data_source", "prompt", "reward_model")
SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def read_rows(path: Path | str) -> list[dict[str, Any]]:
    """All rows of one parquet/jsonl file as dicts. Raises DataError for a missing file or column."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}", hint="use .parquet or .jsonl")
    import datasets  # heavy import: only when files are read

    datasets.disable_progress_bars()
    try:
        if kind == "parquet":
            table = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
        else:
            table = datasets.Dataset.from_json(str(path), keep_in_memory=True)
    except Exception as exc:  # noqa: BLE001 - pyarrow/json errors of many kinds: one clear message
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}",
                        hint=f"Guru rows need {', '.join(REQUIRED_COLUMNS)} (+ optional ability, extra_info)")
    return table.to_list()


def _prompt(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError(f"{where}: column prompt must be a list of {{role, content}} messages, got {str(value)[:60]!r}")


def row_to_problem(row: dict[str, Any], row_index: int, where: str) -> Problem:
    """One Guru row -> Problem; ``where`` names the file for error messages."""
    from ..rewards import domain_of  # rewards imports data.base; imported here to keep data.guru light

    here = f"{where} row {row_index}"
    source = row.get("data_source")
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"{here}: column data_source is empty or not a string")
    reward_model = row.get("reward_model")
    if isinstance(reward_model, str):
        try:
            reward_model = json.loads(reward_model)
        except json.JSONDecodeError:
            reward_model = None
    if not isinstance(reward_model, dict) or reward_model.get("ground_truth") is None:
        raise DataError(f"{here}: column reward_model must be a mapping with a ground_truth")
    ability = str(row.get("ability") or "")
    try:
        domain = domain_of(source, ability)
    except DataError as exc:
        raise DataError(f"{here}: {exc}", hint=exc.hint) from None
    extra = row.get("extra_info") or {}
    if not isinstance(extra, dict):
        raise DataError(f"{here}: column extra_info must be a mapping, got {type(extra).__name__}")
    index = extra.get("index", row_index)
    return Problem(uid=f"{source}#{index}", domain=domain, data_source=source,
                   prompt=_prompt(row.get("prompt"), here), ground_truth=reward_model["ground_truth"],
                   ability=ability, style=str(reward_model.get("style") or "rule"), extra_info=dict(extra),
                   solution=row.get("solution") if isinstance(row.get("solution"), str) else None)


def load_problems(path: Path | str) -> list[Problem]:
    """Every row of a Guru parquet/jsonl file as a Problem, in file order."""
    rows = read_rows(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    return [row_to_problem(row, i, str(path)) for i, row in enumerate(rows)]
