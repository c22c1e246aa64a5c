"""``server.address`` and ``server.port`` of the endpoint a client calls, for every SDK."""

from __future__ import annotations

from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

from tollmeter.semconv import attributes as attrs

__all__ = ["server_attributes"]

_DEFAULT_PORTS = {"https": 443, "http": 80}


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
