"""Cache hits: tell the collector about a model call the application did not have to make.

When an application answers a request from its own response or semantic cache,
``cache_hit(model="gpt-4o-mini", input_tokens=812, output_tokens=64, provider="openai")``
records a short ``tollmeter.cache_hit`` span carrying the tokens the call would have
used. The collector meters them as avoided tokens and prices them as saved cost, apart
from billed usage: limits never count them and the billing export never bills them.
The tenant, feature and the rest of the attribution come from ``attribute(...)`` in
effect. The collector stores one cache hit per tenant and id; the id is the span's
unless ``cache_hit_id`` names one, so a retried export counts once.

The token counts are the caller's to give: the usage stored with the cached answer,
or an estimate (``estimate_chat_input_tokens``). A report never raises into the
application: a value that cannot be sent is logged once per kind of problem and
dropped, and ``cache_hit`` returns False.
"""

from __future__ import annotations

import logging
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from tollmeter.instrumentation._attribution import MAX_VALUE_LENGTH, current_attribution
from tollmeter.instrumentation._safety import report_failure
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.version import __version__

__all__ = ["CACHE_HIT_SPAN_NAME", "MAX_AVOIDED_TOKENS", "cache_hit"]

CACHE_HIT_SPAN_NAME: Final = "tollmeter.cache_hit"
MAX_AVOIDED_TOKENS: Final = 2**31 - 1
"""Largest token count of one cache hit that the collector accepts."""

_logger = logging.getLogger("tollmeter.instrumentation")
_SCOPE: Final = "tollmeter.instrumentation.cache_hit"
_refused: set[str] = set()


def cache_hit(
    *,
    model: str,
    input_tokens: int,
    output_tokens: int = 0,
    provider: str | None = None,
    tenant: str | None = None,
    cache_hit_id: str | None = None,
    tracer_provider: TracerProvider | None = None,
) -> bool:
    """Report a call of ``model`` answered from the application's cache; whether it was.

    ``input_tokens`` and ``output_tokens`` are what the call would have used;
    ``tenant`` defaults to the attribution in effect; ``cache_hit_id`` makes the report
    idempotent under an id of the caller's choosing. The span goes through
    ``tracer_provider`` (default: the global one, which ``configure()`` sets).
    """
    try:
        return _record(
            model, input_tokens, output_tokens, provider, tenant, cache_hit_id, tracer_provider
        )
    except Exception as exc:
        report_failure("cache_hit", exc)
        return False


def _record(
    model: object,
    input_tokens: object,
    output_tokens: object,
    provider: object,
    tenant: object,
    cache_hit_id: object,
    tracer_provider: TracerProvider | None,
) -> bool:
    attribution = current_attribution()
    if tenant is None:
        tenant = attribution.get(attrs.TOLLMETER_TENANT_ID)
    texts = {"model": model, "provider": provider, "tenant": tenant, "cache_hit_id": cache_hit_id}
    for argument, text in texts.items():
        if text is None and argument != "model":
            continue
        if not isinstance(text, str) or not text:
            return _refuse(argument, "must be a non-empty str")
        if len(text) > MAX_VALUE_LENGTH or not text.isprintable():
            return _refuse(argument, f"must be printable and at most {MAX_VALUE_LENGTH} long")
    for argument, count in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if type(count) is not int or not 0 <= count <= MAX_AVOIDED_TOKENS:
            return _refuse(argument, f"must be an int from 0 to {MAX_AVOIDED_TOKENS}")
    span_attributes: dict[str, str | int] = dict(attribution)
    span_attributes[attrs.TOLLMETER_AVOIDED_MODEL] = str(model)
    span_attributes[attrs.TOLLMETER_AVOIDED_INPUT_TOKENS] = int(input_tokens)  # type: ignore[call-overload]  # checked
    span_attributes[attrs.TOLLMETER_AVOIDED_OUTPUT_TOKENS] = int(output_tokens)  # type: ignore[call-overload]  # checked
    if provider is not None:
        span_attributes[attrs.TOLLMETER_AVOIDED_PROVIDER] = str(provider)
    if tenant is not None:
        span_attributes[attrs.TOLLMETER_TENANT_ID] = str(tenant)
    if cache_hit_id is not None:
        span_attributes[attrs.TOLLMETER_AVOIDED_ID] = str(cache_hit_id)
    tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider)
    span = tracer.start_span(
        CACHE_HIT_SPAN_NAME, kind=trace.SpanKind.INTERNAL, attributes=span_attributes
    )
    recorded = span.is_recording()
    span.end()
    return recorded


def _refuse(argument: str, reason: str) -> bool:
    key = f"{argument}: {reason}"
    if key not in _refused:
        _refused.add(key)
        _logger.warning(
            "tollmeter.cache_hit(%s=...) %s; the cache hit is not recorded "
            "(further refusals of this kind are not logged)",
            argument,
            reason,
        )
    return False
