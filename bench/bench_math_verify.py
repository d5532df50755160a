"""Benchmark: our math verifier (mathfirst_hpc.rewards.math) against math-verify on the math rows of the labelled
reward table (tests/unit/rewards/reward_cases.py), in the same run.

    .venv/bin/pip install math-verify        # the baseline (dev extra)
    .venv/bin/python bench/bench_math_verify.py [--show-misses]

Prints, for both: accuracy against the labels (a row counts as right when the checker says "equal" exactly for
the rows labelled correct) and median / p90 per-call latency, and the ratios. Both run in this process's main
thread with their normal safety: ours sends sympy work to its deadline pool (one worker process; the IPC is
part of the measured time), math-verify uses its default signal.alarm timeouts. Each row is timed on its first
call (no warm caches) after both are warmed up on a few rows that are not in the table.

Simplification: math-verify gets the reference wrapped in ``\\boxed{}``, which is how it is usually called on
dataset answers; the response is passed as is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit" / "rewards"))

from reward_cases import MATH  # noqa: E402

from mathfirst_hpc.rewards.math import MathVerifier  # noqa: E402

WARMUP = [("\\frac{2}{3}", "\\boxed{\\frac{4}{6}}"), ("x^3", "\\boxed{x\\cdot x^2}"), ("(1,2]", "\\boxed{(1,2]}"),
          ("7", "the answer is 7"), ("\\sqrt{12}", "\\boxed{2\\sqrt{3}}")]


def ours() -> tuple[str, object]:
    verifier = MathVerifier(timeout_s=5.0)
    return "ours", lambda ref, resp: verifier.verify(resp, ref).verdict == "correct"


def math_verify() -> tuple[str, object]:
    from math_verify import parse, verify

    def check(ref: str, resp: str) -> bool:
        try:
            return bool(verify(parse("\\boxed{" + ref + "}"), parse(resp)))
        except Exception:  # noqa: BLE001 - a crash counts as "not equal", as in its own callers
            return False

    return "math-verify", check


def run(name: str, check, rows: list[tuple[str, str, str]]) -> dict:
    for ref, resp in WARMUP:
        check(ref, resp)
    latencies, right, misses = [], 0, []
    for ref, resp, want in rows:
        start = time.perf_counter()
        said_equal = check(ref, resp)
        latencies.append(time.perf_counter() - start)
        if said_equal == (want == "correct"):
            right += 1
        else:
            misses.append((ref, resp, want, said_equal))
    latencies.sort()
    return {"name": name, "accuracy": right / len(rows), "right": right,
            "median_ms": statistics.median(latencies) * 1e3,
            "p90_ms": latencies[int(0.9 * (len(latencies) - 1))] * 1e3, "misses": misses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show-misses", action="store_true", help="List the rows each checker gets wrong.")
    args = parser.parse_args()
    rows = list(MATH)
    results = [run(name, check, rows) for name, check in (ours(), math_verify())]
    print(f"math rows: {len(rows)}")
    for r in results:
        print(f"{r['name']:12s} accuracy {r['accuracy']:.3f} ({r['right']}/{len(rows)})  "
              f"median {r['median_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms")
    a, b = results
    print(f"ratio ours/math-verify: accuracy {a['accuracy'] / b['accuracy']:.3f}x, "
          f"median latency {a['median_ms'] / b['median_ms']:.3f}x")
    for r in results:
        if args.show_misses:
            print(f"\n{r['name']} misses:")
            for ref, resp, want, said in r["misses"]:
                print(f"  ref={ref!r} resp={resp!r} label={want} said_equal={said}")


if __name__ == "__main__":
    main()
