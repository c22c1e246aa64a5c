"""Plans: a tenant on the free plan reaches its monthly quota, is upgraded to pro through
the management API, and its next call goes through at once.

``examples/limits/tollmeter.yaml`` puts the ``plan-demo`` tenant on the ``free`` plan
(300 tokens a month); ``pro`` allows 100,000. The app makes calls until the guard refuses
one, moves the tenant to ``pro`` with ``PUT /api/v1/tenants/plan-demo/plan``, makes two
more calls, and prints each usage event's plan. The month's usage is one counter for both
plans: pro starts from what free already used.

    tollmeter fake-llm --port 8300 &
    tollmeter collector --config examples/limits/tollmeter.yaml &
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    TOLLMETER_GUARD_URL=http://127.0.0.1:4319 \\
        python examples/plans/app.py
"""

from __future__ import annotations

import os
import time

import httpx
import openai

import tollmeter
from tollmeter.instrumentation.errors import QuotaExceeded

GUARD_URL = os.environ.get("TOLLMETER_GUARD_URL", "http://127.0.0.1:4319")
TENANT = "plan-demo"
MAX_CALLS = 20


def call(client: openai.OpenAI) -> None:
    with tollmeter.attribute(tenant=TENANT):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "One line on pricing tiers."}],
            max_tokens=50,
            extra_headers={"x-fake-reply-tokens": "40"},
        )


def events(http: httpx.Client, count: int) -> list[dict[str, object]]:
    """The tenant's usage events, once ``count`` of them are in the ledger."""
    deadline = time.monotonic() + 10
    while True:
        found = [
            e
            for e in http.get("/api/v1/events", params={"limit": 1000}).json()["events"]
            if e["tenant_id"] == TENANT
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def main() -> None:
    telemetry = tollmeter.configure(service_name="plans-example", guard_url=GUARD_URL)
    http = httpx.Client(base_url=GUARD_URL, timeout=10)
    plan_url = f"/api/v1/tenants/{TENANT}/plan"
    try:
        print(f"{TENANT} is on plan {http.get(plan_url).json()['plan']}")
        calls = 0
        with openai.OpenAI(
            api_key=os.environ.get("OPENAI_API_KEY", "unused-by-the-fake-server"), max_retries=0
        ) as client:
            for number in range(1, MAX_CALLS + 1):
                try:
                    call(client)
                except QuotaExceeded as denied:
                    print(f"call {number}: DENIED by {denied.limit!r}")
                    break
                calls += 1
                # Send the span now: the collector counts the actual usage when it arrives.
                telemetry.force_flush()
                print(f"call {number}: ok")
            moved = http.put(plan_url, json={"plan": "pro"})
            moved.raise_for_status()
            print(f"{TENANT} is now on plan {moved.json()['plan']}")
            for number in range(calls + 1, calls + 3):
                call(client)
                calls += 1
                telemetry.force_flush()
                print(f"call {number}: ok")
        for event in events(http, calls):
            print(f"event: {event['total_tokens']} tokens on plan {event['plan']}")
    finally:
        http.close()
        telemetry.shutdown()


if __name__ == "__main__":
    main()
