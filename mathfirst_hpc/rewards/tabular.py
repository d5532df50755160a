"""Tabular verifier (HiTab, MultiHiertt, table QA): numbers within a relative tolerance of 1e-3, text normalised.

The final answer comes from ``<answer>``, ``\\boxed{}`` or "the answer is" (none -> ``unparseable``). Numbers
accept thousands separators, a leading currency sign, a trailing percent sign (``45%`` equals ``45`` and
``0.45``) and units in words. Text is case-folded with articles, punctuation and extra spaces removed.
A reference list (several answers) needs the same answers in any order.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .base import RewardResult
from .extract import final_answer
from .structured import parse_value

REL_TOL = 1e-3
_NUMBER = re.compile(r"^[-+]?\$?\s*(\d{1,3}(?:,\d{3})+|\d+)?(\.\d+)?$")


def parse_number(text: str) -> tuple[float, bool] | None:
    """(value, had_percent) for '1,234.5', '$12', '45%', '3.5 million'? (no: words other than units fail)."""
    s = str(text).strip().replace("\\%", "%").replace("\\$", "$")
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s).strip()
    percent = s.endswith("%")
    s = s.rstrip("%").strip()
    s = re.sub(r"\s*(dollars?|usd|units?|people|years?|points?|percent)$", "", s, flags=re.IGNORECASE).strip()
    if s.lower().endswith("percent"):
        percent = True
    if not s or not _NUMBER.match(s) or not re.search(r"\d", s):
        return None
    return float(s.replace("$", "").replace(",", "").replace(" ", "")), percent


def normalize_text(text: str) -> str:
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", str(text)).casefold()
    s = re.sub(r"[^\w\s.-]", " ", s)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return re.sub(r"\s+", " ", s).strip(" .")


def answers_equal(got: str, want: str) -> bool:
    g, w = parse_number(got), parse_number(want)
    if g is not None and w is not None:
        candidates = {g[0]}
        if g[1] != w[1]:  # one side in percent: 45% == 0.45
            candidates |= {g[0] / 100, g[0] * 100}
        return any(math.isclose(c, w[0], rel_tol=REL_TOL, abs_tol=0.0) or c == w[0] for c in candidates)
    if (g is None) != (w is None):
        return False
    return normalize_text(got) == normalize_text(want)


def _as_list(value: Any) -> list[str]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    parsed = parse_value(value) if isinstance(value, str) and value.strip().startswith("[") else value
    if isinstance(parsed, list):
        return [str(v) for v in parsed]
    return [str(value)]


class TabularVerifier:
    def verify(self, response: str, ground_truth: object) -> RewardResult:
        answer = final_answer(response)
        if answer is None:
            return RewardResult(0.0, "unparseable", "no <answer>, \\boxed{} or answer phrase")
        wants = _as_list(ground_truth)
        gots = [answer] if len(wants) == 1 else [p for p in re.split(r"[,;|]\s*|\s+and\s+", answer.strip("[]")) if p]
        remaining = list(gots)
        for want in wants:
            match = next((k for k, got in enumerate(remaining) if answers_equal(got, want)), None)
            if match is None:
                return RewardResult(0.0, "incorrect", f"{answer[:30]} != {', '.join(wants)[:30]}")
            remaining.pop(match)
        if remaining:
            return RewardResult(0.0, "incorrect", f"extra answers {remaining[:3]}")
        return RewardResult(1.0, "correct", f"{answer[:30]} == {', '.join(wants)[:30]}")
