"""The schedule part of the ``Tx`` contract (``ScheduleTx``), on every backend.

What the schedule engine relies on: exact round-trips of every field, insert-unless-exists,
``update_schedule`` storing the run times only, delete (with its tags), the search (``*`` the
only wildcard, every tag pair must match, newest first, paged by sequence number), the
scheduler's queries (``due_schedules``, ``next_schedule_time``) with the semantics of their
docstrings in ``troth.store.base``, per-operation rollback inside group commit, and
durability.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from troth.model import Schedule, Value
from troth.store import sqlite as sqlite_store
from troth.store.base import Store, Tx

NOW = 1_700_000_000_000

StoreFactory = Callable[[], Store]


def schedule(
    id: str,
    *,
    next_run_time: int = NOW + 60_000,
    tags: dict[str, str] | None = None,
    created_on: int = NOW - 1_000,
) -> Schedule:
    """A schedule with only the required fields (and optionally tags)."""
    return Schedule(
        id=id,
        cron="* * * * *",
        tags=tags,
        promise_id="{{.id}}.{{.timestamp}}",
        promise_timeout=60_000,
        next_run_time=next_run_time,
        created_on=created_on,
    )


def full(id: str) -> Schedule:
    """A schedule with every field set, binary param data and awkward strings."""
    return Schedule(
        id=id,
        description='nightly "report" ü\n',
        cron="0 0 * * *",
        tags={"team": "a/b", "ü": "ö", "empty": "", "quote": '"\\'},
        promise_id="report/{{.id}}/{{.timestamp}}",
        promise_timeout=3_600_000,
        promise_param=Value(
            headers={"Content-Type": "application/octet-stream", "X-ü": 'ö "q" \n'},
            data=bytes(range(256)) + b"\x00",
        ),
        promise_tags={"resonate:invocation": "true", "k": "v"},
        last_run_time=NOW - 86_400_000,
        next_run_time=NOW + 1,
        idempotency_key="ikey-ü",
        created_on=NOW - 2 * 86_400_000,
    )


def replace(s: Schedule, **changes: Any) -> Schedule:
    return msgspec.structs.replace(s, **changes)


async def insert(store: Store, *schedules: Schedule) -> list[bool]:
    return await store.write(lambda tx: [tx.insert_schedule(s) for s in schedules])


async def get(store: Store, id: str) -> Schedule | None:
    return await store.read(lambda tx: tx.get_schedule(id))


async def search(
    store: Store,
    pattern: str = "*",
    tags: dict[str, str] | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[tuple[int, Schedule]]:
    return await store.read(lambda tx: tx.search_schedules(pattern, tags or {}, limit, before))


async def ids(store: Store, pattern: str = "*", tags: dict[str, str] | None = None) -> list[str]:
    return [s.id for _, s in await search(store, pattern, tags)]


async def due_schedules(store: Store, now: int = NOW, limit: int = 100) -> list[Schedule]:
    return await store.read(lambda tx: tx.due_schedules(now, limit))


async def due(store: Store, now: int = NOW, limit: int = 100) -> list[str]:
    return [s.id for s in await due_schedules(store, now, limit)]


async def next_time(store: Store) -> int | None:
    return await store.read(lambda tx: tx.next_schedule_time())


# -- round trips -----------------------------------------------------------------------------


async def test_round_trip_of_every_field(store: Store) -> None:
    everything = full("everything")
    minimal = schedule("minimal")
    headers_only = replace(
        schedule("headers-only"), promise_param=Value(headers={"a": "b"}), description=""
    )
    data_only = replace(schedule("data-only"), promise_param=Value(data=b"\x00\xff"))
    all_ = [everything, minimal, headers_only, data_only]
    assert await insert(store, *all_) == [True] * 4

    for s in all_:
        got = await get(store, s.id)
        assert got == s
        assert msgspec.json.encode(got) == msgspec.json.encode(s)
    got_min = await get(store, "minimal")
    assert got_min is not None
    assert got_min.description is None and got_min.tags is None
    assert got_min.promise_tags is None and got_min.last_run_time is None
    assert got_min.idempotency_key is None
    assert got_min.promise_param == Value()
    got_all = await get(store, "everything")
    assert got_all is not None and got_all.promise_param.data == bytes(range(256)) + b"\x00"
    assert await get(store, "missing") is None
    # What search returns is the same schedule.
    found = {s.id: s for _, s in await search(store)}
    assert found == {s.id: s for s in all_}


async def test_insert_conflict_returns_false_and_changes_nothing(store: Store) -> None:
    first = schedule("s", tags={"k": "1"})
    other = replace(full("s"), tags={"k": "2", "other": "x"})
    assert await insert(store, first) == [True]
    (seq, _), *_ = await search(store)
    assert await insert(store, other) == [False]
    assert await insert(store, first) == [False]
    assert await get(store, "s") == first
    assert await search(store) == [(seq, first)]
    assert await ids(store, tags={"k": "2"}) == []
    assert await ids(store, tags={"other": "x"}) == []
    assert await ids(store, tags={"k": "1"}) == ["s"]
    assert await next_time(store) == first.next_run_time


async def test_insert_conflict_inside_one_transaction(store: Store) -> None:
    a, b = schedule("s"), full("s")
    assert await insert(store, a, b) == [True, False]
    assert await get(store, "s") == a


# -- update and delete -----------------------------------------------------------------------


async def test_update_stores_run_times_and_keeps_the_rest(store: Store) -> None:
    s = full("s")
    await insert(store, schedule("older"), s, schedule("newer"))
    order = await ids(store)
    ran = replace(s, last_run_time=NOW + 1, next_run_time=NOW + 60_001)
    await store.write(lambda tx: tx.update_schedule(ran))
    assert await get(store, "s") == ran
    assert await ids(store) == order  # the sequence number is kept
    assert await ids(store, tags={"team": "a/b"}) == ["s"]
    assert await next_time(store) == NOW + 60_000  # "older" and "newer"

    first_run = replace(schedule("older"), last_run_time=NOW, next_run_time=NOW + 90_000)
    await store.write(lambda tx: tx.update_schedule(first_run))
    assert await get(store, "older") == first_run
    assert await get(store, "newer") == schedule("newer")


async def test_delete(store: Store) -> None:
    await insert(store, schedule("a", tags={"k": "v"}), schedule("b", tags={"k": "v"}))
    assert await store.write(lambda tx: tx.delete_schedule("a")) is True
    assert await store.write(lambda tx: tx.delete_schedule("a")) is False
    assert await store.write(lambda tx: tx.delete_schedule("missing")) is False
    assert await get(store, "a") is None
    assert await ids(store) == ["b"]
    assert await ids(store, tags={"k": "v"}) == ["b"]
    assert await due(store, NOW + 10**9) == ["b"]

    assert await store.write(lambda tx: tx.delete_schedule("b")) is True
    assert await ids(store, tags={"k": "v"}) == []
    assert await search(store) == []
    assert await next_time(store) is None
    assert await due(store, NOW + 10**9) == []


async def test_reinsert_after_delete_is_a_new_schedule(store: Store) -> None:
    await insert(store, schedule("a", tags={"k": "old"}), schedule("b"))
    (seq_b, _), (seq_a, _) = await search(store)
    assert await store.write(lambda tx: tx.delete_schedule("a")) is True
    again = schedule("a", tags={"k": "new"})
    assert await insert(store, again) == [True]
    assert await get(store, "a") == again
    assert await ids(store) == ["a", "b"]  # newest first: "a" is newer now
    (seq_a2, _), _ = await search(store)
    assert seq_a2 > seq_b > seq_a
    assert await ids(store, tags={"k": "old"}) == []
    assert await ids(store, tags={"k": "new"}) == ["a"]


async def test_deleting_the_newest_does_not_reuse_its_sequence_number(store: Store) -> None:
    """A cursor handed out before never takes in a schedule created after it."""
    await insert(store, schedule("a"), schedule("b"))
    [(seq_b, _)] = await search(store, limit=1)
    await store.write(lambda tx: tx.delete_schedule("b"))
    await insert(store, schedule("c"))
    [(seq_c, _)] = await search(store, limit=1)
    assert seq_c > seq_b
    assert [s.id for _, s in await search(store, before=seq_b)] == ["a"]


# -- search ----------------------------------------------------------------------------------


async def test_search_patterns(store: Store) -> None:
    names = [
        "a",
        "a/b",
        "a/b/c",
        "b/a",
        "A/b",
        "100%",
        "1000",
        "x_y",
        "xzy",
        "what?",
        "whatx",
        "[a]",
        "a]",
        "b",
        "star*",
        "star-",
        "line\nbreak",
    ]
    await insert(store, *(schedule(n) for n in names))

    async def match(pattern: str) -> set[str]:
        return set(await ids(store, pattern))

    assert await match("*") == set(names)
    assert await match("**") == set(names)
    assert await match("a") == {"a"}
    assert await match("a/*") == {"a/b", "a/b/c"}
    assert await match("a*") == {"a", "a/b", "a/b/c", "a]"}
    assert await match("*a") == {"a", "b/a"}
    assert await match("*/b*") == {"a/b", "a/b/c", "A/b"}
    assert await match("A*") == {"A/b"}  # case-sensitive
    assert await match("100%") == {"100%"}
    assert await match("10%") == set()
    assert await match("1%") == set()
    assert await match("x_y") == {"x_y"}
    assert await match("what?") == {"what?"}
    assert await match("wha??") == set()
    assert await match("[a]") == {"[a]"}
    assert await match("[a]*") == {"[a]"}
    assert await match("[ab]") == set()
    assert await match("a]") == {"a]"}
    assert await match("star*") == {"star*", "star-"}
    assert await match("line*") == {"line\nbreak"}
    assert await match("*break") == {"line\nbreak"}
    assert await match("nothing*") == set()
    assert await match("") == set()


async def test_search_tags_must_all_match(store: Store) -> None:
    await insert(
        store,
        schedule("none"),
        schedule("one", tags={"team": "x"}),
        schedule("two", tags={"team": "x", "env": "prod"}),
        schedule("other", tags={"team": "y", "env": "prod"}),
        schedule("empty", tags={"team": ""}),
    )
    assert await ids(store, tags={"team": "x"}) == ["two", "one"]
    assert await ids(store, tags={"team": "x", "env": "prod"}) == ["two"]
    assert await ids(store, tags={"env": "prod"}) == ["other", "two"]
    assert await ids(store, tags={"env": "prod", "team": "z"}) == []
    assert await ids(store, tags={"team": ""}) == ["empty"]
    assert await ids(store, tags={"missing": "x"}) == []
    assert await ids(store, "t*", tags={"env": "prod"}) == ["two"]
    assert await ids(store, "o*", tags={"team": "x"}) == ["one"]


async def test_search_newest_first_with_paging_and_limit(store: Store) -> None:
    names = [f"s/{i:03}" for i in random.Random(7).sample(range(1000), 25)]
    for n in names:  # one transaction each
        await insert(store, schedule(n, tags={"odd": str(names.index(n) % 2)}))
    newest_first = list(reversed(names))

    everything = await search(store)
    assert [s.id for _, s in everything] == newest_first
    seqs = [seq for seq, _ in everything]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)

    for limit in (1, 2, 7, 25, 100):
        pages: list[str] = []
        before: int | None = None
        while True:
            page = await search(store, limit=limit, before=before)
            assert len(page) <= limit
            if not page:
                break
            pages += [s.id for _, s in page]
            before = page[-1][0]
        assert pages == newest_first, limit

    assert [s.id for _, s in await search(store, limit=3)] == newest_first[:3]
    assert [s.id for _, s in await search(store, before=seqs[3], limit=2)] == newest_first[4:6]
    assert await search(store, before=seqs[-1]) == []
    assert await search(store, before=seqs[0] + 1000) == everything

    odd = [n for n in newest_first if names.index(n) % 2]
    page1 = await search(store, "s/*", {"odd": "1"}, limit=4)
    assert [s.id for _, s in page1] == odd[:4]
    page2 = await search(store, "s/*", {"odd": "1"}, limit=4, before=page1[-1][0])
    assert [s.id for _, s in page2] == odd[4:8]


async def test_search_order_of_one_transaction(store: Store) -> None:
    await insert(store, schedule("first"), schedule("second"), schedule("third"))
    assert await ids(store) == ["third", "second", "first"]


# -- the scheduler's queries -----------------------------------------------------------------


async def test_due_schedules_order_limit_and_boundary(store: Store) -> None:
    await insert(
        store,
        schedule("late", next_run_time=NOW + 1),
        schedule("b", next_run_time=NOW - 10),
        schedule("a", next_run_time=NOW - 10),
        schedule("now", next_run_time=NOW),
        schedule("earliest", next_run_time=0),
        schedule("c", next_run_time=NOW - 10),
    )
    assert await due(store) == ["earliest", "a", "b", "c", "now"]  # (next_run_time, id)
    assert await due(store, limit=2) == ["earliest", "a"]
    assert await due(store, limit=0) == []
    assert await due(store, NOW - 1) == ["earliest", "a", "b", "c"]
    assert await due(store, NOW + 1) == ["earliest", "a", "b", "c", "now", "late"]
    assert await due(store, -1) == []

    # Running one moves it behind the others.
    ran = replace(schedule("earliest"), last_run_time=0, next_run_time=NOW + 1)
    await store.write(lambda tx: tx.update_schedule(ran))
    assert await due(store, NOW + 1) == ["a", "b", "c", "now", "earliest", "late"]
    assert await due_schedules(store, NOW, 1) == [schedule("a", next_run_time=NOW - 10)]


async def test_next_schedule_time(store: Store) -> None:
    assert await next_time(store) is None
    await insert(store, schedule("a", next_run_time=NOW + 5))
    assert await next_time(store) == NOW + 5
    await insert(store, schedule("b", next_run_time=NOW - 5), schedule("c", next_run_time=NOW))
    assert await next_time(store) == NOW - 5
    await store.write(
        lambda tx: tx.update_schedule(replace(schedule("b"), next_run_time=NOW + 100))
    )
    assert await next_time(store) == NOW
    await store.write(lambda tx: tx.delete_schedule("c"))
    assert await next_time(store) == NOW + 5
    await store.write(lambda tx: [tx.delete_schedule("a"), tx.delete_schedule("b")])
    assert await next_time(store) is None


async def test_random_schedules_match_a_reference(store: Store) -> None:
    rng = random.Random(1)
    schedules = [
        schedule(
            f"s{i}",
            next_run_time=NOW + rng.randrange(-50, 50),
            tags={"k": str(rng.randrange(3))} if rng.random() < 0.7 else None,
        )
        for i in range(120)
    ]
    await insert(store, *schedules)
    deleted = {s.id for s in rng.sample(schedules, 30)}
    await store.write(lambda tx: [tx.delete_schedule(i) for i in sorted(deleted)])
    live = [s for s in schedules if s.id not in deleted]

    for now in (NOW - 60, NOW - 10, NOW, NOW + 10, NOW + 60):
        for limit in (1, 5, 1000):
            expected = sorted(
                (s for s in live if s.next_run_time <= now),
                key=lambda s: (s.next_run_time, s.id),
            )[:limit]
            assert await due_schedules(store, now, limit) == expected
    assert await next_time(store) == min(s.next_run_time for s in live)
    for k in "012":
        expected_ids = [s.id for s in reversed(live) if (s.tags or {}).get("k") == k]
        assert await ids(store, tags={"k": k}) == expected_ids
    assert await ids(store, "s1*") == [s.id for s in reversed(live) if s.id.startswith("s1")]


# -- transactions ----------------------------------------------------------------------------


class Boom(Exception):
    pass


async def test_failing_op_leaves_no_trace(store: Store) -> None:
    kept = full("kept")
    doomed = schedule("doomed", tags={"team": "x"}, next_run_time=NOW + 7)
    await insert(store, kept, doomed)
    before = await search(store)

    def bad(i: int) -> Callable[[Tx], None]:
        def op(tx: Tx) -> None:
            assert tx.insert_schedule(schedule(f"bad/{i}", tags={"team": "x"}, next_run_time=0))
            tx.update_schedule(replace(kept, last_run_time=1, next_run_time=2))
            assert tx.delete_schedule("doomed")
            assert tx.get_schedule("doomed") is None
            assert tx.next_schedule_time() == 0
            raise Boom(f"boom {i}")

        return op

    def good(i: int) -> Callable[[Tx], str]:
        def op(tx: Tx) -> str:
            assert tx.insert_schedule(schedule(f"good/{i}", tags={"good": str(i)}))
            return f"ok/{i}"

        return op

    n = 10
    ops: list[Callable[[Tx], object]] = [op for i in range(n) for op in (good(i), bad(i))]
    results = await asyncio.gather(*(store.write(op) for op in ops), return_exceptions=True)
    for i in range(n):
        assert results[2 * i] == f"ok/{i}"
        err = results[2 * i + 1]
        assert isinstance(err, Boom) and str(err) == f"boom {i}"

    assert await get(store, "kept") == kept
    assert await get(store, "doomed") == doomed
    assert await ids(store, tags={"team": "x"}) == ["doomed"]
    assert await next_time(store) == NOW + 1
    assert await due(store, NOW) == []
    for i in range(n):
        assert await get(store, f"bad/{i}") is None
        assert await get(store, f"good/{i}") == schedule(f"good/{i}", tags={"good": str(i)})
        assert await ids(store, tags={"good": str(i)}) == [f"good/{i}"]
    after = await search(store)
    assert after[-len(before) :] == before
    assert len(after) == len(before) + n


async def test_failing_op_restores_a_deleted_schedule_and_its_tags(store: Store) -> None:
    s = full("s")
    await insert(store, s)
    [(seq, _)] = await search(store)

    def op(tx: Tx) -> None:
        assert tx.delete_schedule("s") is True
        assert tx.search_schedules("*", {"team": "a/b"}, 10, None) == []
        raise Boom("no")

    with pytest.raises(Boom):
        await store.write(op)
    assert await search(store, tags={"team": "a/b"}) == [(seq, s)]
    assert await next_time(store) == s.next_run_time


# -- durability ------------------------------------------------------------------------------


async def test_schedules_survive_close_and_reopen(make_durable_store: StoreFactory) -> None:
    kept = [full("full"), schedule("min"), schedule("tagged", tags={"k": "v"})]
    first = make_durable_store()
    await first.open()
    await insert(first, *kept, schedule("gone", tags={"k": "v"}))
    ran = replace(kept[1], last_run_time=NOW, next_run_time=NOW - 5)
    await first.write(lambda tx: tx.update_schedule(ran))
    assert await first.write(lambda tx: tx.delete_schedule("gone")) is True
    order = await search(first)
    await first.close()

    second = make_durable_store()
    await second.open()
    try:
        assert await get(second, "full") == kept[0]
        assert await get(second, "min") == ran
        assert await get(second, "tagged") == kept[2]
        assert await get(second, "gone") is None
        assert await search(second) == order
        assert await ids(second, tags={"k": "v"}) == ["tagged"]
        assert await next_time(second) == NOW - 5
        assert await due(second) == ["min"]
        assert await insert(second, schedule("full")) == [False]
        assert await insert(second, schedule("new")) == [True]
        assert (await search(second, limit=1))[0][0] > order[0][0]
    finally:
        await second.close()


# -- SQLite: the scheduler's queries are answered from an index ------------------------------


async def test_sqlite_schedule_queries_use_indexes(tmp_path: Path) -> None:
    store = sqlite_store.SqliteStore(f"sqlite:///{tmp_path}/plans.db")
    await store.open()
    try:
        await insert(store, *(schedule(f"s{i}", next_run_time=NOW + i) for i in range(100)))
    finally:
        await store.close()
    m = sqlite_store
    queries: dict[str, tuple[str, Any]] = {
        "get_schedule": (m._SELECT_SCHEDULE, ("x",)),
        "update_schedule": (m._UPDATE_SCHEDULE, (1, 2, "x")),
        "delete_schedule": (m._DELETE_SCHEDULE, ("x",)),
        "due_schedules": (m._DUE_SCHEDULES, (NOW, 10)),
        "next_schedule_time": (m._NEXT_SCHEDULE_TIME, ()),
    }
    conn = sqlite3.connect(tmp_path / "plans.db")
    try:
        for name, (sql, args) in queries.items():
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
            # A SCAN is only allowed along an index (next_schedule_time reads its first entry).
            table_scan = [s for s in plan if s.startswith("SCAN") and "INDEX" not in s]
            assert not table_scan, (name, plan)
            assert not any("TEMP B-TREE" in step for step in plan), (name, plan)
            assert any("INDEX" in step for step in plan), (name, plan)
    finally:
        conn.close()


async def test_sqlite_delete_removes_the_tag_rows(tmp_path: Path) -> None:
    """Stale tag rows would be invisible to search (their seq is never reused) but leak."""
    store = sqlite_store.SqliteStore(f"sqlite:///{tmp_path}/tags.db")
    await store.open()
    try:
        await insert(store, full("a"), schedule("b", tags={"k": "v"}), schedule("c"))
        await store.write(lambda tx: [tx.delete_schedule(i) for i in ("a", "c")])
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "tags.db")
    try:
        rows = conn.execute("SELECT key, value FROM schedule_tags").fetchall()
    finally:
        conn.close()
    assert rows == [("k", "v")]
