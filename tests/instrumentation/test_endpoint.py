"""``server.address``/``server.port`` from an SDK client's endpoint, string or httpx URL."""

from __future__ import annotations

import httpx
import pytest

from tollmeter.instrumentation import _endpoint
from tollmeter.instrumentation._endpoint import client_server_attributes, server_attributes


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


class _Client:
    """The part of an SDK client the cache reads: the URL object in ``_base_url``."""

    def __init__(self, url: object) -> None:
        self._base_url = url


def test_a_client_url_is_worked_out_once_per_url_object():
    url = httpx.URL("https://api.anthropic.com/")
    client = _Client(url)
    first = client_server_attributes(client)
    assert first == {"server.address": "api.anthropic.com", "server.port": 443}
    assert client_server_attributes(_Client(url)) is first


def test_a_client_given_a_new_url_gets_its_attributes():
    client = _Client(httpx.URL("https://api.anthropic.com/"))
    client_server_attributes(client)
    client._base_url = httpx.URL("http://127.0.0.1:9000/")
    assert client_server_attributes(client) == {
        "server.address": "127.0.0.1",
        "server.port": 9000,
    }


def test_a_client_without_the_stored_url_is_read_through_base_url():
    class Plain:
        base_url = "http://localhost:11434/v1"

    assert client_server_attributes(Plain()) == {
        "server.address": "localhost",
        "server.port": 11434,
    }


def test_the_cache_stays_bounded():
    clients = [_Client(httpx.URL(f"http://host-{i}.invalid/")) for i in range(600)]
    for client in clients:
        client_server_attributes(client)
    assert len(_endpoint._BY_URL) <= _endpoint._MAX_URLS
    assert client_server_attributes(clients[0])["server.address"] == "host-0.invalid"
