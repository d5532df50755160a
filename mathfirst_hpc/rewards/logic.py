"""Logic verifier: ordering lists, zebra tables, graph answers, ARC-style grids, short puzzle answers.

The reference's shape picks the check:

- zebra table ``{"header": [...], "rows": [[...], ...]}``: every cell equal (case-folded); the response gives
  the same dict, or just the rows;
- grid (list of lists of ints, ARC-AGI / BARC): exact equality; the response may write a nested list or rows of
  digits, one row per line;
- list of names (ordering puzzles): same order, case-folded; the response may write a list or "A, B, C";
- anything else (graph answers, numbers, words): numbers exactly, text case-folded and whitespace-collapsed.

Response text comes from ``<answer>`` tags, a fenced block, ``\\boxed{}`` or "the answer is"; none ->
``unparseable``. All-or-nothing: partial credit would reward half-solved puzzles as much as guesses.
"""

from __future__ import annotations

import re
from typing import Any

from .base import RewardResult
from .extract import answer_phrase, strip_think
from .structured import normalize_value, parse_value, response_value_text, values_equal


def _is_grid(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(row, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in row) for row in value)


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and "rows" in value


def _parse_grid(text: str) -> Any:
    value = normalize_value(parse_value(text))
    if _is_grid(value):
        return value
    found = re.findall(r"\[\s*\[.*?\]\s*\]", text, re.DOTALL)
    if found:
        value = normalize_value(parse_value(found[-1]))
        if _is_grid(value):
            return value
    rows = [re.findall(r"-?\d+", line) for line in text.strip().splitlines() if line.strip()]
    if rows and all(rows):
        return [[int(c) for c in row] for row in rows]
    return None


def _parse_list(text: str) -> list[str] | None:
    value = normalize_value(parse_value(text), casefold=True)
    if isinstance(value, list):
        return [str(v).strip().casefold() for v in value]
    if isinstance(value, str):
        parts = [p.strip().strip("'\"").casefold() for p in re.split(r",|\n|->|>", value.strip("[]()"))]
        return [p for p in parts if p] or None
    return None


def _cell(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value)).strip().casefold()


def _plain(value: Any) -> str:
    text = re.sub(r"\s+", " ", str(value)).strip().strip(".").casefold()
    return re.sub(r"^\\text\{(.*)\}$", r"\1", text)


class LogicVerifier:
    def verify(self, response: str, ground_truth: object) -> RewardResult:
        text = response_value_text(response)
        if text is None:
            text = answer_phrase(strip_think(response))
        want = normalize_value(parse_value(ground_truth))
        if text is None and _is_grid(want) and re.search(r"\[\s*\[", response):
            text = strip_think(response)  # "the output grid is [[0, 1], [1, 0]]": the last nested list counts
        if text is None:
            return RewardResult(0.0, "unparseable", "no <answer>, fenced block, \\boxed{} or answer phrase")
        if _is_table(want):
            return self._table(text, want)
        if _is_grid(want):
            got = _parse_grid(text)
            if got is None:
                return RewardResult(0.0, "unparseable", "no grid in the answer")
            ok = got == want
            return RewardResult(float(ok), "correct" if ok else "incorrect",
                                "grid matches" if ok else f"grid differs ({len(got)} vs {len(want)} rows)")
        if isinstance(want, list):
            got_list = _parse_list(text)
            want_list = [_cell(v) for v in want]
            ok = got_list == want_list
            return RewardResult(float(ok), "correct" if ok else "incorrect",
                                "order matches" if ok else f"got {got_list}, want {want_list}"[:120])
        got = normalize_value(parse_value(text))
        ok = values_equal(want, got) or _plain(got) == _plain(want)
        return RewardResult(float(ok), "correct" if ok else "incorrect",
                            f"{_plain(got)[:30]} {'==' if ok else '!='} {_plain(want)[:30]}")

    def _table(self, text: str, want: dict) -> RewardResult:
        got = normalize_value(parse_value(text))
        if isinstance(got, dict):
            got = got.get("rows")
        if not isinstance(got, list):
            return RewardResult(0.0, "unparseable", "answer is not a table (dict with rows, or a list of rows)")
        want_rows = [[_cell(c) for c in row] for row in want["rows"]]
        got_rows = [[_cell(c) for c in row] if isinstance(row, list) else None for row in got]
        ok = got_rows == want_rows
        wrong = sum(1 for gr, wr in zip(got_rows, want_rows) for g, w in zip(gr or [], wr) if g != w)
        return RewardResult(float(ok), "correct" if ok else "incorrect",
                            "all cells match" if ok else f"{wrong} cells differ (or shape differs)")
