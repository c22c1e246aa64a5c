"""``tollmeter verify`` on ledgers a real collector filled over gRPC, then tampered with
through the database's own client: each edit is named by kind, commit and sequence."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.collector.conftest import RunningCollector, genai_spans

BATCHES = 4
PER_BATCH = 5


def verify(*args: str) -> tuple[int, dict[str, Any]]:
    from tollmeter.collector._cli_group import cli

    result: Result = CliRunner().invoke(cli, ["verify", "--json", *args], catch_exceptions=False)
    return result.exit_code, json.loads(result.output)


class Tamper:
    """Runs one SQL statement on the ledger through the backend's own client."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, statement: str, *params: object) -> None:
        if self.url.startswith("sqlite:///"):
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                conn.execute(statement, params)
        else:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(statement.replace("?", "%s"), params)


@pytest.fixture(params=["sqlite", "postgresql"])
def filled(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    collector_factory: Callable[..., RunningCollector],
) -> tuple[str, Tamper]:
    """A ledger holding ``BATCHES`` commits of ``PER_BATCH`` events sent over gRPC, with the
    collector stopped."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        running = collector_factory(storage={"url": url})
    else:
        url = f"sqlite:///{tmp_path}/data/ledger.db"
        running = collector_factory()
    exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
    try:
        for batch in range(BATCHES):
            spans = genai_spans(PER_BATCH, id_prefix=f"b{batch}", input_tokens=10 + batch)
            assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert len(running.events()) == BATCHES * PER_BATCH
    running.stop()
    return url, Tamper(url)


def test_an_untouched_ledger_verifies(filled: tuple[str, Tamper]) -> None:
    url, _ = filled
    code, verdict = verify("--storage-url", url)
    assert code == 0
    assert verdict["ok"] is True
    assert verdict["events"] == BATCHES * PER_BATCH
    assert verdict["commits"] == BATCHES
    assert verdict["problem"] is None


def test_edited_tokens_are_named(filled: tuple[str, Tamper]) -> None:
    url, tamper = filled
    tamper("UPDATE usage_events SET input_tokens = input_tokens - 1 WHERE sequence = 8")
    tamper("UPDATE usage_events SET output_tokens = 0 WHERE sequence = 13")
    code, verdict = verify("--storage-url", url)
    assert code == 1
    assert verdict["problem"]["kind"] == "altered"
    assert verdict["problem"]["sequence"] == 8
    assert verdict["problem"]["commit"] == 2
    assert verdict["problem"]["event_id"]
    assert verdict["events"] == 7


def test_a_deleted_event_is_named(filled: tuple[str, Tamper]) -> None:
    url, tamper = filled
    tamper("DELETE FROM usage_events WHERE sequence = 12")
    code, verdict = verify("--storage-url", url)
    assert code == 1
    assert verdict["problem"] == {
        "kind": "removed",
        "commit": 3,
        "sequence": 12,
        "event_id": None,
        "detail": "the commit's event is gone",
    }


def test_the_deleted_last_commit_is_named(filled: tuple[str, Tamper]) -> None:
    url, tamper = filled
    tamper("DELETE FROM usage_events WHERE sequence > ?", (BATCHES - 1) * PER_BATCH)
    code, verdict = verify("--storage-url", url)
    assert code == 1
    assert verdict["problem"]["kind"] == "removed"
    assert verdict["problem"]["commit"] == BATCHES


def test_a_forged_event_is_named(filled: tuple[str, Tamper]) -> None:
    url, tamper = filled
    # A copy of a real event under a new id and the next sequence, as a forger would add it.
    tamper("CREATE TABLE forged AS SELECT * FROM usage_events WHERE sequence = 3")
    tamper("UPDATE forged SET sequence = 21, event_id = 'forged-event', input_tokens = 5000")
    tamper("INSERT INTO usage_events SELECT * FROM forged")
    code, verdict = verify("--storage-url", url)
    assert code == 1
    assert verdict["problem"]["kind"] == "inserted"
    assert verdict["problem"]["sequence"] == 21
    assert verdict["problem"]["event_id"] == "forged-event"
    assert verdict["events"] == BATCHES * PER_BATCH


def test_a_rewritten_head_is_caught(filled: tuple[str, Tamper]) -> None:
    url, tamper = filled
    tamper("UPDATE ledger_chain SET head = ? WHERE commit_number = 2", "00" * 32)
    code, verdict = verify("--storage-url", url)
    assert code == 1
    assert verdict["problem"]["kind"] == "chain"
    assert verdict["problem"]["commit"] == 2


def test_an_upgraded_ledger_gets_a_genesis_link(tmp_path: Path) -> None:
    from tests.collector.storage.conftest import BASE_NS
    from tollmeter.collector._records import UsageEvent
    from tollmeter.collector.storage import open_ledger

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1.0"
    path = tmp_path / "ledger.db"
    path.write_bytes((fixture / "data" / "ledger.db").read_bytes())
    url = f"sqlite:///{path}"
    with open_ledger(url) as ledger:
        old = ledger.last_sequence()
        [genesis] = ledger.read_chain(0, 10)
        assert (genesis.commit, genesis.first_sequence, genesis.last_sequence) == (1, 1, old)
        ledger.append(
            [
                UsageEvent(
                    event_id="after-upgrade",
                    event_time_ns=BASE_NS,
                    provider="openai",
                    operation="chat",
                    tenant_id="acme",
                    input_tokens=3,
                    output_tokens=4,
                    total_tokens=7,
                )
            ]
        )
    code, verdict = verify("--storage-url", url)
    assert (code, verdict["commits"], verdict["events"]) == (0, 2, old + 1)

    Tamper(url)("UPDATE usage_events SET tenant_id = 'someone-else' WHERE sequence = 2")
    code, verdict = verify("--storage-url", url)
    assert code == 1
    assert (verdict["problem"]["kind"], verdict["problem"]["commit"]) == ("altered", 1)
    assert verdict["problem"]["sequence"] == 2


@pytest.fixture
def exported(filled: tuple[str, Tamper], tmp_path: Path) -> Path:
    """The filled ledger exported in batches of ``PER_BATCH`` events, by two exporters one
    after the other (the second picks the chain up from the files)."""
    from tollmeter.collector.export import Exporter, ExportStatus
    from tollmeter.collector.storage import open_ledger

    url, _ = filled
    directory = tmp_path / "export"
    with open_ledger(url) as ledger:
        for _ in range(2):
            exporter = Exporter(ledger, directory, collector_id="c1", batch_size=PER_BATCH)
            result = exporter.export(timeout=60)
            assert result.status is ExportStatus.SUCCESS
    return directory


def parquet_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.parquet"))


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)
def test_an_untouched_export_verifies(exported: Path) -> None:
    import pyarrow.dataset as ds

    code, verdict = verify("--export", str(exported))
    assert code == 0, verdict
    assert (verdict["files"], verdict["rows"]) == (BATCHES, BATCHES * PER_BATCH)
    # Manifests stay out of the way of dataset readers.
    assert ds.dataset(exported, format="parquet", partitioning="hive").count_rows() == 20


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)
def test_a_tampered_parquet_file_is_named(exported: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    victim = parquet_files(exported)[1]
    table = pq.read_table(victim)
    tokens = table.column("input_tokens").to_pylist()
    table = table.set_column(
        table.schema.get_field_index("input_tokens"),
        "input_tokens",
        pa.array([tokens[0] - 1, *tokens[1:]], pa.int64()),
    )
    pq.write_table(table, victim)
    code, verdict = verify("--export", str(exported))
    assert code == 1
    name = victim.relative_to(exported).as_posix()
    assert {(p["kind"], p["file"]) for p in verdict["problems"]} == {
        ("file_changed", name),
        ("manifest_mismatch", name),
    }


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)
def test_deleted_files_are_named(exported: Path) -> None:
    files = parquet_files(exported)
    files[1].unlink()
    code, verdict = verify("--export", str(exported))
    assert code == 1
    assert verdict["problems"] == [
        {
            "kind": "missing_file",
            "file": files[1].relative_to(exported).as_posix(),
            "detail": "the manifest's file is gone",
        }
    ]
    # Without its manifest either, the next file no longer links to the one before.
    next(exported.rglob(f"_{files[1].name}.manifest.json")).unlink()
    code, verdict = verify("--export", str(exported))
    assert code == 1
    assert [(p["kind"], p["file"]) for p in verdict["problems"]] == [
        ("chain", files[2].relative_to(exported).as_posix()),
        ("gap", files[2].relative_to(exported).as_posix()),
    ]


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)
def test_an_edited_manifest_is_named(exported: Path) -> None:
    victim = parquet_files(exported)[2]
    manifest = victim.with_name(f"_{victim.name}.manifest.json")
    raw = json.loads(manifest.read_text())
    raw["last_sequence"] -= 1
    manifest.write_text(json.dumps(raw))
    code, verdict = verify("--export", str(exported))
    assert code == 1
    assert [(p["kind"], p["file"]) for p in verdict["problems"]] == [
        ("manifest_mismatch", victim.relative_to(exported).as_posix())
    ]


def test_an_upgraded_postgresql_ledger_gets_a_genesis_link(postgres_server: Any) -> None:
    from decimal import Decimal

    from tests.collector.storage.conftest import BASE_NS
    from tollmeter.collector._records import UsageEvent
    from tollmeter.collector.storage import open_ledger
    from tollmeter.collector.storage._codec import EVENT_COLUMNS
    from tollmeter.collector.storage._postgres_schema import MIGRATIONS

    def event(number: int, cost: str) -> UsageEvent:
        return UsageEvent(
            event_id=f"evt-{number}",
            event_time_ns=BASE_NS + number,
            provider="openai",
            operation="chat",
            tenant_id="acme",
            input_tokens=number,
            total_tokens=number,
            cost=Decimal(cost),
            currency="USD",
            duration_s=float(number),
        )

    url = postgres_server.create_database()
    # A ledger at version 5 (before the chain) holding two events, one priced finely.
    v1_columns = EVENT_COLUMNS[: EVENT_COLUMNS.index("collector_id") + 1]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for steps in MIGRATIONS[:5]:
            for step in steps:
                conn.execute(step) if isinstance(step, str) else step(conn)
        conn.execute("INSERT INTO schema_version (version) VALUES (5)")
        for number, cost in ((1, "0.000150"), (2, "1.5E-7")):
            old = event(number, cost)
            conn.execute(
                f"INSERT INTO usage_events (sequence, {', '.join(v1_columns)}) "
                f"VALUES ({', '.join(['%s'] * (len(v1_columns) + 1))})",
                (number, *[getattr(old, name) for name in v1_columns]),
            )
    with open_ledger(url) as ledger:
        [genesis] = ledger.read_chain(0, 10)
        assert (genesis.commit, genesis.first_sequence, genesis.last_sequence) == (1, 1, 2)
        ledger.append([event(3, "2.50E-8")])
    code, verdict = verify("--storage-url", url)
    assert (code, verdict["commits"], verdict["events"]) == (0, 2, 3)

    Tamper(url)("UPDATE usage_events SET cost = cost * 2 WHERE sequence = 3")
    code, verdict = verify("--storage-url", url)
    assert code == 1
    assert (verdict["problem"]["kind"], verdict["problem"]["sequence"]) == ("altered", 3)


def test_replicas_appending_at_once_keep_one_chain(postgres_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.collector.storage.conftest import BASE_NS
    from tollmeter.collector._records import UsageEvent
    from tollmeter.collector.storage import open_ledger
    from tollmeter.collector.storage._verify import verify_ledger

    replicas = [open_ledger(postgres_url) for _ in range(2)]

    def append(worker: int) -> None:
        ledger = replicas[worker % 2]
        for batch in range(5):
            ledger.append(
                [
                    UsageEvent(
                        event_id=f"w{worker}-b{batch}-e{index}",
                        event_time_ns=BASE_NS + index,
                        provider="openai",
                        operation="chat",
                        tenant_id=f"t{worker}",
                        input_tokens=index,
                        total_tokens=index,
                    )
                    for index in range(3)
                ]
            )

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(append, range(4)))
        verdict = verify_ledger(replicas[0])
    finally:
        for ledger in replicas:
            ledger.close()
    assert verdict.problem is None
    assert (verdict.commits, verdict.events) == (20, 60)
