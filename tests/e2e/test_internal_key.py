"""An ingest key marked internal, against a real ``tollmeter collector`` process: all
usage sent or checked with it is internal, whatever its spans say, while the tenant's
own key beside it stays customer usage; limits leave it out, the usage API keeps it
apart."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.collector.conftest import genai_spans

ADMIN = "e2e-admin"
ACME_KEY = "e2e-acme"
EVALS_KEY = "e2e-evals-acme"


def send(running, key: str, count: int, prefix: str, **extra: object) -> None:
    exporter = OTLPSpanExporter(
        endpoint=f"{running.http_endpoint}/v1/traces",
        headers={"x-tollmeter-key": key},
        timeout=10,
    )
    try:
        # 120 tokens a span, which names acme whatever key sends it.
        spans = genai_spans(count, tenant="acme", id_prefix=prefix, extra=extra)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def api(method: str, running, path: str, key: str = ADMIN, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(
        method, f"{running.management_url}{path}", headers=headers, timeout=10, **kwargs
    )


def test_an_internal_key_makes_its_usage_internal(collector_process, tmp_path):
    config = tmp_path / "tollmeter.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "management": {
                    "admin_keys": [ADMIN],
                    # The evaluation pipeline reports for acme too, under a key of its own.
                    "ingest_keys": {
                        ACME_KEY: "acme",
                        EVALS_KEY: {"tenant": "acme", "internal": True},
                    },
                },
                "limits": {
                    "reservation_ttl": "1h",
                    "rules": [
                        {"name": "customer", "limit": 100_000, "window": "day"},
                        {
                            "name": "everything",
                            "limit": 100_000,
                            "window": "day",
                            "include_internal": True,
                        },
                    ],
                },
            }
        )
    )
    running = collector_process(args=["--config", str(config)])
    send(running, EVALS_KEY, 3, "evals")
    # A span saying otherwise does not make the internal key's usage customer usage.
    send(running, EVALS_KEY, 1, "evals-claim", **{"tollmeter.internal": False})
    send(running, ACME_KEY, 2, "customer")
    # An export is answered once its events are committed.
    events = api("GET", running, "/api/v1/events").json()["events"]
    internal = {e["response_id"]: e["internal"] for e in events}
    assert internal == {
        "evals-0": True,
        "evals-1": True,
        "evals-2": True,
        "evals-claim-0": True,
        "customer-0": False,
        "customer-1": False,
    }

    now = datetime.now(timezone.utc)
    bounds = {"start": (now - timedelta(hours=1)).isoformat(), "end": now.isoformat()}

    def requests(**params: str) -> list[tuple[str, int]]:
        answer = api("GET", running, "/api/v1/usage", params={"group_by": "tenant", **params})
        answer.raise_for_status()
        return [(r["tenant"], r["requests"]) for r in answer.json()["rows"]]

    assert requests(**bounds) == [("acme", 6)]
    assert requests(internal="true", **bounds) == [("acme", 4)]
    assert requests(internal="false", **bounds) == [("acme", 2)]

    def used() -> dict[str, float]:
        answer = api("GET", running, "/api/v1/tenants/acme/status")
        answer.raise_for_status()
        return {e["name"]: e["limit"] - e["remaining"] for e in answer.json()["limits"]}

    assert used() == {"customer": 240, "everything": 720}

    # A check with the internal key is internal without saying so: the customer's limit
    # does not hold its reservation. The tenant's own key still may not ask for that.
    body = {"estimated_input_tokens": 300, "max_output_tokens": 100}
    checked = api("POST", running, "/api/v1/check", key=EVALS_KEY, json=body)
    assert checked.status_code == 200, checked.text
    assert checked.json()["allowed"]
    assert used() == {"customer": 240, "everything": 1_120}
    refused = api("POST", running, "/api/v1/check", key=ACME_KEY, json={**body, "internal": True})
    assert refused.status_code == 403
    assert running.stop() == 0
