"""tollmeter beside the other GenAI instrumentations of the same SDK: one span, one metric record.

Each case enables tollmeter and one peer (OpenTelemetry's openai-v2, OpenLLMetry,
OpenInference, OpenTelemetry's botocore) on the same in-memory providers, in both orders,
and makes one call with the real SDK against the fake LLM server: the call must yield exactly
one span, carrying tollmeter's attribution and the usage the server reported, and each token
type of ``gen_ai.client.token.usage`` must be recorded once.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from tests.instrumentation.conftest import ANTHROPIC_NATIVE_SPANS
from tollmeter.instrumentation import attribute
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.instrumentation.bedrock import BedrockInstrumentor
from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

HELLO = "Name three colours of the rainbow."
NOVA = "amazon.nova-micro-v1:0"


def _openai_v2() -> BaseInstrumentor:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as Peer

    return Peer()


def _openllmetry_openai() -> BaseInstrumentor:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor as Peer

    return Peer()


def _openinference_openai() -> BaseInstrumentor:
    from openinference.instrumentation.openai import OpenAIInstrumentor as Peer

    return Peer()


def _openllmetry_anthropic() -> BaseInstrumentor:
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor as Peer

    return Peer()


def _openinference_anthropic() -> BaseInstrumentor:
    from openinference.instrumentation.anthropic import AnthropicInstrumentor as Peer

    return Peer()


def _botocore() -> BaseInstrumentor:
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor as Peer

    return Peer()


@dataclass(frozen=True)
class Peer:
    name: str
    sdk: str  # "openai", "anthropic" or "bedrock"
    make: Callable[[], BaseInstrumentor]
    ours: Callable[[], BaseInstrumentor]


PEERS = (
    Peer("openai-v2", "openai", _openai_v2, OpenAIInstrumentor),
    Peer("openllmetry", "openai", _openllmetry_openai, OpenAIInstrumentor),
    Peer("openinference", "openai", _openinference_openai, OpenAIInstrumentor),
    Peer("openllmetry", "anthropic", _openllmetry_anthropic, AnthropicInstrumentor),
    Peer("openinference", "anthropic", _openinference_anthropic, AnthropicInstrumentor),
    Peer("botocore", "bedrock", _botocore, BedrockInstrumentor),
)

# boto3 has no async client.
_MODES = {"openai": ("sync", "async", "stream"), "anthropic": ("sync", "async", "stream")}
_MODES["bedrock"] = ("sync", "stream")


def _cases() -> list[Any]:
    cases = []
    for peer in PEERS:
        for order in ("peer-first", "tollmeter-first"):
            for mode in _MODES[peer.sdk]:
                cases.append(
                    pytest.param(peer, order, mode, id=f"{peer.sdk}-{peer.name}-{order}-{mode}")
                )
    return cases


def _sdk_members() -> dict[tuple[Any, str], Any]:
    """Every class member and module function of the loaded SDK modules.

    Some peers' ``uninstrument()`` leave wrappers behind; the fixture puts these back.
    """
    members: dict[tuple[Any, str], Any] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.partition(".")[0] not in {
            "openai",
            "anthropic",
            "botocore",
        }:
            continue
        for name, value in list(vars(module).items()):
            if callable(value) and getattr(value, "__module__", None) == module_name:
                members[(module, name)] = value
            # ``type(value)``, not ``isinstance``: the latter loads the SDKs' lazy proxies.
            if issubclass(type(value), type) and value.__module__ == module_name:
                for member_name, member in list(vars(value).items()):
                    members[(value, member_name)] = member
    return members


@pytest.fixture
def pair(
    request: pytest.FixtureRequest,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> Iterator[None]:
    """tollmeter and the peer, enabled in the order of the test's parameters."""
    peer, order = request.node.callspec.params["peer"], request.node.callspec.params["order"]
    saved = _sdk_members()
    instrumentors = [peer.make(), peer.ours()]
    if order == "tollmeter-first":
        instrumentors.reverse()
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
    for instrumentor in reversed(instrumentors):
        instrumentor.uninstrument()
    for (owner, name), member in saved.items():
        if vars(owner).get(name) is not member:
            setattr(owner, name, member)


def _call_openai(fake_llm: Any, mode: str) -> None:
    messages = [{"role": "user", "content": HELLO}]
    if mode == "async":

        async def run() -> None:
            async with openai.AsyncOpenAI(
                base_url=f"{fake_llm.url}/v1", api_key="k", max_retries=0
            ) as client:
                await client.chat.completions.create(model="gpt-4o-mini", messages=messages)

        asyncio.run(run())
        return
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="k", max_retries=0) as client:
        if mode == "stream":
            chunks = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            for _ in chunks:
                pass
        else:
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)


