"""Math verifier: extract the final answer, normalise it, and decide equivalence with the reference.

    verifier = MathVerifier(timeout_s=5.0)
    verifier.verify("\\\\boxed{\\\\frac{1}{2}}", "0.5")   # RewardResult(1.0, 'correct', ...)

Order of work: extraction (last ``\\boxed{}``, else "the answer is ..."; none -> ``unparseable``), then cheap
in-process checks (identical normalised text, exact fractions), then the structural / sympy comparison of
``math_equiv.compare_normalized`` in a :class:`~.deadline.DeadlinePool` worker with a wall-clock deadline (works
from threads and from worker processes; no ``signal.alarm``). A deadline or a crash gives verdict ``error``:
not a training signal, counted by the router. Where no child process can be started (a daemonic worker), the
comparison runs in-process; the inputs are then bounded in size instead (``max_answer_chars``).

What counts as the same answer (details in ``math_equiv``): ``-\\infty`` never equals ``\\infty``; ``\\pm``
answers are the two values they stand for (``x = 1 \\pm 2`` equals ``\\{-1, 3\\}``); a two-sided chain on one
variable is an interval (``1 < x \\le 3`` equals ``x \\in (1, 3]``). A number followed by a unit or by the noun
it counts is that number: ``3 apples`` scores 1 against ``3``, as with math-verify's unit normalisation and the
Hendrycks MATH grader (the question fixes what is counted; the model is not penalised for naming it). Words that
change the value are never dropped: ``3 million`` is 3000000, and ``3 halves`` or ``3 squared`` do not equal 3.
"""

from __future__ import annotations

import threading

from .base import RewardResult
from .deadline import DeadlineExceeded, DeadlinePool, WorkerCrashed
from .extract import final_answer
from .math_equiv import as_fraction, compare_normalized, had_percent, normalize, text_key

_DECIMAL_REL_TOL = 1e-10
"""A decimal written to ~16 digits (a float repr) equals the fraction it rounds; 0.333 does not equal 1/3."""
_POOL: DeadlinePool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> DeadlinePool:
    """One sympy worker pool per process, started lazily."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = DeadlinePool(workers=1, preload=("sympy", "mathfirst_hpc.rewards.math_equiv"))
        return _POOL


def _ground_truths(reference: object) -> list[str]:
    """A reference may be one answer or a list of accepted answers; boxed references are unboxed."""
    values = list(reference) if isinstance(reference, (list, tuple)) else [reference]
    out = []
    for value in values:
        text = str(value)
        out.append(final_answer(text) if "\\boxed" in text else text)
    return out


class MathVerifier:
    def __init__(self, timeout_s: float = 5.0, max_answer_chars: int = 400, use_pool: bool = True) -> None:
        self.timeout_s = timeout_s
        self.use_pool = use_pool
        self.max_answer_chars = max_answer_chars

    def verify(self, response: str, reference: object) -> RewardResult:
        answer = final_answer(response)
        if answer is None:
            return RewardResult(0.0, "unparseable", "no \\boxed{} or 'answer is' in response")
        if len(answer) > self.max_answer_chars:
            return RewardResult(0.0, "incorrect", f"answer longer than {self.max_answer_chars} chars")
        shown = answer if len(answer) <= 40 else answer[:37] + "..."
        for truth in _ground_truths(reference):
            result = self.compare(truth, answer)
            if result is None or result.verdict != "incorrect":
                return result or RewardResult(1.0, "correct", f"{shown} == {truth}")
        return RewardResult(0.0, "incorrect", f"{shown} != {_ground_truths(reference)[0]}")

    def compare(self, reference: str, answer: str) -> RewardResult | None:
        """None = equal; else an incorrect/error result."""
        ref, got = normalize(reference), normalize(answer)
        if text_key(ref) == text_key(got):
            return None
        fr, fg = as_fraction(ref), as_fraction(got)
        if fr is not None and fg is not None and not had_percent(reference):
            if fr == fg or (("." in ref or "." in got) and abs(fr - fg) <= _DECIMAL_REL_TOL * max(abs(fr), abs(fg))):
                return None
            return RewardResult(0.0, "incorrect", "different numbers")
        try:
            equal = self._run(ref, got, had_percent(reference))
        except DeadlineExceeded:
            return RewardResult(0.0, "error", f"math equivalence timed out after {self.timeout_s:g} s")
        except WorkerCrashed as exc:
            return RewardResult(0.0, "error", f"math equivalence crashed: {str(exc).splitlines()[0][:120]}")
        return None if equal else RewardResult(0.0, "incorrect", "not equivalent")

    def _run(self, ref: str, got: str, percent: bool) -> bool:
        if not self.use_pool:
            return compare_normalized(ref, got, percent)
        return shared_pool().call(compare_normalized, ref, got, percent, timeout_s=self.timeout_s)
