"""An application whose LLM calls three tenants share: OpenAI and Anthropic models.

It holds no telemetry set-up: ``tollmeter demo`` runs it with zero-code instrumentation,
``opentelemetry-instrument python app.py``, after starting the collector and the fake LLM
server, and sets:

- ``OTEL_EXPORTER_OTLP_ENDPOINT``: where spans and metrics go (the collector),
- ``TOLLMETER_GUARD_URL``: the collector's management API, asked before each call,
- ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``: the fake LLM server.

The only tollmeter lines are the ``attribute()`` blocks that say who each call is for.
Without ``opentelemetry-instrument``, one ``tollmeter.configure()`` call at start-up does
the same.

The file ships inside the package, so that ``tollmeter demo`` runs it from any install;
``examples/quickstart/app.py`` in a checkout is a link to it.
"""

from __future__ import annotations

import anthropic
import openai

import tollmeter.instrumentation as tollmeter
from tollmeter.instrumentation.errors import QuotaExceeded

QUESTION = "Summarize the last three support tickets about billing in two sentences."
# Long enough (over 1,024 tokens) for the provider to cache it after the first call.
POLICY = " ".join(
    f"Rule {n}: answer politely, cite the invoice number, never promise a refund."
    for n in range(80)
)


def serve_acme(chat: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with tollmeter.attribute(tenant="acme", project="helpdesk", feature="summarize"):
        chat.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}], max_tokens=120
        )
        stream = chat.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Draft a polite reply to the customer."}],
            max_tokens=80,
            stream=True,
        )
        # No include_usage: the provider reports nothing, tollmeter estimates with tiktoken.
        for _chunk in stream:
            pass
        claude.messages.create(
            model="claude-haiku-4-5",
            max_tokens=150,
            messages=[{"role": "user", "content": QUESTION}],
        )
        for ticket in ("ticket 1042", "ticket 1043"):  # the second call reads the cached policy
            chat.chat.completions.create(
                model="gpt-4o-mini",
                messages=[
                    {"role": "system", "content": POLICY},
                    {"role": "user", "content": f"Answer {ticket}."},
                ],
                max_tokens=60,
            )
        chat.chat.completions.create(
            model="o4-mini", messages=[{"role": "user", "content": "Which refund rule applies?"}]
        )


def serve_initech(chat: openai.OpenAI) -> None:
    with tollmeter.attribute(tenant="initech", project="search", feature="embed"):
        chat.embeddings.create(
            model="text-embedding-3-small", input=["invoice 2024-07", "refund policy"]
        )
        chat.responses.create(model="gpt-4.1-mini", input="Classify: 'my invoice is wrong'")


def serve_globex_until_denied(claude: anthropic.Anthropic) -> None:
    """Globex has a small daily quota: the guard denies a call before it reaches the model."""
    with tollmeter.attribute(tenant="globex", project="agent", feature="research"):
        for step in range(1, 20):
            try:
                claude.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=400,
                    messages=[{"role": "user", "content": f"Research step {step}: {QUESTION}"}],
                )
            except QuotaExceeded as denied:
                # Each call reserves its input estimate plus max_tokens until its span arrives
                # and replaces the reservation with the real usage.
                print(f"globex step {step} denied before reaching the model: {denied}")
                print("  (each call reserves its input estimate + max_tokens=400 until metered)")
                return
        print("globex was never denied")


def main() -> None:
    # The SDK's providers flush their spans when the process exits.
    chat = openai.OpenAI(api_key="demo-key", max_retries=0)
    claude = anthropic.Anthropic(api_key="demo-key", max_retries=0)
    serve_acme(chat, claude)
    serve_initech(chat)
    serve_globex_until_denied(claude)


if __name__ == "__main__":
    main()
