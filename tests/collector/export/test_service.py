from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pyarrow.dataset as ds
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from tollmeter.collector.export import (
    ExportConfig,
    Exporter,
    ExportService,
    ExportStatus,
    export_routes,
    install_export,
)
from tollmeter.collector.storage import Ledger


def _count(directory: Path) -> int:
    if not directory.exists():
        return 0
    return ds.dataset(directory, format="parquet", partitioning="hive").count_rows()


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_periodic_export_then_final_export_at_shutdown(
    ledger: Ledger, export_dir: Path, make_events
) -> None:
    service = ExportService(Exporter(ledger, export_dir, collector_id="c"), interval_s=0.05)
    service.start()
    ledger.append(make_events(10))
    _wait_for(lambda: _count(export_dir) == 10)

    ledger.append(make_events(5, start=10))
    final = service.shutdown(timeout=20)
    assert final.status is ExportStatus.SUCCESS
    assert final.cursor == 15
    assert _count(export_dir) == 15
    assert service.shutdown() is final
    assert not [t for t in threading.enumerate() if t.name == "tollmeter-export"]


def test_shutdown_without_start_still_exports(
    ledger: Ledger, export_dir: Path, make_events
) -> None:
    ledger.append(make_events(3))
    service = ExportService(Exporter(ledger, export_dir, collector_id="c"), interval_s=3600)
    assert service.shutdown().events == 3


def _post(app: Starlette, url: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(url)

    return asyncio.run(go())


def test_export_route_runs_an_export(ledger: Ledger, export_dir: Path, make_events) -> None:
    ledger.append(make_events(7))
    app = Starlette(routes=export_routes(Exporter(ledger, export_dir, collector_id="c")))
    response = _post(app, "/api/v1/export?timeout=30")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["events"], body["cursor"], body["caught_up"]) == (
        "success",
        7,
        7,
        True,
    )
    assert _post(app, "/api/v1/export").json()["events"] == 0
    for bad in ("abc", "0", "-5", "1e9", "nan"):
        assert _post(app, f"/api/v1/export?timeout={bad}").status_code == 400


def test_export_route_reports_failure(ledger: Ledger, tmp_path: Path, make_events) -> None:
    ledger.append(make_events(1))
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    app = Starlette(routes=export_routes(Exporter(ledger, blocked, collector_id="c")))
    response = _post(app, "/api/v1/export")
    assert response.status_code == 500
    assert response.json()["status"] == "failure"


class _Host:
    """What the export takes from the collector, as the real Collector provides it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.routes: list[BaseRoute] = []

    def add_management_routes(self, routes: Sequence[BaseRoute]) -> None:
        self.routes.extend(routes)


def test_install_export_wires_route_periodic_and_shutdown(
    ledger: Ledger, tmp_path: Path, make_events
) -> None:
    host = _Host(ledger)
    config = ExportConfig.from_mapping({"interval": "50ms"})
    service = install_export(host, config, data_dir=tmp_path, collector_id="c")
    assert service is not None
    assert [getattr(r, "path", None) for r in host.routes] == ["/api/v1/export"]
    ledger.append(make_events(4))
    _wait_for(lambda: _count(tmp_path / "export") == 4)
    ledger.append(make_events(2, start=4))
    service.shutdown(30)
    assert _count(tmp_path / "export") == 6

    disabled = _Host(ledger)
    assert (
        install_export(disabled, ExportConfig(enabled=False), data_dir=tmp_path, collector_id="c")
        is None
    )
    assert disabled.routes == []
