"""The server as a thread (sync and async), its inspection routes, and the CLI process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading

import httpx
import openai
import pytest

from tollmeter.fakellm import FakeLLMError, FakeLLMServer

MESSAGES = [{"role": "user", "content": "Hello"}]


def test_start_stop_and_restart_are_clean():
    server = FakeLLMServer()
    with pytest.raises(FakeLLMError):
        _ = server.url
    with server:
        assert httpx.get(f"{server.url}/_fake/health", timeout=10).json() == {"status": "ok"}
        with pytest.raises(FakeLLMError):
            server.start()
    server.stop()
    with server:
        assert httpx.get(f"{server.url}/_fake/health", timeout=10).status_code == 200


def test_port_in_use_fails_fast():
    with FakeLLMServer() as first, pytest.raises(OSError, match="in use"):
        FakeLLMServer(port=first.port).start()


def test_async_context_manager():
    async def main() -> int:
        async with FakeLLMServer() as server:
            async with openai.AsyncOpenAI(
                base_url=f"{server.url}/v1", api_key="k", max_retries=0
            ) as client:
                completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            return server.find(completion.id).usage.input_tokens

    assert asyncio.run(main()) > 0


def test_inspection_routes_list_usage_without_text():
    with FakeLLMServer() as server:
        secret = "my private prompt text"
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
            completion = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": secret}]
            )
        listing = httpx.get(f"{server.url}/_fake/requests", timeout=10)
        assert secret not in listing.text
        assert completion.choices[0].message.content not in listing.text
        (item,) = listing.json()["requests"]
        assert item["response_id"] == completion.id
        assert item["usage"]["input_tokens"] == completion.usage.prompt_tokens
        assert item["provider_usage"] == completion.usage.model_dump(exclude_none=True)
        assert httpx.get(f"{server.url}/_fake/requests?limit=0", timeout=10).json() == {
            "requests": []
        }
        assert server.last().response_id == completion.id
        assert httpx.post(f"{server.url}/_fake/reset", timeout=10).status_code == 204
        assert server.requests() == []
        with pytest.raises(LookupError):
            server.last()


def test_concurrent_clients_get_their_own_usage():
    with FakeLLMServer() as server:
        results: dict[str, int] = {}

        def call(index: int) -> None:
            with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
                text = "word " * (index + 1)
                completion = client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": text}]
                )
                results[completion.id] = completion.usage.prompt_tokens

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 8
        assert {server.find(rid).usage.input_tokens for rid in results} == set(results.values())


def test_stop_cuts_a_slow_stream_within_the_grace_period():
    server = FakeLLMServer().start()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o?fault=slow&delay_ms=60000", messages=MESSAGES, stream=True
    )
    server.stop(timeout=15)
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    client.close()


def _tollmeter() -> list[str]:
    return [os.path.join(os.path.dirname(sys.executable), "tollmeter")]


def test_cli_prints_its_url_serves_and_exits_on_sigterm():
    process = subprocess.Popen(
        [*_tollmeter(), "fake-llm", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("fake-llm listening on http://127.0.0.1:")
        url = line.split()[-1]
        with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
            completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert completion.usage.total_tokens > 0
        listing = httpx.get(f"{url}/_fake/requests", timeout=10).json()["requests"]
        assert [item["response_id"] for item in listing] == [completion.id]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


def test_cli_reports_a_port_in_use():
    with FakeLLMServer() as server:
        result = subprocess.run(
            [*_tollmeter(), "fake-llm", "--port", str(server.port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 3
    assert "cannot start" in result.stderr
