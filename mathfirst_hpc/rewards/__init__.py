"""Rewards for six domains, routed by ``data_source`` / ``ability`` (Guru / Reasoning360 conventions).

    router = RewardRouter(cfg.reward)
    results = router.score_batch(problems, responses)     # list[RewardResult]: score, verdict, reason
    router.metrics()                                       # {'reward/error/math': 0, 'reward/unparseable/code': 3, ...}

Routing is one table, :data:`ROUTES`: the first ``data_source`` prefix that matches gives the domain; a row whose
source matches no prefix falls back to :data:`ABILITY_DOMAINS` by its ``ability``; neither -> ``DataError``.
Each domain has one verifier (one file each): math (rewards/math.py), stem (stem.py: choice.py + judge.py), code
(code.py, through the sandbox), simulation (simulation.py), logic (logic.py), tabular (tabular.py).

Verifier failures are never training signal: a verifier that raises, a sandbox that fails, a sympy deadline or a
judge crash give verdict ``error`` (``RewardResult.scored`` is False); the router counts them per domain in
``error_counts`` and every verdict in ``verdict_counts``.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Sequence

from ..config import RewardConfig
from ..data.base import Problem
from ..errors import DataError
from .base import VERDICTS, RewardResult
from .code import CodeVerifier, SandboxRunner
from .judge import BACKENDS as JUDGE_BACKENDS
from .judge import Judge, OpenAiJudgeBackend
from .logic import LogicVerifier
from .math import MathVerifier
from .simulation import SimulationVerifier
from .stem import StemVerifier
from .tabular import TabularVerifier

ROUTES: tuple[tuple[str, str], ...] = (
    # (data_source prefix, domain); first match wins, so specific prefixes come before general ones
    ("synthetic__math", "math"), ("synthetic__stem", "stem"), ("synthetic__code", "code"),
    ("synthetic__simulation", "simulation"), ("synthetic__logic", "logic"), ("synthetic__tabular", "tabular"),
    ("math", "math"), ("openai/gsm8k", "math"), ("aime", "math"), ("lighteval/MATH", "math"),
    ("codegen", "code"), ("code", "code"),
    ("simulation__arcagi", "logic"), ("simulation__barc", "logic"),  # ARC grids: logic in Guru's taxonomy
    ("simulation", "simulation"), ("cruxeval", "simulation"), ("codeio", "simulation"),
    ("logic", "logic"), ("zebra_puzzle", "logic"), ("ordering_puzzle", "logic"), ("graph_logical", "logic"),
    ("table", "tabular"), ("tabular", "tabular"), ("hitab", "tabular"), ("multihier", "tabular"),
    ("stem", "stem"), ("gpqa", "stem"), ("supergpqa", "stem"),
)
ABILITY_DOMAINS: dict[str, str] = {
    "math": "math", "codegen": "code", "code": "code", "coding": "code", "simulation": "simulation",
    "logic": "logic", "table": "tabular", "tabular": "tabular", "stem": "stem", "science": "stem",
}


def domain_of(data_source: str, ability: str = "") -> str:
    """The reward domain of a row, by data_source prefix, else by ability. Raises DataError when unknown."""
    source = (data_source or "").strip()
    for prefix, domain in ROUTES:
        if source.startswith(prefix):
            return domain
    domain = ABILITY_DOMAINS.get((ability or "").strip().lower())
    if domain is None:
        raise DataError(f"unknown data_source {data_source!r} (ability {ability!r}): no reward route",
                        hint="prefix it with math__, codegen__, simulation__, logic__, table__ or stem__, "
                             "or set ability to one of " + ", ".join(sorted(ABILITY_DOMAINS)))
    return domain


def _sandbox_client(url: str | None, max_retries: int) -> SandboxRunner | None:
    if url is None:
        return None
    from ..sandbox.client import SandboxClient  # the HTTP client is needed only when code is scored
    return SandboxClient(url, max_retries=max_retries)


def _crash(domain: str, exc: Exception) -> RewardResult:
    return RewardResult(0.0, "error", f"{domain} verifier crashed: {type(exc).__name__}: {exc}"[:160])


def _guarded(verify: Any, domain: str, response: str, ground_truth: Any) -> RewardResult:
    """One item's verification; a crash is that item's 'error', not its neighbours'."""
    try:
        return verify(response, ground_truth)
    except Exception as exc:  # noqa: BLE001 - a verifier bug must not become a 0 the policy learns from
        return _crash(domain, exc)


