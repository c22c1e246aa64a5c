"""Which provider an ``openai`` SDK client talks to: ``gen_ai.provider.name`` and the request model.

The OpenAI SDK reaches many services besides OpenAI's, and each bills at its own prices, so the
provider name is decided per client, first match wins:

1. ``provider_hosts``, given to ``instrument()`` / ``configure()``, or the
   ``TOLLMETER_OPENAI_PROVIDER_HOSTS`` variable (``host=name,host=name``): the exact host of the
   client's ``base_url`` mapped to the name to report. For gateways, self-hosted servers and any
   service the table below does not know.
2. ``AzureOpenAI`` / ``AsyncAzureOpenAI`` clients, and hosts under ``openai.azure.com`` or
   ``cognitiveservices.azure.com``: ``azure.ai.openai``.
3. The host table ``KNOWN_HOSTS``: the OpenTelemetry GenAI conventions' well-known names where
   they define one (``groq``, ``deepseek``, ``mistral_ai``, ``x_ai``, ``perplexity``,
   ``gcp.gemini``, ...), else the provider id of the genai-prices data the collector prices with
   (``together``, ``fireworks``, ``openrouter``, ...).
4. Any other host: ``openai``. The wire format is OpenAI's (the conventions define the name as
   the instrumentation's best knowledge), and a gateway in front of OpenAI keeps OpenAI's
   prices; ``server.address`` still tells the hosts apart. A local server (vLLM, Ollama) serving
   models that OpenAI's price list does not know is marked unpriced by the collector; name it
   with ``provider_hosts`` to make that explicit.

Azure OpenAI routes by deployment, not by model: the request model is the deployment named by
the client (``azure_deployment``, which the SDK puts in ``base_url``) or else by the call's
``model`` argument, and the response model is whatever the response says answered.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from opentelemetry.util.types import AttributeValue

__all__ = [
    "AZURE_OPENAI",
    "DEFAULT_PROVIDER",
    "KNOWN_HOSTS",
    "TOLLMETER_OPENAI_PROVIDER_HOSTS",
    "ClientFacts",
    "ProviderResolver",
    "checked_hosts",
    "parse_hosts",
    "request_model",
]

_log = logging.getLogger(__name__)

TOLLMETER_OPENAI_PROVIDER_HOSTS = "TOLLMETER_OPENAI_PROVIDER_HOSTS"
"""``host=name`` pairs separated by commas; read when the instrumentor is enabled and used when
``provider_hosts`` is not given. Unset by default."""

DEFAULT_PROVIDER = "openai"
AZURE_OPENAI = "azure.ai.openai"

KNOWN_HOSTS: Mapping[str, str] = {
    "api.openai.com": "openai",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral_ai",
    "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity",
    "api.anthropic.com": "anthropic",
    "api.cohere.ai": "cohere",
    "api.cohere.com": "cohere",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "api.together.xyz": "together",
    "api.together.ai": "together",
    "api.fireworks.ai": "fireworks",
    "openrouter.ai": "openrouter",
    "api.cerebras.ai": "cerebras",
    "api.moonshot.ai": "moonshotai",
}
"""Exact ``base_url`` host -> provider name."""

_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".openai.azure.com", AZURE_OPENAI),
    (".cognitiveservices.azure.com", AZURE_OPENAI),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
)
_AZURE_CLIENT = "BaseAzureClient"
_DEPLOYMENTS = "deployments"
# Clients are few and long-lived; an app making one per request only refills the table.
_MAX_CLIENTS = 256


def parse_hosts(value: str) -> dict[str, str]:
    """``host=name,host=name`` as a mapping; malformed pairs are skipped with a warning."""
    hosts: dict[str, str] = {}
    for pair in value.split(","):
        host, separator, name = pair.partition("=")
        if not pair.strip():
            continue
        if not separator or not host.strip() or not name.strip():
            _log.warning(
                "ignoring %r in %s: expected host=name", pair, TOLLMETER_OPENAI_PROVIDER_HOSTS
            )
            continue
        hosts[host.strip().lower()] = name.strip()
    return hosts


def checked_hosts(value: object) -> dict[str, str]:
    """The ``provider_hosts`` option, validated (a bad argument raises ``ValueError``)."""
    if value is None:
        return parse_hosts(os.environ.get(TOLLMETER_OPENAI_PROVIDER_HOSTS, ""))
    if not isinstance(value, Mapping) or not all(
        isinstance(host, str) and host and isinstance(name, str) and name
        for host, name in value.items()
    ):
        raise ValueError(f"provider_hosts must map host names to provider names, got {value!r}")
    return {host.lower(): name for host, name in value.items()}


class ClientFacts(NamedTuple):
    """What every call through one client shares."""

    provider: str
    deployment: str | None
    """The Azure deployment the client's ``base_url`` is bound to, if any."""
    server: Mapping[str, AttributeValue]
    """``server.address``/``server.port``; never mutate (shared by every call)."""

    def request_model(self, model: str | None) -> str | None:
        """The request model of a call given ``model`` (see ``request_model``)."""
        return model if self.deployment is None else self.deployment


