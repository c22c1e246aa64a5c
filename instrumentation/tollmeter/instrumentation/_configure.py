"""``configure()``: one call that exports traces and metrics over OTLP and instruments the LLM SDKs.

Precedence for every setting is argument, then the standard ``OTEL_*`` variable, then the
default. ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_METRIC_EXPORT_INTERVAL`` and the per-signal variants are read
by the OpenTelemetry SDK itself; only the protocol is resolved here, because the exporter class
depends on it.

Exit stays quick when the collector is down or stalls: each export, retries included, gets
``EXPORT_TIMEOUT_S`` unless ``OTEL_EXPORTER_OTLP_TIMEOUT`` (or its per-signal variant) says
otherwise, and the providers ``configure()`` creates are shut down at exit by one handler with
one ``EXIT_TIMEOUT_S`` deadline: streams still open are ended first (flagged abandoned, with
their estimate: see ``_streams``), then spans are flushed, then metrics. What has not reached the
collector by then is dropped (a warning from the OpenTelemetry SDK says so); nothing is written
to disk.

Providers the application already installed are never replaced: OpenTelemetry allows one global
tracer provider and one global meter provider per process, and the application's choice wins.
Such a provider keeps its own exporters (``endpoint``, ``headers`` and ``protocol`` do not apply to
it, and a warning says so); tollmeter still adds its attribution span processor to it when it is
an SDK provider, and the instrumentors report through it.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from tollmeter.instrumentation._attribution import AttributionSpanProcessor
from tollmeter.instrumentation._content import capture_mode
from tollmeter.instrumentation._streams import finish_open_streams
from tollmeter.semconv.errors import ConfigurationError

__all__ = [
    "EXIT_TIMEOUT_S",
    "EXPORT_TIMEOUT_S",
    "OtlpProtocol",
    "TelemetryHandle",
    "configure",
    "ensure_attribution_processor",
]

_log = logging.getLogger(__name__)

OtlpProtocol = Literal["grpc", "http/protobuf"]
_PROTOCOLS: tuple[OtlpProtocol, ...] = ("grpc", "http/protobuf")

OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
"""Protocol of both signals when no argument and no per-signal variable says otherwise."""
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_EXPORTER_OTLP_METRICS_PROTOCOL = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
DEFAULT_PROTOCOL: OtlpProtocol = "grpc"
"""The Python OTLP exporters' own default."""

EXPORT_TIMEOUT_S = 1.0
"""Longest one export may take, retries included. The SDK's own default (10 s, then a second
signal's 10 s) kept an app whose collector was down from exiting for 12 to 15 s."""
EXIT_TIMEOUT_S = 2.0
"""Deadline of the shutdown that runs at interpreter exit."""
_TIMEOUT_VARIABLES = {
    "TRACES": ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
    "METRICS": ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"),
}

_INSTRUMENTORS: Mapping[str, tuple[str, str, str]] = {
    "openai": ("openai", "tollmeter.instrumentation.openai", "OpenAIInstrumentor"),
    "anthropic": ("anthropic", "tollmeter.instrumentation.anthropic", "AnthropicInstrumentor"),
    "bedrock": ("botocore", "tollmeter.instrumentation.bedrock", "BedrockInstrumentor"),
    "google_genai": (
        "google.genai",
        "tollmeter.instrumentation.google_genai",
        "GoogleGenAIInstrumentor",
    ),
}
"""Instrumentor name -> (client library it needs, module, class)."""


@dataclass(frozen=True)
class _Settings:
    service_name: str | None
    endpoint: str | None
    headers: tuple[tuple[str, str], ...]
    protocol: OtlpProtocol | None
    resource_attributes: tuple[tuple[str, Any], ...]
    instrument: tuple[str, ...]
    guard_url: str | None
    provider_hosts: tuple[tuple[str, str], ...] | None = None
    capture_message_content: str | None = None


