"""Hostile input against one running collector, from a seeded generator.

Thousands of spans carry every OTLP value type (and nestings, sizes, odd encodings and
ids) in every attribute extraction reads, over gRPC, HTTP/protobuf and HTTP/JSON; every
management route gets generated bodies and query parameters. Throughout, a control
tenant sends valid spans, some inside the hostile batches. The invariant: nothing is
answered with a 5xx, the collector stays ready, and the control tenant's totals in the
usage API are exact. A failure prints the seed and the input that broke it.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tollmeter.semconv.attributes import ALIASES

SEED = 20261204
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
CONTROL = "control"
START_NS = 1_773_500_966_000_000_000

COUNT_NAMES = sorted(
    {
        name
        for base in (
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_write.input_tokens",
            "gen_ai.usage.reasoning.output_tokens",
            "tollmeter.usage.total_tokens",
        )
        for name in (base, *ALIASES.get(base, ()))
    }
    | {"anthropic.usage.compaction.input_tokens", "anthropic.usage.compaction.output_tokens"}
)
LABEL_NAMES = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.id",
    "tollmeter.tenant.id",
    "tollmeter.project.id",
    "tollmeter.feature",
    "tollmeter.reservation.id",
    "tollmeter.attempt",
    "tollmeter.usage.source",
    "llm.request.type",
    "openinference.span.kind",
    "error.type",
)
TEXTS = (
    "",
    " 12",
    "12",
    "-3",
    "1e3",
    "0x10",
    "١٢",
    "9" * 30,
    "NaN",
    "chat",
    "embeddings",
    "openai",
    "\x00",
    "é" * 300,
    "x" * 5000,
    CONTROL,
)


class Generator:
    """Random OTLP values and spans; ``case`` describes the last span for failure messages."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def text(self) -> str:
        if self.rng.random() < 0.5:
            return self.rng.choice(TEXTS)
        size = self.rng.choice((1, 8, 40, 300))
        return "".join(self.rng.choice(string.printable + "ßü中🙂") for _ in range(size))

    def value(self, depth: int = 0) -> AnyValue:
        kind = self.rng.choice(
            ("string", "bool", "int", "double", "bytes", "array", "kvlist", "empty")
        )
        if kind == "string":
            return AnyValue(string_value=self.text())
        if kind == "bool":
            return AnyValue(bool_value=self.rng.random() < 0.5)
        if kind == "int":
            return AnyValue(
                int_value=self.rng.choice(
                    (0, 1, 7, -1, 2**40 - 1, 2**40, 2**53 + 1, 2**63 - 1, -(2**63))
                )
            )
        if kind == "double":
            return AnyValue(
                double_value=self.rng.choice((7.0, 0.5, -1.0, float("nan"), float("inf"), 1e300))
            )
        if kind == "bytes":
            return AnyValue(bytes_value=self.rng.randbytes(self.rng.choice((0, 1, 8, 64))))
        if kind == "empty" or depth > 6:
            return AnyValue()
        items = [self.value(depth + 1) for _ in range(self.rng.choice((0, 1, 3)))]
        if kind == "array":
            return AnyValue(array_value=ArrayValue(values=items))
        pairs = [KeyValue(key=self.text()[:20], value=item) for item in items]
        return AnyValue(kvlist_value=KeyValueList(values=pairs))

    def hostile_span(self, control_ids: list[str]) -> Span:
        rng = self.rng
        attributes: list[KeyValue] = [
            KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
        ]
        tenant = rng.choice(("mallory", "eve", "unknown", None))
        if tenant is not None:
            attributes.append(
                KeyValue(key="tollmeter.tenant.id", value=AnyValue(string_value=tenant))
            )
        if rng.random() < 0.5:
            # A valid call with one or two odd attributes beside it.
            attributes += [
                KeyValue(key="gen_ai.provider.name", value=AnyValue(string_value="openai")),
                KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=11)),
                KeyValue(key="gen_ai.usage.output_tokens", value=AnyValue(int_value=3)),
            ]
            hostile = rng.sample(COUNT_NAMES, rng.choice((0, 1)))
            if control_ids and rng.random() < 0.3:
                # The control tenant's past and coming ids, reported for another tenant.
                taken = AnyValue(string_value=rng.choice(control_ids))
                attributes.append(KeyValue(key="gen_ai.response.id", value=taken))
        else:
            hostile = rng.sample(COUNT_NAMES, rng.choice((1, 2, 4)))
        for name in hostile:
            attributes.append(KeyValue(key=name, value=self.value()))
        for name in rng.sample(LABEL_NAMES, rng.choice((0, 2, 5))):
            if name == "tollmeter.tenant.id":
                # Any type but a string (which could name the control tenant).
                value = self.value()
                if value.WhichOneof("value") == "string_value":
                    value = AnyValue(bytes_value=b"control")
            elif name == "gen_ai.response.id" and control_ids and rng.random() < 0.5:
                value = AnyValue(string_value=rng.choice(control_ids))
            else:
                value = self.value()
            attributes.append(KeyValue(key=name, value=value))
        rng.shuffle(attributes)
        return Span(
            trace_id=rng.choice((b"", rng.randbytes(16), rng.randbytes(7), bytes(16))),
            span_id=rng.choice((b"", rng.randbytes(8), rng.randbytes(3))),
            name=self.text()[:100],
            start_time_unix_nano=rng.choice((START_NS, 0, 2**64 - 1, START_NS + 1)),
            end_time_unix_nano=rng.choice((START_NS + 10**9, 0, 2**64 - 1)),
            attributes=attributes,
        )


