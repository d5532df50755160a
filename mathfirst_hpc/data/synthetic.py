"""A tiny deterministic six-domain problem generator for the CPU preset and the tests.

Every item is a :class:`~mathfirst_hpc.data.base.Problem` in Guru form (``data_source='synthetic__<domain>'``,
chat prompt, ``reward_model.ground_truth``) that the reward router verifies, and every item carries a short
worked ``solution`` that the router scores as correct (the math ones are the stage 1 SFT traces).

Usage::

    from mathfirst_hpc.data.synthetic import make_problems, corpus_texts
    problems = make_problems("math", n=256, seed=0)
    texts = corpus_texts(n=2000, seed=0)        # for training the tiny BPE tokenizer

Simplifications: items are short on purpose (tiny models: prompts well under 128 tokens of a ~512-vocab BPE,
math solutions under ~60 tokens). Item ``i`` of a domain depends only on (domain, seed, i), so a prefix of a
larger set equals the smaller set, and generation is reproducible across machines (``random.Random`` with
string seeds is stable across Python versions).
"""

from __future__ import annotations

import itertools
import json
import random
from fractions import Fraction
from typing import Callable

from .. import DOMAINS
from ..errors import DataError
from .base import Problem

Item = tuple[str, object, str, dict]
"""(prompt text, ground truth, worked solution, extra_info)"""

NAMES = ("Ann", "Bob", "Cy", "Dan", "Eve", "Fay", "Gus", "Hal")
THINGS = ("apples", "pens", "books", "coins", "cards", "eggs")


# ---------------------------------------------------------------------------------------------------------------
# math: procedural arithmetic and word problems; the solution is the SFT trace and ends in \boxed{answer}
# ---------------------------------------------------------------------------------------------------------------

