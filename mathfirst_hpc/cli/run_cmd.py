"""``mathfirst-hpc run|submit|status|resume|cancel``."""

from __future__ import annotations

import click

from .common import init_from_option, overrides_argument, preset_option


@click.command()
@click.option("--run-dir", default="runs/tiny", show_default=True, type=click.Path(file_okay=False),
              help="The run directory (the run's whole state; rerun the same command to resume).")
@click.option("--stages", default="1,2,3", show_default=True,
              help="Comma-separated stages: 1|sft, 2|math_rl, 3|joint_rl.")
@preset_option
@init_from_option
@click.option("--no-progress", is_flag=True, help="No progress bars (logs only).")
@overrides_argument
def run(run_dir: str, stages: str, preset: str, init_from: str | None, no_progress: bool,
        overrides: tuple[str, ...]) -> None:
    """Run stages colocated in this process (no arguments = all three stages of the tiny CPU preset).

    Overrides are KEY=VALUE with dotted keys (rollout.n_per_prompt=8); prefix STAGE: to aim one stage
    (math_rl:steps=2). SIGTERM/SIGUSR1 save a checkpoint at the next safe point; rerunning resumes exactly.
    """
    from .. import preemption
    from ..run import parse_stage_list, run_curriculum

    preemption.install()
    results = run_curriculum(run_dir, parse_stage_list(stages), preset, list(overrides), init_from,
                             should_stop=None,  # signals + Slurm time left vs measured save time
                             progress=not no_progress)
    for stage, result in results.items():
        click.echo(f"{stage}: {result}")
    if any(r != "final" for r in results.values()):
        click.echo(f"stopped early ({preemption.reason()}); rerun the same command to resume from {run_dir}",
                   err=True)
        raise SystemExit(3)


@click.command()
@click.argument("target", metavar="{stage1|stage2|stage3|eval|all}")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False),
              help="The run directory (the run's whole state; resume and status read it).")
@click.option("--profile", default="local-dev", show_default=True,
              help="Cluster profile: a name under slurm/profiles/ or a YAML path.")
@preset_option
@init_from_option
@click.option("--dry-run", is_flag=True,
              help="Print the stage job's batch file and the resolved config; submit nothing.")
@click.option("--mode", type=click.Choice(["phases", "allocation"]), default="phases", show_default=True,
              help="phases: a 1-CPU driver job per stage submits rollout arrays and learner jobs; allocation: one "
                   "job of parallel.nodes x parallel.gpus_per_node tasks runs the whole stage, generation and "
                   "training taking turns on the same devices.")
@overrides_argument
def submit(target: str, run_dir: str, profile: str, preset: str, init_from: str | None, dry_run: bool, mode: str,
           overrides: tuple[str, ...]) -> None:
    """Submit stages to Slurm: per stage, a driver job (rollout arrays, rewards, learner jobs) or, with --mode
    allocation, one job that holds the stage's nodes and runs it whole.

    Stage N+1 waits on stage N (afterok), or starts at once when stage N is final in the run dir. For eval,
    KEY=VALUE set evaluation options (benchmarks=[math500], n=4, limit=50).
    """
    from ..launch.driver import describe, submit_eval, submit_stages

    if target.strip().lower() == "eval":
        click.echo(describe([submit_eval(run_dir, profile, list(overrides))]))
        return
    click.echo(describe(submit_stages(run_dir, target, profile, preset, list(overrides), init_from, dry_run, mode)))


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="Print the status as JSON (with each stage's progress, ETA and per-domain rewards).")
@click.option("--verify", is_flag=True,
              help="Also hash every checkpoint file and every recorded shard against its checksum; exit 1 if any "
                   "is bad.")
@click.option("--watch", is_flag=True, help="Redraw a live view on one screen until Ctrl-C.")
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between --watch redraws.")
@click.option("--count", type=click.IntRange(min=1), default=None, hidden=True, help="Stop after N redraws (tests).")
def status(run_dir: str, as_json: bool, verify: bool, watch: bool, interval: float, count: int | None) -> None:
    """Show a run dir's stages, progress, checkpoints, jobs and latest rewards.

    With --watch, redraw every --interval seconds: each stage's iteration out of its total, ETA from the recent
    iteration times, reward and accuracy (per domain too), kept-group and error fractions, Slurm jobs by state.
    With --verify, every checkpoint file is hashed against its meta.json and every shard against the manifest.
    Each bad file is one line on stdout, "bad: PATH: REASON" (PATH relative to RUN_DIR), after the status and
    before a summary line; the exit code is 1 when any file is bad (2 for a usage error, 0 when all match).
    """
    import json
    from pathlib import Path

    from ..status import collect_status, format_status, format_verification, verify_run
    from ..status import watch as watch_status

    if watch:
        if as_json or verify:
            raise click.UsageError("--watch shows the live view; use --json or --verify without it")
        collect_status(run_dir)  # a wrong run dir fails once, as a one-line error
        watch_status(run_dir, interval, count)
        return
    info = collect_status(run_dir)
    result = verify_run(run_dir) if verify else None
    if as_json:
        if result is not None:
            info["verify"] = result.as_dict(Path(info["run_dir"]))
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        click.echo(format_status(info))
        if result is not None:
            click.echo("")
            click.echo(format_verification(result, Path(info["run_dir"])))
    if result is not None and result.problems:
        raise SystemExit(1)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def resume(run_dir: str) -> None:
    """Resubmit whatever is unfinished in a run dir (after a kill, a failure or a cancel); nothing is redone."""
    from ..launch.driver import describe, resume_run

    click.echo(describe(resume_run(run_dir)))


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def cancel(run_dir: str) -> None:
    """Cancel a run's pending and running Slurm jobs (drivers first); resume continues from the run dir."""
    from ..launch.driver import cancel_run

    cancelled = cancel_run(run_dir)
    click.echo(f"cancelled {len(cancelled)} job(s){': ' + ' '.join(cancelled) if cancelled else ''}")
