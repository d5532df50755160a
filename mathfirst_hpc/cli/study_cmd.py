"""``mathfirst-hpc study``: the curriculum against the no-math-RL ablation over seeds (``study.py``)."""

from __future__ import annotations

import click

from .common import overrides_argument, preset_option


@click.command()
@click.option("--dir", "study_dir", default="runs/study", show_default=True, type=click.Path(file_okay=False),
              help="Study folder: curriculum/seed_S and ablation/seed_S run dirs, study.{json,md,png}.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds; each runs both arms.")
@preset_option
@click.option("--no-progress", is_flag=True, help="No progress bars (logs only).")
@overrides_argument
def study(study_dir: str, seeds: str, preset: str, no_progress: bool, overrides: tuple[str, ...]) -> None:
    """Run the curriculum (sft -> math_rl -> joint_rl) and the ablation (sft -> joint_rl with as many RL iterations
    as math_rl + joint_rl) for each seed, then print held-out accuracy mean ± std per domain and arm."""
    from ..study import run_study, study_markdown

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"not a comma list of integers: {seeds!r}", param_hint="--seeds") from None
    summary = run_study(study_dir, seed_list, preset, list(overrides), progress=not no_progress,
                        log=lambda m: click.echo(m, err=True))
    click.echo(study_markdown(summary))
    click.echo(f"study: {study_dir}/study.md, plot: {study_dir}/study.png")
