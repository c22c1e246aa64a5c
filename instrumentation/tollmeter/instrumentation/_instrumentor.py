"""What every tollmeter instrumentor does first in ``_instrument(**kwargs)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from tollmeter.instrumentation._configure import ensure_attribution_processor
from tollmeter.instrumentation._content import capture_mode
from tollmeter.instrumentation._guard import environment_guard_url
from tollmeter.instrumentation._telemetry import Telemetry

__all__ = ["telemetry_for"]


def telemetry_for(instrumenting_module: str, options: Mapping[str, Any]) -> Telemetry:
    """The spans and metrics of one instrumentor, from its ``instrument()`` options:
    ``tracer_provider``, ``meter_provider``, ``logger_provider``, ``metric_tenant_attribute``
    (a bool) and ``capture_message_content`` (a ``_content.CaptureMode`` or its name; by
    default ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, read now). The guard's
    ``TOLLMETER_GUARD_URL`` is read now too.

    Also adds the attribution processor to the tracer provider: under
    ``opentelemetry-instrument`` nothing else does, and the spans of other
    instrumentations need the attribution too.
    """
    tenant_attribute = options.get("metric_tenant_attribute", False)
    if not isinstance(tenant_attribute, bool):
        raise ValueError(f"metric_tenant_attribute must be a bool, got {tenant_attribute!r}")
    capture = capture_mode(options.get("capture_message_content"))
    tracer_provider = options.get("tracer_provider") or trace.get_tracer_provider()
    ensure_attribution_processor(tracer_provider)
    return Telemetry(
        instrumenting_module,
        tracer_provider=tracer_provider,
        meter_provider=options.get("meter_provider"),
        metric_tenant_attribute=tenant_attribute,
        capture=capture,
        logger_provider=options.get("logger_provider"),
        guard_url=environment_guard_url(),
    )
