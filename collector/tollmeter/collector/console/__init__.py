"""The usage console: read-only pages on the management port, behind the admin key.

``/`` shows usage over time and cost per tenant, model and feature; ``/console/tenants``
lists tenants; ``/console/tenant?id=...`` shows one tenant's usage, limits and recent
calls (never content); ``/console/health`` the collector's health. Charts are drawn by
uPlot, shipped in ``static/`` (see the README there), so the console works offline.
See docs/console.md.
"""

from __future__ import annotations

from tollmeter.collector.console._attach import attach_console

__all__ = ["attach_console"]
