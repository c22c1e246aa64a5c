"""``server.address`` and ``server.port`` of the endpoint a client calls, for every SDK."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

from tollmeter.semconv import attributes as attrs

__all__ = ["client_server_attributes", "server_attributes"]

_DEFAULT_PORTS = {"https": 443, "http": 80}

# id of a client's URL object -> (that object, its attributes). The URL is held so that its
# id cannot be reused while cached; a client given a new URL object misses.
_BY_URL: dict[int, tuple[object, Mapping[str, AttributeValue]]] = {}
_MAX_URLS = 256


def client_server_attributes(client: object) -> Mapping[str, AttributeValue]:
    """``server_attributes`` of an SDK client's ``base_url``, worked out once per URL object
    (every call goes through it). The mapping is shared: never mutate it."""
    # The SDKs' ``base_url`` property runs an import on every read; the URL it returns is
    # stored in ``_base_url``.
    url = getattr(client, "_base_url", None)
    if url is None:
        url = getattr(client, "base_url", None)
    entry = _BY_URL.get(id(url))
    if entry is not None and entry[0] is url:
        return entry[1]
    values = server_attributes(url)
    if len(_BY_URL) >= _MAX_URLS:
        _BY_URL.clear()
    _BY_URL[id(url)] = (url, values)
    return values


def server_attributes(url: object) -> dict[str, AttributeValue]:
    """The attributes of ``url``: an httpx ``URL`` (host, port, scheme) or a URL string.

    The port is the scheme's default when the URL names none; nothing when there is no host.
    """
    if isinstance(url, str):
        parts = urlsplit(url)
        host: object = parts.hostname
        try:
            port: object = parts.port
        except ValueError:  # a port that is not a number
            port = None
        scheme: object = parts.scheme
    else:
        host = getattr(url, "host", None)
        port = getattr(url, "port", None)
        scheme = getattr(url, "scheme", "")
    if not isinstance(host, str) or not host:
        return {}
    values: dict[str, AttributeValue] = {attrs.SERVER_ADDRESS: host}
    if not isinstance(port, int) or isinstance(port, bool):
        port = _DEFAULT_PORTS.get(str(scheme))
    if isinstance(port, int):
        values[attrs.SERVER_PORT] = port
    return values