class Control:
    """Valid spans of the control tenant, and what they add up to."""

    def __init__(self) -> None:
        self.count = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.next_number = 1

    def known_ids(self) -> list[str]:
        """Response ids the control tenant used lately or is about to use."""
        return [f"control-{n}" for n in range(max(1, self.next_number - 3), self.next_number + 3)]

    def span(self, rng: random.Random) -> tuple[Span, tuple[str, int, int]]:
        number = self.next_number
        self.next_number += 1
        response_id = f"control-{number}"
        inputs, outputs = rng.randrange(1, 5000), rng.randrange(0, 500)
        attributes = {
            "gen_ai.operation.name": AnyValue(string_value="chat"),
            "gen_ai.provider.name": AnyValue(string_value="openai"),
            "gen_ai.request.model": AnyValue(string_value="gpt-4o-mini"),
            "gen_ai.response.id": AnyValue(string_value=response_id),
            "gen_ai.usage.input_tokens": AnyValue(int_value=inputs),
            "gen_ai.usage.output_tokens": AnyValue(int_value=outputs),
            "tollmeter.tenant.id": AnyValue(string_value=CONTROL),
        }
        span = Span(
            trace_id=number.to_bytes(16, "big"),
            span_id=number.to_bytes(8, "big"),
            name="chat gpt-4o-mini",
            start_time_unix_nano=START_NS,
            end_time_unix_nano=START_NS + 10**9,
            attributes=[KeyValue(key=k, value=v) for k, v in attributes.items()],
        )
        return span, (response_id, inputs, outputs)

    def accepted(self, sent: list[tuple[str, int, int]]) -> None:
        for _, inputs, outputs in sent:
            self.count += 1
            self.input_tokens += inputs
            self.output_tokens += outputs


def _request(spans: list[Span]) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="h"))
    resource_spans.scope_spans.add().spans.extend(spans)
    return message