def _frac_tex(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _math_add(r: random.Random) -> Item:
    name, thing = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(2, 40), r.randint(2, 40)
    return (f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have?",
            str(a + b), f"{a} + {b} = {a + b}. \\boxed{{{a + b}}}", {"kind": "add"})


def _math_sub(r: random.Random) -> Item:
    name, thing = r.choice(NAMES), r.choice(THINGS)
    a = r.randint(10, 60)
    b = r.randint(1, a - 1)
    return (f"{name} has {a} {thing} and gives away {b}. How many are left?",
            str(a - b), f"{a} - {b} = {a - b}. \\boxed{{{a - b}}}", {"kind": "sub"})


def _math_mul(r: random.Random) -> Item:
    thing = r.choice(THINGS)
    a, b = r.randint(2, 12), r.randint(2, 12)
    return (f"A box holds {a} {thing}. How many {thing} are in {b} boxes?",
            str(a * b), f"{a} * {b} = {a * b}. \\boxed{{{a * b}}}", {"kind": "mul"})


def _math_div(r: random.Random) -> Item:
    thing = r.choice(THINGS)
    k, b = r.randint(2, 12), r.randint(2, 9)
    return (f"{k * b} {thing} are shared equally by {b} kids. How many does each kid get?",
            str(k), f"{k * b} / {b} = {k}. \\boxed{{{k}}}", {"kind": "div"})


def _math_linear(r: random.Random) -> Item:
    a, x, b = r.randint(2, 9), r.randint(-9, 12), r.randint(1, 20)
    c = a * x + b
    return (f"Solve for x: {a}x + {b} = {c}.",
            str(x), f"{a}x = {c} - {b} = {c - b}, so x = {x}. \\boxed{{{x}}}", {"kind": "linear"})


def _math_fraction(r: random.Random) -> Item:
    q = r.choice((3, 4, 5, 6, 8, 10, 12))
    p1, p2 = r.randint(1, q - 1), r.randint(1, q - 1)
    total = Fraction(p1 + p2, q)
    return (f"Compute \\frac{{{p1}}}{{{q}}} + \\frac{{{p2}}}{{{q}}} in lowest terms.",
            _frac_tex(total), f"\\frac{{{p1 + p2}}}{{{q}}} = {_frac_tex(total)}. \\boxed{{{_frac_tex(total)}}}",
            {"kind": "fraction"})


def _math_percent(r: random.Random) -> Item:
    price = r.choice((20, 40, 50, 60, 80, 100, 120, 200))
    pct = r.choice((10, 20, 25, 50))
    off = price * pct // 100
    return (f"A shirt costs {price} dollars and is {pct}% off. What is the new price in dollars?",
            str(price - off), f"{pct}% of {price} is {off}. {price} - {off} = {price - off}. \\boxed{{{price - off}}}",
            {"kind": "percent"})


def _math_square(r: random.Random) -> Item:
    a, b = r.randint(2, 9), r.randint(1, 9)
    return (f"What is {a}^2 + {b}?", str(a * a + b),
            f"{a}^2 = {a * a}. {a * a} + {b} = {a * a + b}. \\boxed{{{a * a + b}}}", {"kind": "square"})


MATH_TEMPLATES = (_math_add, _math_sub, _math_mul, _math_div, _math_linear, _math_fraction, _math_percent,
                  _math_square)


# ---------------------------------------------------------------------------------------------------------------
# stem: multiple choice (ground truth is a letter)
# ---------------------------------------------------------------------------------------------------------------

LETTERS = "ABCD"


def _options(r: random.Random, right: str, wrong: list[str]) -> tuple[str, str]:
    """Shuffle the right answer among three distinct wrong ones; return (options text, right letter)."""
    choices = [right] + [w for w in dict.fromkeys(wrong) if w != right][:3]
    r.shuffle(choices)
    text = " ".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return text, LETTERS[choices.index(right)]


def _stem_units(r: random.Random) -> Item:
    k = r.randint(2, 9)
    big, small, factor = r.choice((("kg", "g", 1000), ("km", "m", 1000), ("m", "cm", 100), ("h", "min", 60)))
    right = k * factor
    opts, letter = _options(r, str(right), [str(k * 10), str(right * 10), str(right + factor), str(k)])
    return (f"How many {small} are in {k} {big}? {opts}. Answer with a letter.", letter,
            f"{k} {big} = {right} {small}. \\boxed{{{letter}}}", {"kind": "units"})


def _stem_speed(r: random.Random) -> Item:
    v, t = r.randint(2, 12) * 5, r.randint(2, 6)
    opts, letter = _options(r, str(v), [str(v * t * t), str(v + t), str(v * t), str(v - t)])
    return (f"A car drives {v * t} km in {t} h. What is its speed in km/h? {opts}. Answer with a letter.", letter,
            f"{v * t} / {t} = {v}. \\boxed{{{letter}}}", {"kind": "speed"})


def _stem_prime(r: random.Random) -> Item:
    prime = r.choice((2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31))
    composites = r.sample((4, 6, 8, 9, 10, 12, 14, 15, 16, 18, 21, 22, 25, 27), 3)
    opts, letter = _options(r, str(prime), [str(c) for c in composites])
    return (f"Which number is prime? {opts}. Answer with a letter.", letter,
            f"{prime} has no divisors but 1 and itself. \\boxed{{{letter}}}", {"kind": "prime"})


def _stem_state(r: random.Random) -> Item:
    facts = (("ice", "solid"), ("steam", "gas"), ("water", "liquid"), ("rock", "solid"), ("air", "gas"))
    thing, state = r.choice(facts)
    opts, letter = _options(r, state, ["solid", "liquid", "gas", "plasma"])
    return (f"At room conditions, {thing} is a: {opts}. Answer with a letter.", letter,
            f"{thing} is a {state}. \\boxed{{{letter}}}", {"kind": "state"})


STEM_TEMPLATES = (_stem_units, _stem_speed, _stem_prime, _stem_state)


# ---------------------------------------------------------------------------------------------------------------
# code: tiny function / stdin tasks; ground truth is a JSON string of tests (Guru codegen conventions)
# ---------------------------------------------------------------------------------------------------------------

def _code_affine(r: random.Random) -> Item:
    a, b = r.randint(2, 9), r.randint(0, 9)
    xs = r.sample(range(-5, 10), 3)
    tests = "\n".join(f"assert f({x}) == {a * x + b}" for x in xs)
    return (f"Write a Python function f(x) that returns {a}*x + {b}.", json.dumps({"functional": tests}),
            f"```python\ndef f(x):\n    return {a} * x + {b}\n```", {"kind": "functional"})


def _code_stdin(r: random.Random) -> Item:
    op, expr = r.choice((("sum", "a + b"), ("product", "a * b"), ("maximum", "max(a, b)"), ("difference a-b", "a - b")))
    pairs = [(r.randint(-20, 20), r.randint(-20, 20)) for _ in range(3)]
    outputs = [str(eval(expr, {"max": max}, {"a": a, "b": b})) + "\n" for a, b in pairs]  # noqa: S307 (our own expr)
    gt = {"inputs": [f"{a} {b}\n" for a, b in pairs], "outputs": outputs}
    return (f"Read two integers a b from stdin and print their {op}.", json.dumps(gt),
            f"```python\na, b = map(int, input().split())\nprint({expr})\n```", {"kind": "stdio"})


def _code_call(r: random.Random) -> Item:
    name, desc, body, fn = r.choice((
        ("count_vowels", "the number of vowels in string s", "sum(c in 'aeiou' for c in s)",
         lambda s: sum(c in "aeiou" for c in s)),
        ("rev", "string s reversed", "s[::-1]", lambda s: s[::-1]),
        ("first_upper", "s with its first letter in upper case", "s[:1].upper() + s[1:]",
         lambda s: s[:1].upper() + s[1:]),
    ))
    words = r.sample(("cat", "tree", "banana", "sky", "queue", "idea"), 3)
    gt = {"fn_name": name, "inputs": [[w] for w in words], "outputs": [fn(w) for w in words]}
    return (f"Write a Python function {name}(s) returning {desc}.", json.dumps(gt),
            f"```python\ndef {name}(s):\n    return {body}\n```", {"kind": "call"})


CODE_TEMPLATES = (_code_affine, _code_stdin, _code_call)


# ---------------------------------------------------------------------------------------------------------------
# simulation: predict a program's output (plain values, CRUXEval-style literals, CodeI/O-style JSON)
# ---------------------------------------------------------------------------------------------------------------

def _sim_loop(r: random.Random) -> Item:
    x, k, m, c = r.randint(1, 5), r.randint(2, 4), r.randint(2, 3), r.randint(0, 3)
    value = x
    for _ in range(k):
        value = value * m + c
    code = f"x = {x}\nfor i in range({k}):\n    x = x * {m} + {c}\nprint(x)"
    return (f"What does this print?\n```python\n{code}\n```", str(value),
            f"x goes {x} -> {value} after {k} steps. \\boxed{{{value}}}", {"kind": "loop"})


def _sim_crux(r: random.Random) -> Item:
    word = r.choice(("bca", "dog", "mix", "abc", "zen", "hop"))
    suffix = r.choice("xyz")
    result = word[::-1] + suffix
    return (f"def f(s):\n    return s[::-1] + '{suffix}'\nComplete: assert f('{word}') == ??", repr(result),
            f"f reverses '{word}' and adds '{suffix}'. \\boxed{{{result!r}}}", {"kind": "cruxeval"})


def _sim_codeio(r: random.Random) -> Item:
    nums = [r.randint(0, 9) for _ in range(4)]
    code = "def main(xs):\n    return {'evens': [x for x in xs if x % 2 == 0], 'total': sum(xs)}"
    out = {"evens": [x for x in nums if x % 2 == 0], "total": sum(nums)}
    return (f"{code}\nGive the output of main({nums}) as JSON {{\"output\": ...}}.",
            json.dumps({"output": out}), "```json\n" + json.dumps({"output": out}) + "\n```", {"kind": "codeio"})


SIM_TEMPLATES = (_sim_loop, _sim_crux, _sim_codeio)


# ---------------------------------------------------------------------------------------------------------------
# logic: ordering, zebra-style seating (unique by brute force), graph shortest paths
# ---------------------------------------------------------------------------------------------------------------

def _logic_ordering(r: random.Random) -> Item:
    people = r.sample(NAMES, r.randint(3, 4))
    facts = [f"{people[i]} is taller than {people[i + 1]}." for i in range(len(people) - 1)]
    r.shuffle(facts)
    answer = ", ".join(people)
    return (" ".join(facts) + " List them from tallest to shortest.", json.dumps(people),
            f"Chain the facts: {answer}. \\boxed{{{answer}}}", {"kind": "ordering"})


def _seat_clues(r: random.Random, truth: tuple[str, ...]) -> list[str]:
    """Random true clues about a seating, added until only ``truth`` satisfies them (checked by brute force)."""
    pos = {name: i for i, name in enumerate(truth)}
    n = len(truth)

    def make_clue() -> tuple[str, Callable[[dict[str, int]], bool]]:
        a, b = r.sample(truth, 2)
        kind = r.choice(("left", "seat", "next", "notend"))
        if kind == "left" and pos[a] < pos[b]:
            return f"{a} sits left of {b}.", lambda p: p[a] < p[b]
        if kind == "seat":
            return f"{a} is in seat {pos[a] + 1}.", lambda p: p[a] == pos[a]
        if kind == "next" and abs(pos[a] - pos[b]) == 1:
            return f"{a} sits next to {b}.", lambda p: abs(p[a] - p[b]) == 1
        if kind == "notend" and 0 < pos[a] < n - 1:
            return f"{a} is not at an end.", lambda p: 0 < p[a] < n - 1
        return f"{b} sits right of {a}." if pos[a] < pos[b] else f"{a} sits right of {b}.", \
            (lambda p: p[a] < p[b]) if pos[a] < pos[b] else (lambda p: p[b] < p[a])

    clues: list[tuple[str, Callable]] = []
    candidates = [dict((name, i) for i, name in enumerate(perm)) for perm in itertools.permutations(truth)]
    while len(candidates) > 1:
        text, test = make_clue()
        if text in {c[0] for c in clues}:
            continue
        remaining = [c for c in candidates if test(c)]
        if len(remaining) < len(candidates):
            clues.append((text, test))
            candidates = remaining
    return [c[0] for c in clues]


def _logic_zebra(r: random.Random) -> Item:
    truth = tuple(r.sample(NAMES, 3))
    clues = _seat_clues(r, truth)
    answer = ", ".join(truth)
    return (f"{', '.join(sorted(truth))} sit in seats 1-3. " + " ".join(clues) + " Who sits in seats 1, 2, 3?",
            json.dumps(list(truth)), f"Only one seating fits: {answer}. \\boxed{{{answer}}}", {"kind": "zebra"})


def _logic_graph(r: random.Random) -> Item:
    nodes = "ABCD"
    weights = {(u, v): r.randint(1, 9) for u, v in itertools.combinations(nodes, 2) if r.random() < 0.8}
    weights[("A", "B")] = weights.get(("A", "B"), r.randint(1, 9))
    weights[("B", "D")] = weights.get(("B", "D"), r.randint(1, 9))
    dist = {n: float("inf") for n in nodes}
    dist["A"] = 0
    for _ in nodes:  # Bellman-Ford on 4 nodes: plain and obviously right
        for (u, v), w in weights.items():
            dist[v] = min(dist[v], dist[u] + w)
            dist[u] = min(dist[u], dist[v] + w)
    edges = ", ".join(f"{u}-{v} {w}" for (u, v), w in weights.items())
    best = int(dist["D"])
    return (f"Edges with lengths: {edges}. What is the shortest path length from A to D?", str(best),
            f"Shortest A to D is {best}. \\boxed{{{best}}}", {"kind": "graph"})


LOGIC_TEMPLATES = (_logic_ordering, _logic_zebra, _logic_graph)


# ---------------------------------------------------------------------------------------------------------------
# tabular: questions about a small markdown table
# ---------------------------------------------------------------------------------------------------------------

def _table(r: random.Random) -> tuple[str, list[tuple[str, int, int]]]:
    items = r.sample(("pen", "cup", "hat", "bag", "map", "box"), 3)
    rows = [(item, r.randint(1, 9), r.randint(1, 5)) for item in items]
    text = "| item | price | qty |\n" + "\n".join(f"| {i} | {p} | {q} |" for i, p, q in rows)
    return text, rows


def _tab_total(r: random.Random) -> Item:
    text, rows = _table(r)
    total = sum(p * q for _, p, q in rows)
    work = " + ".join(f"{p}*{q}" for _, p, q in rows)
    return (f"{text}\nWhat is the total cost of all items?", str(total),
            f"{work} = {total}. \\boxed{{{total}}}", {"kind": "total"})


def _tab_max(r: random.Random) -> Item:
    text, rows = _table(r)
    while len({p for _, p, _ in rows}) < len(rows):
        text, rows = _table(r)
    best = max(rows, key=lambda row: row[1])[0]
    return (f"{text}\nWhich item has the highest price?", best,
            f"The highest price is the {best}. \\boxed{{{best}}}", {"kind": "argmax"})


def _tab_mean(r: random.Random) -> Item:
    text, rows = _table(r)
    mean = round(sum(q for _, _, q in rows) / len(rows), 2)
    shown = f"{mean:g}"
    return (f"{text}\nWhat is the mean qty? Round to 2 decimals.", shown,
            f"Mean qty = {shown}. \\boxed{{{shown}}}", {"kind": "mean"})


TAB_TEMPLATES = (_tab_total, _tab_max, _tab_mean)


# ---------------------------------------------------------------------------------------------------------------
# transfer kinds: non-math tasks built on the same 1-digit chain arithmetic that math RL trains (the tiny preset's
# joint mix). Each needs one domain-specific step (a letter, a variable trace, a table lookup, a comparison) on
# top of "a + b = c" steps, so that what math RL sharpens can carry over.
# ---------------------------------------------------------------------------------------------------------------

def _chain(r: random.Random, terms: int) -> tuple[str, list[str], int]:
    """A chain sum of 1-digit terms: (expression, step lines, value), e.g. ("3 + 4 - 2", ["3 + 4 = 7", ...], 5)."""
    value = r.randint(0, 9)
    expr, steps = str(value), []
    for _ in range(terms - 1):
        op, term = r.choice("+-"), r.randint(0, 9)
        new = value + term if op == "+" else value - term
        steps.append(f"{value} {op} {term} = {new}")
        expr, value = f"{expr} {op} {term}", new
    return expr, steps, value


def _stem_mc_arith(r: random.Random) -> Item:
    expr, steps, value = _chain(r, r.randint(2, 4))
    opts, letter = _options(r, str(value), [str(value + d) for d in r.sample((-3, -2, -1, 1, 2, 3), 4)])
    return (f"Which value equals {expr}? {opts}. Answer with a letter.", letter,
            ". ".join(steps + [f"{value} is {letter}"]) + f". \\boxed{{{letter}}}", {"kind": "mc_arith"})


def _sim_trace(r: random.Random) -> Item:
    # 2-4 terms, as the tiny math mix: with 2-3 only ~4,200 programs exist, and a 32k training pool leaves no
    # unseen ones for the held-out set
    expr, steps, value = _chain(r, r.randint(2, 4))
    parts = expr.split(" ")
    lines = [f"x = {parts[0]}"] + [f"x = x {op} {term}" for op, term in zip(parts[1::2], parts[2::2])]
    code = "\n".join(lines + ["print(x)"])
    return (f"What does this print?\n```python\n{code}\n```", str(value),
            ". ".join([f"x = {parts[0]}"] + steps) + f". \\boxed{{{value}}}", {"kind": "trace"})


def _tab_lookup_sum(r: random.Random) -> Item:
    items = r.sample(("pen", "cup", "hat", "bag", "map", "box"), 3)
    prices = {item: r.randint(0, 9) for item in items}
    text = "| item | price |\n" + "\n".join(f"| {i} | {p} |" for i, p in prices.items())
    a, b = r.sample(items, 2)
    total = prices[a] + prices[b]
    return (f"{text}\nWhat is the price of {a} plus the price of {b}?", str(total),
            f"{a} is {prices[a]}. {b} is {prices[b]}. {prices[a]} + {prices[b]} = {total}. \\boxed{{{total}}}",
            {"kind": "lookup_sum"})


def _logic_most(r: random.Random) -> Item:
    people = r.sample(NAMES, 3)
    while True:
        chains = [_chain(r, 2) for _ in people]
        values = [c[2] for c in chains]
        if len(set(values)) == len(values):
            break
    best = people[values.index(max(values))]
    facts = " ".join(f"{p} has {c[0]} coins." for p, c in zip(people, chains))
    work = ". ".join(f"{p}: {c[1][0]}" for p, c in zip(people, chains))
    return (f"{facts} Who has the most coins?", best, f"{work}. \\boxed{{{best}}}", {"kind": "most"})


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------

TEMPLATES: dict[str, tuple[Callable[[random.Random], Item], ...]] = {
    "math": MATH_TEMPLATES, "stem": STEM_TEMPLATES, "code": CODE_TEMPLATES,
    "simulation": SIM_TEMPLATES, "logic": LOGIC_TEMPLATES, "tabular": TAB_TEMPLATES,
}
"""domain -> the default templates; item i uses template i mod len (a balanced mix)."""

EXTRA_KINDS: dict[str, dict[str, Callable[[random.Random], Item]]] = {
    "stem": {"mc_arith": _stem_mc_arith}, "simulation": {"trace": _sim_trace},
    "tabular": {"lookup_sum": _tab_lookup_sum}, "logic": {"most": _logic_most},
}
"""Kinds outside the default mix, chosen by name (``data.mix.<domain>.generators: [{source: synthetic, ...}]``)."""


def _kind_of(template: Callable[[random.Random], Item]) -> str:
    return template(random.Random(0))[3]["kind"]


def kinds(domain: str) -> dict[str, Callable[[random.Random], Item]]:
    """Every template of ``domain`` by kind name: the default ones and the extra ones."""
    if domain not in TEMPLATES:
        raise DataError(f"unknown domain {domain!r} for the synthetic generator", hint=f"use one of {DOMAINS}")
    return {**{_kind_of(t): t for t in TEMPLATES[domain]}, **EXTRA_KINDS.get(domain, {})}

STYLE = {"math": "rule", "stem": "rule", "code": "execution", "simulation": "rule", "logic": "rule", "tabular": "rule"}


def make_problem(domain: str, index: int, seed: int, kind: str | None = None, split: str = "train") -> Problem:
    """Item ``index`` of ``domain`` for ``seed`` (of one ``kind``, or the default round robin); depends on nothing
    else. ``split='heldout'`` draws from a disjoint seed stream."""
    if domain not in TEMPLATES:
        raise DataError(f"unknown domain {domain!r} for the synthetic generator", hint=f"use one of {DOMAINS}")
    if kind is None:
        template = TEMPLATES[domain][index % len(TEMPLATES[domain])]
    else:
        by_kind = kinds(domain)
        if kind not in by_kind:
            raise DataError(f"the synthetic {domain} generator has no kind {kind!r}",
                            hint=f"choose from {', '.join(sorted(by_kind))}")
        template = by_kind[kind]
    stream = f"synthetic:{domain}:{seed}:{index}" if split == "train" else f"synthetic:{split}:{domain}:{kind}:{seed}:{index}"
    prompt, truth, solution, extra = template(random.Random(stream))
    source = f"synthetic__{domain}"
    uid = f"{source}#{index}" if kind is None and split == "train" else f"{source}#{kind or 'mix'}:{split}:{index}"
    return Problem(uid=uid, domain=domain, data_source=source,
                   prompt=[{"role": "user", "content": prompt}], ground_truth=truth, ability=domain,
                   style=STYLE[domain], extra_info={"index": index, "split": split, **extra}, solution=solution)


def make_problems(domain: str, n: int, seed: int, kind: str | None = None, split: str = "train") -> list[Problem]:
    """``n`` deterministic problems of one domain (math, stem, code, simulation, logic, tabular)."""
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}")
    return [make_problem(domain, i, seed, kind, split) for i in range(n)]


def corpus_texts(n: int, seed: int) -> list[str]:
    """``n`` texts for training the tiny BPE tokenizer: prompts and solutions of every default and extra kind of
    every domain, plus the reasoning-gym arithmetic rows the tiny preset trains on, round robin."""
    from ..config import GeneratorSpec
    from .reasoning_gym import make_rg_problems

    sources: list[Callable[[int], Problem]] = [lambda i, d=d: make_problem(d, i, seed) for d in DOMAINS]
    sources += [lambda i, d=d, k=k: make_problem(d, i, seed, kind=k) for d, extra in EXTRA_KINDS.items() for k in extra]
    per_source = n // (2 * (len(sources) + 2)) + 1
    rg_rows = [p for name in ("chain_sum", "basic_arithmetic")
               for p in make_rg_problems("math", GeneratorSpec(name=name, config={"max_digits": 2}), per_source, seed)]
    texts: list[str] = []
    for i in range(per_source):
        for problem in [make(i) for make in sources] + rg_rows[i::per_source]:
            texts.append(problem.prompt[0]["content"])
            texts.append(problem.solution or "")
    return texts[:n]
