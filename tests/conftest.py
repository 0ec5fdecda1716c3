from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.pg import SESSION_SCHEMA, session_store, truncate
from troth.clock import FakeClock
from troth.engine import Engine
from troth.server import create_app
from troth.store.base import Store
from troth.store.memory import MemoryStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "postgres"])
async def engine(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Engine]:
    """An opened engine with a fake clock (no background sweeper), on a MemoryStore and on
    PostgreSQL (SQLite has suites of its own: contract, schedules, tasks, end to end)."""
    store: Store = MemoryStore() if request.param == "memory" else session_store()
    eng = Engine(store, clock)
    await eng.open()
    yield eng
    await eng.stop()
    if request.param == "postgres":
        truncate(SESSION_SCHEMA)


@pytest.fixture
async def http(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process (ASGITransport, no sockets)."""
    app = create_app(engine, manage=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://troth") as client:
        yield client


@pytest.fixture(scope="session", autouse=True)
def _postgres_schemas() -> Iterator[None]:
    """Drop test schemas of interrupted earlier runs first, and this run's at the end."""
    from tests.pg import SESSION_SCHEMA, drop_schema, drop_stale_schemas

    drop_stale_schemas()
    yield
    drop_schema(SESSION_SCHEMA)