@dataclass
class TelemetryHandle:
    """What ``configure()`` set up. ``shutdown()`` flushes and stops only what it created."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    instrumented: tuple[str, ...]
    """Instrumentor names that are active, in the order they were enabled."""
    guard_url: str | None
    """Collector address for pre-flight checks, kept for the guard."""
    _owned_tracer_provider: TracerProvider | None = field(default=None, repr=False)
    _owned_meter_provider: MeterProvider | None = field(default=None, repr=False)
    _instrumentors: tuple[BaseInstrumentor, ...] = field(default=(), repr=False)
    _settings: _Settings | None = field(default=None, repr=False)
    _shut_down: bool = field(default=False, repr=False)

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Export everything buffered; ``False`` when ``timeout`` (seconds) ran out first."""
        deadline = time.monotonic() + timeout
        ok = True
        if self._owned_tracer_provider is not None:
            ok = self._owned_tracer_provider.force_flush(_remaining_ms(deadline)) and ok
        if self._owned_meter_provider is not None:
            ok = self._owned_meter_provider.force_flush(_remaining_ms(deadline)) and ok
        return ok

    def shutdown(self, timeout: float = 30.0) -> None:
        """Uninstrument, then flush and shut down what ``configure()`` created. Idempotent."""
        global _HANDLE
        with _LOCK:
            if self._shut_down:
                return
            self._shut_down = True
            if _HANDLE is self:
                _HANDLE = None
        atexit.unregister(self._shutdown_at_exit)
        deadline = time.monotonic() + timeout
        for instrumentor in self._instrumentors:
            try:
                instrumentor.uninstrument()
            except Exception:
                _log.exception("could not uninstrument %s", type(instrumentor).__name__)
        if self._owned_tracer_provider is not None:
            # Each batch takes at most one export timeout: the SDK's flush ignores its own.
            self._owned_tracer_provider.force_flush(_remaining_ms(deadline))
            self._owned_tracer_provider.shutdown()
        if self._owned_meter_provider is not None:
            try:
                self._owned_meter_provider.shutdown(max(1, _remaining_ms(deadline)))
            except Exception as exc:  # the SDK raises a bare Exception when time ran out
                _log.warning("metrics not flushed at shutdown: %s", exc)

    def _exit(self) -> None:
        # Streams still open would otherwise end after their provider: end them first (their
        # own exit handler usually has, unless a provider was made after the first stream).
        finish_open_streams()
        self.shutdown(EXIT_TIMEOUT_S)

    def _shutdown_at_exit(self) -> None:
        # OTLP exporters before opentelemetry 1.34 keep retrying for about a minute whatever
        # their timeout: wait for the shutdown at most EXIT_TIMEOUT_S, then let the process
        # end (the thread is a daemon; what it has not sent is lost, as the docs say).
        worker = threading.Thread(target=self._exit, name="tollmeter-exit", daemon=True)
        worker.start()
        worker.join(EXIT_TIMEOUT_S + _EXIT_MARGIN_S)
        if worker.is_alive():
            _log.warning(
                "telemetry not flushed within %.0f s at exit; the rest is dropped", EXIT_TIMEOUT_S
            )


_EXIT_MARGIN_S = 0.5
_LOCK = threading.Lock()
_HANDLE: TelemetryHandle | None = None
_ATTRIBUTED: weakref.WeakSet[TracerProvider] = weakref.WeakSet()
_ATTRIBUTED_LOCK = threading.Lock()


