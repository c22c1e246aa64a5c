"""``tollmeter export``: write the Parquet billing export now, from a data directory.

Safe to run while a collector uses the same ledger and export directory: the
two take turns on the directory lock and share the cursor kept in the ledger.

When more than one batch (``export.batch_size`` events) is to be written, progress
with rate and time left goes to stderr: a bar on a terminal, plain lines otherwise.

Exit codes: 0 exported (or nothing to do); 1 the export failed or there is no
ledger; 2 invalid configuration; 75 another export held the directory too long.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tollmeter.collector._cli_ledger import (
    EXIT_FAILURE,
    ledger_options,
    load_ledger_config,
)
from tollmeter.collector._cli_progress import Progress
from tollmeter.collector.export import ExportBusy, Exporter, ExportStatus
from tollmeter.collector.export._cursor import load_cursor
from tollmeter.collector.storage import Ledger, open_ledger
from tollmeter.semconv.errors import TollmeterError

__all__ = ["export_command"]

EXIT_BUSY = 75

# Option name -> configuration key it overrides.
_FLAG_KEYS = {
    "data_dir": "data_dir",
    "storage_url": "storage.url",
    "collector_id": "collector_id",
    "directory": "export.directory",
    "timeout": "export.timeout",
}


@click.command("export")
@ledger_options(data_dir_help="Data directory holding ledger.db (default: ./tollmeter-data).")
@click.option("--directory", help="Export directory (default: <data-dir>/export).")
@click.option("--collector-id", help="Collector id named in the file names.")
@click.option("--timeout", help="Longest run, e.g. 90s or 10m (default: export.timeout).")
@click.option(
    "--rebuild",
    is_flag=True,
    help="Forget the cursor and rewrite every event still in the ledger.",
)
@click.pass_context
def export_command(
    ctx: click.Context, /, config_file: Path | None, rebuild: bool, **options: str | None
) -> None:
    """Export committed usage events not exported yet to Parquet, then print a JSON summary."""
    flags: dict[str, object] = {}
    for name, value in options.items():
        if (
            value is not None
            and ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ):
            flags[_FLAG_KEYS[name]] = value
    config = load_ledger_config("export", config_file, flags)
    try:
        ledger = open_ledger(config.storage_url)
    except TollmeterError as exc:
        click.echo(f"tollmeter export: cannot open the ledger: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    with ledger:
        progress = _ExportProgress(ledger)
        exporter = Exporter.from_config(
            ledger,
            config.export,
            data_dir=config.data_dir,
            collector_id=config.collector_id,
            checkpoint=progress.step,
        )
        try:
            if rebuild:
                exporter.reset()
        except ExportBusy as exc:
            click.echo(f"tollmeter export: {exc}", err=True)
            sys.exit(EXIT_BUSY)
        progress.start(batch_size=config.export.batch_size)
        try:
            result = exporter.export()
        finally:
            progress.close()
    click.echo(json.dumps({"directory": exporter.store.location, **result.to_json()}))
    if result.status is ExportStatus.BUSY:
        sys.exit(EXIT_BUSY)
    if result.status is ExportStatus.FAILURE:
        sys.exit(EXIT_FAILURE)


class _ExportProgress:
    """Follows the export cursor in the ledger after each batch the exporter commits."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._first = 0
        self._progress: Progress | None = None

    def start(self, *, batch_size: int) -> None:
        self._first = load_cursor(self._ledger).sequence
        pending = self._ledger.last_sequence() - self._first
        if pending > batch_size:
            self._progress = Progress(pending, unit="events")

    def step(self, name: str) -> None:
        if self._progress is not None and name == "cursor_advanced":
            self._progress.update(load_cursor(self._ledger).sequence - self._first)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