def _otlp_json(message: ExportTraceServiceRequest) -> bytes:
    document = json_format.MessageToDict(message)

    def hex_ids(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hex_ids(value)
        elif isinstance(node, list):
            for item in node:
                hex_ids(item)

    hex_ids(document)
    return json.dumps(document).encode()


JSON_MUTATIONS: tuple[Callable[[bytes], bytes], ...] = (
    lambda body: body,
    lambda body: body.replace(b'"intValue": "', b'"intValue": "x', 1),
    lambda body: body.replace(b'"intValue": "', b'"intValue": "1e3', 1),
    lambda body: body.replace(b'"stringValue": "chat"', b'"intValue": 1e400', 1),
    lambda body: body.replace(b'"stringValue": "chat"', b'"doubleValue": "Infinity"', 1),
    lambda body: body.replace(b'"stringValue": "chat"', b'"bytesValue": "not base64!"', 1),
    lambda body: body.replace(b'"traceId": "', b'"traceId": "zz', 1),
    lambda body: body.replace(b'"spanId": "', b'"spanId": 7, "x": "', 1),
    lambda body: body[: len(body) // 2],
    lambda body: b'{"resourceSpans": ' + b"[" * 5000 + b"]" * 5000 + b"}",
)


@pytest.fixture(scope="module")
def running(module_collector_factory: Callable[..., Any]) -> Any:
    return module_collector_factory(
        limits={
            "reservation_ttl": "1h",
            "rules": [{"name": "daily", "limit": 10**12, "window": "day", "alert_at": [0.5]}],
        },
    )


@pytest.fixture(scope="module")
def control() -> Control:
    return Control()


@pytest.fixture(scope="module")
def management(running: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.management_url, timeout=30) as client:
        yield client


def _assert_healthy(running: Any, management: httpx.Client, control: Control) -> None:
    assert management.get("/readyz").status_code == 200
    rows = management.get("/api/v1/usage", params={"tenant": CONTROL}).json()["rows"]
    got = (
        (rows[0]["requests"], rows[0]["input_tokens"], rows[0]["output_tokens"])
        if rows
        else (0, 0, 0)
    )
    assert got == (control.count, control.input_tokens, control.output_tokens)


def test_hostile_spans_over_every_transport(
    running: Any, management: httpx.Client, control: Control
) -> None:
    rng = random.Random(SEED)
    generator = Generator(rng)
    transports = ("grpc", "protobuf", "json")
    spans_sent = 0
    with (
        grpc.insecure_channel(running.grpc_endpoint) as channel,
        httpx.Client(base_url=running.http_endpoint, timeout=30) as http,
    ):
        export = channel.unary_unary(
            TRACES, response_deserializer=ExportTraceServiceResponse.FromString
        )
        for batch in range(480):
            hostile = [generator.hostile_span(control.known_ids()) for _ in range(15)]
            control_span, sent = control.span(rng)
            spans = [*hostile, control_span]
            rng.shuffle(spans)
            message = _request(spans)
            transport = transports[batch % 3]
            context = f"seed {SEED}, batch {batch}, {transport}: {message}"[:20_000]
            if transport == "grpc":
                code = grpc.StatusCode.OK
                try:
                    export(message.SerializeToString(), timeout=30)
                except grpc.RpcError as error:
                    code = error.code()
                assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), context
                accepted = code is grpc.StatusCode.OK
            elif transport == "protobuf":
                answer = http.post(
                    "/v1/traces",
                    content=message.SerializeToString(),
                    headers={"content-type": "application/x-protobuf"},
                )
                assert answer.status_code in (200, 400), context
                accepted = answer.status_code == 200
            else:
                mutate = JSON_MUTATIONS[batch // 3 % len(JSON_MUTATIONS)]
                answer = http.post(
                    "/v1/traces",
                    content=mutate(_otlp_json(message)),
                    headers={"content-type": "application/json"},
                )
                assert answer.status_code in (200, 400), context
                accepted = answer.status_code == 200
            if accepted:
                control.accepted([sent])
            spans_sent += len(spans)
            if batch % 120 == 119:
                _assert_healthy(running, management, control)
    assert spans_sent >= 7000
    assert control.count > 300
    _assert_healthy(running, management, control)


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(11)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.choice((0, 1, -1, 7, 10**6, 2**53 + 1, 10**30, -(10**30)))
    if choice == 3:
        return rng.choice((0.5, -0.5, 1e300, float("nan"), float("inf"), -float("inf")))
    if choice in (4, 5):
        return rng.choice((*TEXTS, "acme", "day", "1m", "block", "2026-01-01", "9999-12-31"))
    if choice == 6 and depth < 3:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if choice == 7 and depth < 3:
        return {rng.choice(RULE_KEYS): _json_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if choice == 8:
        return "x" * rng.choice((257, 5000))
    return rng.choice(("acme", CONTROL, "mallory"))


RULE_KEYS = (
    "name",
    "limit",
    "window",
    "per",
    "burst",
    "type",
    "period",
    "measure",
    "weights",
    "action",
    "alert_at",
    "match",
    "group_by",
    "timezone",
    "currency",
    "downgrade_model",
)
BODY_KEYS = {
    "/api/v1/check": (
        "tenant",
        "estimated_input_tokens",
        "max_output_tokens",
        "dry_run",
        "model",
        "project",
        "request_id",
        "feature",
        "api_key_id",
    ),
    "/api/v1/reconcile": (
        "reservation_id",
        "cancelled",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_write_input_tokens",
        "reasoning_output_tokens",
        "duration_s",
        "provider",
        "response_id",
        "status",
    ),
    "/api/v1/limits": (
        "rules",
        "timezone",
        "reservation_ttl",
        "expired_reservations",
        "state_flush_interval",
        "forecast_interval",
    ),
}
QUERY_KEYS = {
    "/api/v1/usage": (
        "tenant",
        "project",
        "model",
        "feature",
        "api_key",
        "usage_source",
        "start",
        "end",
        "group_by",
        "window",
        "limit",
    ),
    "/api/v1/events": ("after", "limit"),
    "/api/v1/meters": ("window", "group_by"),
    "/api/v1/export": ("timeout",),
}
QUERY_VALUES = (
    "",
    "0",
    "-1",
    "1",
    "10001",
    "99999999999999999999999",
    "NaN",
    "inf",
    "1e3",
    "tenant,model",
    "tenant,tenant",
    "day",
    "minute",
    "2026-01-01",
    "2026-01-01T00:00:00+14:00",
    "0001-01-01",
    "9999-12-31T23:59:59",
    "1969-12-31T23:59:59Z",
    "\x00",
    "é" * 2000,
)


def _body(rng: random.Random, route: str, reservations: list[str]) -> bytes:
    keys = BODY_KEYS[route]
    document: dict[str, Any] = {
        key: _json_value(rng) for key in rng.sample(keys, rng.randrange(len(keys) + 1))
    }
    if route == "/api/v1/limits" and rng.random() < 0.5:
        document["rules"] = [
            {key: _json_value(rng) for key in rng.sample(RULE_KEYS, rng.randrange(2, 8))}
            for _ in range(rng.randrange(3))
        ]
    elif route == "/api/v1/limits" and rng.random() < 0.5:
        # A valid rule with one value swapped for a generated one.
        rule: dict[str, Any] = {"name": "r", "limit": 10**12, "window": {"per": "1d"}}
        rule[rng.choice(("limit", "window", "alert_at", "name"))] = _json_value(rng)
        if rng.random() < 0.3:
            rule["window"] = {"per": "1d", "burst": _json_value(rng)}
        document = {"rules": [rule]}
    if route == "/api/v1/reconcile" and reservations and rng.random() < 0.5:
        document["reservation_id"] = rng.choice(reservations)
    if route == "/api/v1/check" and rng.random() < 0.3:
        document = {
            "tenant": rng.choice(("acme", "mallory")),
            "estimated_input_tokens": rng.randrange(1000),
        }
    if rng.random() < 0.1:
        document[rng.choice(("surprise", ""))] = 1
    encoded = json.dumps(document, allow_nan=True).encode()
    return rng.choice(
        (encoded, encoded, encoded, encoded[:-1], b"[]", b"", b"\xff", b"null", b"1e400")
    )


def test_hostile_management_requests(
    running: Any, management: httpx.Client, control: Control
) -> None:
    rng = random.Random(SEED + 1)
    reservations: list[str] = []
    answered = 0
    for number in range(3000):
        if number % 3 == 0:
            route = rng.choice(tuple(QUERY_KEYS))
            keys = QUERY_KEYS[route]
            params = [
                (key, rng.choice(QUERY_VALUES))
                for key in rng.sample(keys, rng.randrange(len(keys) + 1))
            ]
            if rng.random() < 0.1:
                params.append((rng.choice(("bogus", "tenant")), "x"))
            method = "POST" if route == "/api/v1/export" else "GET"
            answer = management.request(method, route, params=params)
            context = f"seed {SEED + 1}, #{number}: {method} {route} {params}"
        elif number % 3 == 1:
            tenant = rng.choice(("acme", CONTROL, "x" * 300, "%00", "..", "é"))
            answer = management.get(f"/api/v1/tenants/{tenant}/status")
            context = f"seed {SEED + 1}, #{number}: status of {tenant!r}"
        else:
            route = rng.choice(tuple(BODY_KEYS))
            body = _body(rng, route, reservations)
            method = "PUT" if route == "/api/v1/limits" else "POST"
            answer = management.request(
                method, route, content=body, headers={"content-type": "application/json"}
            )
            context = f"seed {SEED + 1}, #{number}: {method} {route} {body[:2000]!r}"
            if route == "/api/v1/check" and answer.status_code == 200:
                reserved = answer.json().get("reservation_id")
                if reserved:
                    reservations.append(reserved)
        assert answer.status_code < 500, f"{context} -> {answer.status_code} {answer.text[:500]}"
        answered += 1
        if number % 1000 == 999:
            _assert_healthy(running, management, control)
    assert answered == 3000
    assert management.get("/api/v1/limits").status_code == 200
    _assert_healthy(running, management, control)