class RewardRouter:
    """Score (problem, response) pairs with the verifier of each problem's domain."""

    def __init__(self, cfg: RewardConfig, sandbox: SandboxRunner | None = None, judge: Judge | None = None) -> None:
        self.cfg = cfg
        self._sandbox = sandbox
        self._judge = judge
        self._built: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.error_counts: Counter[str] = Counter()
        """domain -> samples whose verifier failed (verdict 'error')."""
        self.verdict_counts: Counter[tuple[str, str]] = Counter()
        """(domain, verdict) -> samples."""

    # -- verifiers, built on first use (the judge model and the sandbox client only when needed) -------------
    def _math(self) -> MathVerifier:
        if "math" not in self._built:
            self._built["math"] = MathVerifier(timeout_s=self.cfg.math_timeout_s)
        return self._built["math"]

    def _judge_or_none(self) -> Judge | None:
        if self._judge is None and self.cfg.judge.backend != "none":
            judge_cfg = self.cfg.judge
            if judge_cfg.backend == "openai":  # a server someone else runs
                if not judge_cfg.url:
                    raise DataError("reward.judge.backend is openai but reward.judge.url is empty",
                                    hint="set reward.judge.url=http://host:port, or backend=none")
                backend = OpenAiJudgeBackend(judge_cfg.url, judge_cfg.model_path or "judge")
            elif not judge_cfg.model_path:
                raise DataError("reward.judge.backend is set but reward.judge.model_path is empty",
                                hint="set reward.judge.model_path to a local model folder, or backend=none")
            else:
                backend = JUDGE_BACKENDS[judge_cfg.backend](judge_cfg.model_path)
            self._judge = Judge(backend, judge_cfg.max_new_tokens, judge_cfg.batch_size, judge_cfg.cache)
        return self._judge

    def _verifier(self, domain: str) -> Any:
        with self._lock:
            if domain not in self._built:
                sb = self.cfg.sandbox
                self._built[domain] = {
                    "math": self._math,
                    "stem": lambda: StemVerifier(self._math(), self._judge_or_none()),
                    "code": lambda: CodeVerifier(self._sandbox or _sandbox_client(sb.url, sb.max_retries),
                                                 sb.time_limit_s, sb.memory_mb),
                    "simulation": SimulationVerifier,
                    "logic": LogicVerifier,
                    "tabular": TabularVerifier,
                }[domain]()
            return self._built[domain]

    # -- scoring ---------------------------------------------------------------------------------------------
    def _score_domain(self, domain: str, problems: list[Problem], responses: list[str]) -> list[RewardResult]:
        verifier = self._verifier(domain)
        if domain == "code":
            return verifier.verify_batch(responses, [p.ground_truth for p in problems],
                                         [p.extra_info for p in problems])
        if domain == "stem":
            return verifier.verify_batch(problems, responses)
        return [_guarded(verifier.verify, domain, r, p.ground_truth) for p, r in zip(problems, responses)]

    def score(self, problem: Problem, response: str) -> RewardResult:
        return self.score_batch([problem], [response])[0]

    def score_batch(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[RewardResult]:
        """One result per pair, in order. Code goes to the sandbox in one batch, judge calls are batched."""
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems but {len(responses)} responses")
        by_domain: dict[str, list[int]] = {}
        for i, problem in enumerate(problems):
            by_domain.setdefault(domain_of(problem.data_source, problem.ability), []).append(i)
        results: list[RewardResult | None] = [None] * len(problems)
        for domain, idx in by_domain.items():
            try:
                scored = self._score_domain(domain, [problems[i] for i in idx], [str(responses[i]) for i in idx])
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - a verifier bug must not become a 0 the policy learns from
                scored = [_crash(domain, exc) for _ in idx]
            for i, result in zip(idx, scored):
                results[i] = result
                self.verdict_counts[(domain, result.verdict)] += 1
                if result.verdict == "error":
                    self.error_counts[domain] += 1
        return [r for r in results if r is not None]

    def metrics(self) -> dict[str, int]:
        """Counts so far, flat for logging: reward/<verdict>/<domain>."""
        return {f"reward/{verdict}/{domain}": n for (domain, verdict), n in sorted(self.verdict_counts.items())}


__all__ = ["ABILITY_DOMAINS", "ROUTES", "VERDICTS", "RewardResult", "RewardRouter", "domain_of"]
