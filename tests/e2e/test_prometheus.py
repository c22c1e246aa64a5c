"""The real Prometheus scrapes a real collector process: series and values match what
was sent, exemplars carry trace ids, and every query of the Grafana dashboard returns data.

Needs the ``prometheus`` binary (Debian package ``prometheus``).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "examples" / "grafana" / "tollmeter-dashboard.json"
)
# What Grafana would put in for its built-in variables; ``$tenant`` is "All".
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "10m", "$tenant": ".*"}
# Series that stay at zero in a healthy collector: they must exist, not be positive.
ZERO_WHEN_HEALTHY = ("requests_refused", "commit_failures", "pending_spans", "queue_depth")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deadline_loop(timeout: float, what: str) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        yield
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Prometheus:
    """The real ``prometheus`` server scraping ``targets`` every second."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "prometheus not found: install the Debian package prometheus (make test does)",
                pytrace=False,
            )
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "tollmeter",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                    "--enable-feature=exemplar-storage",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_until_up(self, timeout: float = 60.0) -> None:
        for _ in deadline_loop(
            timeout, f"Prometheus to scrape its targets\n{self.log.read_text()}"
        ):
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log.read_text()}")
            try:
                response = httpx.get(f"{self.url}/api/v1/targets", timeout=2)
            except httpx.TransportError:
                continue
            if response.status_code != 200:  # 503 until the server is ready
                continue
            active = response.json()["data"]["activeTargets"]
            if active and all(target["health"] == "up" for target in active):
                return

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else math.nan

    def wait_for(self, expr: str, expected: float, timeout: float = 30.0) -> None:
        for _ in deadline_loop(timeout, f"{expr} == {expected}"):
            if self.scalar(expr) == expected:
                return

    def wait_for_scrapes(self, count: int, timeout: float = 30.0) -> None:
        """Return once ``count`` more scrapes of every target happened."""
        expr = 'min(count_over_time(up{job="tollmeter"}[10m]))'
        start = self.scalar(expr)
        for _ in deadline_loop(timeout, f"{count} more scrapes"):
            if self.scalar(expr) >= start + count:
                return

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], Prometheus]]:
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        server = Prometheus(workdir, targets)
        started.append(server)
        server.wait_until_up()
        return server

    yield start
    for server in started:
        server.stop()


# -- traffic ---------------------------------------------------------------------------

_Key = tuple[str, str, str, str, str]


class Traffic:
    """Sends chat spans with the real OTLP exporter and keeps the expected counters."""

    def __init__(self, grpc_endpoint: str) -> None:
        self._exporter = OTLPSpanExporter(endpoint=grpc_endpoint, insecure=True, timeout=30)
        self.tokens: dict[_Key, int] = {}
        self.requests: dict[tuple[str, str, str], int] = {}
        self.trace_ids: set[str] = set()
        self._count = 0

    def chat(
        self,
        *,
        tenant: str,
        model: str,
        provider: str,
        input_tokens: int,
        output_tokens: int,
        project: str = "",
        cache_read: int = 0,
        reasoning: int = 0,
        source: str = "provider",
    ) -> None:
        self._count += 1
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.response.id": f"resp-{self._count}",
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.usage.cache_read.input_tokens": cache_read,
            "gen_ai.usage.reasoning.output_tokens": reasoning,
            "tollmeter.tenant.id": tenant,
            "tollmeter.usage.source": source,
        }
        if project:
            attributes["tollmeter.project.id"] = project
        spans = _finished_span(f"chat {model}", attributes)
        assert self._exporter.export(spans) is SpanExportResult.SUCCESS
        self.trace_ids.add(format(spans[0].context.trace_id, "032x"))
        buckets = {
            "input": input_tokens - cache_read,
            "cache_read": cache_read,
            "output": output_tokens - reasoning,
            "reasoning": reasoning,
        }
        for token_type, amount in buckets.items():
            if amount:
                key = (tenant, project, model, token_type, source)
                self.tokens[key] = self.tokens.get(key, 0) + amount
        request_key = (tenant, project, model)
        self.requests[request_key] = self.requests.get(request_key, 0) + 1

    def round(self, management_url: str) -> None:
        """One round feeding every dashboard panel: provider and estimated usage,
        cached and reasoning tokens, two tenants, two models, an allowed and a denied check."""
        for _ in range(2):
            self.chat(
                tenant="acme",
                project="web",
                model="gpt-4o-mini",
                provider="openai",
                input_tokens=100,
                output_tokens=30,
                cache_read=40,
                reasoning=10,
            )
        self.chat(
            tenant="globex",
            model="claude-3-5-haiku-20241022",
            provider="anthropic",
            input_tokens=50,
            output_tokens=20,
        )
        self.chat(
            tenant="acme",
            project="web",
            model="gpt-4o-mini",
            provider="openai",
            input_tokens=25,
            output_tokens=5,
            source="estimate",
        )
        # A tenant id too long to store: the span is rejected (a partial success).
        rejected = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 1,
            "gen_ai.usage.output_tokens": 1,
            "tollmeter.tenant.id": "t" * 5000,
        }
        self._exporter.export(_finished_span("chat gpt-4o-mini", rejected))
        for tenant, tokens, allowed in (("acme", 10, True), ("capped", 10_000_000, False)):
            decision = httpx.post(
                f"{management_url}/api/v1/check",
                json={"tenant": tenant, "estimated_input_tokens": tokens},
                timeout=10,
            ).json()
            assert decision["allowed"] is allowed

    def close(self) -> None:
        self._exporter.shutdown()