def configure(
    *,
    service_name: str | None = None,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    protocol: OtlpProtocol | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    instrument: Iterable[str] = ("openai", "anthropic", "bedrock", "google_genai"),
    guard_url: str | None = None,
    provider_hosts: Mapping[str, str] | None = None,
    capture_message_content: str | None = None,
) -> TelemetryHandle:
    """Export traces and metrics over OTLP and instrument every installed LLM client library.

    ``endpoint`` is the collector's base address (``http://host:4317`` for gRPC,
    ``http://host:4318`` for HTTP; the signal paths are added for HTTP). ``instrument`` names the
    instrumentors to enable; a name whose client library is not installed is skipped.
    ``provider_hosts`` (``{"llm.internal": "vllm"}``) names the provider of OpenAI SDK clients
    whose ``base_url`` has that host, for hosts the OpenAI instrumentor does not recognise.
    ``capture_message_content`` (``NO_CONTENT``, ``SPAN_ONLY``, ``EVENT_ONLY``,
    ``SPAN_AND_EVENT``) wins over ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``; events
    go to the global logger provider, which ``configure()`` does not create.

    Idempotent: a second call returns the first handle, with a warning when its arguments differ.
    """
    global _HANDLE
    settings = _Settings(
        service_name=service_name,
        endpoint=endpoint,
        headers=tuple(sorted((headers or {}).items())),
        protocol=_checked_protocol(protocol),
        resource_attributes=tuple(sorted((resource_attributes or {}).items())),
        instrument=_checked_names(instrument),
        guard_url=guard_url,
        provider_hosts=None if provider_hosts is None else tuple(sorted(provider_hosts.items())),
        capture_message_content=_checked_capture(capture_message_content),
    )
    with _LOCK:
        if _HANDLE is not None:
            if _HANDLE._settings != settings:
                warnings.warn(
                    "tollmeter.configure() was already called with other arguments; "
                    "keeping the first configuration",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return _HANDLE
        _HANDLE = _configure(settings)
        return _HANDLE


def _configure(settings: _Settings) -> TelemetryHandle:
    resource = _resource(settings)
    owned_tracer: TracerProvider | None = None
    tracer_provider = trace.get_tracer_provider()
    if _is_placeholder(tracer_provider):
        # Shut down by the handle's exit handler, under one deadline, not the SDK's own.
        owned_tracer = TracerProvider(resource=resource, shutdown_on_exit=False)
        owned_tracer.add_span_processor(
            BatchSpanProcessor(_span_exporter(settings, _protocol(settings, "TRACES")))
        )
        trace.set_tracer_provider(owned_tracer)
        tracer_provider = trace.get_tracer_provider()
    else:
        _warn_kept("tracer", tracer_provider, settings)
    ensure_attribution_processor(tracer_provider)

    owned_meter: MeterProvider | None = None
    meter_provider = metrics.get_meter_provider()
    if _is_placeholder(meter_provider):
        reader = PeriodicExportingMetricReader(
            _metric_exporter(settings, _protocol(settings, "METRICS")),
            export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
        )
        owned_meter = MeterProvider(
            resource=resource, metric_readers=[reader], shutdown_on_exit=False
        )
        metrics.set_meter_provider(owned_meter)
        meter_provider = metrics.get_meter_provider()
    else:
        _warn_kept("meter", meter_provider, settings)

    instrumentors: list[BaseInstrumentor] = []
    names: list[str] = []
    for name in settings.instrument:
        options: dict[str, Any] = {}
        if name == "openai" and settings.provider_hosts is not None:
            options["provider_hosts"] = dict(settings.provider_hosts)
        if settings.capture_message_content is not None:
            options["capture_message_content"] = settings.capture_message_content
        active, enabled_here = _instrument(name, tracer_provider, meter_provider, options)
        if active:
            names.append(name)
        if enabled_here is not None:
            instrumentors.append(enabled_here)
    handle = TelemetryHandle(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        instrumented=tuple(names),
        guard_url=settings.guard_url,
        _owned_tracer_provider=owned_tracer,
        _owned_meter_provider=owned_meter,
        _instrumentors=tuple(instrumentors),
        _settings=settings,
    )
    if owned_tracer is not None or owned_meter is not None:
        atexit.register(handle._shutdown_at_exit)
    return handle


def ensure_attribution_processor(provider: object) -> None:
    """Add the ``AttributionSpanProcessor`` to an SDK tracer provider, once per provider.

    Instrumentors call this too: under ``opentelemetry-instrument`` the provider comes from the
    SDK's own configuration, and spans of other instrumentations still need the attribution.
    """
    if not isinstance(provider, TracerProvider):
        return
    with _ATTRIBUTED_LOCK:
        if provider in _ATTRIBUTED:
            return
        _ATTRIBUTED.add(provider)
    provider.add_span_processor(AttributionSpanProcessor())


def _instrument(
    name: str,
    tracer_provider: trace.TracerProvider,
    meter_provider: metrics.MeterProvider,
    options: Mapping[str, Any],
) -> tuple[bool, BaseInstrumentor | None]:
    """Enable one instrumentor: (whether it is active, itself if this call enabled it)."""
    library, module_name, class_name = _INSTRUMENTORS[name]
    if importlib.util.find_spec(library) is None:
        _log.debug("%s is not installed; not instrumenting it", library)
        return False, None
    try:
        instrumentor = cast(
            BaseInstrumentor, getattr(importlib.import_module(module_name), class_name)()
        )
        # `opentelemetry-instrument` may have enabled it already; that owner undoes it, not us.
        if instrumentor.is_instrumented_by_opentelemetry:
            return True, None
        instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, **options
        )
    except Exception:
        _log.exception("could not instrument %s; calls through it are not metered", library)
        return False, None
    active = bool(instrumentor.is_instrumented_by_opentelemetry)
    return active, instrumentor if active else None


