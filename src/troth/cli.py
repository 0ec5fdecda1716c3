"""Command line (placeholder: serve only)."""

from __future__ import annotations

import click

from troth.server.main import serve as run_server


@click.group()
def main() -> None:
    """troth: durable promises."""


@main.command()
@click.option("--host", default="127.0.0.1", envvar="TROTH_HOST", show_envvar=True)
@click.option("--port", default=8001, type=int, envvar="TROTH_PORT", show_envvar=True)
@click.option("--store", default="sqlite:///troth.db", envvar="TROTH_STORE", show_envvar=True)
def serve(host: str, port: int, store: str) -> None:
    """Run the server."""
    run_server(host=host, port=port, store_url=store)
