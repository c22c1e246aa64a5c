"""``tollmeter demo``: run the collector, the fake LLM server and an instrumented app."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tollmeter.collector._demo import DEMO_APP, DEMO_CONFIG, run_demo
from tollmeter.semconv.errors import TollmeterError

__all__ = ["demo_command"]


@click.command("demo")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEMO_CONFIG,
    show_default="the quickstart's, shipped with tollmeter",
    help="Collector configuration of the demo (limits, data directory).",
)
@click.option(
    "--app",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEMO_APP,
    show_default="the quickstart app, shipped with tollmeter",
    help="Instrumented application to run against the collector.",
)
@click.option(
    "--serve/--no-serve",
    default=None,
    help="Keep the collector up after the demo so its console can be opened, until "
    "Ctrl-C. Default: serve when run from a terminal.",
)
def demo_command(config_path: Path, app: Path, serve: bool | None) -> None:
    """Show per-tenant usage, a denied request and the Parquet export, offline.

    Works from any directory; the data (ledger, Parquet files) goes to the configuration's
    data directory, ./demo-data for the shipped one.
    """
    try:
        if serve is None:
            serve = sys.stdin.isatty() and sys.stdout.isatty()
        run_demo(config_path=config_path, app=app, echo=click.echo, serve=serve)
    except TollmeterError as exc:
        raise click.ClickException(str(exc)) from exc
