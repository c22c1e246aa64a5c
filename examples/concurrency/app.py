"""Concurrency limits: at most two calls of a tenant in flight, the others wait their turn.

``examples/limits/tollmeter.yaml`` lets the ``research`` tenant have two model calls in
flight at once (``measure: concurrency``). Six threads start a slow streamed call each at
the same moment. The guard checks every call with the collector, which admits two and
answers the others ``QuotaExceeded`` with ``retry_after``: they wait and try again. Each
call's span gives its slot back when it reaches the collector, so the six calls finish
two at a time, and none reached the model while two others were in flight.

    tollmeter fake-llm --port 8300 &
    tollmeter collector --config examples/limits/tollmeter.yaml &
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    TOLLMETER_GUARD_URL=http://127.0.0.1:4319 \\
        python examples/concurrency/app.py
"""

from __future__ import annotations

import os
import threading

import httpx
import openai

import tollmeter
from tollmeter.instrumentation import TelemetryHandle
from tollmeter.instrumentation.errors import QuotaExceeded

GUARD_URL = os.environ.get("TOLLMETER_GUARD_URL", "http://127.0.0.1:4319")
TENANT = "research"
CALLS = 6
# The fake server pauses between stream chunks when asked: the calls overlap.
SLOW_STREAM = {"x-fake-chunk-delay-ms": "100", "x-fake-reply-tokens": "8"}
MAX_ATTEMPTS = 30


class Caller:
    """Makes one streamed call, waiting its turn while the tenant's slots are taken."""

    def __init__(self, client: openai.OpenAI, telemetry: TelemetryHandle) -> None:
        self._client = client
        self._telemetry = telemetry
        self._print_lock = threading.Lock()
        self._pause = threading.Event()  # never set: a wait that sleeps its timeout

    def say(self, line: str) -> None:
        with self._print_lock:
            print(line, flush=True)

    def call(self, number: int, start: threading.Barrier) -> None:
        start.wait(timeout=30)
        attempt = 1
        while True:
            with tollmeter.attribute(tenant=TENANT):
                try:
                    stream = self._client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": f"Summarise paper {number}."}],
                        max_tokens=50,
                        stream=True,
                        extra_headers=SLOW_STREAM,
                    )
                except QuotaExceeded as denied:
                    if attempt == MAX_ATTEMPTS:
                        raise
                    wait = denied.retry_after or 1.0
                    self.say(f"call {number}: DENIED by {denied.limit!r}, retry after {wait:.0f} s")
                    self._pause.wait(wait)
                    attempt += 1
                    continue
                chunks = sum(1 for chunk in stream if chunk.choices)
            # Send the span now: the collector frees the call's slot when it arrives.
            self._telemetry.force_flush()
            self.say(f"call {number}: done after {attempt} attempt(s), {chunks} chunks")
            return


def print_status() -> None:
    with httpx.Client(base_url=GUARD_URL, timeout=5) as http:
        answer = http.get(f"/api/v1/tenants/{TENANT}/status")
    answer.raise_for_status()
    for limit in answer.json()["limits"]:
        if "in_flight" in limit:
            in_flight, most = limit["in_flight"], limit["limit"]
            print(f"    {limit['name']}: {in_flight:.0f} of {most:.0f} calls in flight")
        elif limit["forecast"] is not None:
            forecast = limit["forecast"]
            print(
                f"    {limit['name']}: {forecast['projected']:.0f} of {limit['limit']:.0f} tokens "
                f"projected by the end of the month ({forecast['method']})"
            )


def main() -> None:
    telemetry = tollmeter.configure(service_name="concurrency-example", guard_url=GUARD_URL)
    try:
        with openai.OpenAI(
            api_key=os.environ.get("OPENAI_API_KEY", "unused-by-the-fake-server"), max_retries=0
        ) as client:
            caller = Caller(client, telemetry)
            start = threading.Barrier(CALLS)
            threads = [
                threading.Thread(target=caller.call, args=(n, start)) for n in range(1, CALLS + 1)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        print(f"GET /api/v1/tenants/{TENANT}/status:")
        print_status()
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
