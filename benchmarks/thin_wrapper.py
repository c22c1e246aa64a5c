"""The thinnest OpenTelemetry wrapper of OpenAI chat calls: a reference, not a product.

``instrumentation_overhead.py`` runs it as the ``openai/thin-wrapper`` variant to show what
an instrumentation that does nothing but emit the telemetry costs per call: the CLIENT span
with the request and response attributes tollmeter sets, made current around the request,
and the duration and two token-usage records with the request and response model. No
attribution, guard or budget hook, peer handling, retry attempts, estimates or failure
containment: what tollmeter adds over it is what those cost.

Streams are passed through unmetered, so only the variant's non-streaming figures mean
anything.
"""

from __future__ import annotations

import time
from typing import Any

import wrapt
from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import get_meter
from opentelemetry.trace import SpanKind


class ThinOpenAIInstrumentor:
    def __init__(self) -> None:
        self._on = False

    def instrument(self, tracer_provider: Any = None) -> None:
        tracer = trace.get_tracer("bench.thin", tracer_provider=tracer_provider)
        meter = get_meter("bench.thin")
        duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
        tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")

        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if kwargs.get("stream"):
                return wrapped(*args, **kwargs)
            model = kwargs.get("model")
            request = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "server.address": "bench.invalid",
                "server.port": 80,
            }
            max_tokens = kwargs.get("max_tokens")
            if isinstance(max_tokens, int):
                request["gen_ai.request.max_tokens"] = max_tokens
            started = time.perf_counter()
            span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=request)
            token = context.attach(trace.set_span_in_context(span))
            try:
                result = wrapped(*args, **kwargs)
            finally:
                context.detach(token)
            usage = result.usage
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                    "gen_ai.response.model": result.model,
                    "gen_ai.response.id": result.id,
                    "gen_ai.response.finish_reasons": [c.finish_reason for c in result.choices],
                }
            )
            span.end()
            metric = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": result.model,
            }
            duration.record(time.perf_counter() - started, metric)
            tokens.record(usage.prompt_tokens, {**metric, "gen_ai.token.type": "input"})
            tokens.record(usage.completion_tokens, {**metric, "gen_ai.token.type": "output"})
            return result

        wrapt.wrap_function_wrapper(
            "openai.resources.chat.completions", "Completions.create", wrapper
        )
        self._on = True

    def uninstrument(self) -> None:
        if self._on:
            from openai.resources.chat.completions import Completions

            unwrap(Completions, "create")
            self._on = False
