"""``mathfirst-hpc eval``, ``analyze`` and ``report``."""

from __future__ import annotations

import click

from .common import not_built


@click.command("eval")
def eval_cmd() -> None:
    """Offline batch benchmark evaluation of checkpoints."""
    not_built("eval", "evaluation")


@click.group()
def analyze() -> None:
    """Analyses of responses (reasoning skills)."""


@analyze.command("skills")
def skills() -> None:
    """Label responses for backtracking, verification, subgoal setting, enumeration."""
    not_built("analyze skills", "evaluation")


@click.command()
def report() -> None:
    """Write an HTML + markdown report with plots for a run dir."""
    not_built("report", "evaluation")
