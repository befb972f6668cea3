"""``python -m outlast.worker TARGET... [flags]``: the worker without the rest of the CLI."""

import typer

from outlast.worker.cli import register

cli = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
register(cli)

if __name__ == "__main__":
    cli()
