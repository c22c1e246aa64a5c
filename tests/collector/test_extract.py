"""Extraction of usage events from OTLP spans built with the protobuf classes."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tollmeter.collector._extract import MAX_ATTRIBUTES, MAX_LABEL, Extractor, event_id
from tollmeter.semconv.attributes import ALIASES

START_NS = 1_773_500_966_000_000_000
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(
            kvlist_value=KeyValueList(
                values=[KeyValue(key=k, value=any_value(v)) for k, v in value.items()]
            )
        )
    return AnyValue(string_value=value)


def kvs(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def span(
    attributes: dict[str, Any], *, number: int = 1, error: bool = False, **fields: Any
) -> Span:
    values: dict[str, Any] = {
        "trace_id": TRACE,
        "span_id": number.to_bytes(8, "big"),
        "name": "chat gpt-4o",
        "start_time_unix_nano": START_NS,
        "end_time_unix_nano": START_NS + 1_500_000_000,
        "attributes": kvs(attributes),
    }
    if error:
        values["status"] = Status(code=Status.STATUS_CODE_ERROR, message="boom")
    values.update(fields)
    return Span(**values)


def request(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    resource_spans.resource.attributes.extend(kvs(resource or {"service.name": "shop"}))
    resource_spans.scope_spans.add().spans.extend(spans)
    return message


OTEL_CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.response.id": "chatcmpl-1",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 40,
    "gen_ai.usage.cache_read.input_tokens": 30,
    "gen_ai.usage.reasoning.output_tokens": 10,
    "tollmeter.tenant.id": "acme",
}


def test_current_otel_chat_span_becomes_one_event() -> None:
    result = Extractor(collector_id="c1").extract(request(span(OTEL_CHAT)))

    assert (result.accepted_spans, result.rejected_spans, result.errors) == (1, 0, [])
    (event,) = result.events
    assert event.event_id == event_id("acme", "openai", "chatcmpl-1", "", "")
    assert (event.tenant_id, event.provider, event.operation) == ("acme", "openai", "chat")
    assert (event.request_model, event.response_model) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert (event.input_tokens, event.cache_read_input_tokens, event.output_tokens) == (100, 30, 40)
    assert (event.reasoning_output_tokens, event.total_tokens) == (10, 140)
    assert (event.event_time_ns, event.duration_s) == (START_NS, 1.5)
    assert (event.trace_id, event.span_id) == (TRACE.hex(), "0000000000000001")
    assert (event.status, event.usage_source, event.service_name) == ("ok", "provider", "shop")
    assert event.collector_id == "c1"


@pytest.mark.parametrize(
    ("dialect", "attributes", "expected"),
    [
        (
            "deprecated otel",
            {
                "gen_ai.system": "openai",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.prompt_tokens": 12,
                "gen_ai.usage.completion_tokens": 3,
            },
            ("openai", "chat", 12, 3, 15),
        ),
        (
            "openllmetry",
            {
                "gen_ai.system": "OpenAI",
                "llm.request.type": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.prompt_tokens": 20,
                "gen_ai.usage.completion_tokens": 5,
                "llm.usage.total_tokens": 25,
            },
            ("openai", "chat", 20, 5, 25),
        ),
        (
            "openinference",
            {
                "openinference.span.kind": "LLM",
                "llm.provider": "openai",
                "llm.model_name": "gpt-4o",
                "llm.token_count.prompt": 7,
                "llm.token_count.completion": 2,
                "llm.token_count.total": 9,
            },
            ("openai", "chat", 7, 2, 9),
        ),
        (
            "anthropic native",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4-5",
                "gen_ai.usage.input_tokens": 160,
                "gen_ai.usage.cache_read.input_tokens": 100,
                "gen_ai.usage.cache_write.input_tokens": 50,
                "gen_ai.usage.output_tokens": 20,
            },
            ("anthropic", "chat", 160, 20, 180),
        ),
        (
            "embeddings",
            {
                "gen_ai.operation.name": "embeddings",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": 8,
            },
            ("openai", "embeddings", 8, 0, 8),
        ),
    ],
)
def test_dialects(dialect, attributes, expected) -> None:
    (event,) = Extractor().extract(request(span(attributes))).events
    got = (
        event.provider,
        event.operation,
        event.input_tokens,
        event.output_tokens,
        event.total_tokens,
    )
    assert got == expected, dialect


def test_agent_workflow_and_tool_spans_are_ignored_not_rejected() -> None:
    usage = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10}
    spans = [
        span({"gen_ai.operation.name": "invoke_agent", **usage}, number=1),
        span({"traceloop.span.kind": "workflow", **usage}, number=2),
        span({"gen_ai.operation.name": "execute_tool"}, number=3),
        span({"http.method": "GET"}, number=4),
        span({"gen_ai.operation.name": "chat", **usage}, number=5),
    ]
    result = Extractor().extract(request(*spans))

    assert (result.accepted_spans, result.rejected_spans) == (5, 0)
    assert [e.span_id for e in result.events] == ["0000000000000005"]


def test_chat_span_without_usage_is_not_metered() -> None:
    result = Extractor().extract(request(span({"gen_ai.operation.name": "chat"})))
    assert (result.events, result.rejected_spans) == ([], 0)


def test_invalid_usage_rejects_that_span_alone() -> None:
    bad = span({**OTEL_CHAT, "gen_ai.usage.input_tokens": -5}, number=1, name="chat bad")
    good = span({**OTEL_CHAT, "gen_ai.response.id": "chatcmpl-2"}, number=2)
    result = Extractor().extract(request(bad, good))

    assert (result.accepted_spans, result.rejected_spans) == (1, 1)
    assert [e.response_id for e in result.events] == ["chatcmpl-2"]
    (message,) = result.errors
    assert "0000000000000001" in message
    assert "chat bad" in message
    assert "gen_ai.usage.input_tokens" in message


def test_error_spans_with_usage_are_metered_as_errors() -> None:
    failed = span({**OTEL_CHAT, "error.type": "timeout"}, error=True)
    untyped = span({**OTEL_CHAT, "gen_ai.response.id": "x"}, number=2, error=True)
    first, second = Extractor().extract(request(failed, untyped)).events

    assert (first.status, first.error_type) == ("error", "timeout")
    assert (second.status, second.error_type) == ("error", "_OTHER")


def test_event_id_falls_back_to_trace_and_span() -> None:
    attributes = {k: v for k, v in OTEL_CHAT.items() if k != "gen_ai.response.id"}
    (event,) = Extractor().extract(request(span(attributes, number=9))).events
    assert event.event_id == event_id("acme", "openai", None, TRACE.hex(), "0000000000000009")
    assert event.response_id is None


def test_same_response_id_from_two_instrumentations_has_one_event_id() -> None:
    ours = span(OTEL_CHAT, number=1)
    theirs = span(
        {
            "gen_ai.system": "openai",
            "llm.request.type": "chat",
            "gen_ai.response.id": "chatcmpl-1",
            "gen_ai.usage.prompt_tokens": 100,
            "gen_ai.usage.completion_tokens": 40,
            "tollmeter.tenant.id": "acme",
        },
        number=2,
    )
    first, second = Extractor().extract(request(ours, theirs)).events
    assert first.event_id == second.event_id


def test_the_same_call_ids_of_two_tenants_are_two_events() -> None:
    by_response = [span({**OTEL_CHAT, "tollmeter.tenant.id": t}, number=1) for t in ("a", "b")]
    without = {k: v for k, v in OTEL_CHAT.items() if k != "gen_ai.response.id"}
    by_span = [span({**without, "tollmeter.tenant.id": t}, number=2) for t in ("a", "b")]
    for pair in (by_response, by_span):
        first, second = Extractor().extract(request(*pair)).events
        assert first.event_id != second.event_id


def test_no_tenant_and_response_id_can_spell_another_pair() -> None:
    # Without a separator the text of both keys would read "ab" + "openai" + "x".
    assert event_id("ab", "openai", "x", "", "") != event_id("a", "bopenai", "x", "", "")
    assert event_id("a", "openai", "bx", "", "") != event_id("a", "openaib", "x", "", "")


class TestTenantChain:
    base: ClassVar[dict[str, Any]] = {
        k: v for k, v in OTEL_CHAT.items() if k != "tollmeter.tenant.id"
    }

    def tenant(self, extractor: Extractor, attrs: dict[str, Any], resource: dict[str, Any]) -> str:
        (event,) = extractor.extract(
            request(span({**self.base, **attrs}), resource=resource)
        ).events
        return event.tenant_id

    def test_span_attribute_wins(self) -> None:
        resource = {"tollmeter.tenant.id": "from-resource"}
        assert self.tenant(Extractor(), {"tollmeter.tenant.id": "span"}, resource) == "span"

    def test_resource_attribute_next(self) -> None:
        resource = {"tollmeter.tenant.id": "res", "user.id": "u"}
        assert self.tenant(Extractor(tenant_attributes=["user.id"]), {}, resource) == "res"

    def test_fallbacks_in_order_span_then_resource(self) -> None:
        extractor = Extractor(tenant_attributes=["user.id", "service.name"])
        assert self.tenant(extractor, {"user.id": "u-span"}, {"user.id": "u-res"}) == "u-span"
        assert self.tenant(extractor, {}, {"user.id": "u-res", "service.name": "s"}) == "u-res"
        assert self.tenant(extractor, {}, {"service.name": "s"}) == "s"

    def test_custom_fallback_attribute(self) -> None:
        extractor = Extractor(tenant_attributes=["customer.id"])
        assert self.tenant(extractor, {}, {"customer.id": "c-9"}) == "c-9"

    def test_default_last(self) -> None:
        assert self.tenant(Extractor(default_tenant="nobody"), {}, {}) == "nobody"

    def test_integer_tenant_ids_are_text(self) -> None:
        assert self.tenant(Extractor(), {"tollmeter.tenant.id": 42}, {}) == "42"

    def test_bound_tenant_fills_and_guards(self) -> None:
        extractor = Extractor(tenant_attributes=["user.id"])
        spans = [
            span({**self.base, "user.id": "u"}, number=1),
            span({**self.base, "gen_ai.response.id": "b", "tollmeter.tenant.id": "a"}, number=2),
            span({**self.base, "gen_ai.response.id": "c", "tollmeter.tenant.id": "b"}, number=3),
        ]
        result = extractor.extract(request(*spans), bound_tenant="a")

        assert [e.tenant_id for e in result.events] == ["a", "a"]
        assert result.rejected_spans == 1
        assert "'b' does not match the ingest key's tenant" in result.errors[0]


class TestHostileInput:
    def test_too_many_attributes(self) -> None:
        crowded = {**OTEL_CHAT, **{f"junk.{i}": i for i in range(MAX_ATTRIBUTES)}}
        result = Extractor().extract(request(span(crowded)))
        assert (result.events, result.rejected_spans) == ([], 1)
        assert "attributes, more than" in result.errors[0]

    def test_long_strings_are_cut_and_ids_hashed_whole(self) -> None:
        long_id = "r" * 10_000
        attrs = {**OTEL_CHAT, "gen_ai.response.id": long_id, "tollmeter.project.id": "p" * 999}
        twin = {**attrs, "gen_ai.response.id": long_id[:-1] + "x"}
        first, second = Extractor().extract(request(span(attrs), span(twin, number=2))).events
        assert len(first.project_id or "") == MAX_LABEL
        assert len(first.response_id or "") == MAX_LABEL
        assert first.event_id != second.event_id

    def test_absurd_tenant_is_refused(self) -> None:
        result = Extractor().extract(request(span({**OTEL_CHAT, "tollmeter.tenant.id": "t" * 300})))
        assert result.rejected_spans == 1
        assert "tenant id longer than" in result.errors[0]

    def test_missing_ids_without_response_id(self) -> None:
        attrs = {k: v for k, v in OTEL_CHAT.items() if k != "gen_ai.response.id"}
        result = Extractor().extract(request(span(attrs, trace_id=b"", span_id=b"")))
        assert result.rejected_spans == 1
        assert "no gen_ai.response.id" in result.errors[0]

    @pytest.mark.parametrize("start", [0, 1, 2**63 - 1])
    def test_implausible_times(self, start: int) -> None:
        result = Extractor().extract(request(span(OTEL_CHAT, start_time_unix_nano=start)))
        assert result.rejected_spans == 1

    def test_odd_values_do_not_break_extraction(self) -> None:
        nested: Any = "leaf"
        for _ in range(10):
            nested = {"deeper": [nested]}
        attrs = {
            **OTEL_CHAT,
            "tollmeter.feature": b"\xff\xfe",
            "tollmeter.project.id": "café ☕",
            "nested": nested,
            "gen_ai.usage.output_tokens": "40",
        }
        (event,) = Extractor().extract(request(span(attrs))).events
        assert event.feature is None
        assert event.project_id == "café ☕"
        assert event.output_tokens == 40

    def test_token_counts_of_the_wrong_type_are_rejected(self) -> None:
        for value in (1.5, True, "12abc", [1], 2**62):
            result = Extractor().extract(
                request(span({**OTEL_CHAT, "gen_ai.usage.input_tokens": value}))
            )
            assert result.rejected_spans == 1, value

    def test_huge_resource_is_ignored_not_fatal(self) -> None:
        resource = {f"r.{i}": i for i in range(MAX_ATTRIBUTES + 1)}
        (event,) = Extractor().extract(request(span(OTEL_CHAT), resource=resource)).events
        assert event.service_name is None


def test_captured_content_and_unknown_attributes_do_not_get_in_the_way() -> None:
    attrs = {
        **OTEL_CHAT,
        "gen_ai.prompt.0.content": "secret prompt " * 50_000,
        "gen_ai.completion.0.content": "secret reply " * 50_000,
        **{f"app.label.{i}": i for i in range(200)},
    }
    (event,) = Extractor().extract(request(span(attrs))).events
    assert (event.input_tokens, event.output_tokens, event.tenant_id) == (100, 40, "acme")
    assert "secret" not in repr(event)


def test_estimated_usage_is_marked() -> None:
    (event,) = (
        Extractor()
        .extract(request(span({**OTEL_CHAT, "tollmeter.usage.source": "estimate"})))
        .events
    )
    assert event.usage_source == "estimate"


def test_labels_from_span_then_resource() -> None:
    attrs = {**OTEL_CHAT, "tollmeter.feature": "search", "tollmeter.attempt": 2}
    resource = {
        "service.name": "shop",
        "tollmeter.project.id": "web",
        "tollmeter.feature": "ignored",
        "tollmeter.environment": "prod",
    }
    (event,) = Extractor().extract(request(span(attrs), resource=resource)).events
    assert (event.feature, event.project_id, event.environment) == ("search", "web", "prod")
    assert event.attempt == 2


def test_environment_falls_back_to_the_deployment_resource_attribute() -> None:
    resource = {"deployment.environment.name": "staging"}
    attrs = {**OTEL_CHAT, "tollmeter.attempt": True}
    (event,) = Extractor().extract(request(span(attrs), resource=resource)).events
    assert (event.environment, event.attempt) == ("staging", None)


# Every name a count is read from, with the other names of the same count: where several
# are present the newest is read, so each is tested as the only one of its family.
USAGE_FAMILIES = {
    name: (base, *ALIASES.get(base, ()))
    for base in (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "tollmeter.usage.total_tokens",
        "anthropic.usage.compaction.input_tokens",
        "anthropic.usage.compaction.output_tokens",
    )
    for name in (base, *ALIASES.get(base, ()))
}
NOT_COUNTS = {
    "bytes": AnyValue(bytes_value=b"\x00\x00\x00\x07"),
    "empty bytes": AnyValue(bytes_value=b""),
    "empty": AnyValue(),
    "bool": AnyValue(bool_value=True),
    "double": AnyValue(double_value=7.0),
    "nan": AnyValue(double_value=float("nan")),
    "infinity": AnyValue(double_value=float("inf")),
    "negative": AnyValue(int_value=-1),
    "too large": AnyValue(int_value=2**53),
    "text": AnyValue(string_value="seven"),
    "array": any_value([7]),
    "kvlist": any_value({"value": 7}),
}


@pytest.mark.parametrize("value", NOT_COUNTS.values(), ids=NOT_COUNTS.keys())
@pytest.mark.parametrize("attribute", sorted(USAGE_FAMILIES))
def test_a_usage_attribute_that_is_not_a_count_rejects_its_span(
    attribute: str, value: AnyValue
) -> None:
    others = {k: v for k, v in OTEL_CHAT.items() if k not in USAGE_FAMILIES[attribute]}
    bad = span({**others, "gen_ai.response.id": "bad"}, number=1)
    bad.attributes.append(KeyValue(key=attribute, value=value))
    good = span({**OTEL_CHAT, "gen_ai.response.id": "good"}, number=2)
    result = Extractor().extract(request(bad, good))

    assert (result.accepted_spans, result.rejected_spans) == (1, 1)
    assert [e.response_id for e in result.events] == ["good"]
    assert attribute in result.errors[0]


@pytest.mark.parametrize(
    "value", [AnyValue(bytes_value=b"acme"), AnyValue(), AnyValue(double_value=1.0)]
)
def test_a_tenant_id_that_is_not_text_rejects_the_span(value: AnyValue) -> None:
    bad = span({k: v for k, v in OTEL_CHAT.items() if k != "tollmeter.tenant.id"})
    bad.attributes.append(KeyValue(key="tollmeter.tenant.id", value=value))
    result = Extractor(default_tenant="house").extract(request(bad))
    assert (result.events, result.rejected_spans) == ([], 1)
    assert "tollmeter.tenant.id" in result.errors[0]
