"""Scoring outside a training run: one (reference, response) pair, or a JSONL file of rows in bulk.

    check("math", "\\frac12", "so \\boxed{0.5}", RewardConfig())         # RewardResult
    score_jsonl("in.jsonl", "out.jsonl", RewardConfig())                  # {'rows': 10, 'correct': 7, ...}

Input rows carry ``data_source``, ``response`` and ``reward_model.ground_truth`` (``ability``, ``extra_info``
and ``prompt`` are optional, as in Guru rows). Output rows are the input rows plus ``score``, ``verdict`` and
``reason``, written atomically. Rows are scored in chunks so that code goes to the sandbox in batches.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from ..atomic import atomic_path
from ..config import RewardConfig
from ..data.base import Problem
from ..errors import DataError
from . import RewardRouter, domain_of
from .base import RewardResult

CHUNK_ROWS = 64


def problem_for(data_source: str, ground_truth: Any, ability: str = "", extra_info: dict | None = None,
                prompt: Any = None) -> Problem:
    """A Problem carrying just what the verifiers need (a domain name works as data_source)."""
    domain = domain_of(data_source, ability)
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt or "")}]
    return Problem(uid=f"{data_source}#0", domain=domain, data_source=data_source, prompt=messages,
                   ground_truth=ground_truth, ability=ability, extra_info=dict(extra_info or {}))


def check(domain: str, reference: str, response: str, cfg: RewardConfig) -> RewardResult:
    """Score one response against one reference with the verifier of ``domain`` (or of a data_source)."""
    return RewardRouter(cfg).score(problem_for(domain, reference), response)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: a row must be a JSON object")
            yield number, row


def _row_problem(path: Path, number: int, row: dict[str, Any]) -> tuple[Problem, str]:
    where = f"{path}:{number}"
    reward_model = row.get("reward_model")
    if "data_source" not in row or "response" not in row or not isinstance(reward_model, dict) \
            or "ground_truth" not in reward_model:
        raise DataError(f"{where}: a row needs data_source, response and reward_model.ground_truth")
    try:
        problem = problem_for(str(row["data_source"]), reward_model["ground_truth"], str(row.get("ability") or ""),
                              row.get("extra_info") or {}, row.get("prompt"))
    except DataError as exc:
        raise DataError(f"{where}: {exc}", hint=exc.hint) from None
    return problem, str(row["response"])


def score_jsonl(in_path: str | Path, out_path: str | Path, cfg: RewardConfig, progress: bool = True) -> dict[str, Any]:
    """Score every row of ``in_path`` into ``out_path``; returns counts by verdict and the mean score."""
    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.exists():
        raise DataError(f"input file not found: {in_path}")
    rows = list(_rows(in_path))
    pairs = [_row_problem(in_path, number, row) for number, row in rows]
    router = RewardRouter(cfg)
    verdicts: Counter[str] = Counter()
    total = 0.0
    with atomic_path(out_path) as tmp, open(tmp, "w", encoding="utf-8") as out, \
            tqdm(total=len(rows), desc="reward", unit="row", disable=not progress) as bar:
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = pairs[start:start + CHUNK_ROWS]
            results = router.score_batch([p for p, _ in chunk], [r for _, r in chunk])
            for (_, row), result in zip(rows[start:start + CHUNK_ROWS], results):
                out.write(json.dumps({**row, "score": result.score, "verdict": result.verdict,
                                      "reason": result.reason}, default=str) + "\n")
                verdicts[result.verdict] += 1
                total += result.score
            bar.update(len(chunk))
    return {"rows": len(rows), "mean_score": total / len(rows) if rows else 0.0, "verdicts": dict(verdicts),
            "errors_by_domain": dict(router.error_counts), "output": str(out_path)}