def _finished_span(name: str, attributes: dict[str, Any]) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "dashboard-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("tests").start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes=attributes
    ):
        pass
    provider.shutdown()
    return list(memory.get_finished_spans())


# -- dashboard -------------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unhandled variable in {expr}"
            queries.append((panel["title"], expr))
    return queries


def variable_queries() -> list[tuple[str, str]]:
    """(metric, label) of every ``label_values`` template variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            found.append((match.group(1), match.group(2)))
    return found


# -- the test --------------------------------------------------------------------------


def test_prometheus_scrapes_the_collector_and_every_dashboard_query_has_data(
    collector_process, prometheus, tmp_path
):
    downstream = collector_process()
    config = {
        "limits": {"rules": [{"name": "daily", "limit": 1_000_000, "window": "day"}]},
        "hooks": [{"type": "log"}],
        "forward": [
            {
                "name": "downstream",
                "protocol": "grpc",
                "endpoint": downstream.grpc_endpoint,
                "tls": {"insecure": True},
                "batch": {"delay": "10ms"},
            },
            {
                # Nothing listens here: its retries and drops feed the forwarding panels.
                "name": "unreachable",
                "protocol": "http/protobuf",
                "endpoint": f"http://127.0.0.1:{free_port()}",
                "tls": {"insecure": True},
                "queue_size": 1,
                "batch": {"delay": "1ms"},
                "timeout": "200ms",
                "retry": {"initial_backoff": "10ms", "max_backoff": "20ms", "max_elapsed": "50ms"},
            },
        ],
    }
    config_file = tmp_path / "collector.yaml"
    config_file.write_text(yaml.safe_dump(config))
    upstream = collector_process(args=["--config", str(config_file)])
    server = prometheus([upstream.management_url.removeprefix("http://")])
    traffic = Traffic(upstream.grpc_endpoint)
    try:
        traffic.round(upstream.management_url)
        server.wait_for("sum(tollmeter_requests_total)", sum(traffic.requests.values()))
        # A second round after more scrapes gives every rate() two different samples.
        server.wait_for_scrapes(2)
        traffic.round(upstream.management_url)
        server.wait_for("sum(tollmeter_requests_total)", sum(traffic.requests.values()))
        server.wait_for_scrapes(2)
    finally:
        traffic.close()

    tokens = {
        (
            s["metric"]["tenant"],
            s["metric"].get("project", ""),
            s["metric"]["model"],
            s["metric"]["token_type"],
            s["metric"]["usage_source"],
        ): float(s["value"][1])
        for s in server.query('tollmeter_tokens_total{job="tollmeter"}')
    }
    assert tokens == traffic.tokens
    requests = {
        (s["metric"]["tenant"], s["metric"].get("project", ""), s["metric"]["model"]): float(
            s["value"][1]
        )
        for s in server.query("tollmeter_requests_total")
    }
    assert requests == traffic.requests
    assert server.scalar('tollmeter_checks_total{decision="denied"}') == 2
    assert server.scalar('tollmeter_checks_total{decision="allowed"}') == 2
    assert server.scalar("tollmeter_spans_accepted_total") == 8
    assert server.scalar('tollmeter_spans_rejected_total{reason="invalid"}') == 2
    costs = {s["metric"]["tenant"] for s in server.query("tollmeter_cost_total > 0")}
    assert costs == {"acme", "globex"}
    # Every OTLP request is forwarded, the one with a rejected span included.
    forwarded = 'tollmeter_forward_sent_requests_total{exporter="downstream",signal="traces"}'
    assert server.scalar(forwarded) == 10
    assert (
        server.scalar('sum(tollmeter_forward_dropped_requests_total{exporter="unreachable"})') > 0
    )
    downstream_usage = downstream.usage("--group-by", "tenant").stdout
    assert "acme" in downstream_usage
    assert "globex" in downstream_usage

    exemplars = httpx.get(
        f"{server.url}/api/v1/query_exemplars",
        params={
            "query": "tollmeter_requests_total",
            "start": time.time() - 600,
            "end": time.time(),
        },
        timeout=10,
    ).json()["data"]
    trace_ids = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
    assert trace_ids
    assert trace_ids <= traffic.trace_ids

    empty = []
    for title, expr in dashboard_queries():
        values = [float(s["value"][1]) for s in server.query(expr)]
        zero_ok = any(name in expr for name in ZERO_WHEN_HEALTHY)
        if not any(math.isfinite(v) and (zero_ok or v > 0) for v in values):
            empty.append(f"{title}: {expr} -> {values}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    for metric, label in variable_queries():
        response = httpx.get(
            f"{server.url}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10
        ).json()
        assert set(response["data"]) == {"acme", "globex"}
