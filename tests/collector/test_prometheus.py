"""``/metrics``: usage counters per tenant, the tenant cap, restarts, health and access."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client.parser import text_string_to_metric_families

from tollmeter.collector import InvalidConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def send(endpoint: str, spans) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(endpoint) as channel:
        stub = channel.unary_unary(
            TRACES, response_deserializer=ExportTraceServiceResponse.FromString
        )
        return stub(encode_spans(spans).SerializeToString(), timeout=30)


def scrape(management_url: str, **headers: str) -> Samples:
    response = httpx.get(f"{management_url}/metrics", headers=headers, timeout=10)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_usage_counters_split_tokens_into_exclusive_types(collector, make_spans):
    send(
        collector.grpc_endpoint,
        make_spans(
            3,
            tenant="acme",
            input_tokens=100,
            output_tokens=40,
            extra={
                "tollmeter.project.id": "web",
                "gen_ai.usage.cache_read.input_tokens": 30,
                "gen_ai.usage.reasoning.output_tokens": 10,
            },
        ),
    )
    send(
        collector.grpc_endpoint,
        make_spans(
            2,
            tenant="globex",
            input_tokens=7,
            output_tokens=5,
            id_prefix="est",
            extra={"tollmeter.usage.source": "estimate"},
        ),
    )
    samples = scrape(collector.management_url)
    acme = {"tenant": "acme", "project": "web", "model": "gpt-4o-mini", "usage_source": "provider"}
    assert value(samples, "tollmeter_tokens_total", token_type="input", **acme) == 3 * 70
    assert value(samples, "tollmeter_tokens_total", token_type="cache_read", **acme) == 3 * 30
    assert value(samples, "tollmeter_tokens_total", token_type="output", **acme) == 3 * 30
    assert value(samples, "tollmeter_tokens_total", token_type="reasoning", **acme) == 3 * 10
    globex = {"tenant": "globex", "project": "", "model": "gpt-4o-mini", "usage_source": "estimate"}
    assert value(samples, "tollmeter_tokens_total", token_type="input", **globex) == 14
    assert value(samples, "tollmeter_tokens_total", token_type="output", **globex) == 10
    tokens = series(samples, "tollmeter_tokens_total")
    assert sum(tokens.values()) == 3 * 140 + 2 * 12, "the token types must not overlap"
    assert not any(("token_type", "cache_write") in labels for labels in tokens), (
        "zeros are omitted"
    )
    requests = {"model": "gpt-4o-mini"}
    assert value(samples, "tollmeter_requests_total", tenant="acme", project="web", **requests) == 3
    assert value(samples, "tollmeter_requests_total", tenant="globex", project="", **requests) == 2
    costs = series(samples, "tollmeter_cost_total")
    assert {dict(labels)["tenant"] for labels in costs} == {"acme", "globex"}
    assert all(dict(labels)["currency"] == "USD" and v > 0 for labels, v in costs.items())
    assert value(samples, "tollmeter_spans_accepted_total") == 5
    assert value(samples, "tollmeter_otlp_requests_total", signal="traces") == 2
    assert value(samples, "tollmeter_ledger_commit_seconds_count") >= 1
    assert value(samples, "tollmeter_checks_total", decision="allowed") == 0


def test_a_duplicate_batch_is_counted_once(collector, make_spans):
    spans = make_spans(4, tenant="acme")
    send(collector.grpc_endpoint, spans)
    send(collector.grpc_endpoint, spans)
    samples = scrape(collector.management_url)
    labels = {"tenant": "acme", "project": "", "model": "gpt-4o-mini"}
    assert value(samples, "tollmeter_requests_total", **labels) == 4
    assert value(samples, "tollmeter_usage_events_duplicate_total") == 4
    assert value(samples, "tollmeter_spans_received_total") == 8


def test_tenants_past_the_cap_fold_into_other_with_one_warning(
    collector_factory, make_spans, caplog
):
    running = collector_factory(metrics={"max_tenants": 2})
    with caplog.at_level(logging.WARNING, logger="tollmeter.collector.observability"):
        for index in range(5):
            send(
                running.grpc_endpoint,
                make_spans(1, tenant=f"t{index}", id_prefix=f"r{index}", output_tokens=1),
            )
    samples = scrape(running.management_url)
    tenants = {
        dict(labels)["tenant"]: v
        for labels, v in series(samples, "tollmeter_requests_total").items()
    }
    assert tenants == {"t0": 1, "t1": 1, "_other": 3}
    warnings = [r for r in caplog.records if "max_tenants" in r.getMessage()]
    assert len(warnings) == 1
    # The ledger keeps every tenant: the cap only shapes the metrics.
    assert {event.tenant_id for event in running.events()} == {f"t{i}" for i in range(5)}


def test_counters_continue_from_the_ledger_after_a_restart(collector_factory, make_spans):
    first = collector_factory()
    send(first.grpc_endpoint, make_spans(3, tenant="acme", input_tokens=10, output_tokens=1))
    first.stop()
    second = collector_factory()  # same data directory
    send(second.grpc_endpoint, make_spans(2, tenant="acme", id_prefix="later", input_tokens=10))
    samples = scrape(second.management_url)
    labels = {"tenant": "acme", "project": "", "model": "gpt-4o-mini"}
    assert value(samples, "tollmeter_requests_total", **labels) == 5
    assert (
        value(
            samples,
            "tollmeter_tokens_total",
            token_type="input",
            usage_source="provider",
            **labels,
        )
        == 50
    )
    # Health counters are this process's own and start again from zero.
    assert value(samples, "tollmeter_spans_accepted_total") == 2


def test_each_collector_has_its_own_registry(collector_factory, make_spans, tmp_path):
    one = collector_factory(data_dir=str(tmp_path / "one"))
    two = collector_factory(data_dir=str(tmp_path / "two"))
    send(one.grpc_endpoint, make_spans(2, tenant="only-one"))
    assert value(scrape(one.management_url), "tollmeter_spans_accepted_total") == 2
    other = scrape(two.management_url)
    assert value(other, "tollmeter_spans_accepted_total") == 0
    assert not series(other, "tollmeter_requests_total")


def test_metrics_are_open_unless_an_admin_key_is_required(collector_factory, tmp_path):
    open_one = collector_factory(
        management={"admin_keys": ["secret"]}, data_dir=str(tmp_path / "open")
    )
    assert httpx.get(f"{open_one.management_url}/metrics", timeout=10).status_code == 200
    guarded = collector_factory(
        management={"admin_keys": ["secret"]},
        metrics={"require_admin_key": True},
        data_dir=str(tmp_path / "guarded"),
    )
    assert httpx.get(f"{guarded.management_url}/metrics", timeout=10).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert (
        httpx.get(f"{guarded.management_url}/metrics", headers=wrong, timeout=10).status_code == 401
    )
    assert scrape(guarded.management_url, authorization="Bearer secret")


def test_metrics_can_be_turned_off(collector_factory):
    running = collector_factory(metrics={"enabled": False})
    assert httpx.get(f"{running.management_url}/metrics", timeout=10).status_code == 404


def test_openmetrics_carries_the_latest_trace_id_as_an_exemplar(collector, make_spans):
    spans = make_spans(2, tenant="acme")
    send(collector.grpc_endpoint, spans)
    accept = "application/openmetrics-text;version=1.0.0"
    response = httpx.get(
        f"{collector.management_url}/metrics", headers={"accept": accept}, timeout=10
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    trace_ids = {format(span.context.trace_id, "032x") for span in spans}
    line = next(
        line for line in response.text.splitlines() if line.startswith("tollmeter_requests_total{")
    )
    exemplar = re.search(r'# \{trace_id="([0-9a-f]{32})"\} 1\.0', line)
    assert exemplar, line
    assert exemplar.group(1) in trace_ids


@pytest.mark.parametrize("bad", [{"max_tenants": 0}, {"max_tenants": "many"}, {"extra": 1}])
def test_invalid_metrics_settings_are_refused(make_config, bad):
    with pytest.raises(InvalidConfig, match="metrics"):
        make_config(metrics=bad)


def test_every_metric_served_is_documented(collector_factory, make_spans):
    running = collector_factory(
        shutdown_grace="1s",  # the forward target never answers
        hooks=[{"type": "log"}],
        forward=[{"name": "nowhere", "endpoint": "127.0.0.1:9", "tls": {"insecure": True}}],
    )
    send(running.grpc_endpoint, make_spans(1))
    text = httpx.get(f"{running.management_url}/metrics", timeout=10).text
    served = {
        family.name
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")  # prometheus-client's creation timestamps
    }
    documented = {
        name.removesuffix("_total")
        for name in re.findall(r"^\| `(tollmeter_\w+)`", DOC.read_text(), re.M)
    }
    assert served == documented
