"""Reconciliation end to end: real OpenAI and Anthropic SDK calls, instrumented by
tollmeter, answered by the fake LLM server and metered by a real collector; then the fake
server's usage and cost report endpoints are imported (``tollmeter reconcile-report``)
and compared with the ledger."""

from __future__ import annotations

import csv
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import anthropic
import httpx
import openai
import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import tollmeter
from tollmeter.collector._cli_reconcile import reconcile_command
from tollmeter.collector.billing import (
    ReportError,
    ReportSource,
    ReportStore,
    fetch_report,
    import_api_reports,
)
from tollmeter.fakellm import FakeLLMServer
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.instrumentation.openai import OpenAIInstrumentor

GPT, CLAUDE = "gpt-4o-mini", "claude-3-5-haiku-latest"
PRICES = {
    GPT: {"uncached_input_tokens": "0.15", "cache_read_input_tokens": "0.075",
          "cache_write_input_tokens": "0.15", "output_tokens": "0.60"},
    CLAUDE: {"uncached_input_tokens": "0.80", "cache_read_input_tokens": "0.08",
             "cache_write_input_tokens": "1.00", "output_tokens": "4.00"},
}  # fmt: skip
OVERRIDES = [
    {"model": model, "effective_from": "2020-01-01",
     "input_per_mtok": p["uncached_input_tokens"],
     "cache_read_per_mtok": p["cache_read_input_tokens"],
     "cache_write_per_mtok": p["cache_write_input_tokens"], "output_per_mtok": p["output_tokens"]}
    for model, p in PRICES.items()
]  # fmt: skip
OPENAI_KEY, ANTHROPIC_KEY = "sk-admin-openai-secret", "sk-ant-admin-secret"


@pytest.fixture(scope="module")
def served(
    module_collector_factory: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, FakeLLMServer]]:
    """A collector that metered four OpenAI and three Anthropic calls of today, set to
    reconcile with the fake server's reports and to tell a Python hook about drift."""
    hooks_dir = tmp_path_factory.mktemp("hooks")
    (hooks_dir / "drift_hook.py").write_text(
        "received = []\n\ndef hook(payload):\n    received.append(payload)\n"
    )
    sys.path.insert(0, str(hooks_dir))
    provider = TracerProvider()
    instrumentors = [OpenAIInstrumentor(), AnthropicInstrumentor()]
    with FakeLLMServer() as server:
        collector = module_collector_factory(
            pricing={"overrides": OVERRIDES},
            hooks=[{"type": "python", "target": "drift_hook:hook",
                    "events": ["reconciliation_drift"]}],
            reconciliation={
                "interval": 0,
                "threshold_percent": 5,
                "providers": {
                    "openai": {"admin_key": OPENAI_KEY, "base_url": server.url},
                    "anthropic": {"admin_key": ANTHROPIC_KEY, "base_url": server.url},
                },
            },
        )  # fmt: skip
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{collector.http_endpoint}/v1/traces"))
        )
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider())
        gpt = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-app", project="proj_a")
        claude = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-app")
        with tollmeter.attribute(tenant="acme", project="proj_a"):
            for words in ("one", "two words", "three more words", "and four of them"):
                gpt.chat.completions.create(
                    model=GPT, messages=[{"role": "user", "content": f"count {words}"}]
                )
            for size in (20, 40, 60):
                claude.messages.create(
                    model=CLAUDE, max_tokens=size, messages=[{"role": "user", "content": "hi"}]
                )
        provider.force_flush()
        deadline = time.monotonic() + 30
        while len(collector.events()) < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(collector.events()) == 7
        httpx.put(f"{server.url}/_fake/reports", json={"prices": PRICES}).raise_for_status()
        yield collector, server
        gpt.close()
        claude.close()
    for instrumentor in instrumentors:
        instrumentor.uninstrument()
    provider.shutdown()
    sys.path.remove(str(hooks_dir))


def _today() -> date:
    return datetime.now(timezone.utc).date()


def _reconcile(collector: Any, server: FakeLLMServer, *args: str) -> dict[str, Any]:
    today = _today()
    result = CliRunner().invoke(
        reconcile_command,
        [
            "--data-dir", str(collector.collector.config.data_dir),
            "--from", (today - timedelta(days=2)).isoformat(),
            "--to", (today + timedelta(days=1)).isoformat(),
            "--openai-base-url", server.url,
            "--anthropic-base-url", server.url,
            "--json",
            *args,
        ],
        env={"TOLLMETER_OPENAI_ADMIN_KEY": OPENAI_KEY,
             "TOLLMETER_ANTHROPIC_ADMIN_KEY": ANTHROPIC_KEY},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _measures(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["provider"], row["model"]): row["measures"] for row in report["rows"]}


