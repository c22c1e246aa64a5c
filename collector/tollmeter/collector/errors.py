"""Every exception the collector raises, in one tree rooted at ``TollmeterError``.

Hierarchy::

    TollmeterError                      (tollmeter.semconv.errors)
    ├── ConfigurationError              (tollmeter.semconv.errors; also a ValueError)
    │   ├── InvalidSetting              one value, named by its dotted key path
    │   └── InvalidConfig               a rejected configuration, every problem listed
    ├── StartupError                    the collector could not start
    ├── TlsError                        certificate, key or CA files that cannot be used
    ├── Unauthenticated                 no key, or a key that is not configured
    ├── Forbidden                       a known key that does not grant the request
    ├── BadRequest                      a management request that cannot be answered as sent
    ├── InvalidQuery                    a usage query that cannot be run (also a ValueError)
    ├── Undecodable                     a payload that is not OTLP of its signal (also a ValueError)
    ├── PipelineFull                    ingest cannot take more spans now
    ├── StorageError                    the usage ledger's backend failed
    ├── LimitStateError                 the limit state file cannot be read or written
    ├── ExportBusy                      another export into the same directory is running
    ├── ExportStoreError                the export's object store refused or did not answer
    ├── GrantError                      a grant that cannot be made as asked
    ├── ReportError                     a provider usage or cost report that cannot be used
    ├── UnknownPlan                     a plan assignment names a plan the config lacks
    └── DemoError                       ``tollmeter demo`` could not run

A few modules keep a private exception that never leaves them (a span refused while
extracting, a hook delivery that failed, an OTLP/HTTP body over its size); those derive
from ``TollmeterError`` too, so ``except TollmeterError`` still catches everything the
collector raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tollmeter.semconv.errors import ConfigurationError, TollmeterError

if TYPE_CHECKING:
    from tollmeter.collector._config_values import ConfigProblem

__all__ = [
    "BadRequest",
    "DemoError",
    "ExportBusy",
    "ExportStoreError",
    "Forbidden",
    "GrantError",
    "InvalidConfig",
    "InvalidQuery",
    "InvalidSetting",
    "LimitStateError",
    "PipelineFull",
    "ReportError",
    "StartupError",
    "StorageError",
    "TlsError",
    "Unauthenticated",
    "Undecodable",
    "UnknownPlan",
]


class InvalidSetting(ConfigurationError):
    """One configuration value is invalid: ``key`` is its dotted path."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class InvalidConfig(ConfigurationError):
    """A configuration was rejected; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = tuple(problems)


class StartupError(TollmeterError):
    """The collector could not start (address in use, ledger unusable...)."""


class TlsError(TollmeterError):
    """Certificate, key or CA files that cannot be used."""


class Unauthenticated(TollmeterError):
    """A request carried no key, or one that is not configured."""


class Forbidden(TollmeterError):
    """A known key that does not grant what the request asks for."""


class BadRequest(TollmeterError, ValueError):
    """A management API request that cannot be answered as sent; the message says why.

    ``status`` is the HTTP status it is answered with (400, 413 or 415).
    """

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class InvalidQuery(TollmeterError, ValueError):
    """A usage query names an unknown dimension or window, or an impossible range."""


class Undecodable(TollmeterError, ValueError):
    """A payload is not a valid OTLP request of its signal."""


class PipelineFull(TollmeterError):
    """The pipeline cannot take more spans now (or is stopping); retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageError(TollmeterError):
    """The storage backend failed (disk full, corrupt file, lock timeout...).

    The driver's own exception is kept as ``__cause__``.
    """


class LimitStateError(TollmeterError):
    """The limit state file cannot be read or written."""


class ExportBusy(TollmeterError):
    """Another export into the same directory is running."""


class ExportStoreError(TollmeterError):
    """The export's object store cannot be used: the message says why in one line
    (bucket missing, credentials refused, endpoint unreachable) and names no secret."""


class DemoError(TollmeterError):
    """The demo could not run (missing example app, data dir in use, app failure)."""


class GrantError(TollmeterError):
    """A grant that cannot be made as asked (bad amount, unit, zone or dates)."""


class ReportError(TollmeterError):
    """A provider report that cannot be used as sent: malformed, truncated or hostile."""


class UnknownPlan(TollmeterError):
    """An assignment named a plan the configuration does not define."""
