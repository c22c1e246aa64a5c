"""``tollmeter focus-export``: FOCUS 1.2 cost and usage rows from the ledger, as Parquet or
CSV, for FinOps tools. See docs/billing.md for the columns and how to load the file.

Exit codes: 0 written; 1 the ledger could not be read or the file written; 2 invalid
arguments or configuration.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import NoReturn, cast

import click

from tollmeter.collector._cli_days import day_range_options
from tollmeter.collector._cli_ledger import (
    EXIT_FAILURE,
    EXIT_INVALID,
    ledger_options,
    load_ledger_config,
)
from tollmeter.collector.billing import ledger_events
from tollmeter.collector.billing._focus import ChargePeriod, FocusOptions, day_bounds, focus_rows
from tollmeter.collector.billing._focus_write import FocusFormat, write_focus
from tollmeter.collector.storage import open_ledger
from tollmeter.semconv.errors import TollmeterError

__all__ = ["focus_export_command"]


@click.command("focus-export")
@ledger_options(data_dir_help="Data directory holding ledger.db.")
@day_range_options
@click.option(
    "--period",
    type=click.Choice(["hour", "day"]),
    default="day",
    show_default=True,
    help="Charge period of each row.",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["parquet", "csv"]),
    default="parquet",
    show_default=True,
    help="File format.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write."
)
@click.option(
    "--billing-account-id",
    default="tollmeter",
    show_default=True,
    help="BillingAccountId of every row (the account the usage is billed to).",
)
@click.option(
    "--billing-account-name",
    default="tollmeter",
    show_default=True,
    help="BillingAccountName of every row.",
)
@click.option(
    "--include-internal",
    is_flag=True,
    help="Also export usage marked internal (the operator's own calls), left out by default.",
)
def focus_export_command(
    config_file: Path | None,
    data_dir: str | None,
    storage_url: str | None,
    start: date,
    end: date,
    period: str,
    file_format: str,
    out: Path,
    billing_account_id: str,
    billing_account_name: str,
    include_internal: bool,
) -> None:
    """Write FOCUS 1.2 cost and usage rows from the ledger, as Parquet or CSV."""
    config = load_ledger_config(
        "focus-export", config_file, {"data_dir": data_dir, "storage.url": storage_url}
    )
    if end <= start:
        _fail("--to must be after --from", EXIT_INVALID)
    options = FocusOptions(
        period=cast(ChargePeriod, period),
        billing_account_id=billing_account_id,
        billing_account_name=billing_account_name,
        include_internal=include_internal,
    )
    first, last = day_bounds(start, end)
    try:
        with open_ledger(config.storage_url) as ledger:
            rows = focus_rows(ledger_events(ledger, first, last), options)
        write_focus(rows, out, cast(FocusFormat, file_format))
    except (TollmeterError, OSError) as exc:
        _fail(str(exc), EXIT_FAILURE)
    summary = {
        "out": str(out),
        "rows": len(rows),
        "requests": sum(row["x_Requests"] for row in rows),
        "billed_cost": {
            currency: str(sum((r["BilledCost"] for r in rows if r["BillingCurrency"] == currency),
                              Decimal(0)))
            for currency in sorted({row["BillingCurrency"] for row in rows})
        },
    }  # fmt: skip
    click.echo(json.dumps(summary))


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"tollmeter focus-export: {message}", err=True)
    sys.exit(code)
