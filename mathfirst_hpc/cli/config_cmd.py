"""``mathfirst-hpc config show``."""

from __future__ import annotations

import click

from .. import config as config_mod
from .common import overrides_argument, preset_option


@click.group()
def config() -> None:
    """Inspect stage configs."""


@config.command("show")
@click.argument("stage")
@overrides_argument
@preset_option
@click.option("--config-file", type=click.Path(dir_okay=False), default=None, help="A stage YAML instead of a preset.")
@click.option("--check-files/--no-check-files", default=False, show_default=True,
              help="Also check that data files and model folders exist.")
def show(stage: str, overrides: tuple[str, ...], preset: str, config_file: str | None, check_files: bool) -> None:
    """Print the resolved config of STAGE (sft|stage1, math_rl|stage2, joint_rl|stage3) with overrides."""
    cfg = config_mod.load_stage_config(stage, preset=preset, overrides=list(overrides), config_path=config_file,
                                       check_files=check_files)
    click.echo(config_mod.dump_yaml(cfg), nl=False)
