"""A FastAPI service that answers like a metered API: once its tenant's quota is used up,
``TollmeterMiddleware(quota_response=True)`` turns the guard's ``QuotaExceeded`` into
``429 Too Many Requests`` with ``Retry-After`` and a JSON body, with no handler written.

``examples/limits/tollmeter.yaml`` gives the ``gateway-demo`` tenant 200 tokens a day. The
service reads the tenant from the ``x-tenant-id`` header; each ``POST /summarise`` makes
one model call. The script sends requests to the service (in-process, through Starlette's
test client) until one is refused, and prints each status with the refusal's headers and
body.

    tollmeter fake-llm --port 8300 &
    tollmeter collector --config examples/limits/tollmeter.yaml &
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    TOLLMETER_GUARD_URL=http://127.0.0.1:4319 \\
        python examples/gateway_429/app.py
"""

from __future__ import annotations

import os

import openai
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

import tollmeter
from tollmeter.instrumentation import TollmeterMiddleware

GUARD_URL = os.environ.get("TOLLMETER_GUARD_URL", "http://127.0.0.1:4319")
TENANT = "gateway-demo"
MAX_REQUESTS = 20
# The fake server answers with this many output tokens.
REPLY = {"x-fake-reply-tokens": "30"}


class Text(BaseModel):
    text: str


def make_service(client: openai.OpenAI) -> FastAPI:
    service = FastAPI()

    @service.post("/summarise")
    def summarise(body: Text) -> dict[str, object]:
        completion = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"Summarise in one line: {body.text}"}],
            max_tokens=40,
            extra_headers=REPLY,
        )
        return {"summary": completion.choices[0].message.content}

    service.add_middleware(TollmeterMiddleware, quota_response=True)
    return service


def main() -> None:
    telemetry = tollmeter.configure(service_name="gateway-429-example", guard_url=GUARD_URL)
    try:
        with (
            openai.OpenAI(
                api_key=os.environ.get("OPENAI_API_KEY", "unused-by-the-fake-server"),
                max_retries=0,
            ) as client,
            TestClient(make_service(client)) as service,
        ):
            for number in range(1, MAX_REQUESTS + 1):
                answer = service.post(
                    "/summarise",
                    json={"text": "Tokens are metered per tenant."},
                    headers={"x-tenant-id": TENANT},
                )
                print(f"request {number}: {answer.status_code}")
                if answer.status_code == 429:
                    print(f"Retry-After: {answer.headers['retry-after']}")
                    print(f"body: {answer.text}")
                    break
                # Send the span now: the collector counts the call when it arrives.
                telemetry.force_flush()
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
