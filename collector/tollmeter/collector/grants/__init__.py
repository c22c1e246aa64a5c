"""Prepaid grants (credits): tokens or money granted to a tenant, burnt down by its usage."""

from __future__ import annotations

from tollmeter.collector.grants._model import Grant, GrantError, Movement

__all__ = ["Grant", "GrantError", "Movement"]
