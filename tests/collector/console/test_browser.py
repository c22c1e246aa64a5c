"""The console in a real browser: Debian's chromium against a real collector.

Usage reaches the collector through the standard OTLP/gRPC exporter; the numbers each
page shows are compared with the management API's answers for the same range.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from playwright.sync_api import BrowserContext, Page

PAGES = ["/", "/console/tenants", "/console/tenant?id=acme", "/console/health"]
FIELDS = [
    "total_tokens",
    "requests",
    "uncached_input_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "non_reasoning_output_tokens",
    "reasoning_output_tokens",
]


def shown(page: Page, field: str) -> int:
    """An integer the page shows in the element marked ``data-field``."""
    return int(page.locator(f'[data-field="{field}"]').first.inner_text().replace(",", ""))


def chart_painted(page: Page, figure: str) -> bool:
    """Whether the chart's canvas has any non-transparent pixel."""
    return bool(
        page.evaluate(
            """(selector) => {
                const canvas = document.querySelector(selector + " canvas");
                if (!canvas || canvas.width === 0 || canvas.height === 0) return false;
                const pixels = canvas.getContext("2d")
                    .getImageData(0, 0, canvas.width, canvas.height).data;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) return true;
                return false;
            }""",
            f'figure[data-chart="{figure}"]',
        )
    )


def page_range(page: Page) -> dict[str, str]:
    marker = page.locator("p.range[data-start]").first
    return {"start": marker.get_attribute("data-start"), "end": marker.get_attribute("data-end")}


def test_without_a_session_every_page_shows_only_the_login(
    console: Any, kit: Any, page: Page
) -> None:
    for path in PAGES:
        response = page.goto(f"{console.management_url}{path}")
        assert response is not None
        assert page.url.startswith(f"{console.management_url}/console/login?next=")
        assert page.locator("input[name=key][type=password]").count() == 1
        assert page.locator("nav").count() == 0
        body = page.inner_text("body")
        assert "acme" not in body
        assert "Tokens" not in body


def test_a_wrong_key_is_refused(
    console: Any, kit: Any, page: Page, context: BrowserContext
) -> None:
    page.goto(f"{console.management_url}/")
    page.fill("input[name=key]", "not-the-key")
    with page.expect_response(re.compile(r"/console/login$")) as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    assert page.locator("[role=alert]").inner_text() == "Wrong key."
    assert context.cookies() == []
    page.goto(f"{console.management_url}/console/health")
    assert "/console/login" in page.url


def test_log_in_open_every_page_and_log_out(
    console: Any, kit: Any, page: Page, context: BrowserContext, tmp_path: Path
) -> None:
    kit.log_in(page, console.management_url)
    assert page.url == f"{console.management_url}/"
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert kit.admin_key not in cookie["value"]
    assert cookie["secure"] is False  # plain HTTP here; TLS is covered in test_sessions
    charts = {"/": "usage-chart", "/console/tenant?id=acme": "usage-chart"}
    charts["/console/health"] = "ingest-chart"
    for index, path in enumerate([*PAGES, "/?period=hour", "/?period=month"]):
        response = page.goto(f"{console.management_url}{path}")
        assert response is not None
        assert response.status == 200
        assert page.locator("nav").count() == 1
        figure = charts.get(path.split("&")[0]) or ("usage-chart" if path.startswith("/?") else "")
        if figure:
            page.wait_for_selector(f'figure[data-chart="{figure}"][data-rendered]')
            assert chart_painted(page, figure), path
        page.screenshot(path=str(tmp_path / f"page-{index}.png"), full_page=True)
        if path == "/":
            # The README's picture (docs/images/console-overview.png) is this one.
            page.screenshot(path=str(tmp_path / "console-overview.png"))
    page.click("nav button[type=submit]")
    page.wait_for_url(re.compile(r"/console/login$"))
    assert context.cookies() == []
    page.goto(f"{console.management_url}/")
    assert "/console/login" in page.url


