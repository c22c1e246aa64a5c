"""Spans and metrics of one instrumented model call.

One ``Telemetry`` object per instrumentor holds a tracer and the GenAI client
instruments: ``gen_ai.client.operation.duration`` and
``gen_ai.client.operation.time_to_first_chunk`` histograms, and for token
usage the ``gen_ai.client.token.usage`` histogram per token type, the
``gen_ai.client.inference.usage.*`` counters, or both, as the GenAI
conventions opt-in asks (see ``_conventions``). Histograms get the semconv
bucket boundaries as advice.

Life of a call::

    call = telemetry.start(operation="chat", provider="openai", request_model="gpt-4o",
                           attributes={...}, input_estimate=lambda: 42)
    ...                                  # make the request (optionally with call.activate())
    telemetry.first_chunk(call)          # streams only, on the first chunk
    telemetry.finish(call, usage=Usage(...), source="provider", response_model=...)

- ``start`` opens a CLIENT span named ``"{operation} {model}"`` carrying the
  request attributes and the attribution in effect (``current_attribution()``,
  read once, at request start). It does not make the span current:
  ``call.activate()`` does that for the duration of a ``with`` block, so that a
  stream's span is never current across the user's iteration.
- ``finish`` runs at most once per call (later calls are ignored). It sets the
  usage attributes (input includes cache read and write, output includes
  reasoning; the parts get their own attributes), ``tollmeter.usage.source``,
  ``tollmeter.usage.abandoned`` when the caller dropped a stream,
  ``tollmeter.attempt`` (the SDK's retry number of the attempt that answered, seen
  through ``_attempts`` while the call is active), ``tollmeter.usage.hidden_input_tokens``
  (from the ``hidden_input`` callable given to ``start``, see ``_hidden``), for streams
  ``gen_ai.response.time_to_first_chunk`` and, when read to the end,
  ``tollmeter.stream.decode_s_per_output_token``, ``error.type``
  and an error status when ``error`` is given, records the metrics and ends the
  span. With ``usage=None`` the counts are estimated: input from the
  ``input_estimate`` callable given to ``start``, output from ``output_text``.
- ``adopt`` wraps a span someone else started (an SDK's native span) so that
  ``finish`` enriches it without ending it. ``start`` does the same by itself
  with a span another GenAI instrumentation started for the call (see
  ``_peers``), and records no metrics when that instrumentation records them.
- ``call.activate()`` also marks the context with the switches that keep the
  other GenAI instrumentations under the call silent (``_peers.quiet``).
- With a content capture mode on (``_content``), ``start``/``adopt`` evaluate the
  ``content`` callable they are given and ``finish`` the ``output`` one (or, without it,
  the ``output_text``); with capture off neither is ever called.

Metric attributes are a fixed allowlist: operation, provider, request and
response model, token type, ``error.type``, and the tenant only when
``metric_tenant_attribute`` is on. Request ids and other per-call values never
become metric attributes.

Every method contains its own failures (see ``_safety``); none raises into the
application.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import Final, Literal, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import LoggerProvider
from opentelemetry.context import Context
from opentelemetry.metrics import Counter, Histogram, MeterProvider, get_meter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._attempts import Attempts, unwatching, watching
from tollmeter.instrumentation._attribution import current_attribution
from tollmeter.instrumentation._capture import ContentRecorder
from tollmeter.instrumentation._content import CaptureMode, Message, RequestContent, reply
from tollmeter.instrumentation._conventions import Conventions, conventions_from_env
from tollmeter.instrumentation._estimate import count_text_tokens
from tollmeter.instrumentation._guard import release_failed_call
from tollmeter.instrumentation._peers import (
    PeerSpan,
    hold_end,
    keep_attributes,
    peer_above,
    quiet,
)
from tollmeter.instrumentation._safety import contained, report_failure
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics
from tollmeter.semconv.version import __version__

__all__ = ["Call", "Telemetry", "Usage", "UsageSource"]

UsageSource = Literal["provider", "estimate"]

_SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.37.0"


class Usage(NamedTuple):
    """Token counts of one call, in OpenTelemetry's convention.

    ``input_tokens`` includes cache reads and writes; ``output_tokens`` includes
    reasoning. The parts are ``None`` when the provider did not report them.
    (A named tuple: immutable, and half the cost of a frozen dataclass to build, once per
    call.)
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None


