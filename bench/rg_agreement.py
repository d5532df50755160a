"""Our verifiers against reasoning-gym's own scorers, on correct and perturbed answers.

    .venv/bin/python bench/rg_agreement.py                      # the generators the presets use, 500+ pairs each
    .venv/bin/python bench/rg_agreement.py --generators chain_sum,number_sorting --entries 100 --show 5

For each generator, ``--entries`` rows are drawn (the held-out seed stream, so nothing here touches training
rows). Each row gives several candidate answers: the reference itself, format variants a grader should accept or
reject (``15.0``, `` 15 ``, ``+15``, a trailing period, thousands separators, other list spellings), and wrong
answers (off by one, sign flipped, another row's answer, empty). For a candidate X:

- ours: the reward router on the response ``"... The answer is \\boxed{X}."`` routed by ``data_source``
  (``<domain>__rg_<name>``), exactly as in training;
- reasoning-gym: ``dataset.score_answer(X, entry)``, counted correct when it returns 1.0.

It prints, per generator, the number of pairs, agreement, and the two kinds of disagreement (we accept / they
reject, and the reverse), with examples (``--show``). Exit code 0 always: disagreements are findings to explain.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathfirst_hpc.config import GeneratorSpec, RewardConfig  # noqa: E402
from mathfirst_hpc.data.reasoning_gym import _dataset, make_rg_problems, seed_for  # noqa: E402
from mathfirst_hpc.rewards import RewardRouter  # noqa: E402

# generator -> (domain, difficulty config) as the presets use them (stages/tiny, stages/smollm2-135m)
PRESET_GENERATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "chain_sum": ("math", {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 1}),
    "basic_arithmetic": ("math", {"min_terms": 2, "max_terms": 3, "max_digits": 2}),
    "gsm_symbolic": ("math", {}),
}
OTHER_GENERATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "decimal_arithmetic": ("math", {}),
    "simple_equations": ("math", {}),
    "number_sorting": ("logic", {"min_numbers": 3, "max_numbers": 5}),
    "syllogism": ("logic", {}),
    "knights_knaves": ("logic", {}),
}


Variant = tuple[str, str]
"""(kind, candidate): kind 'ref' (the reference itself), 'format' (the same value written another way: a grader
may accept or reject it), 'wrong' (another value: every grader must reject it)."""


def _number_variants(answer: str, rng: random.Random, others: list[str]) -> list[Variant]:
    value = float(answer)
    as_int = int(value) if value == int(value) else None
    other = rng.choice([o for o in others if o != answer] or ["0"])
    out = [("ref", answer), ("format", f" {answer} "), ("format", f"{answer}."), ("wrong", other), ("wrong", "")]
    if as_int is not None:
        out += [("format", f"{as_int}.0"), ("format", f"+{as_int}"), ("wrong", f"{as_int + 1}"),
                ("wrong", f"{as_int - 1}"), ("wrong", f"{-as_int}" if as_int else "1")]
        if abs(as_int) >= 1000:
            out.append(("format", f"{as_int:,}"))
    else:
        out += [("wrong", f"{value + 0.5:g}"), ("wrong", f"{-value:g}"), ("format", f"{value:.2f}")]
    return out


def _list_variants(answer: str, rng: random.Random, others: list[str]) -> list[Variant]:
    items = ast.literal_eval(answer)
    swapped = list(items)
    swapped[0], swapped[-1] = swapped[-1], swapped[0]
    other = rng.choice([o for o in others if o != answer] or ["[]"])
    return [("ref", answer), ("format", ", ".join(items)), ("format", json.dumps(items)),
            ("wrong", str(swapped)), ("wrong", str(items[:-1])), ("wrong", other), ("wrong", "")]


def _text_variants(answer: str, rng: random.Random, others: list[str]) -> list[Variant]:
    flipped = {"Yes": "No", "No": "Yes"}.get(answer, answer.replace("hero", "vilXain").replace("villain", "hero")
                                               .replace("vilXain", "villain"))
    out = [("ref", answer), ("format", answer.lower()), ("format", f"{answer}."), ("wrong", ""),
           ("wrong", flipped)]
    other = [o for o in others if o != answer]
    return out + ([("wrong", rng.choice(other))] if other else [])


def variants_for(answer: str, rng: random.Random, others: list[str]) -> list[Variant]:
    if answer.startswith("["):
        try:
            return _list_variants(answer, rng, others)
        except (ValueError, SyntaxError, IndexError):
            pass
    try:
        float(answer)
    except ValueError:
        return _text_variants(answer, rng, others)
    return _number_variants(answer, rng, others)


def compare(name: str, domain: str, config: dict[str, Any], entries: int, seed: int = 0) -> dict[str, Any]:
    problems = make_rg_problems(domain, GeneratorSpec(name=name, config=config), entries, seed, split="heldout")
    router = RewardRouter(RewardConfig())
    rng = random.Random(f"agree:{name}")
    answers = [str(p.ground_truth) for p in problems]
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    ds = _dataset(GeneratorSpec(name=name, config=config), entries, seed_for(seed, name, "heldout"))
    for i, problem in enumerate(problems):
        entry = ds[i]
        assert str(entry["answer"]) == problem.ground_truth
        seen = set()
        for kind, candidate in variants_for(str(problem.ground_truth), rng, answers):
            if candidate in seen:
                continue
            seen.add(candidate)
            ours = router.score(problem, f"Let me work it out. The answer is \\boxed{{{candidate}}}.").score >= 1.0
            theirs = float(ds.score_answer(candidate, entry) or 0.0) >= 1.0
            counts[f"{kind}/pairs"] += 1
            counts[f"{kind}/ours"] += ours
            counts[f"{kind}/theirs"] += theirs
            counts[f"{kind}/agree"] += ours == theirs
            if ours != theirs:
                key = f"{kind}: {'we accept, rg rejects' if ours else 'we reject, rg accepts'}"
                examples.setdefault(key, []).append(f"ref={problem.ground_truth!r} cand={candidate!r}")
    return {"generator": name, "domain": domain, "counts": dict(counts), "examples": examples}


KINDS = ("ref", "wrong", "format")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", default=",".join(PRESET_GENERATORS),
                        help="comma list, or 'all' (preset generators and the others listed in this file)")
    parser.add_argument("--entries", type=int, default=80, help="rows per generator (each gives 5-11 pairs)")
    parser.add_argument("--show", type=int, default=3, help="examples of each disagreement kind to print")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    table = {**PRESET_GENERATORS, **OTHER_GENERATORS}
    names = list(table) if args.generators == "all" else args.generators.split(",")
    results = []
    print("| generator | domain | pairs | agreement (all) | reference accepted (ours / rg) | wrong rejected "
          "(ours / rg) | format variants accepted (ours / rg) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        domain, config = table[name]
        r = compare(name, domain, config, args.entries)
        results.append(r)
        c = r["counts"]
        pairs = sum(c[f"{k}/pairs"] for k in KINDS)
        agree = sum(c[f"{k}/agree"] for k in KINDS)
        wrong = c["wrong/pairs"]
        print(f"| {name} | {domain} | {pairs} | {100 * agree / pairs:.1f}% | {c['ref/ours']}/{c['ref/theirs']} of "
              f"{c['ref/pairs']} | {wrong - c['wrong/ours']}/{wrong - c['wrong/theirs']} of {wrong} | "
              f"{c['format/ours']}/{c['format/theirs']} of {c['format/pairs']} |", flush=True)
    for r in results:
        for kind, items in r["examples"].items():
            print(f"  {r['generator']} {kind} ({len(items)}): " + "; ".join(items[: args.show]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
