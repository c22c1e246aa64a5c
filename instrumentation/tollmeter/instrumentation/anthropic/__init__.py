"""Instrumentation of the Anthropic Python SDK: one metered span per ``messages`` call.

Usage::

    from tollmeter.instrumentation.anthropic import AnthropicInstrumentor

    AnthropicInstrumentor().instrument(tracer_provider=..., meter_provider=...)

Instrumented: ``messages.create`` (plain and ``stream=True``) and ``messages.stream``, and the
same methods of ``beta.messages`` (and of ``beta.prompt_caching.messages`` in the early releases
that have it), on ``Anthropic`` and ``AsyncAnthropic`` clients, including ``with_raw_response``.
Every SDK release from the floor in ``package`` on is supported; ``package`` detects what the
installed one offers.

Spans: when the SDK emits its own span for the call (recent releases do, by default, when a
recording tracer provider is installed), that span is enriched instead of adding a second one;
otherwise tollmeter starts a CLIENT span ``"chat {model}"``. Either way the span carries
``gen_ai.usage.input_tokens`` *including* cache reads and writes (Anthropic's own
``input_tokens`` excludes them), ``gen_ai.usage.output_tokens``, the cache read/write parts,
``gen_ai.response.finish_reasons`` (Anthropic's ``stop_reason``), the response id and model,
``tollmeter.usage.source`` and the attribution in effect when the call started.

Zero-code: ``opentelemetry-instrument python app.py`` enables it through the
``tollmeter_anthropic`` entry point. That command also enables every other installed
instrumentor; if another Anthropic instrumentation is installed it adds spans of its own
(the collector counts a call once, by response id), and
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=anthropic`` turns it off.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from tollmeter.instrumentation._attempts import unwatch_sdk, watch_sdk
from tollmeter.instrumentation._instrumentor import telemetry_for
from tollmeter.instrumentation.anthropic.package import (
    BASE_CLIENT,
    SPAN_FACTORY,
    _instruments,
    message_methods,
    span_factory,
)
from tollmeter.instrumentation.anthropic.patch import AnthropicPatch

__all__ = ["AnthropicInstrumentor"]


class AnthropicInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Meters every ``messages.create``/``messages.stream`` call of the Anthropic SDK."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        telemetry = telemetry_for(__name__, kwargs)
        factory_module = span_factory()
        watch_sdk(BASE_CLIENT)
        patch = AnthropicPatch(telemetry, native_hook=factory_module is not None)
        if factory_module is not None:
            wrap_function_wrapper(factory_module, SPAN_FACTORY, patch.start_api_call_span)
        wrappers = {
            ("create", False): patch.create,
            ("create", True): patch.acreate,
            ("stream", False): patch.stream,
            ("stream", True): patch.astream,
        }
        for owner, method, is_async in message_methods():
            wrap_function_wrapper(owner, method, wrappers[method, is_async])

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner, method, _ in message_methods():
            unwrap(owner, method)
        factory_module = span_factory()
        if factory_module is not None:
            unwrap(factory_module, SPAN_FACTORY)
        unwatch_sdk(BASE_CLIENT)
