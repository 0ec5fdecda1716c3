"""What only the PostgreSQL store has: notifications between processes, bounded waits, a
refused value failing only its own operation, concurrent writers racing on one row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.pg import SESSION_SCHEMA, pg_url, session_store
from troth.errors import StoreUnavailable, ValidationError
from troth.model import Promise, State
from troth.store.postgres import Events, PostgresStore, like_pattern

FAR = 2**62


def pending(id: str, timeout: int = FAR) -> Promise:
    return Promise(id=id, state=State.PENDING, timeout=timeout, created_on=1)


@pytest.fixture
async def two() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database: two server processes, as far as the store can tell."""
    a, b = session_store(), session_store()
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()
        from tests.pg import truncate

        truncate(SESSION_SCHEMA)


async def test_commits_notify_the_other_processes_not_this_one(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    got_a: list[dict[str, Any] | None] = []
    got_b: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    a.subscribe(got_a.append)
    b.subscribe(got_b.put_nowait)
    await asyncio.sleep(0.5)  # both are listening

    await a.write(lambda tx: tx.insert_promise(pending("n/1", timeout=5_000)))
    event = await asyncio.wait_for(got_b.get(), 10)
    assert event is not None and event["d"] == 5_000 and "c" not in event

    def complete(tx: Any) -> None:
        p = tx.get_promise("n/1")
        tx.update_promise(Promise(**{**_fields(p), "state": State.RESOLVED, "completed_on": 2}))

    await a.write(complete)
    event = await asyncio.wait_for(got_b.get(), 10)
    assert event is not None and event["c"] == ["n/1"]
    await asyncio.sleep(0.3)
    assert got_a == []  # a process ignores its own notifications


def _fields(p: Promise) -> dict[str, Any]:
    return {f: getattr(p, f) for f in p.__struct_fields__}


async def test_a_rolled_back_operation_notifies_nobody(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    got: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    b.subscribe(got.put_nowait)
    await asyncio.sleep(0.5)

    def insert_then_fail(tx: Any) -> None:
        tx.insert_promise(pending("n/rolled-back", timeout=7))
        raise ValueError("no")

    with pytest.raises(ValueError):
        await a.write(insert_then_fail)
    await a.write(lambda tx: tx.insert_promise(pending("n/kept", timeout=9)))
    event = await asyncio.wait_for(got.get(), 10)
    assert event is not None and event["d"] == 9  # only the committed one
    assert await a.read(lambda tx: tx.get_promise("n/rolled-back")) is None


async def test_a_value_postgres_refuses_fails_only_its_own_operation() -> None:
    store = session_store()
    await store.open()
    try:
        ops = [
            store.write(lambda tx: tx.insert_promise(pending("ok/1"))),
            store.write(lambda tx: tx.set_meta("bad", "nul\x00")),
            store.write(lambda tx: tx.insert_promise(pending("ok/2"))),
        ]
        results = await asyncio.gather(*ops, return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], ValidationError)
        assert "cannot store" in str(results[1])
        got = await store.read(lambda tx: (tx.get_promise("ok/1"), tx.get_promise("ok/2")))
        assert all(p is not None for p in got)
    finally:
        await store.close()
        from tests.pg import truncate

        truncate(SESSION_SCHEMA)


async def test_a_request_waits_for_the_store_at_most_its_timeout() -> None:
    store = PostgresStore(pg_url(SESSION_SCHEMA, writers=1, readers=1, timeout_ms=300))
    await store.open()
    try:
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.3 s"):
            await store.write(lambda tx: tx.c.execute("SELECT pg_sleep(3)"))
        with pytest.raises(StoreUnavailable, match="did not answer"):
            await store.read(lambda tx: tx.c.execute("SELECT pg_sleep(3)"))
    finally:
        await store.close()


async def test_writers_of_two_processes_complete_a_promise_once(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    """Row locks, not process locks: 40 read-decide-write operations from two stores on one
    row; each sees the row as the previous one left it, so exactly one finds it pending."""
    a, b = two
    await a.write(lambda tx: tx.insert_promise(pending("race/1")))

    def complete(tx: Any) -> bool:
        p = tx.get_promise("race/1")
        if p.state is not State.PENDING:
            return False
        tx.update_promise(Promise(**{**_fields(p), "state": State.RESOLVED, "completed_on": 3}))
        return True

    won = await asyncio.gather(*((a if i % 2 else b).write(complete) for i in range(40)))
    assert won.count(True) == 1


def test_notification_payloads_stay_small_and_carry_every_id() -> None:
    ev = Events()
    ev.completed = [f"id/{i}/" + "x" * 900 for i in range(40)]
    ev.deadline = 5
    ev.tasks = True
    payloads = ev.payloads("me")
    assert len(payloads) > 1
    import json

    seen = []
    for text in payloads:
        assert len(text.encode()) < 8000
        body = json.loads(text)
        assert body["o"] == "me" and body["d"] == 5 and body["t"] == 1
        seen += body["c"]
    assert seen == ev.completed


@pytest.mark.parametrize(
    ("pattern", "like"),
    [("a*", "a%"), ("100%_done*", "100\\%\\_done%"), ("back\\slash", "back\\\\slash")],
)
def test_search_patterns_are_literal_but_for_the_star(pattern: str, like: str) -> None:
    assert like_pattern(pattern) == like
