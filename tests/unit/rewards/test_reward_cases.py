"""Every row of the labelled table (reward_cases.py, >= 300 rows, six domains) scores as labelled via the router."""

from __future__ import annotations

from collections import Counter

import pytest

from mathfirst_hpc.rewards.bulk import problem_for
from reward_cases import CASES


def test_table_is_large_and_covers_every_domain_and_verdict() -> None:
    assert len(CASES) >= 300
    domains = Counter(d for d, *_ in CASES)
    assert set(domains) == {"math", "stem", "code", "simulation", "logic", "tabular"}
    assert all(n >= 18 for n in domains.values()), domains
    assert {v for *_, v in CASES} == {"correct", "incorrect", "unparseable", "error"}


def test_every_case_is_scored_as_labelled(router) -> None:
    wrong = []
    results = router.score_batch([problem_for(d, ref) for d, ref, _, _ in CASES], [resp for _, _, resp, _ in CASES])
    for (domain, ref, resp, want), got in zip(CASES, results):
        if got.verdict != want:
            wrong.append(f"{domain}: {ref!r} vs {resp!r}: want {want}, got {got.verdict} ({got.reason})")
        assert got.score == (1.0 if got.verdict == "correct" else 0.0)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("ref,resp,want", [
    ("1-\\frac{1}{e}", "\\boxed{1+\\frac{1}{e}}", "incorrect"),
    ("\\frac{1}{2^{99}}", "\\boxed{\\frac{1}{2^{98}}}", "incorrect"),
    ("3x-y+13=0", "\\boxed{3x+4y+14=0}", "incorrect"),
])
def test_known_false_positives_of_other_checkers_are_rejected(router, ref: str, resp: str, want: str) -> None:
    assert router.score(problem_for("math", ref), resp).verdict == want
