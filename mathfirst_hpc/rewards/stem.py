"""STEM verifier: multiple choice by letter (rewards/choice.py); free-form answers by the model judge
(rewards/judge.py) when one is configured, else by the math rule verifier (numbers, expressions, units).

A free-form response without a final answer (no ``\\boxed{}`` / "the answer is") is ``unparseable`` before any
judge call: the judge compares final answers, it does not hunt for them.
"""

from __future__ import annotations

from typing import Sequence

from ..data.base import Problem
from .base import RewardResult
from .choice import ChoiceVerifier, reference_letter
from .extract import final_answer
from .judge import Judge
from .math import MathVerifier


class StemVerifier:
    def __init__(self, math: MathVerifier, judge: Judge | None) -> None:
        self.choice = ChoiceVerifier()
        self.math = math
        self.judge = judge

    def verify_batch(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[RewardResult]:
        results: list[RewardResult | None] = [None] * len(problems)
        to_judge: list[tuple[int, tuple[str, str, str]]] = []
        for i, (problem, response) in enumerate(zip(problems, responses)):
            if reference_letter(problem.ground_truth) is not None:
                results[i] = self.choice.verify(response, problem.ground_truth)
                continue
            answer = final_answer(response)
            if answer is None:
                results[i] = RewardResult(0.0, "unparseable", "no final answer for the free-form question")
            elif self.judge is None:
                results[i] = self.math.verify(response, problem.ground_truth)
            else:
                question = problem.prompt[-1]["content"] if problem.prompt else ""
                to_judge.append((i, (question, str(problem.ground_truth), answer)))
        if to_judge:
            for (i, _), result in zip(to_judge, self.judge.judge_batch([item for _, item in to_judge])):
                results[i] = result
        return [r for r in results if r is not None]
