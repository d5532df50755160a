"""``mathfirst-hpc sandbox serve|run``."""

from __future__ import annotations

import click

from .common import not_built


@click.group()
def sandbox() -> None:
    """Code-execution sandbox: an isolated HTTP queue service and one-off runs."""


@sandbox.command("serve")
def serve() -> None:
    """Start the sandbox HTTP queue service."""
    not_built("sandbox serve", "sandbox")


@sandbox.command("run")
def run_one() -> None:
    """Run one program with the sandbox's isolation and print a JSON result."""
    not_built("sandbox run", "sandbox")
