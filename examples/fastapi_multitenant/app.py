"""A multi-tenant FastAPI service whose model calls are metered per tenant.

The one tollmeter line in the application is ``app.add_middleware(TollmeterMiddleware)``: every
request's model calls carry the tenant named in its ``x-tenant-id`` header (and the project in
``x-project-id``), as span attributes and as W3C baggage. ``python app.py`` also calls
``configure()``, which exports the spans over OTLP and instruments the openai SDK.

Run it against the fake LLM server and a collector (see README.md):

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=demo-key \
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python app.py
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import tollmeter.instrumentation as tollmeter

MODEL = "gpt-4o-mini"


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    answer: str
    total_tokens: int


def create_app() -> FastAPI:
    clients: dict[str, openai.AsyncOpenAI] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Reads OPENAI_BASE_URL and OPENAI_API_KEY.
        clients["openai"] = openai.AsyncOpenAI(max_retries=1, timeout=30)
        yield
        await clients["openai"].close()

    app = FastAPI(title="Multi-tenant assistant", lifespan=lifespan)
    app.add_middleware(tollmeter.TollmeterMiddleware, project_header="x-project-id")

    @app.post("/ask")
    async def ask(question: Question) -> Answer:
        try:
            completion = await clients["openai"].chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": question.text}],
                max_tokens=200,
            )
        except openai.APIError as failure:
            raise HTTPException(status_code=502, detail="the model call failed") from failure
        usage = completion.usage
        return Answer(
            answer=completion.choices[0].message.content or "",
            total_tokens=usage.total_tokens if usage is not None else 0,
        )

    return app


app = create_app()


def main() -> None:
    telemetry = tollmeter.configure(service_name="fastapi-multitenant")
    try:
        uvicorn.run(
            app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8001"))
        )
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
