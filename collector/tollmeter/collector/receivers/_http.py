"""OTLP/HTTP receiver: a Starlette app for ``/v1/traces``, ``/v1/metrics``, ``/v1/logs``.

Bodies are ``application/x-protobuf`` or ``application/json`` (OTLP/JSON),
optionally gzip-compressed; the answer uses the request's encoding. Status
mapping, as the OTLP specification asks: 400 with a ``google.rpc.Status`` body
for undecodable payloads, 401 for a missing or unknown ingest key, 413 when the
body (compressed or not) exceeds ``max_body_bytes``, 415 for other content
types or encodings, 503 with ``Retry-After`` when the pipeline is full or the
ledger failing, and 200
with ``partialSuccess`` when some spans were rejected.

The size limit is enforced while reading and while decompressing, so neither a
huge upload nor a gzip bomb can make the collector allocate more than the limit.
"""

from __future__ import annotations

import math
import zlib

from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tollmeter.collector._auth import key_from_headers
from tollmeter.collector.errors import Unauthenticated, Undecodable
from tollmeter.collector.receivers._ingest import (
    RETRYABLE,
    SIGNALS,
    Encoding,
    OtlpIngest,
    Signal,
    decode,
    retry_advice,
)
from tollmeter.collector.receivers._otlp_json import to_otlp_json
from tollmeter.semconv.errors import TollmeterError

__all__ = ["http_receiver_app"]

_CONTENT_TYPES: dict[str, Encoding] = {
    "application/x-protobuf": "protobuf",
    "application/protobuf": "protobuf",
    "application/json": "json",
}
_MEDIA_TYPES: dict[Encoding, str] = {
    "protobuf": "application/x-protobuf",
    "json": "application/json",
}


class _TooLarge(TollmeterError):
    pass


def _status_response(
    encoding: Encoding,
    status_code: int,
    code: int,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    status = status_pb2.Status(code=code, message=message)
    body = to_otlp_json(status) if encoding == "json" else status.SerializeToString()
    return Response(
        body, status_code=status_code, media_type=_MEDIA_TYPES[encoding], headers=headers
    )


def _message_response(encoding: Encoding, message: Message) -> Response:
    body = to_otlp_json(message) if encoding == "json" else message.SerializeToString()
    return Response(body, media_type=_MEDIA_TYPES[encoding])


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _gunzip(payload: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = payload
    try:
        while not inflater.eof:
            produced = inflater.decompress(pending, limit + 1 - len(out))
            out += produced
            if len(out) > limit:
                raise _TooLarge
            pending = inflater.unconsumed_tail
            if not produced and not pending:
                break
    except zlib.error as exc:
        raise Undecodable(f"invalid gzip body: {exc}") from None
    if not inflater.eof:
        raise Undecodable("truncated gzip body")
    return bytes(out)


def http_receiver_app(ingest: OtlpIngest, *, max_body_bytes: int) -> Starlette:
    """The ASGI app of the OTLP/HTTP receiver."""

    async def handle(request: Request, signal: Signal) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        encoding = _CONTENT_TYPES.get(media_type)
        if encoding is None:
            return Response(
                f"unsupported content type {media_type!r}: use application/x-protobuf "
                "or application/json",
                status_code=415,
                media_type="text/plain",
            )
        content_encoding = request.headers.get("content-encoding", "").strip().lower() or "identity"
        if content_encoding not in ("identity", "gzip"):
            return _status_response(
                encoding,
                415,
                code_pb2.INVALID_ARGUMENT,
                f"unsupported content encoding {content_encoding!r}: use gzip or none",
            )
        try:
            bound = ingest.keys.ingest_key(key_from_headers(request.headers.get))
        except Unauthenticated as exc:
            return _status_response(encoding, 401, code_pb2.UNAUTHENTICATED, str(exc))
        try:
            payload = await _read_body(request, max_body_bytes)
            if content_encoding == "gzip":
                payload = _gunzip(payload, max_body_bytes)
            message = decode(SIGNALS[signal], payload, encoding)
        except _TooLarge:
            return _status_response(
                encoding,
                413,
                code_pb2.RESOURCE_EXHAUSTED,
                f"request body larger than {max_body_bytes} bytes",
            )
        except Undecodable as exc:
            return _status_response(encoding, 400, code_pb2.INVALID_ARGUMENT, str(exc))
        raw = payload if encoding == "protobuf" else None
        try:
            response = await ingest.export(
                signal, message, bound_tenant=bound.tenant, internal=bound.internal, raw=raw
            )
        except RETRYABLE as exc:
            advice, delay_s = retry_advice(exc)
            return _status_response(
                encoding,
                503,
                code_pb2.UNAVAILABLE,
                advice,
                headers={"Retry-After": str(max(1, math.ceil(delay_s)))},
            )
        return _message_response(encoding, response)

    async def traces(request: Request) -> Response:
        return await handle(request, "traces")

    async def metrics(request: Request) -> Response:
        return await handle(request, "metrics")

    async def logs(request: Request) -> Response:
        return await handle(request, "logs")

    return Starlette(
        routes=[
            Route("/v1/traces", traces, methods=["POST"]),
            Route("/v1/metrics", metrics, methods=["POST"]),
            Route("/v1/logs", logs, methods=["POST"]),
        ]
    )
