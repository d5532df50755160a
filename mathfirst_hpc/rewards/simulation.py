"""Simulation verifier (CodeI/O, CRUXEval, program-output prediction): the predicted value, JSON-normalised,
against the reference value.

Reference: JSON (``{"output": ...}`` or a CodeI/O fragment ``'"output": ...'``), a Python literal (CRUXEval:
``'abc'``, ``[1, 2]``, ``(1, 'a')``) or plain text. Response: ``<answer>``, the last fenced block (a JSON object
or ``assert f(x) == value``), ``\\boxed{}``, an ``assert ... == value`` line, or "the answer is". Values are
compared structurally (tuples = lists, ints exactly, floats to 1e-6 relative, bool strings = bools).
"""

from __future__ import annotations

from .base import RewardResult
from .extract import answer_phrase, strip_think
from .structured import normalize_value, parse_value, response_value_text, unwrap_io, values_equal


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class SimulationVerifier:
    def verify(self, response: str, ground_truth: object) -> RewardResult:
        text = response_value_text(response)
        if text is None:
            text = answer_phrase(strip_think(response))
        if text is None:
            return RewardResult(0.0, "unparseable", "no answer block, \\boxed{} or assert line in response")
        want = normalize_value(unwrap_io(parse_value(ground_truth)))
        got = normalize_value(unwrap_io(parse_value(text)))
        if values_equal(want, got):
            return RewardResult(1.0, "correct", f"value {_short(got)} matches")
        return RewardResult(0.0, "incorrect", f"got {_short(got)}, want {_short(want)}")
