"""Sampling metrics of an evaluation: unbiased pass@k, avg@k, and their per-benchmark aggregation.

pass@k is the probability that at least one of k samples, drawn without replacement from the n samples of a
problem of which c are correct, is correct: ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021, the HumanEval paper).
It is computed as a running product, which stays exact in floating point where the binomials overflow.
avg@k is the mean score over all n samples (for 0/1 scores it equals pass@1).

Usage::

    pass_at_k(n=16, c=3, k=4)                 # one problem
    mean_pass_at_k([(16, 3), (16, 0)], k=4)    # over problems
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``n`` samples of which ``c`` are correct (``1 <= k <= n``)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float | None:
    """Mean pass@k over problems given as (n, c); problems with fewer than k samples are left out.

    Returns None when no problem has k samples.
    """
    values = [pass_at_k(n, c, k) for n, c in counts if n >= k]
    return float(np.mean(values)) if values else None


def avg_at_k(scores_per_problem: Sequence[Sequence[float]]) -> float | None:
    """Mean score over every sample of every problem (each problem weighted equally)."""
    means = [float(np.mean(s)) for s in scores_per_problem if len(s)]
    return float(np.mean(means)) if means else None


def k_values(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, ... up to n, and n itself."""
    ks = [1]
    while ks[-1] * 2 <= n:
        ks.append(ks[-1] * 2)
    if ks[-1] != n and n >= 1:
        ks.append(n)
    return ks
