"""Parquet export to S3-compatible storage, against a real S3 server (moto's server mode)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests._s3 import S3Server
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.export import (
    CURSOR_KEY,
    ExportConfig,
    Exporter,
    ExportStatus,
    open_store,
)
from tollmeter.collector.export._verify import verify_export
from tollmeter.collector.storage import Ledger, open_ledger


def _s3_exporter(
    ledger: Ledger, server: S3Server, url: str, data_dir: Path, **options: Any
) -> Exporter:
    s3 = options.pop("s3", server.settings())
    config = ExportConfig.from_mapping({"url": url, "s3": s3, "batch_size": 8})
    return Exporter(ledger, open_store(config, data_dir=data_dir), collector_id="c", **options)


def _table(server: S3Server, root: str) -> Any:
    return ds.dataset(
        root, filesystem=server.filesystem(), format="parquet", partitioning="hive"
    ).to_table()


def _objects(server: S3Server, root: str) -> dict[str, bytes]:
    fs = server.filesystem()
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    found = {}
    for info in fs.get_file_info(selector):
        if info.type is pafs.FileType.File and info.path.endswith(".parquet"):
            with fs.open_input_stream(info.path) as stream:
                found[info.path] = stream.read()
    return found


def _download(server: S3Server, root: str, target: Path) -> None:
    fs = server.filesystem()
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type is pafs.FileType.File:
            path = target / info.path[len(root) + 1 :]
            path.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as stream:
                path.write_bytes(stream.read())


def _totals(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int, int, Decimal]]:
    sums: dict[str, tuple[int, int, int, Decimal]] = {}
    for row in rows:
        count, inputs, outputs, cost = sums.get(row["tenant_id"], (0, 0, 0, Decimal(0)))
        sums[row["tenant_id"]] = (
            count + 1,
            inputs + row["input_tokens"],
            outputs + row["output_tokens"],
            cost + (row["cost"] or Decimal(0)),
        )
    return sums


def _ledger_totals(events: list[UsageEvent]) -> dict[str, tuple[int, int, int, Decimal]]:
    return _totals(
        [
            {
                "tenant_id": e.tenant_id,
                "input_tokens": e.input_tokens,
                "output_tokens": e.output_tokens,
                "cost": e.cost,
            }
            for e in events
        ]
    )


def test_collector_exports_to_s3_with_exact_totals(
    collector_factory, make_spans, s3_server: S3Server, s3_bucket: str
) -> None:
    running = collector_factory(
        export={"url": f"s3://{s3_bucket}/usage/v1", "s3": s3_server.settings(), "interval": "1h"}
    )
    sender = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
    try:
        for tenant, count, tokens in (("acme", 30, 120), ("globex", 12, 7), ("initech", 5, 999)):
            spans = make_spans(count, tenant=tenant, input_tokens=tokens, id_prefix=tenant)
            assert sender.export(spans) is SpanExportResult.SUCCESS
    finally:
        sender.shutdown()

    response = httpx.post(f"{running.management_url}/api/v1/export", timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["events"], body["cursor"]) == ("success", 47, 47)

    objects = _objects(s3_server, f"{s3_bucket}/usage/v1")
    assert sorted(objects) == sorted(f"{s3_bucket}/usage/v1/{name}" for name in body["files"])
    table = _table(s3_server, f"{s3_bucket}/usage/v1")
    events = running.events()
    assert sorted(table.column("event_id").to_pylist()) == sorted(e.event_id for e in events)
    assert _totals(table.to_pylist()) == _ledger_totals(events)
    assert _totals(table.to_pylist())["initech"][:3] == (5, 5 * 999, 5 * 20)

    again = httpx.post(f"{running.management_url}/api/v1/export", timeout=60).json()
    assert (again["events"], again["files"]) == (0, [])


def test_failure_between_objects_is_rewritten_under_the_same_keys(
    ledger: Ledger, make_events, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    ledger.append(make_events(20))
    uploaded: list[dict[str, bytes]] = []

    def fail_after_second_object(step: str) -> None:
        if step == "uploaded":
            uploaded.append(_objects(s3_server, s3_bucket))
            if len(uploaded) == 2:
                raise OSError("connection reset (injected between two objects)")

    url = f"s3://{s3_bucket}"
    interrupted = _s3_exporter(
        ledger, s3_server, url, tmp_path, checkpoint=fail_after_second_object
    )
    failed = interrupted.export()
    assert failed.status is ExportStatus.FAILURE
    before = uploaded[-1]
    assert len(before) == 2
    cursor_before = ledger.get_state(CURSOR_KEY)

    # Events that arrive before the rerun go to a later batch, not into the interrupted one.
    ledger.append(make_events(6, start=20))
    resumed = _s3_exporter(ledger, s3_server, url, tmp_path).export()
    assert resumed.status is ExportStatus.SUCCESS
    assert (resumed.events, resumed.cursor) == (26, 26)
    assert ledger.get_state(CURSOR_KEY) != cursor_before

    after = _objects(s3_server, s3_bucket)
    assert {key: after[key] for key in before} == before  # same keys, same bytes
    counts = Counter(_table(s3_server, s3_bucket).column("event_id").to_pylist())
    assert len(counts) == 26
    assert set(counts.values()) == {1}
    # Someone holding a copy of the bucket finds every object with a manifest that chains
    # onto the one before, the rerun's first included (it read the head from the bucket).
    copy = tmp_path / "copy"
    _download(s3_server, s3_bucket, copy)
    verdict = verify_export(copy)
    assert verdict.problems == []
    assert verdict.rows == 26


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tollmeter.collector.export import ExportConfig, Exporter, open_store
    from tollmeter.collector.storage import open_ledger

    database, endpoint, key_id, secret, url, point, nth = sys.argv[1:]
    seen = 0

    def checkpoint(step):
        global seen
        if step == point:
            seen += 1
            if seen == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)

    s3 = {"endpoint_url": endpoint, "region": "us-east-1",
          "access_key_id": key_id, "secret_access_key": secret}
    config = ExportConfig.from_mapping({"url": url, "s3": s3, "batch_size": 8})
    store = open_store(config, data_dir=Path(database).parent)
    exporter = Exporter(open_ledger("sqlite:///" + database), store, collector_id="c",
                        batch_size=8, checkpoint=checkpoint)
    print(exporter.export())
    """
)


