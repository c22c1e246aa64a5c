"""``tollmeter focus-export``: FOCUS rows from a real SQLite ledger, read back with pyarrow,
checked against the ledger's exact totals and by the FinOps Foundation's validator."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tollmeter.collector._cli_focus import focus_export_command
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.billing._focus import FOCUS_COLUMNS
from tollmeter.collector.storage import UsageQuery, open_ledger

DAY = datetime(2026, 11, 30, tzinfo=timezone.utc)
# The validator's 1.0 rule set predates four FOCUS 1.0 column names.
_RULE_SET_NAMES = {
    "ProviderName": "Provider",
    "PublisherName": "Publisher",
    "InvoiceIssuerName": "InvoiceIssuer",
    "ResourceId": "ResourceID",
}


def _event(n: int, *, hours: float, **fields: Any) -> UsageEvent:
    moment = DAY + timedelta(hours=hours)
    values: dict[str, Any] = {
        "event_id": f"event-{n}",
        "event_time_ns": int(moment.timestamp()) * 1_000_000_000,
        "provider": "openai",
        "operation": "chat",
        "tenant_id": "acme",
        "request_model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini",
        "input_tokens": 1000,
        "cache_read_input_tokens": 200,
        "output_tokens": 300,
        "reasoning_output_tokens": 50,
        "total_tokens": 1300,
        "cost": Decimal("0.000123456789"),
        "currency": "USD",
        **fields,
    }
    return UsageEvent(**values)


EVENTS = [
    _event(1, hours=1, project_id="proj_a", feature="search"),
    _event(2, hours=2.5, project_id="proj_a", feature="search"),
    _event(3, hours=2, tenant_id="globex", cost=Decimal("1.5")),
    _event(4, hours=3, provider="anthropic", request_model="claude-3-5-haiku-latest",
           response_model="claude-3-5-haiku-latest", cache_write_input_tokens=100,
           cost=Decimal("0.004")),
    _event(5, hours=4, usage_source="estimate", cost=Decimal("0.000000000001")),
    _event(6, hours=5, request_model="mystery-model", response_model="mystery-model",
           cost=None, currency=None, price_source="unpriced: unknown model mystery-model"),
    _event(7, hours=25, tenant_id="globex", cost=Decimal("2.25")),  # the next day
    _event(8, hours=-30, tenant_id="acme"),  # before the range
]  # fmt: skip


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    with open_ledger(f"sqlite:///{directory / 'ledger.db'}") as ledger:
        ledger.append(EVENTS)
    return directory


@pytest.fixture
def export(data_dir: Path, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    def run(file_format: str = "parquet", period: str = "day") -> dict[str, Any]:
        out = tmp_path / f"focus-{period}.{file_format}"
        result = CliRunner().invoke(
            focus_export_command,
            ["--data-dir", str(data_dir), "--from", "2026-11-30", "--to", "2026-12-02",
             "--format", file_format, "--period", period, "--out", str(out)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return {**json.loads(result.stdout), "out": out}

    return run


def _ledger_totals(data_dir: Path) -> tuple[Decimal, dict[str, int]]:
    start, end = DAY, DAY + timedelta(days=2)
    with open_ledger(f"sqlite:///{data_dir / 'ledger.db'}") as ledger:
        (row,) = ledger.query_usage(UsageQuery(start=start, end=end))
    tokens = {
        "x_UncachedInputTokens": row.uncached_input_tokens,
        "x_CacheReadInputTokens": row.cache_read_input_tokens,
        "x_CacheWriteInputTokens": row.cache_write_input_tokens,
        "x_OutputTokens": row.output_tokens,
        "x_ReasoningOutputTokens": row.reasoning_output_tokens,
        "x_Requests": row.requests,
    }
    assert row.cost is not None
    return row.cost, tokens


@pytest.mark.parametrize("period", ["day", "hour"])
def test_parquet_rows_add_up_to_the_ledger_exactly(data_dir, export, period):
    written = export("parquet", period)
    table = pq.read_table(written["out"])
    assert table.column_names == list(FOCUS_COLUMNS)
    rows = table.to_pylist()
    cost, tokens = _ledger_totals(data_dir)
    assert sum((r["BilledCost"] for r in rows), Decimal(0)) == cost
    assert Decimal(written["billed_cost"]["USD"]) == cost
    for column, total in tokens.items():
        assert sum(r[column] for r in rows) == total
    step = timedelta(hours=1) if period == "hour" else timedelta(days=1)
    for row in rows:
        assert row["ChargePeriodEnd"] - row["ChargePeriodStart"] == step
        assert row["BillingPeriodStart"] <= row["ChargePeriodStart"]
        assert row["ChargePeriodEnd"] <= row["BillingPeriodEnd"]
        assert row["BillingPeriodStart"].day == 1
        assert row["ChargeCategory"] == "Usage"
        assert row["ChargeClass"] is None
        assert row["ChargeFrequency"] == "Usage-Based"
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["ServiceSubcategory"] == "Generative AI"
        assert row["SubAccountType"] == "Tenant"
        assert row["ConsumedUnit"] == row["PricingUnit"] == "Tokens"
        assert row["ConsumedQuantity"] == row["PricingQuantity"] == (
            row["x_UncachedInputTokens"] + row["x_CacheReadInputTokens"]
            + row["x_CacheWriteInputTokens"] + row["x_OutputTokens"]
        )  # fmt: skip
        assert row["BilledCost"] == row["EffectiveCost"] == row["ListCost"] == row["ContractedCost"]
        assert row["ProviderName"] == row["PublisherName"] == row["InvoiceIssuerName"]
        assert isinstance(json.loads(row["Tags"]), dict)
    assert {r["SubAccountId"] for r in rows} == {"acme", "globex"}
    (anthropic,) = [r for r in rows if r["ProviderName"] == "Anthropic"]
    assert (anthropic["ServiceName"], anthropic["ResourceId"]) == (
        "Anthropic API",
        "claude-3-5-haiku-latest",
    )
    tagged = [
        r for r in rows if json.loads(r["Tags"]) == {"project": "proj_a", "feature": "search"}
    ]
    assert sum(r["x_Requests"] for r in tagged) == 2
    (unpriced,) = [r for r in rows if r["x_PriceStatus"] == "unpriced"]
    assert (unpriced["ResourceId"], unpriced["BilledCost"]) == ("mystery-model", Decimal(0))
    assert sum(r["x_EstimatedRequests"] for r in rows) == 1


def test_hourly_rows_split_what_daily_rows_hold(export):
    daily = pq.read_table(export("parquet", "day")["out"]).to_pylist()
    hourly = pq.read_table(export("parquet", "hour")["out"]).to_pylist()
    assert len(hourly) > len(daily)
    assert sum(r["BilledCost"] for r in hourly) == sum(r["BilledCost"] for r in daily)


def test_csv_passes_the_focus_validator(export, focus_validator, tmp_path):
    written = export("csv")
    with written["out"].open(newline="") as handle:
        lines = list(csv.reader(handle))
    header, body = lines[0], lines[1:]
    assert header == list(FOCUS_COLUMNS)
    parquet_rows = pq.read_table(export("parquet")["out"]).to_pylist()
    assert len(body) == len(parquet_rows)
    assert sum(Decimal(line[0]) for line in body) == sum(r["BilledCost"] for r in parquet_rows)
    renamed = tmp_path / "focus-1.0-names.csv"
    with renamed.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([_RULE_SET_NAMES.get(name, name) for name in header])
        writer.writerows(body)
    # The validator's 1.0 rules still query ChargeType (ChargeCategory's earlier name).
    with_alias = tmp_path / "focus-1.0-rules.csv"
    with renamed.open(newline="") as source, with_alias.open("w", newline="") as target:
        writer = csv.writer(target)
        for index, line in enumerate(csv.reader(source)):
            writer.writerow(
                [*line, "ChargeType" if index == 0 else line[header.index("ChargeCategory")]]
            )
    verdict = focus_validator.validate(with_alias)
    assert verdict.passed, verdict.output


def test_the_documented_duckdb_query_reads_the_file(data_dir, export):
    import duckdb

    out = export("parquet")["out"]
    rows = duckdb.sql(
        f"""
        SELECT SubAccountId AS tenant, ProviderName AS provider, ResourceId AS model,
               date_trunc('month', ChargePeriodStart) AS month, BillingCurrency,
               sum(BilledCost) AS billed, sum(x_CacheReadInputTokens) AS cache_read_tokens,
               sum(ConsumedQuantity) AS tokens,
               max(json_extract_string(Tags, '$.project')) AS project
        FROM read_parquet('{out}')
        WHERE ChargeCategory = 'Usage'
        GROUP BY ALL
        ORDER BY billed DESC
        """
    ).fetchall()
    cost, _ = _ledger_totals(data_dir)
    assert sum(row[5] for row in rows) == cost
    assert rows[0][:3] == ("globex", "OpenAI", "gpt-4o-mini")
    assert "proj_a" in {row[8] for row in rows}


def test_a_postgresql_ledger_exports_and_reconciles_like_sqlite(
    postgres_url, data_dir, export, tmp_path
):
    from tollmeter.collector.billing import ReportRow, reconcile

    with open_ledger(postgres_url) as ledger:
        ledger.append(EVENTS)
    out = tmp_path / "focus-postgres.parquet"
    result = CliRunner().invoke(
        focus_export_command,
        ["--storage-url", postgres_url, "--data-dir", str(tmp_path / "unused"),
         "--from", "2026-11-30", "--to", "2026-12-02", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    from_sqlite = pq.read_table(export("parquet")["out"]).to_pylist()
    assert pq.read_table(out).to_pylist() == from_sqlite

    day = DAY.date()
    report = [
        ReportRow(provider="openai", day=day, model="gpt-4o-mini", uncached_input_tokens=3200,
                  cache_read_input_tokens=800, output_tokens=1200),
        ReportRow(provider="anthropic", day=day, model="claude-3-5-haiku-latest",
                  uncached_input_tokens=700, cache_read_input_tokens=200,
                  cache_write_input_tokens=100, output_tokens=300),
    ]  # fmt: skip
    with open_ledger(postgres_url) as ledger:
        compared = reconcile(
            ledger, report, [], providers=["openai", "anthropic"], start=day,
            end=day + timedelta(days=1),
        )  # fmt: skip
    drift = {(r.provider, r.model): {d.measure: d for d in r.measures} for r in compared.rows}
    # Four gpt-4o-mini calls that day, over two tenants; the unreported model is all drift.
    assert drift[("openai", "gpt-4o-mini")]["output_tokens"].difference == 0
    assert all(d.difference == 0 for d in drift[("anthropic", "claude-3-5-haiku-latest")].values())
    assert drift[("openai", "mystery-model")]["output_tokens"].percent == -100


def test_the_validator_refuses_a_file_without_billed_cost(export, focus_validator, tmp_path):
    # Proves the verdict above is the validator's: the same rows without a required column fail.
    with export("csv")["out"].open(newline="") as handle:
        lines = list(csv.reader(handle))
    dropped = lines[0].index("BilledCost")
    broken = tmp_path / "no-billed-cost.csv"
    with broken.open("w", newline="") as handle:
        csv.writer(handle).writerows([line[:dropped] + line[dropped + 1 :] for line in lines])
    verdict = focus_validator.validate(broken)
    assert not verdict.passed
    assert "BilledCost" in verdict.output