@pytest.fixture
def settings(served: tuple[Any, FakeLLMServer]) -> Iterator[Callable[..., None]]:
    server = served[1]

    def put(**extra: Any) -> None:
        httpx.put(
            f"{server.url}/_fake/reports", json={"prices": PRICES, **extra}
        ).raise_for_status()

    yield put
    put()


def test_reports_of_what_was_served_match_the_ledger_exactly(served, settings):
    collector, server = served
    measures = _measures(_reconcile(collector, server))
    assert set(measures) == {("openai", GPT), ("anthropic", CLAUDE)}
    for row in measures.values():
        assert set(row) == {"uncached_input_tokens", "cache_read_input_tokens",
                            "cache_write_input_tokens", "output_tokens", "cost"}  # fmt: skip
        for drift in row.values():
            assert drift["difference"] == 0
            assert drift["percent"] == 0
    served_output = sum(e.usage.output_tokens for e in server.requests() if e.model == GPT)
    assert measures[("openai", GPT)]["output_tokens"]["ledger"] == served_output
    assert Decimal(measures[("anthropic", CLAUDE)]["cost"]["report"]) > 0


def test_injected_drift_is_reported_with_its_percentage(served, settings):
    collector, server = served
    settings(drift=[{"model": GPT, "token_type": "output_tokens", "percent": "10"}])
    measures = _measures(_reconcile(collector, server))
    output = measures[("openai", GPT)]["output_tokens"]
    ledger = output["ledger"]
    expected_report = int(
        (Decimal(ledger) * Decimal("1.1")).to_integral_value(rounding="ROUND_HALF_UP")
    )
    assert output["report"] == expected_report
    assert output["difference"] == expected_report - ledger
    assert output["percent"] == pytest.approx((expected_report - ledger) / ledger * 100)
    assert 9 < output["percent"] < 11
    # The provider bills the extra tokens: the cost drifts too; nothing else does.
    assert Decimal(measures[("openai", GPT)]["cost"]["difference"]) > 0
    assert measures[("openai", GPT)]["uncached_input_tokens"]["difference"] == 0
    assert all(d["difference"] == 0 for d in measures[("anthropic", CLAUDE)].values())


def test_paging_is_followed_to_the_last_page(served, settings):
    collector, server = served
    # One daily bucket per page: today's usage is on the third page of three.
    settings(page_size=1)
    measures = _measures(_reconcile(collector, server))
    assert all(d["difference"] == 0 for row in measures.values() for d in row.values())
    assert measures[("openai", GPT)]["output_tokens"]["report"] > 0


def test_grouped_by_project_and_by_api_key(served, settings):
    collector, server = served
    by_project = _reconcile(collector, server, "--by", "project", "--provider", "openai")
    (row,) = by_project["rows"]
    assert row["project"] == "proj_a"
    assert all(d["difference"] == 0 for d in row["measures"].values())
    by_key = _reconcile(collector, server, "--by", "api_key", "--provider", "openai")
    # The app's spans name no API key id, the provider's report does: the comparison says so.
    assert {r["api_key"] for r in by_key["rows"]} == {None, _fake_key_id("sk-app")}