class Call:
    """State of one model call between ``Telemetry.start`` and ``Telemetry.finish``."""

    __slots__ = (
        "_done",
        "attempts",
        "content",
        "end_held",
        "first_chunk_at",
        "hidden_input",
        "input_estimate",
        "keeps_attributes",
        "metric_attributes",
        "owns_span",
        "records_metrics",
        "request_model",
        "span",
        "started_at",
    )

    def __init__(
        self,
        span: Span,
        *,
        request_model: str | None,
        metric_attributes: dict[str, AttributeValue],
        input_estimate: Callable[[], int] | None,
        owns_span: bool,
        records_metrics: bool = True,
        hidden_input: Callable[[], int] | None = None,
    ) -> None:
        self.span = span
        self.hidden_input = hidden_input
        self.request_model = request_model
        self.metric_attributes = metric_attributes
        self.input_estimate = input_estimate
        self.owns_span = owns_span
        self.records_metrics = records_metrics
        self.started_at = time.perf_counter()
        self.first_chunk_at: float | None = None
        self.attempts = Attempts()
        self.content: RequestContent | None = None
        self.keeps_attributes = False
        self.end_held: Callable[[], None] | None = None
        """Ends an adopted peer span whose ``end()`` was held (``_peers.hold_end``)."""
        # A non-blocking acquire is the "finish once" flag: safe from any thread and never waits.
        self._done = threading.Lock()

    def claim_finish(self) -> bool:
        """True for exactly one caller: the one that finishes the call."""
        return self._done.acquire(blocking=False)

    @property
    def finished(self) -> bool:
        return self._done.locked()

    def activate(self) -> _Activation:
        """Make the span current inside the block (for the request itself, never a user loop).

        The SDK's retries inside the block are recorded on ``attempts``.
        """
        return _Activation(self)


class _Activation:
    """``with call.activate():`` (a plain class: it runs on every metered call)."""

    __slots__ = ("_attempts_token", "_call", "_token")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._token: Token[Context] | None = None
        self._attempts_token: Token[Attempts | None] | None = None

    def __enter__(self) -> Span:
        self._attempts_token = watching(self._call.attempts)
        self._token = otel_context.attach(quiet(trace.set_span_in_context(self._call.span)))
        return self._call.span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
        if self._attempts_token is not None:
            unwatching(self._attempts_token)


