"""``mathfirst-hpc shards inspect|export``."""

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


@shards.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--stage", required=True, help="The RL stage whose rollouts to export: math_rl|2 or joint_rl|3.")
@click.option("--format", "fmt", type=click.Choice(["parquet"]), default="parquet", show_default=True)
def export(run_dir: str, out: str, stage: str, fmt: str) -> None:
    """Write one row per response of a stage (prompt, response, domain, data_source, reward, verdict, reason,
    length, iteration, policy step, ...) to OUT; it opens with pandas and datasets.load_dataset("parquet").
    Prints the row count and the throughput."""
    from ..config import canonical_stage
    from ..export import export_rollouts

    result = export_rollouts(run_dir, canonical_stage(stage), out, fmt)
    click.echo(f"wrote {result.rows} rows from {result.shards} shards to {result.path} in {result.seconds:.2f} s "
               f"({result.rows_per_s:,.0f} rows/s)")
