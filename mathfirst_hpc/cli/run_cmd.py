"""``mathfirst-hpc run|submit|status|resume|cancel``."""

from __future__ import annotations

import click

from .common import not_built, overrides_argument, preset_option


@click.command()
@click.option("--run-dir", default="runs/tiny", show_default=True, type=click.Path(file_okay=False),
              help="The run directory (the run's whole state; rerun the same command to resume).")
@click.option("--stages", default="1,2,3", show_default=True,
              help="Comma-separated stages: 1|sft, 2|math_rl, 3|joint_rl.")
@preset_option
@click.option("--init-from", default=None, type=click.Path(exists=True),
              help="Checkpoint (or HF folder) the first stage starts from instead of the previous stage.")
@click.option("--no-progress", is_flag=True, help="No progress bars (logs only).")
@overrides_argument
def run(run_dir: str, stages: str, preset: str, init_from: str | None, no_progress: bool,
        overrides: tuple[str, ...]) -> None:
    """Run stages colocated in this process (no arguments = all three stages of the tiny CPU preset).

    Overrides are KEY=VALUE with dotted keys (rollout.n_per_prompt=8); prefix STAGE: to aim one stage
    (math_rl:steps=2). SIGTERM/SIGUSR1 save a checkpoint at the next safe point; rerunning resumes exactly.
    """
    from ..launch import preemption
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
def submit() -> None:
    """Submit a stage's job graph to Slurm."""
    not_built("submit", "Slurm orchestration")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(run_dir: str, as_json: bool) -> None:
    """Show a run dir's stages, checkpoints, jobs and latest rewards."""
    import json

    from ..status import collect_status, format_status

    info = collect_status(run_dir)
    click.echo(json.dumps(info, indent=2, default=str) if as_json else format_status(info))


@click.command()
def resume() -> None:
    """Resubmit whatever is unfinished in a run dir."""
    not_built("resume", "Slurm orchestration")


@click.command()
def cancel() -> None:
    """Cancel a run's Slurm jobs."""
    not_built("cancel", "Slurm orchestration")