@pytest.mark.parametrize(
    ("point", "nth"),
    [("intent_recorded", 2), ("uploaded", 3), ("between_partitions", 2), ("cursor_advanced", 1)],
)
def test_killed_export_resumes_with_every_event_once_in_the_bucket(
    tmp_path: Path, make_events, s3_server: S3Server, s3_bucket: str, point: str, nth: int
) -> None:
    database = tmp_path / "ledger.db"
    url = f"s3://{s3_bucket}/billing"
    with open_ledger(f"sqlite:///{database}") as ledger:
        ledger.append(make_events(20))
    arguments = [s3_server.endpoint_url, s3_server.access_key_id, s3_server.secret_access_key]
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(database), *arguments, url, point, str(nth)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    before = _objects(s3_server, f"{s3_bucket}/billing")

    with open_ledger(f"sqlite:///{database}") as ledger:
        ledger.append(make_events(11, start=20))
        result = _s3_exporter(ledger, s3_server, url, tmp_path).export()
        assert (result.status, result.cursor) == (ExportStatus.SUCCESS, 31)

    after = _objects(s3_server, f"{s3_bucket}/billing")
    assert {key: after[key] for key in before} == before
    counts = Counter(_table(s3_server, f"{s3_bucket}/billing").column("event_id").to_pylist())
    assert len(counts) == 31
    assert set(counts.values()) == {1}


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing bucket", "the bucket does not exist"),
        ("wrong secret", "the credentials were refused"),
        ("unknown key", "the credentials were refused"),
        ("nobody listening", "the endpoint is unreachable"),
    ],
)
def test_unusable_store_is_one_clear_line_and_keeps_the_cursor(
    ledger: Ledger,
    make_events,
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    reason: str,
) -> None:
    ledger.append(make_events(5))
    good = _s3_exporter(ledger, s3_server, f"s3://{s3_bucket}", tmp_path)
    ledger.append(make_events(3, start=5))
    assert good.export().cursor == 8
    ledger.append(make_events(4, start=8))
    cursor_before = ledger.get_state(CURSOR_KEY)

    url = f"s3://{s3_bucket}"
    s3 = s3_server.settings()
    if case == "missing bucket":
        url = "s3://no-such-bucket-here/usage"
    elif case == "wrong secret":
        s3["secret_access_key"] = "not-the-secret-0123456789"
    elif case == "unknown key":
        s3["access_key_id"] = "no-such-access-key-id"
    else:
        s3["endpoint_url"] = f"http://127.0.0.1:{_closed_port()}"
        s3["connect_timeout"] = "1s"
    caplog.set_level(logging.INFO)
    result = _s3_exporter(ledger, s3_server, url, tmp_path, s3=s3).export()

    assert result.status is ExportStatus.FAILURE
    assert result.error is not None
    assert "\n" not in result.error
    assert result.error.endswith(reason)
    assert ledger.get_state(CURSOR_KEY) == cursor_before
    assert caplog.text.count(reason) == 1
    assert "Traceback" not in caplog.text
    for secret in (s3_server.secret_access_key, "not-the-secret-0123456789"):
        assert secret not in caplog.text
        assert secret not in result.error

    retried = good.export()
    assert (retried.status, retried.events, retried.cursor) == (ExportStatus.SUCCESS, 4, 12)


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_batch_interrupted_on_one_replica_is_finished_by_another_under_the_same_keys(
    ledger: Ledger, make_events, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    ledger.append(make_events(12))
    url = f"s3://{s3_bucket}/shared"
    config = ExportConfig.from_mapping({"url": url, "s3": s3_server.settings()})
    calls: list[str] = []

    def fail_after_first_object(step: str) -> None:
        if step == "uploaded" and not calls:
            calls.append(step)
            raise OSError("replica stopped (injected)")

    first = Exporter(
        ledger,
        open_store(config, data_dir=tmp_path / "a"),
        collector_id="replica-a",
        batch_size=8,
        checkpoint=fail_after_first_object,
    )
    assert first.export().status is ExportStatus.FAILURE
    before = _objects(s3_server, f"{s3_bucket}/shared")
    assert len(before) == 1

    second = Exporter(
        ledger, open_store(config, data_dir=tmp_path / "b"), collector_id="replica-b", batch_size=8
    )
    result = second.export()
    assert (result.status, result.cursor) == (ExportStatus.SUCCESS, 12)
    # The pending batch keeps the name of the replica that began it; the next is b's.
    assert all(name.split("/")[1].startswith("replica-a-") for name in result.files[:3])
    assert all(name.split("/")[1].startswith("replica-b-") for name in result.files[3:])
    after = _objects(s3_server, f"{s3_bucket}/shared")
    assert {key: after[key] for key in before} == before
    counts = Counter(_table(s3_server, f"{s3_bucket}/shared").column("event_id").to_pylist())
    assert len(counts) == 12
    assert set(counts.values()) == {1}