def _fake_key_id(key: str) -> str:
    import hashlib

    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _csv_from_api(server: FakeLLMServer, provider: str, kind: str, path: Path) -> None:
    """The CSV download of a report: the API's results, one line each, nested fields dotted."""
    today = _today()
    key = OPENAI_KEY if provider == "openai" else ANTHROPIC_KEY
    source = ReportSource(provider, key, base_url=server.url)  # type: ignore[arg-type]
    start_column = "start_time" if provider == "openai" else "starting_at"
    pages = []
    params = {"openai": ("start_time", "group_by"), "anthropic": ("starting_at", "group_by[]")}
    start_name, group_name = params[provider]
    groups = {("openai", "usage"): ["model", "project_id", "api_key_id"],
              ("openai", "cost"): ["project_id", "line_item"],
              ("anthropic", "usage"): ["model", "api_key_id", "workspace_id"],
              ("anthropic", "cost"): ["workspace_id", "description"]}[(provider, kind)]  # fmt: skip
    path_of: Any = {("openai", "usage"): "/v1/organization/usage/completions",
               ("openai", "cost"): "/v1/organization/costs",
               ("anthropic", "usage"): "/v1/organizations/usage_report/messages",
               ("anthropic", "cost"): "/v1/organizations/cost_report"}  # fmt: skip
    path_of = path_of[(provider, kind)]
    start_value = (
        str(int(datetime.combine(today, datetime.min.time(), timezone.utc).timestamp()))
        if provider == "openai"
        else f"{today.isoformat()}T00:00:00Z"
    )
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key}
    page = httpx.get(
        source.url + path_of,
        params=[(start_name, start_value), *((group_name, g) for g in groups), ("limit", "1")],
        headers=headers,
    ).json()
    pages.append(page)
    lines = []
    for bucket in page["data"]:
        for result in bucket["results"]:
            flat = {start_column: bucket[start_column]}
            for name, value in result.items():
                if isinstance(value, dict):
                    flat.update({f"{name}.{k}": v for k, v in value.items()})
                else:
                    flat[name] = value
            lines.append(flat)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for line in lines for k in line}))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in line.items()} for line in lines)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_csv_downloads_give_the_same_comparison_as_the_api(served, settings, tmp_path, provider):
    collector, server = served
    settings(
        drift=[
            {"model": GPT, "token_type": "output_tokens", "percent": "7"},
            {"model": CLAUDE, "token_type": "uncached_input_tokens", "percent": "-25"},
        ]
    )
    from_api = _reconcile(collector, server, "--provider", provider)
    _csv_from_api(server, provider, "usage", tmp_path / "usage.csv")
    _csv_from_api(server, provider, "cost", tmp_path / "cost.csv")
    from_csv = _reconcile(
        collector, server, "--provider", provider,
        "--usage-csv", str(tmp_path / "usage.csv"), "--cost-csv", str(tmp_path / "cost.csv"),
    )  # fmt: skip
    assert from_csv["rows"] == from_api["rows"]
    assert any(d["difference"] != 0 for row in from_api["rows"] for d in row["measures"].values())


