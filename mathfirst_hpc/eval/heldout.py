"""Held-out accuracy per domain and stage: the paper's table in miniature, with no downloaded file.

    mathfirst-hpc eval --run-dir runs/demo --heldout

For every stage of the run that has a final checkpoint (sft, math_rl, joint_rl), the model answers the held-out
set of every domain in the run's mixes (``data.mix`` of the last stage configured; domains with generators
only). Held-out sets come from :func:`mathfirst_hpc.data.mix.heldout_problems`: seeds disjoint from training,
from the held-out part of the problem space (by prompt hash), which training never sees. Answers are scored
with the same reward router as training.

Decoding is **greedy** by default (``samples=1``): top-p -> 0 keeps only the most likely token, which is the
greedy choice in our engines (the first token of the nucleus is always kept). ``samples=k`` instead reports
pass@1 averaged over k samples at the training temperature.

Writes ``RUN_DIR/eval/heldout.json`` (``{"sft": {"math": 0.41, ...}, "math_rl": {...}, "joint_rl": {...}}``,
accuracies in [0, 1]) and ``heldout_detail.json`` (per stage and domain: n, correct, unparseable fraction, a
Wilson 95% interval, decoding). Each stage's answers are cached in ``eval/heldout/<stage>.jsonl``; a rerun
evaluates only stages whose final checkpoint changed (the cache records the checkpoint's name).

Simplification: a sample whose verifier failed (verdict ``error``) counts as wrong here and is counted apart.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import STAGES
from ..atomic import read_jsonl, write_json, write_text
from ..data.base import Problem
from ..errors import RunDirError
from ..modelcard import refresh_cards

Progress = Callable[[str], None]
GREEDY_TOP_P = 1e-9
"""top_p this small keeps only the first (most likely) token: greedy decoding through the sampling engine."""


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sane at 0 and n, unlike the normal interval)."""
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _configured(run_dir: Path, stages: Sequence[str]) -> Any:
    """The resolved config of the first stage in ``stages`` that the run dir has one for."""
    from ..config import load_resolved
    from ..paths import RunPaths

    paths = RunPaths(run_dir)
    for stage in stages:
        if paths.stage_config(stage).exists():
            return load_resolved(paths.stage_config(stage))
    raise RunDirError(f"{run_dir}: no stage config under config/ (is this a run dir?)")


def _last_config(run_dir: Path) -> Any:
    return _configured(run_dir, tuple(reversed(STAGES)))


def heldout_sets(run_dir: Path | str, size: int | None = None) -> dict[str, list[Problem]]:
    """domain -> held-out problems, from the mix of the run's last configured stage (generated domains only)."""
    from ..data.mix import heldout_problems

    cfg = _last_config(Path(run_dir))
    return {domain: heldout_problems(cfg.data, domain, cfg.seed, size)
            for domain in sorted(cfg.data.mix) if not cfg.data.mix[domain].files}


COLUMNS = ("base", *STAGES)
"""Table columns in order: the pretrained base model (runs that start from one), then each stage's final."""


def stage_models(run_dir: Path | str) -> dict[str, tuple[str, Path]]:
    """column -> (tag, HF weights): 'base' when the run starts from a pretrained model.path, then each stage
    with a final checkpoint, in curriculum order. The tag names the weights (cache key)."""
    from ..checkpoint import final_checkpoint
    from ..config import resolve_model_path
    from ..paths import RunPaths

    paths = RunPaths(run_dir)
    found: dict[str, tuple[str, Path]] = {}
    first = _configured(Path(run_dir), STAGES)
    if first.model.preset is None and first.model.path:
        base = resolve_model_path(first.model.path)
        found["base"] = (base.name, base)
    for stage in STAGES:
        final = final_checkpoint(paths.checkpoints(stage)) if paths.checkpoints(stage).exists() else None
        if final is not None:
            found[stage] = (final.name, final / "hf")
    return found


def answer(folder: Path, problems: Sequence[Problem], reward_cfg: Any, samples: int, temperature: float,
           max_new_tokens: int, max_prompt_len: int, seed: int, batch_size: int = 64) -> list[dict[str, Any]]:
    """Generate and score: one row per (problem, sample) with domain, verdict and the response."""
    from ..config import RolloutConfig
    from ..models import load_tokenizer, prompt_ids
    from ..registry import EngineOptions, WeightsSource, build_engine
    from ..rewards import RewardRouter
    from ..rollout.base import SamplingParams

    tokenizer = load_tokenizer(folder)
    rollout = RolloutConfig(backend="hf", batch_size=batch_size, max_prompt_len=max_prompt_len,
                            max_response_len=max_new_tokens)
    engine = build_engine(rollout, tokenizer, WeightsSource(folder=folder), EngineOptions(seed=seed))
    greedy = samples == 1
    sampling = SamplingParams(n=samples, temperature=1.0 if greedy else temperature,
                              top_p=GREEDY_TOP_P if greedy else 1.0, max_new_tokens=max_new_tokens, seed=seed)
    try:
        prompts = [prompt_ids(tokenizer, p.prompt, max_prompt_len) for p in problems]
        groups = engine.generate(prompts, sampling)
    finally:
        engine.close()
    flat = [(p, s) for p, group in zip(problems, groups) for s in group]
    router = RewardRouter(reward_cfg)
    results = router.score_batch([p for p, _ in flat], [s.text for _, s in flat])
    return [{"uid": p.uid, "domain": p.domain, "data_source": p.data_source, "verdict": r.verdict,
             "score": float(r.score), "response": s.text} for (p, s), r in zip(flat, results)]


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """domain -> n, correct, accuracy, 95% interval, unparseable and error fractions."""
    by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_domain[row["domain"]].append(row)
    out = {}
    for domain, items in sorted(by_domain.items()):
        n = len(items)
        correct = sum(1 for r in items if r["score"] >= 1.0)
        problems = len({r["uid"] for r in items})
        # the k samples of one problem are not independent: the interval counts problems, not samples
        low, high = wilson_interval(round(correct * problems / n), problems)
        out[domain] = {"n": n, "problems": problems, "correct": correct, "accuracy": correct / n,
                       "ci95": [low, high],
                       "unparseable": sum(r["verdict"] == "unparseable" for r in items) / n,
                       "error": sum(r["verdict"] == "error" for r in items) / n}
    return out


