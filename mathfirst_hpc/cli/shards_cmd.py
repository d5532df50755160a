"""``mathfirst-hpc shards inspect``."""

from __future__ import annotations

import click

from .common import not_built


@click.group()
def shards() -> None:
    """HDF5 rollout shards."""


@shards.command("inspect")
@click.argument("paths", nargs=-1, required=True)
def inspect(paths: tuple[str, ...]) -> None:
    """Print counts, mean reward by domain and length percentiles of shards."""
    not_built("shards inspect", "foundation")
