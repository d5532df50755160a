"""Routing by data_source / ability, error accounting, batching, and the synthetic generator's verifiability."""

from __future__ import annotations

import pytest

from mathfirst_hpc import DOMAINS
from mathfirst_hpc.config import RewardConfig
from mathfirst_hpc.data.synthetic import make_problems
from mathfirst_hpc.errors import DataError
from mathfirst_hpc.rewards import RewardRouter, domain_of
from mathfirst_hpc.rewards.bulk import problem_for
from conftest import BrokenSandbox


@pytest.mark.parametrize("source,ability,domain", [
    ("math__deepscaler_preview", "", "math"), ("math__merged_deduped_dapo_or1_dataset", "math", "math"),
    ("codegen__leetcode2k", "", "code"), ("codegen__livecodebench", "codegen", "code"),
    ("simulation__codeio", "", "simulation"), ("simulation__cruxeval-o", "", "simulation"),
    ("simulation__arcagi1", "", "logic"), ("simulation__barc", "", "logic"),
    ("logic__zebra_puzzle_dataset", "", "logic"),
    ("logic__ordering_puzzle_dataset", "", "logic"), ("logic__graph_logical_dataset", "", "logic"),
    ("table__hitab", "", "tabular"), ("table__multihier", "", "tabular"), ("stem__gpqa_diamond", "", "stem"),
    ("stem_web", "", "stem"), ("synthetic__tabular", "", "tabular"), ("my_private_set", "logic", "logic"),
    ("other", "science", "stem"),
])
def test_domain_of_routes_guru_sources(source: str, ability: str, domain: str) -> None:
    assert domain_of(source, ability) == domain


def test_unknown_source_and_ability_is_a_clear_data_error() -> None:
    with pytest.raises(DataError, match="unknown data_source 'poems__x'"):
        domain_of("poems__x", "poetry")


@pytest.mark.parametrize("domain", DOMAINS)
def test_synthetic_solutions_score_correct_and_other_answers_do_not(router, domain: str) -> None:
    problems = make_problems(domain, 24, seed=3)
    right = router.score_batch(problems, [p.solution for p in problems])
    assert [r.verdict for r in right] == ["correct"] * len(problems)
    shifted = router.score_batch(problems, [problems[(i + 1) % len(problems)].solution for i in range(len(problems))])
    # multiple choice has 4 letters, so some neighbours coincide; elsewhere a neighbour's answer is wrong
    limit = len(problems) // 2 if domain == "stem" else 2
    assert sum(r.verdict == "correct" for r in shifted) <= limit


def test_code_batch_goes_to_the_sandbox_once(router, local_sandbox) -> None:
    problems = make_problems("code", 6, seed=0)
    router.score_batch(problems + make_problems("math", 2, seed=0), [p.solution for p in problems] + ["x", "y"])
    assert local_sandbox.batches == [6]


def test_sandbox_failure_is_an_error_not_a_zero_and_is_counted() -> None:
    router = RewardRouter(RewardConfig(), sandbox=BrokenSandbox())
    problems = make_problems("code", 3, seed=0)
    results = router.score_batch(problems, [p.solution for p in problems])
    assert {r.verdict for r in results} == {"error"}
    assert not any(r.scored for r in results)
    assert router.error_counts["code"] == 3
    assert router.metrics()["reward/error/code"] == 3


def test_no_sandbox_configured_is_an_error() -> None:
    router = RewardRouter(RewardConfig())
    problem = make_problems("code", 1, seed=0)[0]
    result = router.score(problem, problem.solution)
    assert result.verdict == "error" and "no sandbox" in result.reason


def test_a_crashing_verifier_gives_error_for_its_item_only(router, monkeypatch) -> None:
    from mathfirst_hpc.rewards.tabular import TabularVerifier

    real = TabularVerifier.verify

    def flaky(self, response, ground_truth):
        if response == "boom":
            raise RuntimeError("bug")
        return real(self, response, ground_truth)

    monkeypatch.setattr(TabularVerifier, "verify", flaky)
    results = router.score_batch([problem_for("tabular", "3")] * 2, ["boom", "\\boxed{3}"])
    assert [r.verdict for r in results] == ["error", "correct"]
    assert "RuntimeError" in results[0].reason
    assert router.error_counts["tabular"] == 1


def test_mismatched_lengths_are_refused(router) -> None:
    with pytest.raises(ValueError):
        router.score_batch([problem_for("math", "1")], [])
