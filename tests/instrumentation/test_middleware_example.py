"""The FastAPI example in ``examples/fastapi_multitenant`` meters each request for its tenant."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv import attributes as attrs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_multitenant" / "app.py"


@pytest.fixture
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_multitenant_app", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def client(
    example: ModuleType, fake_llm: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake_llm.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "demo-key")
    with TestClient(example.app) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def instrumented(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
    instrumentor.uninstrument()


def test_each_request_is_metered_for_its_tenant(
    client: TestClient, span_exporter: InMemorySpanExporter
) -> None:
    for tenant in ("acme", "initech"):
        answer = client.post(
            "/ask",
            json={"text": "What is a token?"},
            headers={"x-tenant-id": tenant, "x-project-id": "assistant"},
        )
        assert answer.status_code == 200
        assert answer.json()["total_tokens"] > 0
    spans = [dict(span.attributes or {}) for span in span_exporter.get_finished_spans()]
    assert [
        (span[attrs.TOLLMETER_TENANT_ID], span[attrs.TOLLMETER_PROJECT_ID]) for span in spans
    ] == [("acme", "assistant"), ("initech", "assistant")]
    assert all(span[attrs.GEN_AI_USAGE_INPUT_TOKENS] > 0 for span in spans)
