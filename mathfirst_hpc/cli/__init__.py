"""The ``mathfirst-hpc`` command line. Commands only parse, call one library function and print.

A :class:`~mathfirst_hpc.errors.MathfirstError` (a user mistake) is printed as one line on stderr with exit code
2; anything else is a bug and keeps its traceback. Each command group lives in its own file here.
"""

from __future__ import annotations

import sys

import click

from ..errors import MathfirstError
from .config_cmd import config
from .eval_cmd import analyze, eval_cmd, report
from .reward_cmd import reward
from .run_cmd import cancel, resume, run, status, submit
from .sandbox_cmd import sandbox
from .shards_cmd import shards
from .study_cmd import study


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except MathfirstError as exc:
            click.echo(f"error: {exc.one_line()}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mathfirst-hpc")
def cli() -> None:
    """Math-first reasoning curriculum: SFT -> math DAPO -> joint six-domain RL, on Slurm or locally."""


for command in (run, submit, status, resume, cancel, eval_cmd, analyze, report, study, sandbox, reward, shards,
                config):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="mathfirst-hpc")
