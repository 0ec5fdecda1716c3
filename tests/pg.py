"""PostgreSQL for tests: the local server (``TROTH_TEST_PG``, default the ``test`` database on
127.0.0.1:5432).

Isolation: a store-level test uses this run's schema (``SESSION_SCHEMA``, migrated once) and
``truncate`` empties it afterwards — much cheaper than migrating a schema per test. Tests
that start server processes take a schema of their own (``fresh_schema``).

Not skipped when PostgreSQL is down: ``.ci/run`` starts it, and a missing database is a
failure to fix, not a reason to test less.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlencode

import psycopg
from psycopg import sql

from troth.store.postgres import PostgresStore

BASE_URL = os.environ.get("TROTH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SESSION_SCHEMA = f"troth_t_{os.getpid()}_{secrets.token_hex(3)}"
_TABLES = ("promises", "meta", "callbacks", "tasks", "locks", "schedules")


def fresh_schema() -> str:
    return f"troth_t_{os.getpid()}_{secrets.token_hex(4)}"


def pg_url(schema: str, **options: object) -> str:
    query = urlencode({"schema": schema, **{k: str(v) for k, v in options.items()}})
    return f"{BASE_URL}?{query}"


def truncate(schema: str) -> None:
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'promises'", (schema,)
        ).fetchone()
        if exists:
            names = sql.SQL(", ").join(sql.Identifier(schema, t) for t in _TABLES)
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(names))


def drop_schema(schema: str) -> None:
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_stale_schemas() -> None:
    """Drop the schemas of test runs that are gone (interrupted runs leave theirs behind);
    other test runs on this machine may be going on at the same time."""
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'troth\\_t\\_%%'"
        ).fetchall()
        for (name,) in rows:
            pid = name.split("_")[2]
            if pid.isdigit() and not _alive(int(pid)):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )


def session_store(**options: object) -> PostgresStore:
    """A store on this run's test schema (empty it with ``truncate`` after the test)."""
    options.setdefault("timeout_ms", 120_000)  # bulk set-ups of tests take long
    return PostgresStore(pg_url(SESSION_SCHEMA, writers=2, readers=2, **options))


class OnPostgres:
    """Mixin for a hypothesis state machine: its store is this run's test schema, emptied
    after each example (put it before the machine class in the bases)."""

    def make_store(self) -> PostgresStore:
        return session_store()

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[misc]
        finally:
            truncate(SESSION_SCHEMA)
