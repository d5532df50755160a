"""Small helpers shared by the command files: the not-built refusal and override arguments."""

from __future__ import annotations

import click

from ..errors import NotBuiltError


def not_built(what: str, issue: str) -> None:
    """Refuse a command that does not exist yet: one line, exit code 2, never a silent stub."""
    raise NotBuiltError(f"'{what}' is not built yet", hint=f"tracked in the {issue} issue")


overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
preset_option = click.option("--preset", default="tiny", show_default=True,
                             help="Config preset folder under stages/ (tiny, qwen3-4b, llama3.1-8b).")
