"""Instrumentation never changes what the application sees, and can be switched off."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
import wrapt
from google import genai
from google.genai import errors, models, types
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tollmeter.instrumentation import BudgetExceeded, budget
from tollmeter.instrumentation.google_genai import GoogleGenAIInstrumentor, extract, wrappers
from tollmeter.instrumentation.google_genai.patch import ENDPOINTS
from tollmeter.semconv import attributes as attrs

MODEL = "gemini-2.0-flash"
PROMPT = "Name three colours of the rainbow."
WRAPPED = [(e.cls, e.methods[0]) for e in ENDPOINTS]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_rate_limit_error_propagates_unchanged(
    client: genai.Client, faults: Any, call: Any, wait_spans: Any, mode: str
) -> None:
    config = types.GenerateContentConfig(http_options=faults("429", retry_after="7"))
    with pytest.raises(errors.ClientError) as caught:
        call(client, mode, "generate_content", model=MODEL, contents=PROMPT, config=config)
    assert type(caught.value) is errors.ClientError
    assert caught.value.code == 429
    (span,) = wait_spans(1)
    values = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert values[attrs.ERROR_TYPE] == "ClientError"
    assert attrs.GEN_AI_USAGE_INPUT_TOKENS not in values


class ExtractBug(Exception):
    """Stands for a bug in tollmeter's own extraction code."""


def test_failure_in_extraction_does_not_break_the_call(
    client: genai.Client,
    monkeypatch: pytest.MonkeyPatch,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(usage: Any) -> Any:
        raise ExtractBug("bug")

    monkeypatch.setattr(extract, "usage_from_metadata", broken)
    monkeypatch.setattr(wrappers, "usage_from_metadata", broken)
    with caplog.at_level(logging.WARNING, logger="tollmeter.instrumentation"):
        for _ in range(2):
            response = client.models.generate_content(model=MODEL, contents=PROMPT)
            assert response.usage_metadata.prompt_token_count > 0
        chunks = list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
        assert chunks[-1].usage_metadata is not None
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 3
    assert all(dict(s.attributes or {})[attrs.TOLLMETER_USAGE_SOURCE] == "estimate" for s in spans)
    reports = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ExtractBug]
    assert len(reports) == 2  # once per failing site (response, stream), not once per call


def test_failure_before_the_request_leaves_the_call_unmetered(
    client: genai.Client, monkeypatch: pytest.MonkeyPatch, span_exporter: InMemorySpanExporter
) -> None:
    def broken(resource: Any) -> Any:
        raise ExtractBug("bug")

    monkeypatch.setattr(extract, "server_attributes", broken)
    response = client.models.generate_content(model=MODEL, contents=PROMPT)
    assert response.text
    assert span_exporter.get_finished_spans() == ()


def test_suppressed_calls_are_not_metered(
    client: genai.Client, span_exporter: InMemorySpanExporter
) -> None:
    with suppress_instrumentation():
        client.models.generate_content(model=MODEL, contents=PROMPT)
        list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert span_exporter.get_finished_spans() == ()


def test_uninstrument_restores_the_sdk(
    gemini: genai.Client, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    originals = {(cls, name): getattr(models, cls).__dict__[name] for cls, name in WRAPPED}
    instrumentor = GoogleGenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    for cls, name in WRAPPED:
        assert isinstance(getattr(models, cls).__dict__[name], wrapt.FunctionWrapper)
    instrumentor.uninstrument()
    for (cls, name), original in originals.items():
        assert getattr(models, cls).__dict__[name] is original
    gemini.models.generate_content(model=MODEL, contents=PROMPT)
    assert span_exporter.get_finished_spans() == ()


def test_instrumenting_twice_still_yields_one_span(
    gemini: genai.Client,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    one_span: Any,
) -> None:
    first, second = GoogleGenAIInstrumentor(), GoogleGenAIInstrumentor()
    first.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        second.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        gemini.models.generate_content(model=MODEL, contents=PROMPT)
        assert one_span()[attrs.TOLLMETER_USAGE_SOURCE] == "provider"
    finally:
        second.uninstrument()
        first.uninstrument()


def test_invalid_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="metric_tenant_attribute"):
        GoogleGenAIInstrumentor().instrument(metric_tenant_attribute="yes")
    GoogleGenAIInstrumentor().uninstrument()


WITHOUT_THE_SDK = """
import sys
sys.modules["google.genai"] = None  # importing it now raises ImportError
from tollmeter.instrumentation.google_genai import GoogleGenAIInstrumentor
instrumentor = GoogleGenAIInstrumentor()
assert list(instrumentor.instrumentation_dependencies()) == ["google-genai >= 1.0"]
"""


def test_the_entry_point_loads_without_the_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SDK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_budget_reserves_the_output_limit_set_in_config(
    client: genai.Client, fake_llm: Any, span_exporter: InMemorySpanExporter
) -> None:
    sent = len(fake_llm.requests())
    config = types.GenerateContentConfig(max_output_tokens=500)
    with budget(max_tokens=200), pytest.raises(BudgetExceeded):
        client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    # Refused before anything reached the service.
    assert len(fake_llm.requests()) == sent
    assert span_exporter.get_finished_spans() == ()
    with budget(max_tokens=200):
        small = types.GenerateContentConfig(max_output_tokens=50)
        client.models.generate_content(model=MODEL, contents=PROMPT, config=small)
    assert len(fake_llm.requests()) == sent + 1
