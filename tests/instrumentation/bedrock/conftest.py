"""boto3 ``bedrock-runtime`` clients against the fake LLM server, with the instrumentor on.

Clients get an explicit region and dummy credentials, so botocore never looks for real
ones (no files, no environment, no instance metadata service), and no retries unless a
test asks for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from tollmeter.instrumentation.bedrock import BedrockInstrumentor


def make_client(fake_llm: Any, service: str = "bedrock-runtime", attempts: int = 1) -> Any:
    return boto3.client(
        service,
        endpoint_url=fake_llm.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


@pytest.fixture
def instrumentor(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> Iterator[BedrockInstrumentor]:
    instrumentor = BedrockInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def client(fake_llm: Any, instrumentor: BedrockInstrumentor) -> Iterator[Any]:
    made = make_client(fake_llm)
    yield made
    made.close()


@pytest.fixture
def one_span(
    wait_spans: Callable[[int], tuple[ReadableSpan, ...]],
) -> Callable[[], dict[str, Any]]:
    """The attributes of the single span of the call just made (fails if there are several)."""

    def get() -> dict[str, Any]:
        spans = wait_spans(1)
        assert len(spans) == 1, [span.name for span in spans]
        return dict(spans[0].attributes or {})

    return get
