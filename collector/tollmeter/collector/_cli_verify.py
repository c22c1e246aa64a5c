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
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from tollmeter.collector._config import Config
from tollmeter.collector.errors import InvalidConfig
from tollmeter.semconv.errors import TollmeterError

__all__ = ["verify_command"]

EXIT_BROKEN = 1
EXIT_INVALID_CONFIG = 2


@click.command("verify")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TOLLMETER_CONFIG",
    show_envvar=True,
    help="YAML configuration file to load.",
)
@click.option("--data-dir", help="Data directory holding ledger.db (default: ./tollmeter-data).")
@click.option("--storage-url", help="Ledger URL, e.g. postgresql://... (default: the data dir's).")
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
    overrides = {k: v for k, v in (("data_dir", data_dir), ("storage.url", storage_url)) if v}
    try:
        config = Config.load(config_file, environ=os.environ, overrides=overrides)
    except InvalidConfig as exc:
        click.echo("invalid configuration:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_INVALID_CONFIG)
    if config.storage.url is None and not (config.data_dir / "ledger.db").is_file():
        _fail(f"no ledger in {config.data_dir}")
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