def _cached(path: Path, checkpoint: str) -> list[dict[str, Any]] | None:
    if not path.exists():
        return None
    rows = read_jsonl(path)
    if not rows or rows[0].get("checkpoint") != checkpoint:
        return None
    return rows[1:]


def evaluate_heldout(run_dir: Path | str, samples: int | None = None, size: int | None = None,
                     progress: Progress | None = None,
                     table_dir: Path | str | None = None) -> dict[str, dict[str, float]]:
    """Evaluate every final stage checkpoint on the held-out sets; write and return the heldout table.
    ``samples`` None = the run's ``data.heldout_samples`` (1 = greedy). ``table_dir`` None = the run's own table
    (``RUN_DIR/eval``, which the report and model cards read); another folder keeps a second decoding (say greedy
    beside the run's avg@k) from replacing it. The per-stage answer caches stay in the run, keyed by samples."""
    from ..paths import RunPaths

    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    models = stage_models(run_dir)
    if not any(column in models for column in STAGES):
        raise RunDirError(f"{run_dir}: no stage has a final checkpoint yet", hint="run a stage first")
    cfg = _last_config(run_dir)
    if samples is None:
        samples = cfg.data.heldout_samples
    sets = heldout_sets(run_dir, size)
    problems = [p for domain in sorted(sets) for p in sets[domain]]
    rollout = getattr(cfg, "rollout", None)
    max_new = rollout.max_response_len if rollout is not None else 64
    max_prompt = rollout.max_prompt_len if rollout is not None else 128
    temperature = rollout.temperature if rollout is not None else 1.0
    reward_cfg = getattr(cfg, "reward", None)
    if reward_cfg is None:
        from ..config import RewardConfig
        reward_cfg = RewardConfig()
    out_dir = paths.eval_dir / "heldout"
    table, detail = {}, {}
    for stage, (name, weights) in models.items():
        cache = out_dir / (f"{stage}.jsonl" if samples == 1 else f"{stage}.n{samples}.jsonl")
        tag = f"{name}|samples={samples}|size={len(problems)}"
        rows = _cached(cache, tag)
        if rows is None:
            if progress:
                progress(f"heldout: {stage} ({name}) on {len(problems)} problems x {samples}")
            rows = answer(weights, problems, reward_cfg, samples, temperature, max_new, max_prompt,
                          seed=cfg.seed)
            write_text(cache, "".join(json.dumps(r) + "\n" for r in [{"checkpoint": tag}, *rows]))
        summary = summarize(rows)
        table[stage] = {d: s["accuracy"] for d, s in summary.items()}
        detail[stage] = summary
    decoding = "greedy" if samples == 1 else f"pass@1 averaged over {samples} samples at T={temperature}"
    target = _table_folder(run_dir, table_dir)
    write_json(target / "heldout.json", table)
    write_json(target / "heldout_detail.json", {"decoding": decoding, "stages": detail})
    if target.resolve() == paths.eval_dir.resolve():
        refresh_cards(run_dir)  # the final checkpoints' model cards get the run's new table
    return table


def heldout_markdown(table: dict[str, dict[str, float]], detail: dict[str, Any] | None = None) -> str:
    """The paper-style table: one row per domain, one column per stage (accuracy in %)."""
    stages = [s for s in COLUMNS if s in table]
    domains = sorted({d for row in table.values() for d in row})
    lines = ["| domain | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    for domain in domains:
        cells = [f"{100 * table[s][domain]:.1f}" if domain in table[s] else "-" for s in stages]
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    non_math = [d for d in domains if d != "math"]
    if non_math:
        cells = []
        for s in stages:
            vals = [table[s][d] for d in non_math if d in table[s]]
            cells.append(f"{100 * sum(vals) / len(vals):.1f}" if vals else "-")
        lines.append("| non-math mean | " + " | ".join(cells) + " |")
    if detail:
        first = detail["stages"][stages[0]]
        n = {d: first[d].get("problems", first[d]["n"]) for d in domains if d in first}
        lines.append(f"\n{detail['decoding']}; held-out problems per domain: "
                     + ", ".join(f"{d} {k}" for d, k in n.items()))
    return "\n".join(lines)


def _table_folder(run_dir: Path | str, table_dir: Path | str | None) -> Path:
    """Where the held-out table lives: ``table_dir``, or by default the run's ``eval/`` (read by report and cards)."""
    from ..paths import RunPaths

    return RunPaths(run_dir).eval_dir if table_dir is None else Path(table_dir)


def read_heldout(run_dir: Path | str, table_dir: Path | str | None = None,
                 ) -> tuple[dict[str, dict[str, float]], dict[str, Any] | None]:
    """The table :func:`evaluate_heldout` wrote (to ``table_dir``, default the run's ``eval/``) and its detail."""
    folder = _table_folder(run_dir, table_dir)
    table_path = folder / "heldout.json"
    if not table_path.exists():
        raise RunDirError(f"{run_dir}: no held-out table yet", hint="run: mathfirst-hpc eval --run-dir D --heldout")
    detail_path = folder / "heldout_detail.json"
    detail = json.loads(detail_path.read_text()) if detail_path.exists() else None
    return json.loads(table_path.read_text()), detail
