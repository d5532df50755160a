"""``mathfirst-hpc eval``, ``analyze skills[-eval]`` and ``report``: parse, call one library function, print."""

from __future__ import annotations

import click


@click.command("eval")
@click.option("--checkpoint", "checkpoints", multiple=True, metavar="[LABEL=]PATH",
              help="HF model folder or checkpoint folder (with hf/); repeat for several. Or use --run-dir.")
@click.option("--run-dir", default=None, type=click.Path(file_okay=False),
              help="Evaluate base and the final checkpoint of each stage of this run; one column per checkpoint.")
@click.option("--benchmarks", "-b", default=None,
              help="Comma list: math500, aime, humaneval, mbpp, livecodebench, gpqa_diamond, supergpqa, zebra_puzzle, "
                   "arcagi, codeio, cruxeval_i, cruxeval_o, hitab, multihiertt, finqa, or all.")
@click.option("--heldout", is_flag=True,
              help="With --run-dir: the paper-style table on the run's generated held-out sets (seeds disjoint from "
                   "training), one column per stage; writes RUN_DIR/eval/heldout.json (with --out: "
                   "OUT/heldout.json, leaving the run's own table as it is). --n 1 = greedy.")
@click.option("--n", "n", default=None, type=click.IntRange(min=1),
              help="Samples per problem (avg@n, pass@k) [default: 1; with --heldout the run's data.heldout_samples].")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Benchmark files: the Reasoning360 parquet layout or each benchmark's own format.")
@click.option("--profile", default=None, help="Cluster profile (name or YAML path): run chunks as a Slurm job array.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: RUN_DIR/eval with --run-dir, else ./eval_results].")
@click.option("--backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True,
              help="Generation engine: HF transformers (CPU or one GPU) or vLLM (GPU).")
@click.option("--temperature", default=0.6, show_default=True, type=float)
@click.option("--top-p", default=1.0, show_default=True, type=float)
@click.option("--max-new-tokens", default=1024, show_default=True, type=int, help="Response length limit (tokens).")
@click.option("--max-prompt-len", default=2048, show_default=True, type=int, help="Prompt limit (tokens, left-cut).")
@click.option("--chunk-size", default=64, show_default=True, type=int, help="Problems per chunk (unit of resume).")
@click.option("--limit", default=None, type=int, help="Only the first LIMIT problems of each benchmark.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=16, show_default=True, type=int, help="HF engine: sequences at once.")
@click.option("--array-tasks", default=8, show_default=True, type=int, help="Slurm: array tasks per checkpoint.")
@click.option("--sandbox-url", default=None, help="Running sandbox server for code [default: start a local one].")
@click.option("--sandbox-isolation", type=click.Choice(["bwrap", "none"]), default="bwrap", show_default=True,
              help="Isolation of the local sandbox ('none' only for trusted code).")
def eval_cmd(checkpoints: tuple[str, ...], run_dir: str | None, benchmarks: str | None, heldout: bool, n: int | None,
             data_dir: str | None,
             profile: str | None, out: str | None, backend: str, temperature: float, top_p: float,
             max_new_tokens: int, max_prompt_len: int, chunk_size: int, limit: int | None, seed: int,
             batch_size: int, array_tasks: int, sandbox_url: str | None, sandbox_isolation: str) -> None:
    """Offline batch benchmark evaluation of checkpoints; rerun the same command to resume."""
    if heldout:
        if run_dir is None:
            raise click.UsageError("--heldout needs --run-dir")
        from ..eval.heldout import evaluate_heldout, heldout_markdown, read_heldout

        evaluate_heldout(run_dir, samples=n, size=limit, progress=lambda m: click.echo(m, err=True), table_dir=out)
        click.echo(heldout_markdown(*read_heldout(run_dir, table_dir=out)))
        click.echo(f"table: {out or f'{run_dir}/eval'}/heldout.json")
        return
    if benchmarks is None:
        raise click.UsageError("give --benchmarks (or --heldout with --run-dir)")
    n = 1 if n is None else n
    from ..config import RewardConfig, SandboxClientConfig
    from ..eval.harness import EvalConfig, comparison_markdown, evaluate
    from ..paths import RunPaths

    cfg = EvalConfig(benchmarks=benchmarks.split(","), data_dir=data_dir, n=n, temperature=temperature, top_p=top_p,
                     max_new_tokens=max_new_tokens, max_prompt_len=max_prompt_len, chunk_size=chunk_size,
                     limit=limit, seed=seed, backend=backend, batch_size=batch_size,  # type: ignore[arg-type]
                     array_tasks=array_tasks,
                     reward=RewardConfig(sandbox=SandboxClientConfig(url=sandbox_url,
                                                                     isolation=sandbox_isolation)))  # type: ignore[arg-type]
    out = out or (str(RunPaths(run_dir).eval_dir) if run_dir else "eval_results")
    table = evaluate(cfg, out, checkpoints, run_dir, profile, progress=lambda m: click.echo(m, err=True))
    click.echo(comparison_markdown(table))
    click.echo(f"results: {out}/<checkpoint>/summary.md, comparison: {out}/comparison.md")


@click.group()
def analyze() -> None:
    """Analyses of responses (reasoning skills)."""


@analyze.command("skills")
@click.argument("source", metavar="RUN_OR_RESULTS", type=click.Path(exists=True, file_okay=False))
@click.option("--judge-model", default=None, type=click.Path(exists=True, file_okay=False),
              help="Local HF model folder of an LLM judge (classifier b); without it only the pattern classifier.")
@click.option("--judge-backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True)
@click.option("--judge-max-new-tokens", default=48, show_default=True, type=int)
def skills(source: str, judge_model: str | None, judge_backend: str, judge_max_new_tokens: int) -> None:
    """Label evaluated responses for backtracking, verification, subgoal setting, enumeration, backward chaining."""
    from ..analysis.skills import agreement_markdown, analyze_skills, eval_root_of, make_judge

    judge = make_judge(judge_model, judge_backend, judge_max_new_tokens) if judge_model else None
    result = analyze_skills(source, judge, progress=lambda m: click.echo(m, err=True))
    folder = eval_root_of(source) / "skills"
    click.echo((folder / "frequencies_pattern.md").read_text())
    if "agreement" in result:
        click.echo((folder / "frequencies_judge.md").read_text())
        click.echo(agreement_markdown(result["agreement"]))
    click.echo(f"labels and tables: {folder}")


@analyze.command("skills-eval")
@click.argument("traces", metavar="LABELLED_JSONL", type=click.Path(exists=True, dir_okay=False))
def skills_eval(traces: str) -> None:
    """Per-skill precision/recall of the pattern classifier on hand-labelled traces (tests/data/skills/*.jsonl)."""
    from ..analysis.skills import classify_patterns, read_labelled_traces, score_labels, score_table

    rows = read_labelled_traces(traces)
    scores = score_labels([classify_patterns(t.text) for t in rows], [t.skills for t in rows])
    click.echo(score_table(scores, f"pattern classifier on {traces}: {len(rows)} traces"))


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def report(run_dir: str) -> None:
    """Write RUN_DIR/report/report.html (self-contained) and report.md with plots and tables."""
    from ..analysis.report import build_report

    written = build_report(run_dir)
    click.echo(f"{written['html']}\n{written['markdown']}\n{len(written['plots'])} plot(s) in {written['html'].parent}")