def _is_placeholder(provider: object) -> bool:
    """Whether ``provider`` is the API's stand-in, which means the application set none."""
    return type(provider).__name__ in {
        "ProxyTracerProvider",
        "NoOpTracerProvider",
        "_ProxyMeterProvider",
        "NoOpMeterProvider",
    }


def _warn_kept(kind: str, provider: object, settings: _Settings) -> None:
    if settings.endpoint is not None or settings.headers or settings.protocol is not None:
        _log.warning(
            "the application already set a %s provider (%s); tollmeter uses it as it is and "
            "does not add an exporter for endpoint/headers/protocol",
            kind,
            type(provider).__name__,
        )


def _resource(settings: _Settings) -> Resource:
    attributes: dict[str, Any] = dict(settings.resource_attributes)
    if settings.service_name is not None:
        attributes[SERVICE_NAME] = settings.service_name
    # `Resource.create` merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME under these.
    return Resource.create(attributes)


def _checked_protocol(protocol: str | None) -> OtlpProtocol | None:
    if protocol is None or protocol in _PROTOCOLS:
        return protocol
    raise ConfigurationError(f"protocol must be one of {_PROTOCOLS}, not {protocol!r}")


def _checked_capture(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return capture_mode(value).name
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _checked_names(names: Iterable[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ConfigurationError("instrument takes a sequence of names, not a string")
    checked = tuple(dict.fromkeys(names))
    unknown = [name for name in checked if name not in _INSTRUMENTORS]
    if unknown:
        raise ConfigurationError(
            f"unknown instrumentor(s) {unknown}; known: {sorted(_INSTRUMENTORS)}"
        )
    return checked


def _protocol(settings: _Settings, signal: Literal["TRACES", "METRICS"]) -> OtlpProtocol:
    if settings.protocol is not None:
        return settings.protocol
    for variable in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", OTEL_EXPORTER_OTLP_PROTOCOL):
        value = os.environ.get(variable, "").strip()
        if not value:
            continue
        if value in _PROTOCOLS:
            return value
        _log.warning("ignoring %s=%r: expected one of %s", variable, value, _PROTOCOLS)
    return DEFAULT_PROTOCOL


def _signal_endpoint(settings: _Settings, protocol: OtlpProtocol, path: str) -> str | None:
    if settings.endpoint is None or protocol == "grpc":
        return settings.endpoint
    return settings.endpoint.rstrip("/") + path


def _export_timeout(signal: Literal["TRACES", "METRICS"]) -> float | None:
    """``EXPORT_TIMEOUT_S``, or ``None`` to let the exporter read a timeout variable that is set."""
    if any(os.environ.get(name, "").strip() for name in _TIMEOUT_VARIABLES[signal]):
        return None
    return EXPORT_TIMEOUT_S


def _span_exporter(settings: _Settings, protocol: OtlpProtocol) -> SpanExporter:
    headers = dict(settings.headers) or None
    timeout = _export_timeout("TRACES")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=_signal_endpoint(settings, protocol, ""), headers=headers, timeout=timeout
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter(
        endpoint=_signal_endpoint(settings, protocol, "/v1/traces"),
        headers=headers,
        timeout=timeout,
    )


def _metric_exporter(settings: _Settings, protocol: OtlpProtocol) -> MetricExporter:
    headers = dict(settings.headers) or None
    timeout = _export_timeout("METRICS")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(
            endpoint=_signal_endpoint(settings, protocol, ""), headers=headers, timeout=timeout
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )

    return HTTPMetricExporter(
        endpoint=_signal_endpoint(settings, protocol, "/v1/metrics"),
        headers=headers,
        timeout=timeout,
    )


def _remaining_ms(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))