class Telemetry:
    """Tracer and histograms of one instrumentor; see the module docstring."""

    def __init__(
        self,
        instrumenting_module: str,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        metric_tenant_attribute: bool = False,
        conventions: Conventions | None = None,
        capture: CaptureMode = CaptureMode.NO_CONTENT,
        logger_provider: LoggerProvider | None = None,
        guard_url: str | None = None,
    ) -> None:
        self.guard_url = guard_url
        """``TOLLMETER_GUARD_URL`` as it was when the instrumentor was enabled."""
        self.conventions = conventions_from_env() if conventions is None else conventions
        self.deprecated_span_names = self.conventions.deprecated_span_names
        self.content: ContentRecorder | None = None
        if capture.captures:
            self.content = ContentRecorder(capture, instrumenting_module, logger_provider)
        self.tracer = trace.get_tracer(
            instrumenting_module, __version__, tracer_provider, schema_url=_SCHEMA_URL
        )
        meter = get_meter(instrumenting_module, __version__, meter_provider, schema_url=_SCHEMA_URL)
        self.token_usage: Histogram | None = None
        if self.conventions.token_histogram:
            self.token_usage = meter.create_histogram(
                metrics.GEN_AI_CLIENT_TOKEN_USAGE,
                unit=metrics.GEN_AI_CLIENT_TOKEN_USAGE_UNIT,
                description=metrics.GEN_AI_CLIENT_TOKEN_USAGE_DESCRIPTION,
                explicit_bucket_boundaries_advisory=list(metrics.GEN_AI_CLIENT_TOKEN_USAGE_BUCKETS),
            )
        self.usage_counters: tuple[tuple[Counter, Callable[[Usage], int | None]], ...] = ()
        if self.conventions.usage_counters:
            self.usage_counters = tuple(
                (meter.create_counter(name, unit=unit, description=description), part)
                for name, unit, description, part in _COUNTERS
            )
        self.duration = meter.create_histogram(
            metrics.GEN_AI_CLIENT_OPERATION_DURATION,
            unit=metrics.GEN_AI_CLIENT_OPERATION_DURATION_UNIT,
            description=metrics.GEN_AI_CLIENT_OPERATION_DURATION_DESCRIPTION,
            explicit_bucket_boundaries_advisory=list(
                metrics.GEN_AI_CLIENT_OPERATION_DURATION_BUCKETS
            ),
        )
        self.time_to_first_chunk = meter.create_histogram(
            metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
            unit=metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK_UNIT,
            description=metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK_DESCRIPTION,
            explicit_bucket_boundaries_advisory=list(
                metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK_BUCKETS
            ),
        )
        self.metric_tenant_attribute = metric_tenant_attribute

    def _metric_attributes(
        self,
        operation: str,
        provider: str,
        request_model: str | None,
        attribution: Mapping[str, str],
    ) -> dict[str, AttributeValue]:
        values: dict[str, AttributeValue] = {
            attrs.GEN_AI_OPERATION_NAME: operation,
            attrs.GEN_AI_PROVIDER_NAME: provider,
        }
        if request_model:
            values[attrs.GEN_AI_REQUEST_MODEL] = request_model
        if self.metric_tenant_attribute:
            tenant = attribution.get(attrs.TOLLMETER_TENANT_ID)
            if tenant is not None:
                values[attrs.TOLLMETER_TENANT_ID] = tenant
        return values

    def start(
        self,
        *,
        operation: str,
        provider: str,
        request_model: str | None,
        attributes: Mapping[str, AttributeValue] | None = None,
        input_estimate: Callable[[], int] | None = None,
        content: Callable[[], RequestContent] | None = None,
        peer: PeerSpan | None = None,
        hidden_input: Callable[[], int] | None = None,
    ) -> Call:
        """Open the CLIENT span of a call (not made current) and read the attribution.

        When another GenAI instrumentation has already started a span for this call (see
        ``_peers``; ``peer`` when the caller found it earlier), that span is enriched instead,
        and the metrics are left to that instrumentation when it records them itself.
        """
        attribution = current_attribution()
        span_attributes: dict[str, AttributeValue] = {
            attrs.GEN_AI_OPERATION_NAME: operation,
            attrs.GEN_AI_PROVIDER_NAME: provider,
        }
        if request_model:
            span_attributes[attrs.GEN_AI_REQUEST_MODEL] = request_model
        if attributes:
            span_attributes.update(attributes)
        if attribution:
            span_attributes.update(attribution)
        metric_attributes = self._metric_attributes(operation, provider, request_model, attribution)
        if peer is None or not peer.span.is_recording():
            peer = peer_above()
        if peer is not None:
            peer.span.set_attributes(span_attributes)
            call = Call(
                peer.span,
                request_model=request_model,
                metric_attributes=metric_attributes,
                input_estimate=input_estimate,
                owns_span=False,
                records_metrics=not peer.records_metrics,
                hidden_input=hidden_input,
            )
            call.keeps_attributes = peer.overwrites
            with contained("telemetry.hold_end"):
                call.end_held = hold_end(peer.span)
        else:
            name = f"{operation} {request_model}" if request_model else operation
            span = self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=span_attributes)
            call = Call(
                span,
                request_model=request_model,
                metric_attributes=metric_attributes,
                input_estimate=input_estimate,
                owns_span=True,
                hidden_input=hidden_input,
            )
        if self.content is not None and content is not None:
            call.content = self.content.request(call.span, content)
        return call

    def adopt(
        self,
        span: Span,
        *,
        operation: str,
        provider: str,
        request_model: str | None,
        input_estimate: Callable[[], int] | None = None,
        content: Callable[[], RequestContent] | None = None,
        hidden_input: Callable[[], int] | None = None,
    ) -> Call:
        """Track a span started elsewhere: add the attribution now, enrich it on ``finish``."""
        attribution = current_attribution()
        with contained("telemetry.adopt"):
            if span.is_recording() and attribution:
                span.set_attributes(attribution)
        call = Call(
            span,
            request_model=request_model,
            metric_attributes=self._metric_attributes(
                operation, provider, request_model, attribution
            ),
            input_estimate=input_estimate,
            owns_span=False,
            hidden_input=hidden_input,
        )
        if self.content is not None and content is not None:
            call.content = self.content.request(span, content)
        return call

    def first_chunk(self, call: Call) -> None:
        """Note the arrival of a stream's first chunk (later calls are ignored)."""
        if call.first_chunk_at is None:
            call.first_chunk_at = time.perf_counter()

    def finish(
        self,
        call: Call,
        *,
        usage: Usage | None,
        source: UsageSource = "provider",
        output_text: str = "",
        response_model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] = (),
        error: BaseException | None = None,
        abandoned: bool = False,
        output: Callable[[], list[Message]] | None = None,
    ) -> None:
        """Record the outcome of ``call`` and end its span; only the first call has effect."""
        if not call.claim_finish():
            return
        ended_at = time.perf_counter()
        # try/except rather than ``contained``: this runs on every call.
        try:
            try:
                self._record(
                    call,
                    ended_at,
                    usage,
                    source,
                    output_text,
                    response_model,
                    response_id,
                    finish_reasons,
                    error,
                    abandoned,
                )
                if call.content is not None and self.content is not None:
                    self._capture_reply(
                        self.content, call, call.content, output, output_text, finish_reasons
                    )
            finally:
                if call.owns_span:
                    call.span.end()
                elif call.end_held is not None:
                    call.end_held()
        except Exception as exc:
            report_failure("telemetry.finish", exc)

    @staticmethod
    def _capture_reply(
        recorder: ContentRecorder,
        call: Call,
        request: RequestContent,
        output: Callable[[], list[Message]] | None,
        output_text: str,
        finish_reasons: Sequence[str],
    ) -> None:
        if output is None:
            reasons = tuple(finish_reasons)
            output = lambda: reply(output_text, reasons)  # noqa: E731
        attributes: dict[str, AttributeValue] = dict(call.metric_attributes)
        readable = getattr(call.span, "attributes", None)
        if isinstance(readable, Mapping):
            # The usage, ids and finish reasons ``_record`` has just set, when the span says.
            attributes.update({k: v for k, v in readable.items() if k.startswith("gen_ai.")})
        recorder.reply(call.span, request, output, attributes)

    def _estimate(self, call: Call, output_text: str) -> Usage:
        input_tokens = 0
        if call.input_estimate is not None:
            with contained("telemetry.estimate_input"):
                input_tokens = call.input_estimate()
        return Usage(
            input_tokens=input_tokens,
            output_tokens=count_text_tokens(output_text, call.request_model),
        )

    def _record(
        self,
        call: Call,
        ended_at: float,
        usage: Usage | None,
        source: UsageSource,
        output_text: str,
        response_model: str | None,
        response_id: str | None,
        finish_reasons: Sequence[str],
        error: BaseException | None,
        abandoned: bool,
    ) -> None:
        if usage is None and not (error is not None and call.first_chunk_at is None):
            usage = self._estimate(call, output_text)
            source = "estimate"
        span_attributes: dict[str, AttributeValue]
        if usage is None:
            span_attributes = {}
            # Failed before any output: nothing will be metered to settle the reservation.
            with contained("telemetry.release_reservation"):
                release_failed_call(call.span, self.guard_url)
        else:
            span_attributes = _usage_attributes(usage, source)
            if self.deprecated_span_names:
                span_attributes.update(_deprecated_usage_attributes(usage))
        if response_model:
            span_attributes[attrs.GEN_AI_RESPONSE_MODEL] = response_model
        if response_id:
            span_attributes[attrs.GEN_AI_RESPONSE_ID] = response_id
        if finish_reasons:
            span_attributes[attrs.GEN_AI_RESPONSE_FINISH_REASONS] = list(finish_reasons)
        if abandoned:
            span_attributes[attrs.TOLLMETER_USAGE_ABANDONED] = True
        if call.attempts.retries is not None:
            span_attributes[attrs.TOLLMETER_ATTEMPT] = call.attempts.retries
        if call.hidden_input is not None:
            with contained("telemetry.hidden_input"):
                span_attributes[attrs.TOLLMETER_USAGE_HIDDEN_INPUT_TOKENS] = call.hidden_input()
        first = call.first_chunk_at
        if first is not None:
            completed = error is None and not abandoned
            span_attributes.update(
                _stream_timing(call.started_at, first, ended_at, usage, completed=completed)
            )
        metric_attributes = dict(call.metric_attributes)
        if response_model:
            metric_attributes[attrs.GEN_AI_RESPONSE_MODEL] = response_model
        if error is not None:
            error_type = type(error).__qualname__
            span_attributes[attrs.ERROR_TYPE] = error_type
            metric_attributes[attrs.ERROR_TYPE] = error_type
        span = call.span
        if span.is_recording():
            span.set_attributes(span_attributes)
            if call.keeps_attributes:
                keep_attributes(span, frozenset(span_attributes))
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)[:256] or None))
        if not call.records_metrics:
            return
        self.duration.record(ended_at - call.started_at, metric_attributes)
        if call.first_chunk_at is not None:
            self.time_to_first_chunk.record(
                call.first_chunk_at - call.started_at, metric_attributes
            )
        if usage is not None:
            self._record_usage(usage, metric_attributes)

    def _record_usage(self, usage: Usage, metric_attributes: dict[str, AttributeValue]) -> None:
        if self.token_usage is not None:
            self.token_usage.record(
                usage.input_tokens, {**metric_attributes, attrs.GEN_AI_TOKEN_TYPE: "input"}
            )
            self.token_usage.record(
                usage.output_tokens, {**metric_attributes, attrs.GEN_AI_TOKEN_TYPE: "output"}
            )
        if self.usage_counters:
            counted = {
                **metric_attributes,
                attrs.GEN_AI_TOKEN_MODALITY: attrs.GenAiTokenModalityValues.UNKNOWN,
            }
            for counter, part in self.usage_counters:
                tokens = part(usage)
                # Counters only add: a zero or unreported part would only add a time series.
                if tokens:
                    counter.add(tokens, counted)


