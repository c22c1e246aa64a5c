"""Instrumentor life cycle, suppression, options, attribution, metrics and containment."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.instrumentation import attribute
from tollmeter.instrumentation.openai import OpenAIInstrumentor, extract, wrappers
from tollmeter.instrumentation.openai.package import find_method
from tollmeter.instrumentation.openai.patch import ENDPOINTS, STREAM_HELPERS
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

MODEL = "gpt-4o-mini"
MESSAGES: Any = [{"role": "user", "content": "Say something short about rivers."}]
Instrument = Callable[..., OpenAIInstrumentor]


def _targets() -> list[tuple[type, str]]:
    """The (class, method) pairs the installed SDK offers, as the instrumentor finds them."""
    names = [(e.module, e.method) for e in ENDPOINTS] + [(m, n) for m, n, _ in STREAM_HELPERS]
    return [found for found in (find_method(module, method) for module, method in names) if found]


def _public_methods(chat_helpers: Callable[[Any], Any]) -> set[tuple[type, str]]:
    """(class, method) of every metered method as an application reaches it, sync and async."""
    found: set[tuple[type, str]] = set()
    with openai.OpenAI(api_key="k") as client:
        helpers = chat_helpers(client)
        for resource, name in (
            (client.chat.completions, "create"),
            (helpers, "parse"),
            (helpers, "stream"),
            (client.completions, "create"),
            (client.embeddings, "create"),
            (client.responses, "create"),
            (client.responses, "parse"),
            (client.responses, "stream"),
        ):
            cls = type(resource)
            found.add((cls, name))
            found.add((getattr(sys.modules[cls.__module__], f"Async{cls.__name__}"), name))
    return found


def test_uninstrument_restores_the_original_methods(
    instrument: Instrument, chat_helpers: Callable[[Any], Any]
) -> None:
    originals = {(cls, name): cls.__dict__[name] for cls, name in _targets()}
    # Every method the installed SDK offers is found, whichever module holds it.
    assert _public_methods(chat_helpers) <= set(originals)
    create = openai.resources.chat.completions.Completions.create
    instrumentor = instrument()
    assert openai.resources.chat.completions.Completions.create is not create
    assert all(cls.__dict__[name] is not original for (cls, name), original in originals.items())
    instrumentor.uninstrument()
    assert openai.resources.chat.completions.Completions.create is create
    assert all(cls.__dict__[name] is original for (cls, name), original in originals.items())


def test_no_spans_after_uninstrument(
    instrument: Instrument, client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    instrument().uninstrument()
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert span_exporter.get_finished_spans() == ()


def test_instrumenting_twice_is_a_no_op(
    instrument: Instrument, client: openai.OpenAI, one_span: Any
) -> None:
    instrument()
    instrument()
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    one_span()


@pytest.mark.usefixtures("instrumented")
def test_suppressed_instrumentation_makes_no_span(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    with suppress_instrumentation():
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
        for _ in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
            pass
    assert span_exporter.get_finished_spans() == ()


def test_invalid_option_is_rejected(instrument: Instrument) -> None:
    with pytest.raises(ValueError, match="inject_stream_usage must be a bool"):
        instrument(inject_stream_usage="yes")


@pytest.mark.usefixtures("instrumented")
def test_attribution_is_read_at_request_start(client: openai.OpenAI, one_span: Any) -> None:
    with attribute(tenant="acme", project="search", feature="summaries", request_id="r-9"):
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with attribute(tenant="someone-else"):
        for _ in stream:
            pass
    _, attributes = one_span()
    assert attributes[attrs.TOLLMETER_TENANT_ID] == "acme"
    assert attributes[attrs.TOLLMETER_PROJECT_ID] == "search"
    assert attributes[attrs.TOLLMETER_FEATURE] == "summaries"
    assert attributes[attrs.TOLLMETER_REQUEST_ID] == "r-9"


@pytest.mark.usefixtures("instrumented")
def test_span_is_a_child_of_the_application_span(
    client: openai.OpenAI, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    with tracer_provider.get_tracer("app").start_as_current_span("handler") as parent:
        client.embeddings.create(model="text-embedding-3-small", input="hello")
        assert trace.get_current_span() is parent
    call, handler = span_exporter.get_finished_spans()
    assert handler.name == "handler"
    assert call.parent is not None
    assert call.parent.span_id == parent.get_span_context().span_id


@pytest.mark.usefixtures("instrumented")
def test_metric_attributes_are_bounded(client: openai.OpenAI, points: Any) -> None:
    with attribute(tenant="acme", request_id="r-1", user="u-1"):
        for _ in client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ):
            pass
    allowed = {
        attrs.GEN_AI_OPERATION_NAME,
        attrs.GEN_AI_PROVIDER_NAME,
        attrs.GEN_AI_REQUEST_MODEL,
        attrs.GEN_AI_RESPONSE_MODEL,
        attrs.GEN_AI_TOKEN_TYPE,
        attrs.ERROR_TYPE,
    }
    for name in (
        metrics.GEN_AI_CLIENT_TOKEN_USAGE,
        metrics.GEN_AI_CLIENT_OPERATION_DURATION,
        metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
    ):
        found = points(name)
        assert found, name
        for point in found:
            assert set(dict(point.attributes)) <= allowed, name


def test_tenant_metric_attribute_is_opt_in(
    instrument: Instrument, client: openai.OpenAI, points: Any
) -> None:
    instrument(metric_tenant_attribute=True)
    with attribute(tenant="acme"):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    for point in points(metrics.GEN_AI_CLIENT_TOKEN_USAGE):
        assert dict(point.attributes)[attrs.TOLLMETER_TENANT_ID] == "acme"


def test_stream_usage_injection_is_opt_in(
    instrument: Instrument, client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    instrument(inject_stream_usage=True)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert chunks[-1].choices == []  # what the application's loop sees changes: hence opt-in
    assert chunks[-1].usage is not None
    list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": False}
        )
    )
    sources = [
        dict(span.attributes or {})[attrs.TOLLMETER_USAGE_SOURCE]
        for span in span_exporter.get_finished_spans()
    ]
    assert sources == ["provider", "estimate"]


class ExtractBug(Exception):
    """Stands for a bug in tollmeter's own extraction code."""


