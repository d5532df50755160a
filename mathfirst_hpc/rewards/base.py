"""What every verifier returns. Stored per sample in the HDF5 shards (reward, verdict, reason)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Verdict = Literal["correct", "incorrect", "unparseable", "error"]
VERDICTS: tuple[str, ...] = ("correct", "incorrect", "unparseable", "error")


@dataclass(frozen=True)
class RewardResult:
    score: float
    """The training reward: 1.0 correct, 0.0 otherwise (an error is not trained on: see ``scored``)."""
    verdict: Verdict
    reason: str
    """Short human-readable reason ('boxed 12 == 12', 'sandbox timeout on test 3', ...)."""

    @property
    def scored(self) -> bool:
        """False when the verifier failed (sandbox down, judge crash): the sample is not a training signal."""
        return self.verdict != "error"
