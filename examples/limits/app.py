"""Collector limits: the guard denies a tenant over its quota while another keeps working.

``tollmeter.yaml`` next to this script gives the ``trial`` tenant 300 tokens a day and
every tenant 20,000 tokens a minute. With ``guard_url`` set, each model call is first
checked with the collector: the call's estimate (prompt tokens counted with tiktoken
plus ``max_tokens``) is reserved on every matching limit, and the span's actual usage
replaces the reservation when it reaches the collector. A denied call raises
``QuotaExceeded`` before any request is sent to the provider.

    tollmeter fake-llm --port 8300 &
    tollmeter collector --config examples/limits/tollmeter.yaml &
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    TOLLMETER_GUARD_URL=http://127.0.0.1:4319 \\
        python examples/limits/app.py
"""

from __future__ import annotations

import os

import httpx
import openai

import tollmeter
from tollmeter.instrumentation.errors import QuotaExceeded

GUARD_URL = os.environ.get("TOLLMETER_GUARD_URL", "http://127.0.0.1:4319")
ROUNDS = 6
MAX_REPLY_TOKENS = 100


def ask(client: openai.OpenAI, tenant: str, round_number: int) -> bool:
    """One model call for ``tenant``; ``False`` when the guard denied it."""
    with tollmeter.attribute(tenant=tenant, feature="assistant"):
        try:
            reply = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"Round {round_number}: suggest a title."}],
                max_tokens=MAX_REPLY_TOKENS,
            )
        except QuotaExceeded as denied:
            retry = "never today" if denied.retry_after is None else f"{denied.retry_after:.0f} s"
            print(
                f"round {round_number}: {tenant} DENIED before reaching the model by "
                f"{denied.limit!r} (remaining {denied.remaining}, retry after {retry})"
            )
            print(
                f"    the call would reserve its prompt estimate + max_tokens={MAX_REPLY_TOKENS}, "
                "more than what is left"
            )
            return False
    tokens = reply.usage.total_tokens if reply.usage else None
    print(f"round {round_number}: {tenant} allowed, {tokens} tokens")
    return True


def print_status(tenant: str) -> None:
    with httpx.Client(base_url=GUARD_URL, timeout=5) as http:
        answer = http.get(f"/api/v1/tenants/{tenant}/status")
    answer.raise_for_status()
    status = answer.json()
    print(f"GET /api/v1/tenants/{tenant}/status: blocked={status['blocked']}")
    for limit in status["limits"]:
        print(
            f"    {limit['name']}: {limit['remaining']:.0f} of {limit['limit']:.0f} tokens left, "
            f"resets at {limit['reset_at']}, blocked={limit['blocked']}"
        )


def main() -> None:
    telemetry = tollmeter.configure(service_name="limits-example", guard_url=GUARD_URL)
    try:
        with openai.OpenAI(
            api_key=os.environ.get("OPENAI_API_KEY", "unused-by-the-fake-server"), max_retries=0
        ) as client:
            trial_denied = False
            for round_number in range(1, ROUNDS + 1):
                if not ask(client, "trial", round_number) and not trial_denied:
                    trial_denied = True
                    print_status("trial")
                ask(client, "enterprise", round_number)
                # Send the spans now, so that the collector replaces each reservation by the
                # call's actual usage before the next check (a batch processor does it within
                # seconds on its own).
                telemetry.force_flush()
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
