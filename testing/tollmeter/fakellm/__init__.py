"""An offline OpenAI- and Anthropic-compatible LLM server with exact, deterministic usage.

Serves ``/v1/chat/completions``, ``/v1/responses``, ``/v1/completions``, ``/v1/embeddings``
and ``/v1/messages`` (streamed or not), and Bedrock's ``/model/{modelId}/converse`` and
``/invoke`` with their streamed twins (AWS event-stream framing), and the Gemini API's
``/v1/models/{model}:generateContent``, ``:streamGenerateContent`` and
``:batchEmbedContents``; counts tokens with tiktoken,
reports prompt-cache and reasoning tokens where the real APIs do, and injects faults on
request. Every answer carries
the usage it reported in an ``x-fake-usage`` header, and ``GET /_fake/requests`` lists them.
See ``docs/fake-llm.md``.

::

    with FakeLLMServer() as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
"""

from __future__ import annotations

from tollmeter.fakellm._app import MAX_BODY_BYTES, FakeLLMState, create_app
from tollmeter.fakellm._cli import fake_llm
from tollmeter.fakellm._errors import FakeLLMError
from tollmeter.fakellm._journal import Exchange, ReportedUsage
from tollmeter.fakellm._server import FakeLLMServer

__all__ = [
    "MAX_BODY_BYTES",
    "Exchange",
    "FakeLLMError",
    "FakeLLMServer",
    "FakeLLMState",
    "ReportedUsage",
    "create_app",
    "fake_llm",
]
