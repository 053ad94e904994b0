"""The `tribune` command (typer): one entry point for every operation."""

from __future__ import annotations

import typer

app = typer.Typer(help="Operate Tribune: lag, dead-letter queues, outbox, projections.")


@app.callback()
def _root() -> None:
    """Every command reads the platform settings from the environment (TRIBUNE_...)."""


def main() -> None:
    app()
