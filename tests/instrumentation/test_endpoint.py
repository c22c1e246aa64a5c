"""``server.address``/``server.port`` from an SDK client's endpoint, string or httpx URL."""

from __future__ import annotations

import httpx
import pytest

from tollmeter.instrumentation._endpoint import server_attributes


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://bedrock-runtime.us-east-1.amazonaws.com",
            ("bedrock-runtime.us-east-1.amazonaws.com", 443),
        ),
        ("http://127.0.0.1:8080/v1", ("127.0.0.1", 8080)),
        (httpx.URL("https://api.openai.com/v1/"), ("api.openai.com", 443)),
        (httpx.URL("http://localhost:11434/v1"), ("localhost", 11434)),
        ("ftp://files.example", ("files.example", None)),
    ],
)
def test_host_and_port_with_the_scheme_default(url, expected):
    host, port = expected
    values = server_attributes(url)
    assert values.get("server.address") == host
    assert values.get("server.port") == port


@pytest.mark.parametrize("url", [None, "", "not a url", object()])
def test_no_host_gives_nothing(url):
    assert server_attributes(url) == {}


def test_a_port_that_is_not_a_number_falls_back_to_the_scheme_default():
    assert server_attributes("http://host:port-is-text/") == {
        "server.address": "host",
        "server.port": 80,
    }
