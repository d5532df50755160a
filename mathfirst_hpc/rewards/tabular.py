"""Tabular verifier (HiTab, MultiHiertt, table QA): integers exactly, other numbers within a relative tolerance
of 1e-3, text normalised.

The final answer comes from ``<answer>``, ``\\boxed{}`` or "the answer is" (none -> ``unparseable``). Numbers
accept thousands separators, a leading currency sign, a trailing percent sign (``45%`` equals ``45`` and
``0.45``) and units in words. Text is case-folded with articles, punctuation and extra spaces removed.
A reference list (several answers) needs the same answers in any order.

Integers (years, counts) must match exactly: the tolerance is for values that carry rounding, and 1e-3 of 2019
would accept 2018. A reference needs an exact match when it is written as an integer (``2019``, ``1,250``), or
when it has an integral value written with decimals (``2019.0``) and the response is an integer too (so 2018
never equals ``2019.0``, while ``1.0009`` still equals ``1.0``). Percentages are ratios, not counts: they keep
the tolerance. Values are compared as exact fractions, so ``0.45`` equals ``45%`` without float noise.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any, NamedTuple

from .base import RewardResult
from .extract import final_answer
from .structured import parse_value

REL_TOL = 1e-3
_NUMBER = re.compile(r"^[-+]?\$?\s*(\d{1,3}(?:,\d{3})+|\d+)?(\.\d+)?$")


class Number(NamedTuple):
    value: Fraction
    percent: bool
    integer_text: bool
    """Written without a decimal point (``2019``, ``1,250``)."""


def parse_number(text: str) -> Number | None:
    """The number of '1,234.5', '$12', '45%', '12 dollars'; None for anything else ('3.5 million' included)."""
    s = str(text).strip().replace("\\%", "%").replace("\\$", "$")
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s).strip()
    percent = s.endswith("%")
    s = s.rstrip("%").strip()
    s = re.sub(r"\s*(dollars?|usd|units?|people|years?|points?|percent)$", "", s, flags=re.IGNORECASE).strip()
    if s.lower().endswith("percent"):
        percent = True
    if not s or not _NUMBER.match(s) or not re.search(r"\d", s):
        return None
    digits = s.replace("$", "").replace(",", "").replace(" ", "")
    return Number(Fraction(digits), percent, "." not in digits)


def normalize_text(text: str) -> str:
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", str(text)).casefold()
    s = re.sub(r"[^\w\s.-]", " ", s)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return re.sub(r"\s+", " ", s).strip(" .")


def _needs_exact(want: Number, candidate: Fraction) -> bool:
    """Integers (years, counts) match exactly; see the module docstring."""
    if want.percent or want.value.denominator != 1:
        return False
    return want.integer_text or candidate.denominator == 1


def answers_equal(got: str, want: str) -> bool:
    g, w = parse_number(got), parse_number(want)
    if g is not None and w is not None:
        candidates = {g.value}
        if g.percent != w.percent:  # one side in percent: 45% == 0.45
            candidates |= {g.value / 100, g.value * 100}
        return any(c == w.value or (not _needs_exact(w, c) and math.isclose(c, w.value, rel_tol=REL_TOL, abs_tol=0.0))
                   for c in candidates)
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
