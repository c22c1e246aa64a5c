"""The Redis connection of the limits, its key names and its outage state.

Keys are built only here. Every part taken from a request (tenant, key values, request
and reservation ids) is percent-encoded, so it holds no ``:``, ``{``, ``}``, ``*`` or
``?``: a tenant named ``acme:c:daily`` or ``*`` gets keys of its own and can neither
reach nor pattern-match another tenant's. A tenant's keys all start with
``<prefix>:t:<tenant>:``; limits not kept per tenant live under ``<prefix>:shared:``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tollmeter.collector.errors import LimitStateError
from tollmeter.collector.limits._rules import Rule

__all__ = ["KeySpace", "RedisLink"]

logger = logging.getLogger(__name__)

_PROBE_INTERVAL_S = 0.5
"""While Redis is down, calls answer at once without trying, except one per interval."""


def _part(value: str) -> str:
    return quote(value, safe="")


def _glob(value: str) -> str:
    """``value`` matched literally by a Redis glob pattern."""
    return "".join(f"\\{c}" if c in "?*[]\\" else c for c in value)


class KeySpace:
    """Names of every key the engine uses, under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nothing = f"{prefix}:none"
        """A key never written: stands for a reservation a script must not find."""
        self.expiry = f"{prefix}:expiry"
        """Every open reservation by expiry time (members are reservation keys)."""

    def tenant(self, tenant: str) -> str:
        return f"{self.prefix}:t:{_part(tenant)}"

    def counter(self, rule: Rule, key: tuple[str, ...]) -> str:
        dims = rule.config.group_by
        scope = self.tenant(key[dims.index("tenant")]) if "tenant" in dims else self.shared()
        values = ":".join(f"{dim}={_part(v)}" for dim, v in zip(dims, key, strict=True))
        return f"{scope}:c:{_part(rule.name)}:{values}"

    def counter_pattern(self, rule: Rule) -> str:
        """A ``SCAN`` pattern matching every counter of ``rule``."""
        return f"{_glob(self.prefix)}:*:c:{_glob(_part(rule.name))}:*"

    def counter_key(self, rule: Rule, name: str) -> tuple[str, ...] | None:
        """The key values of a counter named ``name`` (from ``counter``), or ``None``."""
        tail = name.rsplit(f":c:{_part(rule.name)}:", 1)[-1]
        parts = [p.partition("=") for p in tail.split(":")] if tail else []
        dims = rule.config.group_by
        if [d for d, _, _ in parts] != list(dims):
            return None
        return tuple(unquote(v) for _, _, v in parts)

    def counter_member(self, rule: Rule, key: tuple[str, ...]) -> str:
        """The entry of the tenant's counter set, or '' for a counter not kept per tenant."""
        return json.dumps([rule.name, list(key)]) if "tenant" in rule.config.group_by else ""

    def mark(self, rule: Rule, key: tuple[str, ...], mark: str) -> str:
        dims = rule.config.group_by
        scope = self.tenant(key[dims.index("tenant")]) if "tenant" in dims else self.shared()
        return f"{scope}:m:{_part(mark)}"

    def shared(self) -> str:
        return f"{self.prefix}:shared"

    def counters(self, tenant: str) -> str:
        return f"{self.tenant(tenant)}:counters"

    def open(self, tenant: str) -> str:
        return f"{self.tenant(tenant)}:open"

    def reservation(self, tenant: str, reservation_id: str) -> str:
        return f"{self.tenant(tenant)}:r:{_part(reservation_id)}"

    def decision(self, tenant: str, request_id: str) -> str:
        return f"{self.tenant(tenant)}:d:{_part(request_id)}"

    def owner(self, reservation_id: str) -> str:
        """Which tenant holds a reservation (ids are random; the API names only the id)."""
        return f"{self.prefix}:rid:{_part(reservation_id)}"


def _where(url: str) -> str:
    """The URL without its credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisLink:
    """A Redis client whose failures make one outage: logged when it starts and when it
    ends, never once per call. Every call has ``timeout_s`` (connect and reply), and no
    retry of its own: a check must answer within its deadline, Redis or not."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.where = _where(url)
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            client_name="tollmeter-limits",
        )
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_try = 0.0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def usable(self) -> bool:
        """False while down, except for one probe per interval."""
        with self._lock:
            if self._down_since is None:
                return True
            now = time.monotonic()
            if now < self._next_try:
                return False
            self._next_try = now + _PROBE_INTERVAL_S
            return True

    @contextmanager
    def reach(self) -> Iterator[redis.Redis]:
        """The client; Redis errors become ``LimitStateError`` and mark the outage."""
        try:
            yield self.client
        except redis.ResponseError as exc:
            raise LimitStateError(f"limits storage {self.where} refused a command: {exc}") from exc
        except redis.RedisError as exc:
            self._failed(exc)
            raise LimitStateError(f"limits storage {self.where} unreachable: {exc}") from exc
        self._recovered()

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self._next_try = self._down_since + _PROBE_INTERVAL_S
        logger.warning("limits storage %s unreachable (%s); outage begins", self.where, exc)

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            logger.warning(
                "limits storage %s reachable again after %.1fs; outage ends",
                self.where,
                time.monotonic() - since,
            )

    def close(self) -> None:
        self.client.close()
