"""The billing export through a real ``tollmeter collector`` process.

Spans go in over OTLP/HTTP from the OpenTelemetry SDK; the Parquet files that come out
are read with DuckDB and pyarrow and must match the usage API to the token and to the
last decimal of cost, also after the collector is killed and restarted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import httpx
import pyarrow.dataset as ds
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

ADMIN = "admin-key-for-billing-tests"
_TOLLMETER = Path(sys.executable).with_name("tollmeter")
_LISTENING = re.compile(r"tollmeter collector: (OTLP/HTTP|management API) listening on (\S+)")

MONTHLY_INVOICE = """
    SET TimeZone = 'UTC';
    SELECT
        tenant_id,
        coalesce(response_model, request_model)      AS model,
        date_trunc('month', date)                    AS month,
        currency,
        count(*)                                     AS calls,
        sum(uncached_input_tokens)                   AS uncached_input_tokens,
        sum(cache_read_input_tokens)                 AS cache_read_input_tokens,
        sum(cache_write_input_tokens)                AS cache_write_input_tokens,
        sum(output_tokens)                           AS output_tokens,
        sum(reasoning_output_tokens)                 AS reasoning_output_tokens,
        sum(cost)                                    AS cost,
        count(*) FILTER (WHERE cost IS NULL)         AS unpriced_calls
    FROM read_parquet('{directory}/*/*.parquet', hive_partitioning = true)
    GROUP BY ALL
    ORDER BY tenant_id, model, currency
"""


class CollectorProcess:
    def __init__(self, config: Path, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.process: subprocess.Popen[str] | None = None
        self.endpoints: dict[str, str] = {}

    def start(self) -> CollectorProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLMETER_")}
        self.process = subprocess.Popen(
            [str(_TOLLMETER), "collector", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        while len(self.endpoints) < 2:
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError("the collector did not start")
            if match := _LISTENING.search(line):
                self.endpoints[match.group(1)] = match.group(2)
        return self

    @property
    def api(self) -> str:
        return self.endpoints["management API"].rstrip("/")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


@pytest.fixture
def billing_setup(tmp_path: Path) -> tuple[Path, Path]:
    data_dir = tmp_path / "data"
    config = tmp_path / "tollmeter.yaml"
    config.write_text(
        json.dumps(
            {
                "collector_id": "billing-e2e",
                "data_dir": str(data_dir),
                "receivers": {
                    "grpc": {"endpoint": "127.0.0.1:0"},
                    "http": {"endpoint": "127.0.0.1:0"},
                },
                "management": {"endpoint": "127.0.0.1:0", "admin_keys": [ADMIN]},
                "export": {"interval": "200ms", "batch_size": 25},
                "pricing": {
                    "overrides": [
                        {
                            "model": "gpt-4o-mini",
                            "tenant": "acme",
                            "input_per_mtok": "0.1",
                            "output_per_mtok": "0.3",
                        }
                    ]
                },
            }
        )
    )
    return config, data_dir


def _send(endpoint: str, tenant: str, model: str, count: int, prefix: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "billing-app"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
    )
    tracer = provider.get_tracer("billing-e2e")
    for index in range(count):
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.response.id": f"{prefix}-{index}",
            "gen_ai.usage.input_tokens": 1000 + index,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.usage.output_tokens": 200 + index,
            "tollmeter.tenant.id": tenant,
        }
        with tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
        ):
            pass
    provider.shutdown()


def _usage(api: str) -> dict[str, tuple[int, int, Decimal]]:
    response = httpx.get(
        f"{api}/api/v1/usage",
        params={"group_by": "tenant"},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    rows = body["rows"] if isinstance(body, dict) else body
    return {
        row["tenant"]: (
            row["input_tokens"],
            row["output_tokens"],
            Decimal(row["cost"] or 0),
        )
        for row in rows
    }


def _parquet_totals(directory: Path) -> dict[str, tuple[int, int, Decimal]]:
    query = f"""
        SELECT tenant_id, sum(input_tokens), sum(output_tokens), coalesce(sum(cost), 0)
        FROM read_parquet('{directory}/*/*.parquet', hive_partitioning = true)
        GROUP BY tenant_id
    """
    with duckdb.connect() as con:
        duck = {t: (int(i), int(o), Decimal(c)) for t, i, o, c in con.execute(query).fetchall()}
    table = ds.dataset(directory, format="parquet", partitioning="hive").to_table()
    arrow: dict[str, tuple[int, int, Decimal]] = {}
    for row in table.select(["tenant_id", "input_tokens", "output_tokens", "cost"]).to_pylist():
        i, o, c = arrow.get(row["tenant_id"], (0, 0, Decimal(0)))
        arrow[row["tenant_id"]] = (
            i + row["input_tokens"],
            o + row["output_tokens"],
            c + (row["cost"] or Decimal(0)),
        )
    assert duck == arrow
    return duck


def _event_ids(directory: Path) -> list[str]:
    table = ds.dataset(directory, format="parquet", partitioning="hive").to_table()
    return table.column("event_id").to_pylist()


def _export_now(api: str) -> dict[str, object]:
    response = httpx.post(
        f"{api}/api/v1/export", headers={"authorization": f"Bearer {ADMIN}"}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_parquet_totals_match_the_usage_api_across_a_kill_and_restart(
    billing_setup: tuple[Path, Path],
) -> None:
    config, data_dir = billing_setup
    export_dir = data_dir / "export"
    first = CollectorProcess(config, data_dir).start()
    try:
        _send(first.endpoints["OTLP/HTTP"], "acme", "gpt-4o-mini", 30, "a")
        _send(first.endpoints["OTLP/HTTP"], "globex", "gpt-4o", 30, "g")
        _send(first.endpoints["OTLP/HTTP"], "globex", "house-model-x", 5, "x")
        assert httpx.post(f"{first.api}/api/v1/export", timeout=30).status_code == 401
        # Killed while periodic exports of small batches are running.
        time.sleep(0.3)
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = CollectorProcess(config, data_dir).start()
    try:
        _send(second.endpoints["OTLP/HTTP"], "acme", "gpt-4o-mini", 10, "a2")
        summary = _export_now(second.api)
        assert summary["status"] == "success"
        usage = _usage(second.api)
    finally:
        assert second.stop() == 0

    ids = _event_ids(export_dir)
    assert len(ids) == len(set(ids)) == 75
    assert _parquet_totals(export_dir) == usage
    assert usage["acme"][2] == sum(
        (Decimal(1000 + i) * Decimal("0.1") + Decimal(200 + i) * Decimal("0.3")) / 10**6
        for i in [*range(30), *range(10)]
    )

    with duckdb.connect() as con:
        invoice = con.execute(MONTHLY_INVOICE.format(directory=export_dir)).fetchall()
    lines = {(row[0], row[1]): row for row in invoice}
    assert lines[("acme", "gpt-4o-mini")][4] == 40
    assert lines[("globex", "house-model-x")][10] is None
    assert lines[("globex", "house-model-x")][11] == 5
    assert lines[("globex", "gpt-4o")][3] == "USD"


def test_graceful_shutdown_exports_the_last_events(billing_setup: tuple[Path, Path]) -> None:
    config, data_dir = billing_setup
    config.write_text(config.read_text().replace('"200ms"', '"1h"'))
    collector = CollectorProcess(config, data_dir).start()
    try:
        _send(collector.endpoints["OTLP/HTTP"], "acme", "gpt-4o", 12, "s")
    finally:
        assert collector.stop() == 0
    assert len(_event_ids(data_dir / "export")) == 12
