"""Prepaid grants: a tenant buys tokens in advance, its calls burn them, then it is stopped.

``examples/limits/tollmeter.yaml`` puts the ``prepaid`` tenant under ``grants.overage:
block``. The app grants it 200 tokens through the management API, then makes calls until
the collector denies one: each call's span burns the grant when it reaches the collector
(the call that finds some balance left is let through even if it uses more, and what it
uses beyond the grant is overage). Once the grant is used up the guard raises
``QuotaExceeded`` with ``grants exhausted``, and the app prints the balance and the grant's
movements.

    tollmeter fake-llm --port 8300 &
    tollmeter collector --config examples/limits/tollmeter.yaml &
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    TOLLMETER_GUARD_URL=http://127.0.0.1:4319 \\
        python examples/grants/app.py
"""

from __future__ import annotations

import os
import uuid

import httpx
import openai

import tollmeter
from tollmeter.instrumentation.errors import QuotaExceeded

GUARD_URL = os.environ.get("TOLLMETER_GUARD_URL", "http://127.0.0.1:4319")
TENANT = "prepaid"
MAX_CALLS = 20
# The fake server answers with this many output tokens.
REPLY = {"x-fake-reply-tokens": "40"}


def main() -> None:
    telemetry = tollmeter.configure(service_name="grants-example", guard_url=GUARD_URL)
    http = httpx.Client(base_url=GUARD_URL, timeout=10)
    try:
        grant_id = f"starter-{uuid.uuid4().hex[:8]}"
        made = http.post(
            "/api/v1/grants",
            json={"grant_id": grant_id, "tenant": TENANT, "amount": 200, "unit": "tokens"},
        )
        made.raise_for_status()
        print(f"granted {made.json()['amount']} tokens to {TENANT} ({grant_id})")
        with openai.OpenAI(
            api_key=os.environ.get("OPENAI_API_KEY", "unused-by-the-fake-server"), max_retries=0
        ) as client:
            for number in range(1, MAX_CALLS + 1):
                with tollmeter.attribute(tenant=TENANT):
                    try:
                        client.chat.completions.create(
                            model="gpt-4o-mini",
                            messages=[{"role": "user", "content": "One line on credits."}],
                            max_tokens=50,
                            extra_headers=REPLY,
                        )
                    except QuotaExceeded as denied:
                        print(f"call {number}: DENIED by {denied.limit!r} ({denied})")
                        break
                # Send the span now: the grant is burnt when it reaches the collector.
                telemetry.force_flush()
                units = http.get("/api/v1/grants/balance", params={"tenant": TENANT}).json()
                tokens = units["units"]["tokens"]
                print(
                    f"call {number}: ok, balance {tokens['balance']}, overage {tokens['overage']}"
                )
        history = http.get("/api/v1/grants/history", params={"tenant": TENANT}).json()
        for movement in history["movements"]:
            if movement["grant_id"] in (grant_id, None):
                print(f"    {movement['kind']:<9} {movement['amount']:>6} {movement['unit']}")
    finally:
        http.close()
        telemetry.shutdown()


if __name__ == "__main__":
    main()
