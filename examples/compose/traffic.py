"""Traffic for the docker-compose stack: three tenants calling OpenAI and Anthropic models.

Runs in a loop until stopped, one round every ``TRAFFIC_INTERVAL`` seconds (default 2). The
compose file points it at the fake LLM server (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``) and
at the collector (``OTEL_EXPORTER_OTLP_ENDPOINT``, with the ingest key in
``OTEL_EXPORTER_OTLP_HEADERS``). Each round is one trace per tenant, visible in Jaeger under
the service ``traffic``; the tokens appear per tenant in Grafana.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import anthropic
import openai
from opentelemetry import trace

import tollmeter.instrumentation as tollmeter

log = logging.getLogger("traffic")
tracer = trace.get_tracer("traffic")

QUESTION = "Summarize the last three support tickets about billing in two sentences."
# Over 1,024 tokens, so that the provider caches it after the first call of a tenant.
POLICY = " ".join(
    f"Rule {n}: answer politely, cite the invoice number, never promise a refund."
    for n in range(80)
)


def serve_acme(chat: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with tollmeter.attribute(tenant="acme", project="helpdesk", feature="summarize"):
        chat.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": POLICY},
                {"role": "user", "content": QUESTION},
            ],
            max_tokens=120,
        )
        claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=150,
            messages=[{"role": "user", "content": QUESTION}],
        )


def serve_initech(chat: openai.OpenAI) -> None:
    with tollmeter.attribute(tenant="initech", project="search", feature="embed"):
        chat.embeddings.create(
            model="text-embedding-3-small", input=["invoice 2024-07", "refund policy"]
        )
        stream = chat.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Draft a polite reply to the customer."}],
            max_tokens=80,
            stream=True,
        )
        # No include_usage: the provider reports nothing, tollmeter estimates the tokens.
        for _chunk in stream:
            pass


def serve_globex(chat: openai.OpenAI) -> None:
    with tollmeter.attribute(tenant="globex", project="agent", feature="research"):
        for step in range(3):
            chat.responses.create(model="o4-mini", input=f"Research step {step}: {QUESTION}")


def run_round(chat: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    """One request per tenant, each in its own trace."""
    with tracer.start_as_current_span("acme request"):
        serve_acme(chat, claude)
    with tracer.start_as_current_span("initech request"):
        serve_initech(chat)
    with tracer.start_as_current_span("globex request"):
        serve_globex(chat)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    interval = float(os.environ.get("TRAFFIC_INTERVAL", "2"))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    telemetry = tollmeter.configure(service_name="traffic")
    chat = openai.OpenAI(max_retries=2, timeout=30)
    claude = anthropic.Anthropic(max_retries=2, timeout=30)
    rounds = 0
    try:
        while not stop.is_set():
            try:
                run_round(chat, claude)
                rounds += 1
                if rounds % 30 == 1:
                    log.info("%d rounds sent", rounds)
            except (openai.APIError, anthropic.APIError) as failure:
                # The fake LLM server may still be starting: keep going.
                log.warning("round failed: %s", failure)
            stop.wait(interval)
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
