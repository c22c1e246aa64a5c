"""Token estimates: encodings per model family, formulas, and the offline fallback."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import tiktoken

from tollmeter.instrumentation import (
    _estimate,
    count_text_tokens,
    encoding_name_for_model,
    estimate_chat_input_tokens,
    estimate_prompt_tokens,
    set_load_timeout,
)
from tollmeter.instrumentation._estimate import count_repeated_text_tokens
from tollmeter.instrumentation._hidden import hidden_input

ENGLISH = (
    "The quick brown fox jumps over the lazy dog. Metering tokens per tenant keeps "
    "the bill honest, and estimates fill the gaps when a provider stays silent."
)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-davinci-003", "p50k_base"),
        ("davinci-002", "p50k_base"),
        ("claude-sonnet-4-5", "cl100k_base"),
        ("openai/GPT-4O", "o200k_base"),
        ("some-new-model", "o200k_base"),
        (None, "o200k_base"),
        ("", "o200k_base"),
    ],
)
def test_encoding_name_for_model(model: str | None, encoding: str) -> None:
    assert encoding_name_for_model(model) == encoding


def test_count_text_tokens_matches_tiktoken() -> None:
    for model, name in (("gpt-4o", "o200k_base"), ("gpt-4", "cl100k_base")):
        expected = len(tiktoken.get_encoding(name).encode(ENGLISH))
        assert count_text_tokens(ENGLISH, model) == expected
    assert count_text_tokens("", "gpt-4o") == 0


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4-turbo", "text-davinci-003", "claude-3"])
def test_repeated_text_counts_match_fresh_counts(model: str) -> None:
    texts = [ENGLISH, ENGLISH.upper(), ENGLISH[::-1], "", "x"]
    first = [count_repeated_text_tokens(text, model) for text in texts]
    again = [count_repeated_text_tokens(text, model) for text in texts]
    assert first == again == [count_text_tokens(text, model) for text in texts]
    remembered = (encoding_name_for_model(model), "text", len(ENGLISH), hash(ENGLISH))
    assert remembered in _estimate._remembered


def test_remembered_counts_are_bounded_and_keep_no_text() -> None:
    for number in range(_estimate._MAX_REMEMBERED + 10):
        count_repeated_text_tokens(f"instruction number {number}", "gpt-4o")
    assert 0 < len(_estimate._remembered) <= _estimate._MAX_REMEMBERED
    assert not any(
        isinstance(part, str) and "instruction" in part
        for key in _estimate._remembered
        for part in key
    )


def test_tool_counts_follow_a_definition_changed_in_place() -> None:
    tool: dict[str, Any] = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
    count = hidden_input([], [tool], "gpt-4o")
    assert count is not None

    def compact_json() -> str:
        return json.dumps(tool, separators=(",", ":"), sort_keys=True)

    first = count()
    assert first == count() == count_text_tokens(compact_json(), "gpt-4o")
    tool["function"]["description"] = "Look up an order by its id and return every detail."
    assert count() == count_text_tokens(compact_json(), "gpt-4o") > first


def test_special_token_text_is_counted_not_rejected() -> None:
    assert count_text_tokens("<|endoftext|>", "gpt-4o") > 1


def test_chat_estimate_uses_per_message_overhead() -> None:
    encoding = tiktoken.get_encoding("o200k_base")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": ENGLISH, "name": "alice"},
    ]
    expected = 3  # reply priming
    for message in messages:
        expected += 3 + len(encoding.encode(message["role"]))
        expected += len(encoding.encode(message["content"]))
    expected += 1 + len(encoding.encode("alice"))
    assert estimate_chat_input_tokens(messages, "gpt-4o") == expected


def test_chat_estimate_counts_parts_tool_calls_and_tools() -> None:
    plain = estimate_chat_input_tokens([{"role": "user", "content": "hello there"}], "gpt-4o")
    parts = estimate_chat_input_tokens(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hello there"},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                ],
            }
        ],
        "gpt-4o",
    )
    assert parts == plain + 85
    with_call = estimate_chat_input_tokens(
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            }
        ],
        "gpt-4o",
    )
    assert with_call > estimate_chat_input_tokens([{"role": "assistant"}], "gpt-4o")
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    assert estimate_chat_input_tokens([], "gpt-4o", tools=[tool]) > 3


def test_chat_estimate_is_close_to_a_real_count_for_plain_english() -> None:
    encoding = tiktoken.get_encoding("o200k_base")
    true_count = 3 + 3 + len(encoding.encode("user")) + len(encoding.encode(ENGLISH))
    estimate = estimate_chat_input_tokens([{"role": "user", "content": ENGLISH}], "gpt-4o")
    assert abs(estimate - true_count) <= 0.1 * true_count


def test_prompt_estimate_accepts_every_prompt_shape() -> None:
    one = count_text_tokens(ENGLISH, "gpt-3.5-turbo-instruct")
    assert estimate_prompt_tokens(ENGLISH, "gpt-3.5-turbo-instruct") == one
    assert estimate_prompt_tokens([ENGLISH, ENGLISH], "gpt-3.5-turbo-instruct") == 2 * one
    assert estimate_prompt_tokens([1, 2, 3], "m") == 3
    assert estimate_prompt_tokens([[1, 2], [3]], "m") == 3
    assert estimate_prompt_tokens(None, "m") == 0
    assert estimate_prompt_tokens(object(), "m") == 0


@pytest.mark.parametrize("bad", [0, -1, "5", True, float("nan")])
def test_load_timeout_must_be_positive(bad: object) -> None:
    with pytest.raises(ValueError, match="load timeout"):
        set_load_timeout(bad)  # type: ignore[arg-type]


@pytest.fixture
def blackhole_proxy() -> Iterator[int]:
    """A proxy that accepts connections and never answers: a download through it hangs."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    server.close()


def test_missing_encoding_falls_back_to_heuristic_with_one_warning(
    tmp_path: os.PathLike[str], blackhole_proxy: int
) -> None:
    script = textwrap.dedent(
        """
        import logging
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
        from tollmeter.instrumentation._estimate import prefetch_encoding
        from tollmeter.instrumentation import count_text_tokens, set_load_timeout
        set_load_timeout(0.5)
        prefetch_encoding("gpt-4o")  # returns at once although the download hangs
        print("prefetched")
        print(count_text_tokens("hello world", "gpt-4o"))
        print(count_text_tokens("a", "gpt-4o"))
        print(count_text_tokens("", "gpt-4o"))
        from tollmeter.instrumentation import _estimate
        print(_estimate.count_repeated_text_tokens("hello world", "gpt-4o"))
        print(len(_estimate._remembered))  # a heuristic count is not remembered
        """
    )
    proxy = f"http://127.0.0.1:{blackhole_proxy}"
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path),
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "https_proxy": proxy,
        "http_proxy": proxy,
        "NO_PROXY": "",
        "no_proxy": "",
    }
    # The subprocess timeout is the proof that nothing hangs: tiktoken's own download
    # through the black hole would never return.
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "prefetched",
        str(math.ceil(len("hello world") / 4)),
        "1",
        "0",
        str(math.ceil(len("hello world") / 4)),
        "0",
    ]
    warnings = [line for line in result.stderr.splitlines() if "could not be loaded" in line]
    assert len(warnings) == 1
    assert "o200k_base" in warnings[0]
    assert "TIKTOKEN_CACHE_DIR" in warnings[0]
