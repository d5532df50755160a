"""Multiple-choice verifier (STEM: GPQA / SuperGPQA / synthetic): the chosen letter A-J against the reference.

Accepted answer forms, in order: ``<answer>B</answer>``, ``\\boxed{B}`` (also ``\\boxed{\\text{(B)}}``,
``\\boxed{B) 7}``), "the answer is (B)" / "Answer: B" / "**Answer:** B", and a response that is only a letter
("B", "(B)", "B.", "B) 7"). Anything else is ``unparseable`` with score 0: the verifier never guesses a letter
from loose text (a random-guess fallback would reward noise).
"""

from __future__ import annotations

import re

from .base import RewardResult
from .extract import answer_phrase, answer_tag, last_boxed, strip_think

LETTERS = "ABCDEFGHIJ"
_LETTER = re.compile(r"^\s*(?:\\text\{\s*)?\(?\s*([A-J])\s*\)?\s*\}?\s*(?:[).:]\s*.*)?$", re.DOTALL)


def reference_letter(ground_truth: object) -> str | None:
    """The reference letter when the ground truth is one (``'B'``, ``'(B)'``, ``'b'``), else None (free-form)."""
    text = str(ground_truth).strip()
    match = re.fullmatch(r"\(?([A-Ja-j])\)?\.?", text)
    return match.group(1).upper() if match else None


def _letter_of(text: str | None) -> str | None:
    if text is None:
        return None
    match = _LETTER.match(text.strip())
    return match.group(1) if match else None


def extract_letter(response: str) -> str | None:
    text = strip_think(response)
    for candidate in (answer_tag(text), last_boxed(text), answer_phrase(text)):
        if candidate is not None:
            return _letter_of(candidate)
    stripped = text.strip()
    return _letter_of(stripped) if len(stripped) <= 40 else None


class ChoiceVerifier:
    def verify(self, response: str, ground_truth: object) -> RewardResult:
        want = reference_letter(ground_truth)
        if want is None:
            return RewardResult(0.0, "error", f"reference {str(ground_truth)[:20]!r} is not a letter A-J")
        got = extract_letter(response)
        if got is None:
            return RewardResult(0.0, "unparseable", "no choice letter A-J found")
        if got == want:
            return RewardResult(1.0, "correct", f"chose {got}")
        return RewardResult(0.0, "incorrect", f"chose {got}, answer {want}")
