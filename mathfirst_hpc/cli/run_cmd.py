"""``mathfirst-hpc run|submit|status|resume|cancel`` (filled in by the training-core and Slurm work)."""

from __future__ import annotations

import click

from .common import not_built


@click.command()
def run() -> None:
    """Run stages colocated in this process (no arguments = tiny CPU preset)."""
    not_built("run", "training core")


@click.command()
def submit() -> None:
    """Submit a stage's job graph to Slurm."""
    not_built("submit", "Slurm orchestration")


@click.command()
def status() -> None:
    """Show a run dir's stages, jobs and rewards."""
    not_built("status", "foundation")


@click.command()
def resume() -> None:
    """Resubmit whatever is unfinished in a run dir."""
    not_built("resume", "Slurm orchestration")


@click.command()
def cancel() -> None:
    """Cancel a run's Slurm jobs."""
    not_built("cancel", "Slurm orchestration")
