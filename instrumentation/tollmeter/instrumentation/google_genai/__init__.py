"""OpenTelemetry instrumentation of the ``google-genai`` SDK with token usage and attribution.

Usage::

    from google import genai
    from tollmeter.instrumentation.google_genai import GoogleGenAIInstrumentor

    GoogleGenAIInstrumentor().instrument()     # global tracer and meter providers
    client = genai.Client()
    with tollmeter.attribute(tenant="acme"):
        client.models.generate_content(model="gemini-2.5-flash", contents="...")

or without code: ``opentelemetry-instrument python app.py`` (entry point
``tollmeter_google_genai``).

Metered, for ``client.models`` and ``client.aio.models`` (and what is built on them, such as
``client.chats``): ``generate_content`` and ``generate_content_stream`` (operation
``generate_content``) and ``embed_content`` (operation ``embeddings``). Every request to the
model yields one CLIENT span ``"{operation} {model}"``: a call that the SDK turns into several
requests (automatic function calling, automatic continuation) yields one span per request, each
with that request's usage, since each is billed. The provider is ``gcp.gen_ai`` for the Gemini
API and ``gcp.vertex_ai`` for a Vertex AI client; the model is its id without the ``models/``
or resource path prefix (``gemini-2.5-flash``). Usage follows OpenTelemetry's convention (input
includes cached tokens, output includes thinking; see ``extract``). When the service reports no
usage the counts are estimated with tiktoken and flagged ``tollmeter.usage.source=estimate``.

Options of ``instrument()`` (keyword-only): ``tracer_provider``, ``meter_provider`` (default to
the global providers); ``metric_tenant_attribute=False``: add ``tollmeter.tenant.id`` to metric
attributes.

Prompt and reply text is recorded only when content capture is on (``_content``). SDK
exceptions propagate unchanged, tollmeter's own failures are logged once and swallowed, and
``suppress_instrumentation`` is honoured.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap

from tollmeter.instrumentation._instrumentor import telemetry_for
from tollmeter.instrumentation.google_genai.package import _instruments, first_method
from tollmeter.instrumentation.google_genai.patch import (
    ENDPOINTS,
    MODULE,
    async_wrapper,
    sync_wrapper,
)

__all__ = ["GoogleGenAIInstrumentor"]


class GoogleGenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Meters every model call of the ``google-genai`` SDK; see the module docstring."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        telemetry = telemetry_for(__name__, kwargs)
        patched: list[tuple[type, str]] = []
        for endpoint in ENDPOINTS:
            target = first_method(MODULE, endpoint.cls, endpoint.methods)
            if target is None:
                continue
            factory = async_wrapper if endpoint.is_async else sync_wrapper
            wrapt.wrap_function_wrapper(target[0], target[1], factory(telemetry, endpoint))
            patched.append(target)
        self._patched = patched

    def _uninstrument(self, **kwargs: Any) -> None:
        for cls, method in getattr(self, "_patched", ()):
            unwrap(cls, method)
        self._patched = []
