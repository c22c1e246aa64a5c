"""An agent loop under a per-run budget: ``BudgetExceeded`` stops it before the call that
would pass the budget.

The agent gives the model a ``search_orders`` tool and runs it for as long as the model
asks for it. The first run ends normally: the model calls the tool once, reads the
result and answers. The second run is an agent stuck in a tool loop (the model is forced
to call a tool every turn); its ``tollmeter.budget(max_tokens=..., max_calls=...)``
reserves each call's estimate (prompt tokens counted with tiktoken plus ``max_tokens``)
before the request is sent, and raises ``BudgetExceeded`` instead of sending the call
that could pass the budget. No collector is needed for budgets; the spans still go to
one when ``OTEL_EXPORTER_OTLP_ENDPOINT`` points at it.

    tollmeter fake-llm --port 8300 &
    tollmeter collector &
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
        python examples/agent_budget/app.py
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

import tollmeter
from tollmeter.instrumentation.errors import BudgetExceeded

MODEL = "gpt-4o-mini"
MAX_REPLY_TOKENS = 150
INSTRUCTIONS = (
    "You are an order-support agent. Look orders up with search_orders before you answer, "
    "quote the order number and the delivery date, and keep answers under three sentences."
)
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "search_orders",
            "description": "Find a customer's orders by e-mail address.",
            "parameters": {
                "type": "object",
                "properties": {"email": {"type": "string"}, "status": {"type": "string"}},
                "required": ["email"],
            },
        },
    }
]


# The second run forces a tool call every turn: an agent that never gets to answer.
RUNS: tuple[tuple[str, Literal["auto", "required"]], ...] = (
    ("normal run", "auto"),
    ("stuck in a tool loop", "required"),
)


def search_orders(arguments: dict[str, Any]) -> str:
    """The tool itself: a stand-in order database."""
    return json.dumps(
        {"email": arguments.get("email"), "orders": [{"id": "A-1042", "delivery": "2026-12-02"}]}
    )


def run_agent(
    client: openai.OpenAI, question: str, tool_choice: Literal["auto", "required"]
) -> str:
    """Call the model, run every tool it asks for, and repeat until it answers in text."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": question},
    ]
    step = 0
    while True:
        step += 1
        reply = client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=TOOLS,
            tool_choice=tool_choice,
            max_tokens=MAX_REPLY_TOKENS,
        )
        message = reply.choices[0].message
        usage = reply.usage
        tokens = usage.total_tokens if usage else 0
        if not message.tool_calls:
            print(f"  step {step}: answered ({tokens} tokens)")
            return message.content or ""
        print(f"  step {step}: model calls {len(message.tool_calls)} tool(s) ({tokens} tokens)")
        messages.append(message.model_dump(exclude_none=True))  # type: ignore[arg-type]
        for call in message.tool_calls:
            if call.type != "function":
                continue
            result = search_orders(json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})


def main() -> None:
    telemetry = tollmeter.configure(service_name="agent-budget-example")
    try:
        with (
            openai.OpenAI(
                api_key=os.environ.get("OPENAI_API_KEY", "unused-by-the-fake-server"),
                max_retries=0,
            ) as client,
            tollmeter.attribute(tenant="support-bot", feature="agent"),
        ):
            for title, tool_choice in RUNS:
                print(f"{title}:")
                with tollmeter.budget(max_tokens=2500, max_calls=8, name=title) as run_budget:
                    try:
                        run_agent(client, "Where is my order? I'm ana@example.com", tool_choice)
                    except BudgetExceeded as stopped:
                        print(f"  stopped before the next call: {stopped}")
                        print(f"  kind={stopped.kind} used={stopped.used} limit={stopped.limit}")
                    print(
                        f"  budget used: {run_budget.tokens_used} tokens in "
                        f"{run_budget.calls} calls"
                    )
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