_COUNTERS: Final = (
    (
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS_UNIT,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS_DESCRIPTION,
        lambda usage: usage.input_tokens,
    ),
    (
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS_UNIT,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS_DESCRIPTION,
        lambda usage: usage.output_tokens,
    ),
    (
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS_UNIT,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS_DESCRIPTION,
        lambda usage: usage.cache_read_input_tokens,
    ),
    (
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS_UNIT,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS_DESCRIPTION,
        lambda usage: usage.cache_write_input_tokens,
    ),
    (
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_REASONING_OUTPUT_TOKENS,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_REASONING_OUTPUT_TOKENS_UNIT,
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_REASONING_OUTPUT_TOKENS_DESCRIPTION,
        lambda usage: usage.reasoning_output_tokens,
    ),
)
"""(name, unit, description, the part of ``Usage`` it counts) of each usage counter."""

# The conventions' former name of the cache write count: the first alias the registry reads.
_DEPRECATED_CACHE_WRITE: Final = attrs.ALIASES[attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS][0]


def _deprecated_usage_attributes(usage: Usage) -> dict[str, AttributeValue]:
    if usage.cache_write_input_tokens is None:
        return {}
    return {_DEPRECATED_CACHE_WRITE: usage.cache_write_input_tokens}


def _stream_timing(
    started_at: float, first: float, ended_at: float, usage: Usage | None, *, completed: bool
) -> dict[str, AttributeValue]:
    """Time to the first chunk, and, for a stream read to its end, the decode time per output
    token after the first (a stream cut short ends at an arbitrary point of its decoding)."""
    values: dict[str, AttributeValue] = {
        attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: first - started_at
    }
    if completed and usage is not None and usage.output_tokens > 1:
        values[attrs.TOLLMETER_STREAM_DECODE_S_PER_OUTPUT_TOKEN] = (ended_at - first) / (
            usage.output_tokens - 1
        )
    return values


def _usage_attributes(usage: Usage, source: UsageSource) -> dict[str, AttributeValue]:
    values: dict[str, AttributeValue] = {
        attrs.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
        attrs.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
        attrs.TOLLMETER_USAGE_SOURCE: source,
    }
    if usage.cache_read_input_tokens is not None:
        values[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_input_tokens
    if usage.cache_write_input_tokens is not None:
        values[attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] = usage.cache_write_input_tokens
    if usage.reasoning_output_tokens is not None:
        values[attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_output_tokens
    return values