def test_the_overview_shows_what_the_usage_api_answers(console: Any, kit: Any, page: Page) -> None:
    kit.log_in(page, console.management_url)
    for period in ["hour", "day", "month"]:
        page.goto(f"{console.management_url}/?period={period}")
        bounds = page_range(page)
        (row,) = kit.api(console.management_url, "/api/v1/usage", **bounds)["rows"]
        for field in FIELDS:
            assert shown(page, field) == row[field], (period, field)
        assert row["requests"] == sum(calls for calls, _, _ in kit.tenants.values())
        cost = page.locator('[data-field="cost"]').inner_text()
        assert cost.replace(",", "").startswith(f"{float(row['cost']):.4f}")
    top = page.locator("section", has_text="Top tenants by tokens").locator("tbody tr")
    by_tenant = kit.api(console.management_url, "/api/v1/usage", group_by="tenant", **bounds)[
        "rows"
    ]
    assert top.count() == len(by_tenant)
    first = max(by_tenant, key=lambda r: r["total_tokens"])
    assert top.first.locator("td").nth(1).inner_text() == f"{first['total_tokens']:,}"


def test_the_tenant_pages_show_what_the_apis_answer(console: Any, kit: Any, page: Page) -> None:
    kit.log_in(page, console.management_url)
    page.goto(f"{console.management_url}/console/tenants")
    listed = kit.api(console.management_url, "/api/v1/tenants")
    assert shown(page, "tenant_count") == listed["total"] == len(kit.tenants)
    assert page.locator("tbody tr").count() == len(kit.tenants)
    page.goto(f"{console.management_url}/console/tenant?id=acme")
    bounds = page_range(page)
    (row,) = kit.api(console.management_url, "/api/v1/usage", tenant="acme", **bounds)["rows"]
    for field in FIELDS:
        assert shown(page, field) == row[field], field
    status = kit.api(console.management_url, "/api/v1/tenants/acme/status")
    (limit,) = status["limits"]
    gauges = page.locator("section", has_text="Limits").locator("tbody tr")
    assert gauges.count() == 1
    cells = gauges.first.locator("td")
    assert cells.nth(0).inner_text().startswith("daily-tokens")
    assert cells.nth(4).inner_text() == f"{limit['reserved']:,.2f}"
    assert cells.nth(5).inner_text() == f"{limit['remaining']:,.2f}"
    assert cells.nth(7).inner_text() == limit["reset_at"]
    assert "blocked until" in cells.nth(8).inner_text()
    decisions = page.locator("section", has_text="Policy decisions").inner_text()
    assert f"daily-tokens until {limit['blocked_until']}" in decisions
    assert "1 checks denied" in decisions
    calls = page.locator("section", has_text="Recent calls").locator("tbody tr")
    assert calls.count() == kit.tenants["acme"][0]
    events = kit.api(console.management_url, "/api/v1/events", limit="1000")["events"]
    ids = {e["event_id"] for e in events if e["tenant_id"] == "acme"}
    assert {calls.nth(i).locator("td").nth(1).inner_text() for i in range(calls.count())} == ids


def test_a_hostile_tenant_name_is_shown_as_text(console: Any, kit: Any, page: Page) -> None:
    kit.log_in(page, console.management_url)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for path in ["/", "/console/tenants", f"/console/tenant?id={quote(kit.hostile, safe='')}"]:
        page.goto(f"{console.management_url}{path}")
        names = page.locator("bdi.name").all_text_contents()
        assert kit.hostile in names, path
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img[src=x]").count() == 0
    assert page.locator("h1 bdi.name").inner_text() == kit.hostile
    (row,) = kit.api(
        console.management_url, "/api/v1/usage", tenant=kit.hostile, **page_range(page)
    )["rows"]
    assert shown(page, "total_tokens") == row["total_tokens"]
    assert dialogs == []


def test_the_content_security_policy_stops_inline_scripts(
    console: Any, kit: Any, page: Page
) -> None:
    kit.log_in(page, console.management_url)
    response = page.goto(f"{console.management_url}/")
    assert response is not None
    headers = response.headers
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert page.locator("script:not([src]):not([type='application/json'])").count() == 0
    violations = page.evaluate(
        """() => new Promise((resolve) => {
            const seen = [];
            document.addEventListener(
                "securitypolicyviolation", (e) => seen.push(e.violatedDirective));
            const script = document.createElement("script");
            script.textContent = "window.__inline = 1";
            document.body.appendChild(script);
            setTimeout(() => resolve(seen), 200);
        })"""
    )
    assert page.evaluate("window.__inline") is None
    assert any(directive.startswith("script-src") for directive in violations)
    static = httpx.get(f"{console.management_url}/console/static/console.js", timeout=10)
    assert static.headers["content-type"].startswith("text/javascript")
    assert static.headers["x-content-type-options"] == "nosniff"