class ProviderResolver:
    """Provider name and request model of a call, from the client that makes it."""

    def __init__(self, provider_hosts: Mapping[str, str]) -> None:
        self._overrides = dict(provider_hosts)
        # Clients are few and long-lived: remember each (client class, host) answer.
        self._known: dict[tuple[type, str], str] = {}
        # (client class, id of its base_url) -> (that base_url, its facts). The URL is held so
        # that its id cannot be reused while cached; a client given a new base_url misses.
        self._clients: dict[tuple[type, int], tuple[object, ClientFacts]] = {}

    def facts(
        self,
        client: Any,
        server: Callable[[Any], Mapping[str, AttributeValue]],
        resource: Any,
    ) -> ClientFacts:
        """Provider, deployment and server attributes (``server(resource)``) of ``client``,
        worked out on its first call only."""
        # The SDK's ``base_url`` property runs an import on every read; the URL it returns is
        # stored in ``_base_url``, which is all the cache key needs.
        base_url = getattr(client, "_base_url", None)
        if base_url is None:
            base_url = getattr(client, "base_url", None)
        key = (type(client), id(base_url))
        entry = self._clients.get(key)
        if entry is not None and entry[0] is base_url:
            return entry[1]
        facts = ClientFacts(self.provider(client), _deployment(client), server(resource))
        if len(self._clients) >= _MAX_CLIENTS:
            self._clients.clear()
        self._clients[key] = (base_url, facts)
        return facts

    def provider(self, client: Any) -> str:
        """``gen_ai.provider.name`` for calls made through ``client``."""
        host = _host(client)
        key = (type(client), host)
        name = self._known.get(key)
        if name is None:
            name = self._resolve(type(client), host)
            self._known[key] = name
        return name

    def _resolve(self, client_type: type, host: str) -> str:
        override = self._overrides.get(host)
        if override is not None:
            return override
        if any(cls.__name__ == _AZURE_CLIENT for cls in client_type.__mro__):
            return AZURE_OPENAI
        known = KNOWN_HOSTS.get(host)
        if known is not None:
            return known
        for suffix, name in _SUFFIXES:
            if host.endswith(suffix):
                return name
        return DEFAULT_PROVIDER


def request_model(client: Any, model: str | None) -> str | None:
    """The call's ``model``, or the Azure deployment the client's ``base_url`` is bound to."""
    deployment = _deployment(client)
    return model if deployment is None else deployment


def _deployment(client: Any) -> str | None:
    path = getattr(getattr(client, "base_url", None), "path", None)
    if not isinstance(path, str) or _DEPLOYMENTS not in path:
        return None
    parts = [part for part in path.split("/") if part]
    if _DEPLOYMENTS in parts[:-1]:
        return parts[parts.index(_DEPLOYMENTS) + 1]
    return None


def _host(client: Any) -> str:
    host = getattr(getattr(client, "base_url", None), "host", None)
    return host.lower() if isinstance(host, str) else ""
