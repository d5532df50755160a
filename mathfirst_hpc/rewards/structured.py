"""Structured-value comparison shared by simulation, logic and tabular: parse JSON / Python literals, normalise,
compare.

Parsing order for a piece of text: JSON, then a Python literal (``ast.literal_eval``: tuples, single-quoted
strings, True/None), else the stripped text itself. Normalisation: tuples -> lists, dict keys -> str,
"true"/"false" -> bools, numbers compared with a tolerance (ints exactly), strings stripped (and optionally
case-folded). CodeI/O references such as ``'"output": {...}'`` or ``{"output": ...}`` are unwrapped.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from typing import Any

from .extract import answer_tag, last_boxed, last_fenced_block, strip_think

_MISSING = object()


def parse_value(text: Any) -> Any:
    """JSON, else a Python literal, else the stripped string (non-strings pass through)."""
    if not isinstance(text, str):
        return text
    s = text.strip()
    try:
        return json.loads(s)
    except (ValueError, TypeError):
        pass
    try:
        with warnings.catch_warnings():  # model text like "1.2.3" warns "invalid decimal literal" on stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return s


def unwrap_io(value: Any) -> Any:
    """CodeI/O wraps the answer as {"output": x} or {"input": x}: compare x."""
    if isinstance(value, str):
        s = value.strip()
        if re.match(r'^"(output|input)"\s*:', s):
            value = parse_value("{" + s + "}")
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("output", "input"):
        return next(iter(value.values()))
    return value


def normalize_value(value: Any, casefold: bool = False) -> Any:
    if isinstance(value, (list, tuple)):
        return [normalize_value(v, casefold) for v in value]
    if isinstance(value, dict):
        return {str(k).strip(): normalize_value(v, casefold) for k, v in value.items()}
    if isinstance(value, str):
        s = value.strip()
        if s.lower() in ("true", "false"):
            return s.lower() == "true"
        if s[:1] in "[{" and s[-1:] in "]}":
            parsed = parse_value(s)
            if not isinstance(parsed, str):
                return normalize_value(parsed, casefold)
        return s.casefold() if casefold else s
    if hasattr(value, "tolist"):  # numpy arrays from parquet rows
        return normalize_value(value.tolist(), casefold)
    return value


def values_equal(a: Any, b: Any, rel_tol: float = 1e-6) -> bool:
    """Deep equality after normalisation; floats within rel_tol, ints and bools exact, types must agree."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=0.0) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y, rel_tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k], rel_tol) for k in a)
    return type(a) is type(b) and a == b


def response_value_text(response: str) -> str | None:
    """The answer text of a structured response: <answer> tag, last fenced block, \\boxed{}, 'assert ... == X',
    or a last JSON object; None when none is present."""
    text = strip_think(response)
    tagged = answer_tag(text)
    if tagged is not None:
        return last_boxed(tagged) or tagged
    block = last_fenced_block(text)
    boxed = last_boxed(text)
    if block is not None and (boxed is None or text.rfind("```") > text.rfind("\\boxed")):
        body = block[1].strip()
        assertion = re.search(r"assert\s+.+?==\s*(.+)$", body, re.DOTALL)
        return assertion.group(1).strip() if assertion else body
    if boxed is not None:
        return boxed
    assertion = re.findall(r"assert\s+[^\n]+?==\s*([^\n]+)", text)
    if assertion:
        return assertion[-1].strip()
    return None
