"""The synthetic six-domain generator: deterministic, prefix-stable, short, and in Guru form."""

from __future__ import annotations

import json

import pytest

from mathfirst_hpc import DOMAINS
from mathfirst_hpc.data.synthetic import corpus_texts, make_problems
from mathfirst_hpc.errors import DataError


@pytest.mark.parametrize("domain", DOMAINS)
def test_deterministic_and_prefix_stable(domain: str) -> None:
    a, b = make_problems(domain, 30, seed=7), make_problems(domain, 10, seed=7)
    assert [p.__dict__ for p in a[:10]] == [p.__dict__ for p in b]
    assert [p.__dict__ for p in make_problems(domain, 30, seed=7)] == [p.__dict__ for p in a]
    assert [p.prompt for p in make_problems(domain, 30, seed=8)] != [p.prompt for p in a]


@pytest.mark.parametrize("domain", DOMAINS)
def test_rows_are_short_guru_rows(domain: str) -> None:
    problems = make_problems(domain, 60, seed=0)
    assert len({p.uid for p in problems}) == 60
    for p in problems:
        assert p.data_source == f"synthetic__{domain}" and p.domain == domain
        assert p.prompt[0]["role"] == "user" and len(p.prompt[0]["content"]) < 200
        assert p.solution and len(p.solution) < 160
        json.dumps(p.__dict__)  # plans are written as JSON
    assert len({p.prompt[0]["content"] for p in problems}) > 15  # code tasks repeat prompts with other tests


def test_math_solutions_are_short_sft_traces_ending_in_a_box() -> None:
    for p in make_problems("math", 100, seed=1):
        assert p.solution.endswith("\\boxed{" + p.ground_truth + "}")
        assert len(p.solution.split()) < 30


def test_corpus_texts_mixes_domains() -> None:
    texts = corpus_texts(120, seed=0)
    assert len(texts) == 120 and any("```python" in t for t in texts) and any("| item |" in t for t in texts)


def test_unknown_domain_is_a_data_error() -> None:
    with pytest.raises(DataError):
        make_problems("poetry", 3, seed=0)
