"""Instrumentation of the Anthropic Python SDK: one metered span per ``messages`` call.

Usage::

    from tollmeter.instrumentation.anthropic import AnthropicInstrumentor

    AnthropicInstrumentor().instrument(tracer_provider=..., meter_provider=...)

Instrumented: ``messages.create`` (plain and ``stream=True``) and ``messages.stream``, and the
same methods of ``beta.messages``, on ``Anthropic`` and ``AsyncAnthropic`` clients, including
``with_raw_response``.

Spans: when the SDK emits its own span for the call (its default when a recording tracer
provider is installed), that span is enriched instead of adding a second one; otherwise
tollmeter starts a CLIENT span ``"chat {model}"``. Either way the span carries
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

import importlib
import importlib.util
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from tollmeter.instrumentation._attempts import unwatch_sdk, watch_sdk
from tollmeter.instrumentation._configure import ensure_attribution_processor
from tollmeter.instrumentation._telemetry import Telemetry
from tollmeter.instrumentation.anthropic.package import _instruments
from tollmeter.instrumentation.anthropic.patch import AnthropicPatch

__all__ = ["AnthropicInstrumentor"]

_MESSAGES = "anthropic.resources.messages.messages"
_BETA_MESSAGES = "anthropic.resources.beta.messages.messages"
_BASE_CLIENT = "anthropic._base_client"
_SPAN_FACTORY = "start_api_call_span"


class AnthropicInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Meters every ``messages.create``/``messages.stream`` call of the Anthropic SDK."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        import anthropic._base_client as base_client

        tracer_provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        ensure_attribution_processor(tracer_provider)
        telemetry = Telemetry(
            __name__,
            tracer_provider=tracer_provider,
            meter_provider=kwargs.get("meter_provider"),
        )
        # SDK versions without native spans have no span factory: tollmeter then always
        # starts its own span.
        native_hook = callable(getattr(base_client, _SPAN_FACTORY, None))
        watch_sdk(_BASE_CLIENT)
        patch = AnthropicPatch(telemetry, native_hook=native_hook)
        if native_hook:
            wrap_function_wrapper(_BASE_CLIENT, _SPAN_FACTORY, patch.start_api_call_span)
        for module in _modules():
            wrap_function_wrapper(module, "Messages.create", patch.create)
            wrap_function_wrapper(module, "AsyncMessages.create", patch.acreate)
            wrap_function_wrapper(module, "Messages.stream", patch.stream)
            wrap_function_wrapper(module, "AsyncMessages.stream", patch.astream)

    def _uninstrument(self, **kwargs: Any) -> None:
        import anthropic._base_client as base_client

        for module_name in _modules():
            module = importlib.import_module(module_name)
            for owner in (module.Messages, module.AsyncMessages):
                unwrap(owner, "create")
                unwrap(owner, "stream")
        unwrap(base_client, _SPAN_FACTORY)
        unwatch_sdk(_BASE_CLIENT)


def _modules() -> list[str]:
    """The resource modules to wrap: stable ``messages`` and, when present, ``beta.messages``."""
    modules = [_MESSAGES]
    if importlib.util.find_spec(_BETA_MESSAGES) is not None:
        modules.append(_BETA_MESSAGES)
    return modules
