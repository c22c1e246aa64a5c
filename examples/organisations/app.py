"""Organisations: two tenants of one organisation draw on one daily pool.

``examples/limits/tollmeter.yaml`` puts the tenants ``acme-search`` and ``acme-support``
in the organisation ``acme``, whose tenants share 600 tokens a day (a limit that matches
and groups by ``org``). The two tenants take turns calling the model through the guard:
each check reserves on the organisation's pool as well as on the tenant's own limits,
all or nothing, so once the pool is spent both tenants are denied, whichever spent it.
At the end the script reads acme's usage from the usage API (``group_by=org``) and the
policy path of the last call: which limits it was checked against and the decision.

    tollmeter fake-llm --port 8300 &
    tollmeter collector --config examples/limits/tollmeter.yaml &
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    TOLLMETER_GUARD_URL=http://127.0.0.1:4319 \\
        python examples/organisations/app.py
"""

from __future__ import annotations

import os

import httpx
import openai

import tollmeter
from tollmeter.instrumentation.errors import QuotaExceeded

GUARD_URL = os.environ.get("TOLLMETER_GUARD_URL", "http://127.0.0.1:4319")
TENANTS = ("acme-search", "acme-support")
ROUNDS = 8
MAX_REPLY_TOKENS = 100


def ask(client: openai.OpenAI, tenant: str, round_number: int) -> None:
    with tollmeter.attribute(tenant=tenant):
        try:
            reply = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"Round {round_number}: one idea."}],
                max_tokens=MAX_REPLY_TOKENS,
            )
        except QuotaExceeded as denied:
            print(f"round {round_number}: {tenant} DENIED by {denied.limit!r}")
            return
    tokens = reply.usage.total_tokens if reply.usage else None
    print(f"round {round_number}: {tenant} allowed, {tokens} tokens")


def print_org_usage_and_last_policy() -> None:
    with httpx.Client(base_url=GUARD_URL, timeout=5) as http:
        usage = http.get("/api/v1/usage", params={"group_by": "org", "org": "acme"})
        usage.raise_for_status()
        for row in usage.json()["rows"]:
            print(
                f"GET /api/v1/usage?group_by=org&org=acme: {row['org']} "
                f"{row['requests']} calls, {row['total_tokens']} tokens"
            )
        events: list[dict[str, object]] = []
        after = 0
        while True:
            page = http.get("/api/v1/events", params={"after": after, "limit": 1000}).json()
            events += page["events"]
            if not page["events"]:
                break
            after = page["next"]
    ours = [e for e in events if e["tenant_id"] in TENANTS and e["policy"]]
    if ours:
        last = ours[-1]
        print(f"policy of the last call of {last['tenant_id']}: {last['policy']}")


def main() -> None:
    telemetry = tollmeter.configure(service_name="organisations-example", guard_url=GUARD_URL)
    try:
        with openai.OpenAI(
            api_key=os.environ.get("OPENAI_API_KEY", "unused-by-the-fake-server"), max_retries=0
        ) as client:
            for round_number in range(1, ROUNDS + 1):
                for tenant in TENANTS:
                    ask(client, tenant, round_number)
                    # Send the span now: the collector replaces the reservation by the
                    # call's actual usage before the next check.
                    telemetry.force_flush()
    finally:
        telemetry.shutdown()
    print_org_usage_and_last_policy()


if __name__ == "__main__":
    main()
