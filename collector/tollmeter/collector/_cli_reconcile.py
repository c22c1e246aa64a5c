"""``tollmeter reconcile-report``: import the providers' usage and cost reports and compare
them with the ledger, per day and model (and project or API key).

Reports come over HTTP with an admin key (``--openai-admin-key``,
``--anthropic-admin-key``, or their ``TOLLMETER_*`` variables) or from CSV downloads
(``--usage-csv`` / ``--cost-csv`` with one ``--provider``). They are kept in
``<data-dir>/reports.db``; the ledger is only read.

Exit codes: 0 compared; 1 a report could not be imported or the ledger read (nothing
of that report is kept); 2 invalid arguments or configuration; 3 ``--fail-over`` was
given and some measure drifted by at least that percentage.
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
from tollmeter.collector.billing import (
    GRAINS,
    PROVIDERS,
    Grain,
    Provider,
    Reconciliation,
    ReportKind,
    ReportSource,
    ReportStore,
    import_api_reports,
    import_csv_report,
    reconcile_stored,
)
from tollmeter.collector.storage import open_ledger
from tollmeter.semconv.errors import TollmeterError

__all__ = ["reconcile_command"]

EXIT_DRIFT = 3


@click.command("reconcile-report")
@ledger_options(data_dir_help="Data directory holding ledger.db and reports.db.")
@day_range_options
@click.option(
    "--provider",
    "providers",
    multiple=True,
    type=click.Choice(PROVIDERS),
    help="Provider to import and compare (repeatable; default: those with a key).",
)
@click.option(
    "--openai-admin-key",
    envvar="TOLLMETER_OPENAI_ADMIN_KEY",
    help="OpenAI admin key for the organisation Usage and Costs APIs.",
)
@click.option(
    "--anthropic-admin-key",
    envvar="TOLLMETER_ANTHROPIC_ADMIN_KEY",
    help="Anthropic Admin API key for the usage and cost reports.",
)
@click.option(
    "--openai-base-url", default="", help="OpenAI API base URL (default: api.openai.com)."
)
@click.option(
    "--anthropic-base-url", default="", help="Anthropic API base URL (default: api.anthropic.com)."
)
@click.option(
    "--usage-csv",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Usage report CSV download to import instead of the API (one --provider).",
)
@click.option(
    "--cost-csv",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Cost report CSV download to import instead of the API (one --provider).",
)
@click.option("--stored", is_flag=True, help="Import nothing; compare the reports already stored.")
@click.option(
    "--by",
    type=click.Choice(GRAINS),
    default="model",
    show_default=True,
    help="Compare per day and model, or also per project or API key.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds for fetching each provider's reports, all pages.",
)
@click.option(
    "--fail-over",
    type=click.FloatRange(min=0),
    default=None,
    help="Exit 3 when some measure drifts by this percentage or more.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def reconcile_command(
    config_file: Path | None,
    data_dir: str | None,
    storage_url: str | None,
    start: date,
    end: date,
    providers: tuple[Provider, ...],
    openai_admin_key: str | None,
    anthropic_admin_key: str | None,
    openai_base_url: str,
    anthropic_base_url: str,
    usage_csv: Path | None,
    cost_csv: Path | None,
    stored: bool,
    by: str,
    timeout: float,
    fail_over: float | None,
    as_json: bool,
) -> None:
    """Compare the providers' usage and cost reports with the ledger, per day and model."""
    config = load_ledger_config(
        "reconcile-report", config_file, {"data_dir": data_dir, "storage.url": storage_url}
    )
    if end <= start:
        _fail("--to must be after --from", EXIT_INVALID)
    keys: dict[Provider, str | None] = {
        "openai": openai_admin_key,
        "anthropic": anthropic_admin_key,
    }
    urls: dict[Provider, str] = {"openai": openai_base_url, "anthropic": anthropic_base_url}
    csvs = usage_csv is not None or cost_csv is not None
    if csvs and len(providers) != 1:
        _fail("--usage-csv and --cost-csv need exactly one --provider", EXIT_INVALID)
    chosen = providers or tuple(p for p in PROVIDERS if keys[p])
    if not chosen:
        _fail("name a --provider, or give an admin key", EXIT_INVALID)
    store = ReportStore(config.data_dir / "reports.db")
    try:
        if csvs:
            files: tuple[tuple[ReportKind, Path | None], ...] = (
                ("usage", usage_csv),
                ("cost", cost_csv),
            )
            for kind, path in files:
                if path is not None:
                    import_csv_report(store, chosen[0], kind, path, start, end)
        elif not stored:
            for provider in chosen:
                key = keys[provider]
                if not key:
                    _fail(f"no admin key for {provider}", EXIT_INVALID)
                source = ReportSource(provider, key, base_url=urls[provider], timeout_s=timeout)
                import_api_reports(store, source, start, end, timeout_s=timeout)
        with open_ledger(config.storage_url) as ledger:
            result = reconcile_stored(store, ledger, chosen, start, end, by=cast(Grain, by))
    except TollmeterError as exc:
        _fail(str(exc), EXIT_FAILURE)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else _table(result))
    if fail_over is not None and any(row.drifted(Decimal(str(fail_over))) for row in result.rows):
        sys.exit(EXIT_DRIFT)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"tollmeter reconcile-report: {message}", err=True)
    sys.exit(code)


def _table(result: Reconciliation) -> str:
    extra = {"project": "PROJECT", "api_key": "API KEY"}.get(result.by)
    header = [
        "PROVIDER",
        "DAY",
        "MODEL",
        *([extra] if extra else []),
        "MEASURE",
        "LEDGER",
        "REPORT",
        "DIFFERENCE",
        "DRIFT %",
    ]
    lines = [header]
    for row in result.rows:
        dimension = [getattr(row, result.by) or "-"] if extra else []
        for drift in row.measures:
            percent = "n/a" if drift.percent is None else f"{drift.percent:+.2f}"
            lines.append(
                [
                    row.provider,
                    row.day.isoformat(),
                    row.model or "-",
                    *dimension,
                    drift.measure,
                    str(drift.ledger),
                    str(drift.report),
                    f"{drift.difference:+}",
                    percent,
                ]
            )
    if len(lines) == 1:
        return "no usage in the ledger or the reports for these days"
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
