"""``GET /v1/models``: a fixed catalogue in whichever format the caller speaks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["MODELS", "list_models"]

MODELS: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("gpt-4.1", "openai"),
    ("gpt-4.1-mini", "openai"),
    ("gpt-5", "openai"),
    ("gpt-5-mini", "openai"),
    ("o3", "openai"),
    ("o4-mini", "openai"),
    ("gpt-3.5-turbo", "openai"),
    ("gpt-3.5-turbo-instruct", "openai"),
    ("text-embedding-3-small", "openai"),
    ("text-embedding-3-large", "openai"),
    ("claude-sonnet-4-6", "anthropic"),
    ("claude-haiku-4-5", "anthropic"),
    ("claude-opus-4-5", "anthropic"),
)
_CREATED = 1_700_000_000
_CREATED_AT = "2025-01-01T00:00:00Z"


async def list_models(request: Request) -> JSONResponse:
    if "anthropic-version" in request.headers:
        catalogue = [
            {"type": "model", "id": name, "display_name": name, "created_at": _CREATED_AT}
            for name, provider in MODELS
            if provider == "anthropic"
        ]
        first, last = catalogue[0]["id"], catalogue[-1]["id"]
        return JSONResponse(
            {"data": catalogue, "has_more": False, "first_id": first, "last_id": last}
        )
    data = [
        {"id": name, "object": "model", "created": _CREATED, "owned_by": "openai"}
        for name, provider in MODELS
        if provider == "openai"
    ]
    return JSONResponse({"object": "list", "data": data})