@pytest.mark.usefixtures("instrumented")
def test_failure_in_extraction_does_not_break_the_call(
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(usage: Any) -> Any:
        raise ExtractBug("bug")

    monkeypatch.setattr(extract, "usage_from_completion", broken)
    monkeypatch.setattr(wrappers, "usage_from_completion", broken)
    with caplog.at_level(logging.WARNING, logger="tollmeter.instrumentation"):
        for _ in range(2):
            completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
            assert completion.choices[0].message.content
        chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
        assert chunks
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 3
    assert all(
        dict(span.attributes or {})[attrs.TOLLMETER_USAGE_SOURCE] == "estimate" for span in spans
    )
    reports = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ExtractBug]
    assert len(reports) == 2  # once per failing site (response, stream), not once per call


class StartBug(Exception):
    """Stands for a bug in tollmeter's request inspection."""


@pytest.mark.usefixtures("instrumented")
def test_failure_before_the_request_leaves_the_call_uninstrumented(
    client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch, span_exporter: InMemorySpanExporter
) -> None:
    def broken(resource: Any) -> Any:
        raise StartBug("bug")

    monkeypatch.setattr(extract, "server_attributes", broken)
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.usage is not None
    assert span_exporter.get_finished_spans() == ()


@pytest.mark.usefixtures("instrumented")
def test_concurrent_calls_keep_their_own_attribution(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    def call(tenant: str) -> None:
        with attribute(tenant=tenant):
            stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
            for _ in stream:
                pass

    tenants = [f"tenant-{n}" for n in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(call, tenant) for tenant in tenants]:
            future.result(timeout=60)
    spans = span_exporter.get_finished_spans()
    assert sorted(dict(s.attributes or {})[attrs.TOLLMETER_TENANT_ID] for s in spans) == tenants
    ids = {dict(s.attributes or {})[attrs.GEN_AI_RESPONSE_ID] for s in spans}
    assert len(ids) == len(tenants)


def test_stream_started_before_uninstrument_still_finishes(
    instrument: Instrument, client: openai.OpenAI, one_span: Any
) -> None:
    instrumentor = instrument()
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    instrumentor.uninstrument()
    assert list(stream)
    _, attributes = one_span()
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
