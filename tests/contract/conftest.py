"""Fixtures of the contract suite: every test here runs once per storage backend.

To add a backend (e.g. ``postgres``), add one entry to ``BACKENDS``: a function of the test's
temporary directory returning a new, unopened store (call ``pytest.skip`` inside it when the
backend is not available, e.g. no DSN in the environment).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.pg import SESSION_SCHEMA, pg_url, truncate
from troth.clock import FakeClock
from troth.engine import Engine
from troth.store.base import Store
from troth.store.memory import MemoryStore
from troth.store.postgres import PostgresStore
from troth.store.sqlite import SqliteStore

StoreFactory = Callable[[], Store]


def _memory(tmp_path: Path) -> Store:
    return MemoryStore()


def _sqlite(tmp_path: Path) -> Store:
    return SqliteStore(f"sqlite:///{tmp_path}/t.db")


def _postgres(tmp_path: Path) -> Store:
    # Small batches and few threads: tests open many stores.
    return PostgresStore(pg_url(SESSION_SCHEMA, writers=2, readers=2, timeout_ms=120_000))


BACKENDS: dict[str, Callable[[Path], Store]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


#: Backends that keep data across close and reopen (durability tests run only on these).
DURABLE = [name for name in BACKENDS if name != "memory"]


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _empty_postgres(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on PostgreSQL leaves the shared test schema empty for the next one."""
    yield
    params = getattr(request.node, "callspec", None)
    if params is not None and "postgres" in params.params.values():
        truncate(SESSION_SCHEMA)


@pytest.fixture
def make_store(backend: str, tmp_path: Path) -> StoreFactory:
    """Build a new, unopened store of the backend under test.

    Stores of one test share their location (for SQLite: one file), so a second store from
    this factory sees what the first one committed (reopen / durability tests).
    """
    return lambda: BACKENDS[backend](tmp_path)


@pytest.fixture(params=DURABLE)
def make_durable_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Like ``make_store``, parametrized over the durable backends only."""
    name = str(request.param)
    return lambda: BACKENDS[name](tmp_path)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    """An opened store, closed after the test."""
    s = make_store()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(make_store: StoreFactory, clock: FakeClock) -> AsyncIterator[Engine]:
    """An opened engine (no background sweeper) over the backend under test."""
    eng = Engine(make_store(), clock)
    await eng.open()
    try:
        yield eng
    finally:
        await eng.stop()