def _anthropic_options() -> dict[str, Any]:
    # The SDK's own spans are another source, tested in tests/instrumentation/anthropic.
    if "open_telemetry" in inspect.signature(anthropic.Anthropic).parameters:
        return {"open_telemetry": False}
    return {}


def _call_anthropic(fake_llm: Any, mode: str) -> None:
    request: dict[str, Any] = {
        "model": "claude-test-small",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": HELLO}],
    }
    options = {"base_url": fake_llm.url, "api_key": "k", "max_retries": 0, **_anthropic_options()}
    if mode == "async":

        async def run() -> None:
            async with anthropic.AsyncAnthropic(**options) as client:
                await client.messages.create(**request)

        asyncio.run(run())
        return
    with anthropic.Anthropic(**options) as client:
        if mode == "stream":
            for _ in client.messages.create(**request, stream=True):
                pass
        else:
            client.messages.create(**request)


def _call_bedrock(fake_llm: Any, mode: str) -> None:
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=fake_llm.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    messages = [{"role": "user", "content": [{"text": HELLO}]}]
    try:
        if mode == "stream":
            for _ in client.converse_stream(modelId=NOVA, messages=messages)["stream"]:
                pass
        else:
            client.converse(modelId=NOVA, messages=messages)
    finally:
        client.close()


_CALLS = {"openai": _call_openai, "anthropic": _call_anthropic, "bedrock": _call_bedrock}


@pytest.mark.parametrize(("peer", "order", "mode"), _cases())
# OpenLLMetry's own models still use pydantic's deprecated class-based config.
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")
@pytest.mark.usefixtures("pair")
def test_one_span_and_one_record_per_call(
    peer: Peer,
    order: str,
    mode: str,
    fake_llm: Any,
    wait_spans: Callable[[int], tuple[ReadableSpan, ...]],
    points: Callable[[str], list[Any]],
) -> None:
    with attribute(tenant="acme", feature="peers"):
        _CALLS[peer.sdk](fake_llm, mode)
    spans = wait_spans(1)
    assert len(spans) == 1, [(span.name, span.instrumentation_scope) for span in spans]
    values = dict(spans[0].attributes or {})
    assert values[attrs.TOLLMETER_TENANT_ID] == "acme"
    assert values[attrs.TOLLMETER_FEATURE] == "peers"
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"
    truth = fake_llm.last().usage
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == truth.input_tokens
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == truth.output_tokens
    records: dict[str, int] = {}
    for point in points(metrics.GEN_AI_CLIENT_TOKEN_USAGE):
        token_type = str(point.attributes[attrs.GEN_AI_TOKEN_TYPE])
        records[token_type] = records.get(token_type, 0) + point.count
    assert records == {"input": 1, "output": 1}
    assert sum(p.count for p in points(metrics.GEN_AI_CLIENT_OPERATION_DURATION)) == 1


def _native_cases() -> list[Any]:
    natives = [True, False] if ANTHROPIC_NATIVE_SPANS else [False]
    return [
        pytest.param(peer, order, mode, native, id=f"{peer.name}-{order}-{mode}-native-{native}")
        for peer in PEERS
        if peer.sdk == "anthropic"
        for order in ("peer-first", "tollmeter-first")
        for mode in ("sync", "helper-stream")
        for native in natives
    ]


@pytest.mark.parametrize(("peer", "order", "mode", "native"), _native_cases())
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")
@pytest.mark.usefixtures("pair")
def test_the_anthropic_sdk_spans_beside_a_peer_make_one_span(
    peer: Peer,
    order: str,
    mode: str,
    native: bool,
    fake_llm: Any,
    claude_tracing: Callable[[bool], dict[str, Any]],
    wait_spans: Callable[[int], tuple[ReadableSpan, ...]],
) -> None:
    """The SDK's own span, a peer's and tollmeter's would be three: the call keeps one."""
    request: dict[str, Any] = {
        "model": "claude-test-small",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": HELLO}],
    }
    options = {"base_url": fake_llm.url, "api_key": "k", "max_retries": 0}
    with (
        attribute(tenant="acme"),
        anthropic.Anthropic(**options, **claude_tracing(native)) as client,
    ):
        if mode == "helper-stream":
            with client.messages.stream(**request) as stream:
                stream.until_done()
        else:
            client.messages.create(**request)
    spans = wait_spans(1)
    metered = [s for s in spans if attrs.GEN_AI_USAGE_INPUT_TOKENS in (s.attributes or {})]
    assert len(metered) == 1, [(s.name, s.instrumentation_scope) for s in spans]
    values = dict(metered[0].attributes or {})
    assert values[attrs.TOLLMETER_TENANT_ID] == "acme"
    truth = fake_llm.last().usage
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == truth.input_tokens
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == truth.output_tokens
