"""Keys written in the configuration as ``sha256:<hex>`` digests: the file holds no
secret, clients send the key itself, and the digest is not a key."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tollmeter.collector._config import Config
from tollmeter.collector.errors import InvalidConfig

ADMIN = "admin-secret-1"
INGEST = "ingest-secret-1"


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def export(running, spans, key: str) -> SpanExportResult:
    exporter = OTLPSpanExporter(
        endpoint=running.grpc_endpoint, insecure=True, headers={"x-tollmeter-key": key}
    )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


@pytest.fixture
def running(collector_factory):
    return collector_factory(
        management={"admin_keys": [digest(ADMIN)], "ingest_keys": {digest(INGEST): "acme"}}
    )


def test_an_ingest_key_given_as_its_digest_accepts_the_key(running, make_spans):
    assert export(running, make_spans(2, tenant=None), INGEST) is SpanExportResult.SUCCESS
    assert {event.tenant_id for event in running.events()} == {"acme"}


def test_the_digest_itself_is_not_a_key(running, make_spans):
    assert export(running, make_spans(1), digest(INGEST)) is SpanExportResult.FAILURE
    usage = f"{running.management_url}/api/v1/usage"
    refused = httpx.get(usage, headers={"Authorization": f"Bearer {digest(ADMIN)}"}, timeout=10)
    assert refused.status_code == 401
    assert running.events() == []


def test_an_admin_key_given_as_its_digest_opens_the_api(running):
    usage = f"{running.management_url}/api/v1/usage"
    assert httpx.get(usage, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10).is_success


def test_digests_come_from_the_environment_too(tmp_path):
    config = Config.load(
        environ={
            "TOLLMETER_ADMIN_KEYS": digest(ADMIN),
            "TOLLMETER_INGEST_KEYS": f"{digest(INGEST)}=acme",
        }
    )
    assert config.management.admin_keys == (digest(ADMIN),)
    assert config.management.ingest_keys == {digest(INGEST): "acme"}


def test_a_malformed_digest_is_refused_without_echoing_it(tmp_path):
    file = tmp_path / "tollmeter.yaml"
    file.write_text("management:\n  admin_keys: ['sha256:not-hex-secret']\n")
    with pytest.raises(InvalidConfig) as refused:
        Config.load(file)
    (problem,) = refused.value.problems
    assert problem.key == "management.admin_keys"
    assert "64 hex digits" in problem.reason
    assert "not-hex-secret" not in str(refused.value)
