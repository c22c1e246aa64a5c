"""``tollmeter verify``: recompute the ledger's hash chain, or check exported files.

Without ``--export`` the ledger named by the configuration (or ``--storage-url``) is
walked and the first altered, removed or inserted event is named. With ``--export DIR``
only the files are read: each Parquet file against its manifest, and the manifests
against each other.

Exit codes: 0 the chain holds; 1 a break was found, or the ledger or files could not be
read; 2 invalid configuration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import click

from tollmeter.collector._cli_ledger import (
    ledger_options,
    load_ledger_config,
)
from tollmeter.semconv.errors import TollmeterError

__all__ = ["verify_command"]

EXIT_BROKEN = 1


@click.command("verify")
@ledger_options(data_dir_help="Data directory holding ledger.db (default: ./tollmeter-data).")
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Check the Parquet files and manifests in this directory instead of the ledger.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_command(
    config_file: Path | None,
    data_dir: str | None,
    storage_url: str | None,
    export_dir: Path | None,
    as_json: bool,
) -> None:
    """Recompute the ledger's hash chain and name the first altered, removed or inserted event."""
    if export_dir is not None:
        from tollmeter.collector.export._verify import verify_export

        try:
            export_verdict = verify_export(export_dir)
        except (OSError, TollmeterError) as exc:
            _fail(f"cannot read {export_dir}: {exc}")
        _report(export_verdict.to_json(), export_verdict.describe(), export_verdict.ok, as_json)
        return
    config = load_ledger_config(
        "verify", config_file, {"data_dir": data_dir, "storage.url": storage_url}
    )
    from tollmeter.collector.storage import open_ledger
    from tollmeter.collector.storage._verify import verify_ledger

    try:
        with open_ledger(config.storage_url) as ledger:
            verdict = verify_ledger(ledger)
    except TollmeterError as exc:
        _fail(f"cannot read the ledger: {exc}")
    if verdict.problem is None:
        text = f"OK: {verdict.events} events in {verdict.commits} commits, head {verdict.head}"
        if verdict.checkpoint is not None:
            text += (
                f"; events up to sequence {verdict.checkpoint.last_sequence} (commit "
                f"{verdict.checkpoint.commit}) pruned by retention, checkpoint head "
                f"{verdict.checkpoint.head}"
            )
    else:
        text = (
            f"BROKEN after {verdict.events} good events in {verdict.commits} commits: "
            f"{verdict.problem.describe()}"
        )
    _report(verdict.to_json(), text, verdict.ok, as_json)


def _report(payload: dict[str, object], text: str, ok: bool, as_json: bool) -> None:
    click.echo(json.dumps(payload) if as_json else text)
    if not ok:
        sys.exit(EXIT_BROKEN)


def _fail(message: str) -> NoReturn:
    click.echo(f"tollmeter verify: {message}", err=True)
    sys.exit(EXIT_BROKEN)
