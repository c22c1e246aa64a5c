"""attribute(): context manager, decorator, baggage, validation; the span processor."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.instrumentation import (
    MAX_VALUE_LENGTH,
    AttributionSpanProcessor,
    attribute,
    current_attribution,
)
from tollmeter.semconv import attributes as attrs


def test_context_manager_sets_and_restores() -> None:
    assert dict(current_attribution()) == {}
    with attribute(tenant="acme", project="search", user="u-1"):
        assert dict(current_attribution()) == {
            attrs.TOLLMETER_TENANT_ID: "acme",
            attrs.TOLLMETER_PROJECT_ID: "search",
            attrs.USER_ID: "u-1",
        }
    assert dict(current_attribution()) == {}


def test_inner_block_wins_per_key_and_outer_keys_survive() -> None:
    with attribute(tenant="outer", feature="chat"), attribute(tenant="inner"):
        assert dict(current_attribution()) == {
            attrs.TOLLMETER_TENANT_ID: "inner",
            attrs.TOLLMETER_FEATURE: "chat",
        }
        assert baggage.get_baggage(attrs.TOLLMETER_TENANT_ID) == "inner"
    assert baggage.get_baggage(attrs.TOLLMETER_TENANT_ID) is None


def test_values_travel_as_baggage() -> None:
    with attribute(tenant="acme", workflow="run-7", api_key_id="key-1", environment="prod"):
        assert baggage.get_all() == {
            attrs.TOLLMETER_TENANT_ID: "acme",
            attrs.TOLLMETER_WORKFLOW_ID: "run-7",
            attrs.TOLLMETER_API_KEY_ID: "key-1",
            attrs.TOLLMETER_ENVIRONMENT: "prod",
        }


def test_incoming_baggage_is_read_and_local_values_override_it() -> None:
    ctx = baggage.set_baggage(attrs.TOLLMETER_TENANT_ID, "from-edge")
    ctx = baggage.set_baggage(attrs.TOLLMETER_PROJECT_ID, "edge-project", context=ctx)
    ctx = baggage.set_baggage("unrelated", "ignored", context=ctx)
    token = otel_context.attach(ctx)
    try:
        assert dict(current_attribution()) == {
            attrs.TOLLMETER_TENANT_ID: "from-edge",
            attrs.TOLLMETER_PROJECT_ID: "edge-project",
        }
        with attribute(tenant="local"):
            assert current_attribution()[attrs.TOLLMETER_TENANT_ID] == "local"
            assert current_attribution()[attrs.TOLLMETER_PROJECT_ID] == "edge-project"
    finally:
        otel_context.detach(token)


@pytest.mark.parametrize("hostile", ["", "a\nb", "tab\there", "\x00", "x" * (MAX_VALUE_LENGTH + 1)])
def test_invalid_incoming_baggage_is_ignored(hostile: str) -> None:
    token = otel_context.attach(baggage.set_baggage(attrs.TOLLMETER_TENANT_ID, hostile))
    try:
        assert dict(current_attribution()) == {}
    finally:
        otel_context.detach(token)


def test_decorator_on_sync_function() -> None:
    @attribute(tenant="acme")
    def work(x: int) -> tuple[int, str]:
        return x * 2, current_attribution()[attrs.TOLLMETER_TENANT_ID]

    assert work(21) == (42, "acme")
    assert work.__name__ == "work"
    assert dict(current_attribution()) == {}


def test_decorator_on_async_function_isolated_between_tasks() -> None:
    @attribute(tenant="acme")
    async def tagged() -> str:
        await asyncio.sleep(0)
        return current_attribution()[attrs.TOLLMETER_TENANT_ID]

    async def untagged() -> dict[str, str]:
        await asyncio.sleep(0)
        return dict(current_attribution())

    async def main() -> tuple[str, dict[str, str]]:
        first, second = await asyncio.gather(tagged(), untagged())
        return first, second

    assert asyncio.run(main()) == ("acme", {})


def test_decorator_propagates_exceptions_unchanged_and_restores() -> None:
    error = KeyError("boom")

    @attribute(tenant="acme")
    def fail() -> None:
        raise error

    with pytest.raises(KeyError) as caught:
        fail()
    assert caught.value is error
    assert dict(current_attribution()) == {}


def test_threads_do_not_see_each_other() -> None:
    seen: dict[str, dict[str, str]] = {}
    barrier = threading.Barrier(2, timeout=10)

    def run(name: str) -> None:
        with attribute(tenant=name):
            barrier.wait()
            seen[name] = dict(current_attribution())

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert seen == {"a": {attrs.TOLLMETER_TENANT_ID: "a"}, "b": {attrs.TOLLMETER_TENANT_ID: "b"}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tenant": 42}, "tenant=...): must be a str, not int"),
        ({"project": ""}, "project=...): must not be empty"),
        ({"feature": "x" * (MAX_VALUE_LENGTH + 1)}, "at most 256 characters"),
        ({"user": "line\nbreak"}, "non-printable"),
        ({"workflow": "nul\x00"}, "non-printable"),
        ({"api_key_id": "bidi\u202e"}, "non-printable"),
    ],
)
def test_invalid_values_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="attribute") as caught:
        attribute(**kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_unicode_and_maximum_length_are_accepted() -> None:
    value = "é" * MAX_VALUE_LENGTH
    with attribute(tenant=value, project="東京 team"):
        assert current_attribution()[attrs.TOLLMETER_TENANT_ID] == value


def test_span_processor_copies_attribution_onto_genai_spans_only() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(AttributionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("some.http.library")
    genai_tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    with attribute(tenant="acme", project="p"):
        tracer.start_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}).end()
        tracer.start_span(
            "legacy", attributes={"llm.request.type": "chat", attrs.TOLLMETER_TENANT_ID: "kept"}
        ).end()
        genai_tracer.start_span("no attributes yet").end()
        tracer.start_span("GET /", attributes={"http.method": "GET"}).end()
    tracer.start_span("outside", attributes={"gen_ai.operation.name": "chat"}).end()
    spans = {span.name: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    assert spans["chat gpt-4o"][attrs.TOLLMETER_TENANT_ID] == "acme"
    assert spans["chat gpt-4o"][attrs.TOLLMETER_PROJECT_ID] == "p"
    assert spans["legacy"][attrs.TOLLMETER_TENANT_ID] == "kept"
    assert spans["legacy"][attrs.TOLLMETER_PROJECT_ID] == "p"
    assert spans["no attributes yet"][attrs.TOLLMETER_TENANT_ID] == "acme"
    assert attrs.TOLLMETER_TENANT_ID not in spans["GET /"]
    assert attrs.TOLLMETER_TENANT_ID not in spans["outside"]
    provider.shutdown()


def test_span_processor_reads_the_parent_context_baggage() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(AttributionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("x")
    parent = baggage.set_baggage(attrs.TOLLMETER_TENANT_ID, "edge")
    tracer.start_span("chat m", context=parent, attributes={"gen_ai.system": "openai"}).end()
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})[attrs.TOLLMETER_TENANT_ID] == "edge"
    assert trace.get_current_span() is trace.INVALID_SPAN
    provider.shutdown()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=MAX_VALUE_LENGTH + 20))
def test_any_text_is_either_accepted_intact_or_rejected(value: str) -> None:
    valid = 0 < len(value) <= MAX_VALUE_LENGTH and value.isprintable()
    if not valid:
        with pytest.raises(ValueError, match=r"attribute\(tenant=\.\.\.\)"):
            attribute(tenant=value)
        return
    with attribute(tenant=value):
        assert current_attribution()[attrs.TOLLMETER_TENANT_ID] == value
        assert baggage.get_baggage(attrs.TOLLMETER_TENANT_ID) == value
