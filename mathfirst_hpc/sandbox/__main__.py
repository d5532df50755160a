"""``python -m mathfirst_hpc.sandbox serve|run ...``: the sandbox commands without the rest of the CLI (what the
container images run). User mistakes print one line and exit 2, as in ``mathfirst-hpc``."""

import sys

import click

from ..cli.sandbox_cmd import run_one, serve
from ..errors import MathfirstError


def main() -> None:
    group = click.Group(name="sandbox", help="Code-execution sandbox: an HTTP queue service and one-off runs.",
                        commands={"serve": serve, "run": run_one})
    try:
        group(prog_name="python -m mathfirst_hpc.sandbox")
    except MathfirstError as exc:
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
