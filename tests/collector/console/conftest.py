"""A real collector with usage from real OTLP exports, and Debian's chromium driven by
Playwright (one browser per module, a fresh context per test)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_KEY = "console-admin-key"
HOSTILE = (
    "<script>window.__pwned = 1</script>\"'><img src=x onerror=window.__pwned=2>"
    + "\u202e\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 "
    + "x" * 120
)
# tenant -> (calls, model, feature)
TENANTS = {
    "acme": (4, "gpt-4o-mini", "search"),
    "globex": (2, "gpt-4o", "chat"),
    HOSTILE: (1, "gpt-4o-mini", "search"),
}
LIMITS = {
    "rules": [
        {
            "name": "daily-tokens",
            "group_by": ["tenant"],
            "measure": "total",
            "window": {"type": "calendar", "period": "day"},
            "limit": 900,
            "action": "block",
        }
    ]
}


def export_usage(endpoint: str) -> None:
    """Report every tenant's calls as chat spans, through the standard OTLP/gRPC exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "console-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("console-tests")
    for tenant, (calls, model, feature) in TENANTS.items():
        for index in range(calls):
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": model,
                "gen_ai.response.id": f"resp-{len(tenant)}-{tenant[:8]}-{index}",
                "gen_ai.usage.input_tokens": 200 + index,
                "gen_ai.usage.cache_read.input_tokens": 50,
                "gen_ai.usage.output_tokens": 40,
                "gen_ai.usage.reasoning.output_tokens": 10,
                "tollmeter.tenant.id": tenant,
                "tollmeter.feature": feature,
            }
            with tracer.start_as_current_span(
                f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
            ):
                pass
    provider.shutdown()
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    try:
        assert exporter.export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def api(base_url: str, path: str, **params: str) -> Any:
    """A management API answer, read with the admin key."""
    response = httpx.get(
        f"{base_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def console(module_collector_factory: Callable[..., Any]) -> Any:
    """A collector with an admin key, a daily token limit and usage from three tenants;
    acme is over its limit and one of its checks was denied."""
    running = module_collector_factory(
        management={"admin_keys": [ADMIN_KEY]}, limits=LIMITS, export={"interval": "1h"}
    )
    export_usage(running.grpc_endpoint)
    denied = httpx.post(
        f"{running.management_url}/api/v1/check",
        json={"tenant": "acme", "estimated_input_tokens": 10, "max_output_tokens": 10},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert denied.json()["allowed"] is False
    return running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install the Debian package chromium", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test."""
    fresh = browser.new_context(viewport={"width": 1200, "height": 800})
    yield fresh
    fresh.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def log_in(page: Page, base_url: str, key: str = ADMIN_KEY) -> None:
    page.goto(f"{base_url}/")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")


class Kit:
    """What the console tests share: the admin key, the tenants reported, helpers."""

    admin_key = ADMIN_KEY
    hostile = HOSTILE
    tenants = TENANTS
    api = staticmethod(api)
    log_in = staticmethod(log_in)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
