"""PostgreSQL schema: migrations produce exactly the committed schema (drift), run once
under concurrent migrators, and ``?migrate=false`` refuses an outdated database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from tests.pg import BASE_URL, drop_schema, fresh_schema, pg_url
from troth.cli import main
from troth.errors import StoreUnavailable
from troth.store.postgres import PostgresStore

SNAPSHOT = Path(__file__).with_name("postgres_schema.txt")


@pytest.fixture
def schema() -> Iterator[str]:
    name = fresh_schema()
    yield name
    drop_schema(name)


def describe(schema: str) -> str:
    """Tables, columns (type, nullability, default) and index definitions, sorted."""
    lines: list[str] = []
    with psycopg.connect(BASE_URL) as conn:
        for table, column, type_, nullable, default, generated in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default,"
            " generation_expression FROM information_schema.columns WHERE table_schema = %s"
            " ORDER BY table_name, ordinal_position",
            (schema,),
        ):
            extra = f" default {default}" if default else ""
            extra += f" generated {generated}" if generated else ""
            null = "null" if nullable == "YES" else "not null"
            lines.append(f"column {table}.{column} {type_} {null}{extra}")
        for (definition,) in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY indexname", (schema,)
        ):
            lines.append("index " + definition.replace(f"{schema}.", ""))
    return "\n".join(lines) + "\n"


def test_migrations_produce_the_committed_schema(schema: str) -> None:
    """A migration edited in place, or a schema change without a migration, shows here. To
    accept an intended change: TROTH_WRITE_SNAPSHOT=1 and commit postgres_schema.txt."""
    store = PostgresStore(pg_url(schema))
    assert store.migrate() == [v for v, _n, _s in PostgresStore.migrations()]
    actual = describe(schema)
    if os.environ.get("TROTH_WRITE_SNAPSHOT"):
        SNAPSHOT.write_text(actual)
    assert actual == SNAPSHOT.read_text()


def test_concurrent_migrators_apply_each_migration_once(schema: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stores = [PostgresStore(pg_url(schema)) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda s: s.migrate(), stores))
    versions = [v for v, _n, _s in PostgresStore.migrations()]
    assert sorted(v for r in results for v in r) == versions  # each applied exactly once
    assert stores[0].migrate() == []


async def test_migrate_false_refuses_an_outdated_schema_until_migrated(schema: str) -> None:
    store = PostgresStore(pg_url(schema, migrate="false"))
    with pytest.raises(StoreUnavailable, match="troth migrate"):
        await store.open()
    await store.close()
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["migrate", "--store", pg_url(schema)]
    )
    assert result.exit_code == 0, result.output
    assert "applied migrations 0001" in result.output
    store = PostgresStore(pg_url(schema, migrate="false"))
    await store.open()
    try:
        assert await store.read(lambda tx: tx.get_promise("nope")) is None
    finally:
        await store.close()
    again = await asyncio.to_thread(
        CliRunner().invoke, main, ["migrate", "--store", pg_url(schema)]
    )
    assert "up to date" in again.output


def _plan(conn: psycopg.Connection[Any], query: str) -> str:
    rows = conn.execute(("EXPLAIN " + query).encode()).fetchall()
    return "\n".join(r[0] for r in rows)


def test_the_hot_queries_use_indexes(schema: str) -> None:
    """With enough rows for the planner to care (and statistics), every query the engine
    runs per request or per background round reads an index, never the whole table."""
    PostgresStore(pg_url(schema)).migrate()
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"'.encode())
        conn.execute(
            "INSERT INTO promises (id, state, timeout, tags, created_on)"
            " SELECT 'p/' || i, CASE WHEN i % 10 = 0 THEN 'PENDING' ELSE 'RESOLVED' END,"
            ' 1000 + i, CASE WHEN i % 100 = 0 THEN \'{"team": "a"}\' END, i'
            " FROM generate_series(1, 20000) AS i"
        )
        conn.execute(
            "INSERT INTO tasks (id, type, state, recv, recv_key, root_promise_id, counter,"
            " attempt, timeout, ready_at, created_on)"
            " SELECT 't/' || i, 'invoke', CASE WHEN i % 10 = 0 THEN 'INIT' ELSE 'COMPLETED' END,"
            " '{}', 'poll:g', 'p/' || i, 1, 0, 5000 + i, 100 + i, i"
            " FROM generate_series(1, 20000) AS i"
        )
        conn.execute(
            "INSERT INTO schedules (id, cron, promise_id, promise_timeout, next_run_time,"
            " created_on) SELECT 's/' || i, '* * * * *', 'x', 1, i, 0"
            " FROM generate_series(1, 5000) AS i"
        )
        conn.execute("ANALYZE")
        plans = {
            "get": _plan(conn, "SELECT * FROM promises WHERE id = 'p/5' FOR UPDATE"),
            "due": _plan(
                conn,
                "SELECT * FROM promises WHERE state = 'PENDING' AND timeout <= 1100"
                " ORDER BY timeout LIMIT 100 FOR UPDATE SKIP LOCKED",
            ),
            "prefix": _plan(
                conn, "SELECT * FROM promises WHERE id LIKE 'p/12%' ORDER BY seq DESC LIMIT 10"
            ),
            "tags": _plan(
                conn,
                'SELECT * FROM promises WHERE tags_index @> \'{"team": "a"}\''
                " ORDER BY seq DESC LIMIT 10",
            ),
            "root": _plan(
                conn,
                "SELECT * FROM tasks WHERE root_promise_id = 'p/7'"
                " AND state = ANY('{ENQUEUED,CLAIMED}') FOR UPDATE",
            ),
            "ready": _plan(
                conn,
                "SELECT * FROM tasks WHERE state = 'INIT' AND ready_at <= 200"
                " ORDER BY created_on, id LIMIT 10",
            ),
            "schedules": _plan(
                conn,
                "SELECT * FROM schedules WHERE next_run_time <= 10"
                " ORDER BY next_run_time, id LIMIT 10 FOR UPDATE SKIP LOCKED",
            ),
        }
    for name, plan in plans.items():
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
