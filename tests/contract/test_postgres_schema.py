"""PostgreSQL schema: migrations produce exactly the committed schema (drift), run once
under concurrent migrators, and ``?migrate=false`` refuses an outdated database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

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
