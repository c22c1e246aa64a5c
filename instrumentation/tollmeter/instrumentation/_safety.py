"""Containment of tollmeter's own failures.

Instrumentation must never change what the application sees. Every piece of
tollmeter code that runs on the application's call path is wrapped by one of
these helpers: an exception raised inside tollmeter is logged once per distinct
site (so a broken extractor cannot flood the logs) and swallowed.

- ``contained(site)``: a context manager that swallows and logs ``Exception``.
- ``guarded(site)``: the same as a decorator; the decorated function returns
  ``None`` when it fails, so its return type must accept ``None``.

``BaseException`` subclasses that are not ``Exception`` (``KeyboardInterrupt``,
``SystemExit``, cancellation) are never swallowed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

__all__ = ["contained", "guarded", "report_failure"]

_logger = logging.getLogger("tollmeter.instrumentation")

_P = ParamSpec("_P")
_R = TypeVar("_R")

_reported: set[tuple[str, type[BaseException]]] = set()


def report_failure(site: str, exc: BaseException) -> None:
    """Log ``exc`` raised at ``site`` once per (site, exception type), then stay quiet."""
    key = (site, type(exc))
    # No lock: this runs from finalizers too, and losing a race only logs a failure twice.
    if key in _reported:
        return
    _reported.add(key)
    _logger.warning(
        "tollmeter instrumentation failed in %s (the application call is unaffected; "
        "further failures of this kind are not logged)",
        site,
        exc_info=exc,
    )


class contained:  # lower case: used like a function, ``with contained("site"):``
    """Swallow and report (once) any ``Exception`` raised in the block.

    A class rather than a generator-based context manager: it runs on metered calls' paths,
    and this form costs a fraction of ``contextlib.contextmanager``'s. The few blocks that run
    on every call use ``try``/``except`` with ``report_failure`` instead, which costs less again.
    """

    __slots__ = ("site",)

    def __init__(self, site: str) -> None:
        self.site = site

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(exc, Exception):
            report_failure(self.site, exc)
            return True
        return False


def guarded(site: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R | None]]:
    """Decorate a function so that its failures are reported once and yield ``None``."""

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R | None]:
        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R | None:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                report_failure(site, exc)
                return None

        return wrapper

    return decorate
