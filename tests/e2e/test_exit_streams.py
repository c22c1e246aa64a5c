"""Streams left open at interpreter exit are still metered: an app in a subprocess breaks out
of every kind of stream after its first chunk and exits at once, without closing anything;
a real ``tollmeter collector`` process must hold one estimated event per stream.

Some streams stay referenced by module-level names until the interpreter ends; others are
dropped inside a function, so the garbage collector hands them to the reaper thread, which
may not get to them before exit. Both kinds are ended by the exit sweep, before the
providers shut down, under ``opentelemetry-instrument`` and under ``tollmeter.configure()``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent

APP = """
import asyncio, os
import anthropic, openai
{setup}
url = os.environ["FAKE_LLM_URL"]
prompt = [{{"role": "user", "content": "Write four sentences about tides."}}]
gpt = openai.OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)
claude = anthropic.Anthropic(base_url=url, api_key="test-key", max_retries=0)


def first(stream):
    for chunk in stream:
        return chunk


# Kept by module-level names until the interpreter ends.
chat = gpt.chat.completions.create(model="gpt-4o-mini", messages=prompt, stream=True)
first(chat)
responses = gpt.responses.create(model="gpt-4o-mini", input="Tides, please.", stream=True)
first(responses)
messages = claude.messages.create(
    model="claude-test-small", max_tokens=128, messages=prompt, stream=True
)
first(messages)


def dropped():
    # Collected on return: the reaper thread may not have finished it before exit.
    first(gpt.chat.completions.create(model="gpt-4o", messages=prompt, stream=True))


dropped()


async def async_streams():
    agpt = openai.AsyncOpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)
    aclaude = anthropic.AsyncAnthropic(base_url=url, api_key="test-key", max_retries=0)
    kept = []
    stream = await agpt.chat.completions.create(model="gpt-4o-mini", messages=prompt, stream=True)
    async for _ in stream:
        break
    kept.append(stream)
    stream = await aclaude.messages.create(
        model="claude-test-small", max_tokens=128, messages=prompt, stream=True
    )
    async for _ in stream:
        break
    kept.append(stream)
    return kept


# The loop stays open too, as in an app that exits from inside its loop.
loop = asyncio.new_event_loop()
async_kept = loop.run_until_complete(async_streams())
"""

CONFIGURE = """
from tollmeter.instrumentation import configure
configure(service_name="exit-app", endpoint=os.environ["COLLECTOR"], protocol="http/protobuf")
"""

STREAMS = 6


@pytest.mark.parametrize("mode", ["opentelemetry-instrument", "configure"])
def test_streams_open_at_exit_are_metered(
    collector_process: Any, fake_llm: Any, tmp_path: Path, mode: str
) -> None:
    collector = collector_process()
    app = tmp_path / "app.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_"))}
    env.update(FAKE_LLM_URL=fake_llm.url, COLLECTOR=collector.http_endpoint)
    if mode == "configure":
        app.write_text(APP.format(setup=CONFIGURE))
        command = [sys.executable, str(app)]
    else:
        app.write_text(APP.format(setup=""))
        command = [str(BIN / "opentelemetry-instrument"), sys.executable, str(app)]
        env.update(
            OTEL_SERVICE_NAME="exit-app",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="none",
            OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=",".join(
                sorted(
                    entry.name
                    for entry in entry_points(group="opentelemetry_instrumentor")
                    if not entry.name.startswith("tollmeter_")
                )
            ),
        )
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]

    events = collector.wait_for_events(STREAMS)
    assert len(events) == STREAMS, events
    providers = sorted(event["provider"] for event in events)
    assert providers == ["anthropic"] * 2 + ["openai"] * 4, providers
    for event in events:
        # Cut after the first chunk: the provider's counts never arrived.
        assert event["usage_source"] == "estimate", event
        assert event["input_tokens"] > 0, event
