"""``mathfirst-hpc reward check|score``."""

from __future__ import annotations

import click

from .common import not_built


@click.group()
def reward() -> None:
    """Score responses with the six-domain verifiers."""


@reward.command("check")
def check() -> None:
    """Score one response against a reference; prints {score, verdict, reason}."""
    not_built("reward check", "rewards")


@reward.command("score")
def score() -> None:
    """Score a JSONL file of rows in bulk."""
    not_built("reward score", "rewards")
