"""Server-sent events and the ASGI response that plays a prepared reply with its faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.types import Receive, Scope, Send

__all__ = ["PlayedResponse", "StreamCut", "install_log_filter", "json_bytes", "sse_event"]


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sse_event(data: Any, event: str | None = None) -> bytes:
    """One event; ``data`` is JSON-encoded unless it is already a string (``[DONE]``)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


class StreamCut(Exception):
    """Raised on purpose to drop the connection mid-body (the ``disconnect`` fault)."""


class _DropStreamCut(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamCut))


def install_log_filter() -> None:
    """Keep the server log free of the tracebacks that the ``disconnect`` fault causes."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _DropStreamCut) for existing in logger.filters):
        logger.addFilter(_DropStreamCut())


class PlayedResponse:
    """Sends ``chunks`` one by one, optionally late, paced or cut off.

    ``first_delay`` is slept before the first chunk: after the headers for a stream (the
    client sees the call succeed, then waits for the first token) and before the headers for
    a plain body. ``chunk_delay`` paces the chunks of a stream. ``cut_after`` drops the
    connection once that many chunks have been sent; a plain body is declared at its full
    length, so the client sees a truncated body. ``on_left`` is told how many chunks had been
    sent when a streaming client goes away before the end.
    """

    def __init__(
        self,
        *,
        status: int,
        headers: Mapping[str, str],
        chunks: Sequence[bytes],
        media_type: str,
        streaming: bool,
        first_delay: float = 0.0,
        chunk_delay: float = 0.0,
        cut_after: int | None = None,
        on_left: Callable[[int], None] | None = None,
    ) -> None:
        self.on_left = on_left
        self.status = status
        self.chunks = list(chunks)
        self.streaming = streaming
        self.first_delay = first_delay
        self.chunk_delay = chunk_delay
        self.cut_after = cut_after
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-type", media_type.encode()))
        if streaming:
            raw.append((b"cache-control", b"no-cache"))
        else:
            length = sum(len(chunk) for chunk in self.chunks)
            raw.append((b"content-length", str(length).encode()))
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        left = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, left))
        sent: list[int] = [0]
        try:
            done = await self._play(send, left, sent)
        finally:
            watcher.cancel()
        if not done and self.streaming and self.on_left is not None:
            self.on_left(sent[0])

    async def _play(self, send: Send, left: asyncio.Event, sent: list[int]) -> bool:
        """Play the reply; whether it was played to the end (``sent[0]``: chunks sent)."""
        if not self.streaming and await _pause(self.first_delay, left):
            return False
        start = {"type": "http.response.start", "status": self.status, "headers": self.raw_headers}
        await send(start)
        if self.streaming and await _pause(self.first_delay, left):
            return False
        for index, chunk in enumerate(self.chunks):
            if self.cut_after is not None and index >= self.cut_after:
                raise StreamCut
            if index and self.streaming and await _pause(self.chunk_delay, left):
                return False
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent[0] = index + 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True


async def _watch_disconnect(receive: Receive, left: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    left.set()


async def _pause(seconds: float, left: asyncio.Event) -> bool:
    """Sleep, but wake as soon as the client goes away (a slow reply must not outlive it).

    Returns whether the client has left.
    """
    if seconds > 0 and not left.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(left.wait(), seconds)
    return left.is_set()
