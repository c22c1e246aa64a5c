"""Puts captured content on a call's span and in its log record (see ``_content``).

``Telemetry`` holds a ``ContentRecorder`` only when a capture mode is on, so a call without
capture pays one ``is None`` test at start and one at finish.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, get_logger
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._content import (
    CaptureMode,
    Message,
    RequestContent,
    bounded,
    dumps,
)
from tollmeter.instrumentation._safety import contained
from tollmeter.semconv.version import __version__

__all__ = [
    "EVENT_NAME",
    "GEN_AI_INPUT_MESSAGES",
    "GEN_AI_OUTPUT_MESSAGES",
    "GEN_AI_SYSTEM_INSTRUCTIONS",
    "ContentRecorder",
]

EVENT_NAME: Final = "gen_ai.client.inference.operation.details"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"


class ContentRecorder:
    """Where one instrumentor's captured content goes, for a mode other than ``NO_CONTENT``."""

    __slots__ = ("_logger", "mode")

    def __init__(
        self,
        mode: CaptureMode,
        instrumenting_module: str,
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        self.mode = mode
        self._logger = (
            get_logger(instrumenting_module, __version__, logger_provider)
            if mode.as_event
            else None
        )

    def request(self, span: Span, content: Callable[[], RequestContent]) -> RequestContent | None:
        """Capture a request's content, on the span at once when the mode says so."""
        with contained("content.request"):
            captured = content()
            if self.mode.on_span and span.is_recording():
                span.set_attributes(_span_values(captured))
            return captured
        return None

    def reply(
        self,
        span: Span,
        request: RequestContent,
        output: Callable[[], list[Message]],
        attributes: Mapping[str, AttributeValue],
    ) -> None:
        """Capture a reply: on the span, and/or one log record carrying the whole exchange.

        ``attributes`` are the call's own (operation, provider, models, usage) for the record.
        """
        with contained("content.reply"):
            messages = bounded(output())
            if self.mode.on_span and span.is_recording():
                span.set_attribute(GEN_AI_OUTPUT_MESSAGES, dumps(messages))
            if self._logger is not None:
                values: dict[str, object] = dict(attributes)
                values[GEN_AI_INPUT_MESSAGES] = request.input_messages
                values[GEN_AI_OUTPUT_MESSAGES] = messages
                if request.system_instructions:
                    values[GEN_AI_SYSTEM_INSTRUCTIONS] = request.system_instructions
                self._logger.emit(
                    event_name=EVENT_NAME,
                    attributes=values,  # type: ignore[arg-type]
                    context=trace.set_span_in_context(span),
                )


def _span_values(content: RequestContent) -> dict[str, AttributeValue]:
    values: dict[str, AttributeValue] = {GEN_AI_INPUT_MESSAGES: dumps(content.input_messages)}
    if content.system_instructions:
        values[GEN_AI_SYSTEM_INSTRUCTIONS] = dumps(content.system_instructions)
    return values
