"""The tollmeter collector: OTLP in, usage ledger, meters, limits and export out."""

from __future__ import annotations

__all__: list[str] = []
