"""The Grafana dashboard and its provisioning files are consistent with each other.

Whether each query returns data is checked against the real Prometheus in
``test_prometheus.py``; this checks what Grafana needs to load them.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

GRAFANA = Path(__file__).resolve().parents[2] / "examples" / "grafana"


def load_dashboard() -> dict:
    return json.loads((GRAFANA / "tollmeter-dashboard.json").read_text())


def test_panels_have_unique_ids_and_do_not_overlap():
    panels = load_dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area


def test_every_query_uses_the_dashboard_datasource_variable():
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    targets = [t for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert targets
    for target in targets:
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert target["expr"].strip()
    refs = [[t["refId"] for t in panel.get("targets", [])] for panel in dashboard["panels"]]
    assert all(len(r) == len(set(r)) for r in refs)


def test_the_trace_link_and_exemplars_lead_to_the_tracing_datasource():
    dashboard = load_dashboard()
    assert any(t.get("exemplar") for p in dashboard["panels"] for t in p.get("targets", []))
    link = dashboard["links"][0]
    assert "${trace_id}" in link["url"]
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"trace_id", "trace_ui"} <= names
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/tollmeter.yaml").read_text())
    by_uid = {source["uid"]: source for source in sources["datasources"]}
    prometheus = by_uid["prometheus"]
    assert prometheus["type"] == "prometheus"
    destinations = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert [d["name"] for d in destinations] == ["trace_id"]
    assert all(by_uid[d["datasourceUid"]]["type"] in ("jaeger", "tempo") for d in destinations)


def test_the_dashboard_provider_loads_a_directory():
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/tollmeter.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
