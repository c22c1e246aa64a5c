"""OpenTelemetry instrumentation of the ``openai`` SDK with token usage and attribution.

Usage::

    from tollmeter.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()          # global tracer and meter providers
    client = openai.OpenAI()
    with tollmeter.instrumentation.attribute(tenant="acme"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])

or without code: ``opentelemetry-instrument python app.py`` (entry point
``tollmeter_openai``).

Metered, for ``OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI`` and ``AsyncAzureOpenAI``
clients: ``chat.completions.create`` (streamed or not), ``.parse`` and
``.stream``; ``responses.create``, ``.parse`` and ``.stream``; ``embeddings.create``; legacy
``completions.create``; each also through ``with_raw_response`` and
``with_streaming_response``. Every call yields one CLIENT span
``"{operation} {model}"`` with the GenAI request/response/usage attributes,
``server.address``/``server.port``, the attribution in effect at request start,
and the ``gen_ai.client.*`` metrics. When the provider reports no usage (a
stream without ``include_usage``, a cut or failed stream) the counts are
estimated with tiktoken and flagged ``tollmeter.usage.source=estimate``.

Options of ``instrument()`` (keyword-only):

- ``tracer_provider``, ``meter_provider``: default to the global providers.
- ``inject_stream_usage=False``: add ``stream_options={"include_usage": True}``
  to streamed chat and completion requests that do not set it, so that the
  provider reports exact usage. Off by default because it changes what the
  application's loop sees: one extra final chunk with an empty ``choices`` list.
- ``metric_tenant_attribute=False``: add ``tollmeter.tenant.id`` to metric
  attributes (one time series per tenant: keep it off with many tenants).
- ``provider_hosts=None``: ``{"llm.internal": "my_gateway"}``, the
  ``gen_ai.provider.name`` to report for clients whose ``base_url`` has that
  host (default: the ``TOLLMETER_OPENAI_PROVIDER_HOSTS`` variable).

The provider is told from the client: ``AzureOpenAI`` clients report
``azure.ai.openai`` with the deployment as request model, OpenAI-compatible
services (Groq, DeepSeek, Mistral, xAI, Together, ...) their own name from the
``base_url`` host, any other host ``openai``; see ``providers``.

Prompt and reply text is recorded only when content capture is on (``_content``,
``capture_message_content``). Instrumentation never changes what
the application sees: SDK exceptions propagate unchanged, tollmeter's own
failures are logged once and swallowed, and ``suppress_instrumentation`` is
honoured. ``responses.stream(response_id=...)`` (resuming an existing
response) is not metered: it generates nothing new.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap

from tollmeter.instrumentation._attempts import unwatch_sdk, watch_sdk
from tollmeter.instrumentation._instrumentor import telemetry_for
from tollmeter.instrumentation.openai.package import _instruments, find_method
from tollmeter.instrumentation.openai.patch import (
    ENDPOINTS,
    STREAM_HELPERS,
    Options,
    async_wrapper,
    stream_helper_wrapper,
    sync_wrapper,
)
from tollmeter.instrumentation.openai.providers import ProviderResolver, checked_hosts

__all__ = ["OpenAIInstrumentor"]

_BASE_CLIENT = "openai._base_client"
_BOOLEAN_OPTIONS = ("inject_stream_usage", "metric_tenant_attribute")


class OpenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Meters every call of the ``openai`` SDK; see the module docstring."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        for option in _BOOLEAN_OPTIONS:
            if not isinstance(kwargs.get(option, False), bool):
                raise ValueError(f"{option} must be a bool, got {kwargs[option]!r}")
        options = Options(
            inject_stream_usage=bool(kwargs.get("inject_stream_usage", False)),
            providers=ProviderResolver(checked_hosts(kwargs.get("provider_hosts"))),
        )
        telemetry = telemetry_for(__name__, kwargs)
        patched: list[tuple[Any, str]] = []
        for endpoint in ENDPOINTS:
            target = find_method(endpoint.module, endpoint.method)
            if target is None:
                continue
            factory = async_wrapper if endpoint.is_async else sync_wrapper
            wrapt.wrap_function_wrapper(target[0], target[1], factory(telemetry, endpoint, options))
            patched.append(target)
        for module, method, returns_async in STREAM_HELPERS:
            target = find_method(module, method)
            if target is None:
                continue
            wrapt.wrap_function_wrapper(target[0], target[1], stream_helper_wrapper(returns_async))
            patched.append(target)
        self._patched = patched
        watch_sdk(_BASE_CLIENT)

    def _uninstrument(self, **kwargs: Any) -> None:
        for cls, method in getattr(self, "_patched", ()):
            unwrap(cls, method)
        self._patched = []
        unwatch_sdk(_BASE_CLIENT)
