"""Options and arguments shared by the command files."""

from __future__ import annotations

import click


overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
preset_option = click.option("--preset", default="tiny", show_default=True,
                             help="Config preset folder under stages/ (tiny, qwen3-4b, llama3.1-8b).")
init_from_option = click.option(
    "--init-from", default=None, type=click.Path(exists=True),
    help="Checkpoint (or HF folder) the first stage starts from instead of the previous stage's final.")