class _Canned(BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        token = httpx.URL(self.path).params.get("page", "")
        body = self.pages.get(token, b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[tuple[str, dict[str, bytes]]]:
    pages: dict[str, bytes] = {}
    handler = type("Handler", (_Canned,), {"pages": pages})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pages
    server.shutdown()
    server.server_close()


def _page(result: dict[str, Any], *, next_page: str | None = None) -> bytes:
    bucket = {"object": "bucket", "start_time": 1796342400, "end_time": 1796428800,
              "results": [result]}  # fmt: skip
    return json.dumps(
        {
            "object": "page",
            "data": [bucket],
            "has_more": next_page is not None,
            "next_page": next_page,
        }
    ).encode()


GOOD = {
    "object": "organization.usage.completions.result",
    "input_tokens": 10,
    "input_cached_tokens": 0,
    "output_tokens": 5,
    "num_model_requests": 1,
    "model": GPT,
}


@pytest.mark.parametrize(
    ("first_page", "message"),
    [
        (_page({**GOOD, "output_tokens": -5}), "out of range"),
        (_page({**GOOD, "output_tokens": 10**20}), "out of range"),
        (_page(GOOD).replace(b'"output_tokens": 5', b'"output_tokens": NaN'), "NaN"),
        (_page({**GOOD, "output_tokens": "5 tokens"}), "expected a count"),
        (_page({**GOOD, "output_tokens": [5]}), "expected a count, got list"),
        (_page({**GOOD, "output_tokens": 5.5}), "whole number"),
        (_page({**GOOD, "input_cached_tokens": 11}), "exceeds input_tokens"),
        (_page({**GOOD, "model": {"name": GPT}}), "model: expected a string"),
        (_page(GOOD)[:40], "not JSON (truncated?)"),
        (b'{"data": "none"}', "expected a list of buckets"),
        (_page(GOOD, next_page="again"), "paging loop"),
        (_page(GOOD, next_page="next"), "not JSON"),
    ],
)
def test_a_hostile_report_is_refused_whole(tmp_path, canned, first_page, message):
    url, pages = canned
    pages[""] = first_page
    pages["again"] = _page(GOOD, next_page="again")
    pages["next"] = b'{"data": [{"start_time": 1796342400, "results": [{'
    store = ReportStore(tmp_path / "reports.db")
    day = date(2026, 12, 4)
    before = [_row_for(day)]
    store.replace("openai", "usage", day, day + timedelta(days=1), before, source="earlier")
    source = ReportSource("openai", OPENAI_KEY, base_url=url)
    with pytest.raises(ReportError, match=re.escape(message)) as raised:
        import_api_reports(store, source, day, day + timedelta(days=1), timeout_s=30)
    assert OPENAI_KEY not in str(raised.value)
    assert store.rows("openai", "usage", day, day + timedelta(days=1)) == before


def _row_for(day: date) -> Any:
    from tollmeter.collector.billing import ReportRow

    return ReportRow(provider="openai", day=day, model=GPT, output_tokens=3)


def test_a_refused_request_names_the_admin_key_by_digest_only(served):
    _, server = served
    source = ReportSource("anthropic", ANTHROPIC_KEY, base_url=server.url)
    with pytest.raises(ReportError, match="HTTP 400") as raised:
        # An empty range: the provider refuses it.
        fetch_report(source, "usage", _today(), _today(), deadline=time.monotonic() + 10)
    assert "sha256:" in str(raised.value)
    assert ANTHROPIC_KEY not in str(raised.value)
    assert ANTHROPIC_KEY not in repr(source)


def _api(collector: Any, **params: str) -> dict[str, Any]:
    reply = httpx.get(
        f"{collector.management_url}/api/v1/reconciliation", params=params, timeout=60
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _gauge(collector: Any, measure: str) -> float:
    text = httpx.get(f"{collector.management_url}/metrics", timeout=10).text
    labels = f'measure="{measure}",model="{GPT}",provider="openai"'
    pattern = rf"^tollmeter_reconciliation_drift_percent\{{{re.escape(labels)}\}} (\S+)$"
    found = re.search(pattern, text, re.M)
    assert found, text
    return float(found.group(1))


def _drift_notices() -> list[dict[str, Any]]:
    import drift_hook  # type: ignore[import-not-found]  # written by the fixture

    return list(drift_hook.received)


def test_the_collector_reports_drift_on_its_api_its_gauges_and_once_to_its_hook(served, settings):
    collector, _ = served
    clean = _api(collector, refresh="true")
    assert clean["import_errors"] == []
    assert {(r["provider"], r["model"]) for r in clean["rows"]} == {
        ("openai", GPT),
        ("anthropic", CLAUDE),
    }
    assert all(d["difference"] == 0 for r in clean["rows"] for d in r["measures"].values())
    assert _gauge(collector, "output_tokens") == 0
    assert _drift_notices() == []

    settings(drift=[{"model": GPT, "token_type": "output_tokens", "percent": "10"}])
    drifted = _api(collector, refresh="true")
    (row,) = [r for r in drifted["rows"] if r["model"] == GPT]
    percent = row["measures"]["output_tokens"]["percent"]
    assert 9 < percent < 11
    assert _gauge(collector, "output_tokens") == pytest.approx(percent)
    deadline = time.monotonic() + 10
    while not _drift_notices() and time.monotonic() < deadline:
        time.sleep(0.05)
    # Again: the same drift is not news.
    _api(collector, refresh="true")
    time.sleep(0.3)
    notices = [n for n in _drift_notices() if n["measure"] == "output_tokens"]
    assert len(notices) == 1
    (notice,) = notices
    assert notice["event"] == "reconciliation_drift"
    assert (notice["provider"], notice["model"]) == ("openai", GPT)
    assert notice["percent"] == pytest.approx(percent)
    assert notice["threshold_percent"] == 5
    assert all(n["model"] == GPT for n in _drift_notices())


def test_the_reconciliation_route_checks_its_parameters(served):
    collector, _ = served
    url = f"{collector.management_url}/api/v1/reconciliation"
    for params, reason in (
        ({"from": "yesterday"}, "YYYY-MM-DD"),
        ({"from": "2026-12-04", "to": "2026-12-01"}, "after"),
        ({"by": "tenant"}, "by must be"),
        ({"provider": "gemini"}, "unknown provider"),
    ):
        reply = httpx.get(url, params=params, timeout=10)
        assert reply.status_code == 400
        assert reason in reply.text


def test_the_reconciliation_route_needs_an_admin_key(collector_factory):
    collector = collector_factory(management={"endpoint": "127.0.0.1:0", "admin_keys": ["adm"]})
    url = f"{collector.management_url}/api/v1/reconciliation"
    assert httpx.get(url, timeout=10).status_code == 401
    reply = httpx.get(url, headers={"Authorization": "Bearer adm"}, timeout=10)
    assert reply.status_code == 200
    assert reply.json()["rows"] == []
