"""``mathfirst-hpc shards inspect``."""

from __future__ import annotations

import json

import click


@click.group()
def shards() -> None:
    """HDF5 rollout shards."""


@shards.command("inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect(paths: tuple[str, ...], as_json: bool) -> None:
    """Print counts, mean reward by domain and length percentiles of shards (files or folders)."""
    from ..shards import expand_shard_paths, format_inspection, inspect_shards

    info = inspect_shards(expand_shard_paths(paths))
    click.echo(json.dumps(info, indent=2) if as_json else format_inspection(info))
