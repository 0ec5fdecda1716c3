"""The ``Tx``/``Store`` contract (``troth.store.base``), run against every backend.

A store is dumb: it loads, saves and answers indexed queries; the rules live in the engine.
These tests pin what the engine relies on: exact round-trips, the search semantics of
API.md 1.5 (pattern, state judged at ``now``, tags, order, paging), the sweeper's queries,
metadata, per-operation rollback inside group commit, and durability.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from troth.errors import StoreUnavailable
from troth.model import EMPTY, MAX_TIMEOUT, TIMER_TAG, Promise, State, Value
from troth.store.base import PromiseQuery, Store, Tx
from troth.store.sqlite import SqliteStore

NOW = 1_700_000_000_000
TIMER = {TIMER_TAG: "true"}

StoreFactory = Callable[[], Store]


def mk(
    id: str,
    *,
    state: State = State.PENDING,
    timeout: int = NOW + 60_000,
    param: Value = EMPTY,
    value: Value = EMPTY,
    ikc: str | None = None,
    iku: str | None = None,
    tags: dict[str, str] | None = None,
    created_on: int = NOW - 1_000,
    completed_on: int | None = None,
) -> Promise:
    if state is not State.PENDING and completed_on is None:
        completed_on = NOW - 500
    return Promise(
        id=id,
        state=state,
        param=param,
        value=value,
        timeout=timeout,
        idempotency_key_for_create=ikc,
        idempotency_key_for_complete=iku,
        tags=tags,
        created_on=created_on,
        completed_on=completed_on,
    )


def done(p: Promise, state: State, *, value: Value = EMPTY, iku: str | None = None) -> Promise:
    return Promise(
        id=p.id,
        state=state,
        param=p.param,
        value=value,
        timeout=p.timeout,
        idempotency_key_for_create=p.idempotency_key_for_create,
        idempotency_key_for_complete=iku,
        tags=p.tags,
        created_on=p.created_on,
        completed_on=NOW,
    )


async def insert(store: Store, *promises: Promise) -> None:
    def op(tx: Tx) -> None:
        for p in promises:
            tx.insert_promise(p)

    await store.write(op)


async def get(store: Store, id: str) -> Promise | None:
    return await store.read(lambda tx: tx.get_promise(id))


async def search(store: Store, now: int = NOW, **query: Any) -> list[tuple[int, Promise]]:
    q = PromiseQuery(**query)
    return await store.read(lambda tx: tx.search_promises(q, now))


async def search_ids(store: Store, now: int = NOW, **query: Any) -> list[str]:
    return [p.id for _, p in await search(store, now, **query)]


# -- round trips -----------------------------------------------------------------------------

ODD_IDS = [
    "plain",
    "a/b/c",
    "100%_done",
    "star*and?question",
    "brackets[0]and]",
    "[!x]",
    "back\\slash",
    "quote'\"double",
    " spaced out ",
    "ünïcödé/Δ/日本語/🎉",
    "dots.and:colons",
    "line\nbreak\ttab",
    "x" * 1024,
]


@pytest.mark.parametrize("id", ODD_IDS, ids=lambda i: i[:24])
async def test_insert_get_round_trips_ids(store: Store, id: str) -> None:
    p = mk(id, ikc="k")
    await insert(store, p)
    assert await get(store, id) == p
    assert await get(store, id + "-not") is None


FULL = mk(
    "full/1",
    state=State.RESOLVED,
    param=Value(headers={"content-type": "application/octet-stream", "ü": "ß"}, data=b"\x00\xff"),
    value=Value(headers={"h": ""}, data=bytes(range(256))),
    timeout=MAX_TIMEOUT,
    ikc="create-key",
    iku="complete-key",
    tags={"a": "1", "b": "", "ключ": "значение", TIMER_TAG: "true"},
    created_on=0,
    completed_on=NOW,
)
ROUND_TRIPS = {
    "full": FULL,
    "minimal-pending": mk("min", timeout=0, created_on=0),
    "param-headers-only": mk("ph", param=Value(headers={"x": "y"})),
    "param-data-only": mk("pd", param=Value(data=b"\x00")),
    "value-data-only": mk("vd", state=State.REJECTED, value=Value(data=b"\xff")),
    "timedout": mk("to", state=State.REJECTED_TIMEDOUT, timeout=NOW - 5, completed_on=NOW - 5),
    "canceled-keys": mk("ca", state=State.REJECTED_CANCELED, ikc="a", iku="b", tags={"k": "v"}),
}


@pytest.mark.parametrize("promise", list(ROUND_TRIPS.values()), ids=list(ROUND_TRIPS))
async def test_insert_get_round_trips_every_field(store: Store, promise: Promise) -> None:
    await insert(store, promise)
    got = await get(store, promise.id)
    assert got == promise
    assert got is not None
    assert got.is_timer == promise.is_timer
    # Also through search (another decoding path).
    assert [p for _, p in await search(store)] == [promise]


async def test_write_returns_the_operation_result(store: Store) -> None:
    assert await store.write(lambda tx: 42) == 42
    assert await store.read(lambda tx: "r") == "r"


async def test_update_promise_changes_only_completion_fields(store: Store) -> None:
    p = mk("u", param=Value(data=b"p"), ikc="c", tags={"t": "1"})
    other = mk("other")
    await insert(store, p, other)
    new = done(p, State.REJECTED, value=Value(headers={"v": "1"}, data=b"\x00v"), iku="ku")
    await store.write(lambda tx: tx.update_promise(new))
    assert await get(store, "u") == new
    assert await get(store, "other") == other
    # Back to an empty value and no key (a timeout).
    timed = done(p, State.REJECTED_TIMEDOUT)
    await store.write(lambda tx: tx.update_promise(timed))
    assert await get(store, "u") == timed


async def test_update_promises_updates_all_given(store: Store) -> None:
    ps = [mk(f"m/{i}") for i in range(5)]
    await insert(store, *ps)
    new = [done(ps[i], State.RESOLVED, value=Value(data=bytes([i]))) for i in (0, 2, 4)]
    await store.write(lambda tx: tx.update_promises(new))
    assert [await get(store, p.id) for p in ps] == [new[0], ps[1], new[1], ps[3], new[2]]
    await store.write(lambda tx: tx.update_promises([]))  # empty batch is fine
    assert await get(store, "m/1") == ps[1]


async def test_update_keeps_search_position(store: Store) -> None:
    ps = [mk(f"o/{i}") for i in range(4)]
    for p in ps:
        await insert(store, p)
    await store.write(lambda tx: tx.update_promise(done(ps[0], State.RESOLVED)))
    assert await search_ids(store) == ["o/3", "o/2", "o/1", "o/0"]


# -- search: patterns ------------------------------------------------------------------------

PATTERN_IDS = [
    "a%b",
    "a_b",
    "axb",
    "a?b",
    "a[b",
    "a[b]",
    "ab",
    "a]b",
    "a\\b",
    "a^b",
    "abc",
    "ABC",
    "xabcx",
    "b",
    "a%%b",
    "aXXb",
]


def _by(pred: Callable[[str], bool]) -> list[str]:
    return [i for i in PATTERN_IDS if pred(i)]


PATTERNS: dict[str, list[str]] = {
    # Characters that are wildcards in LIKE / GLOB / regex are literal here.
    "a%b": ["a%b"],
    "a_b": ["a_b"],
    "a?b": ["a?b"],
    "a[b": ["a[b"],
    "a[b]": ["a[b]"],
    "a]b": ["a]b"],
    "a\\b": ["a\\b"],
    "a^b": ["a^b"],
    "a.b": [],
    "a%": [],
    "%": [],
    "_": [],
    "?": [],
    # Case-sensitive literal.
    "abc": ["abc"],
    "ABC": ["ABC"],
    # `*` is the only wildcard.
    "*": list(PATTERN_IDS),
    "**": list(PATTERN_IDS),
    "a*": _by(lambda i: i.startswith("a")),
    "*b": _by(lambda i: i.endswith("b")),
    "*bc*": _by(lambda i: "bc" in i),
    "a*b": _by(lambda i: i.startswith("a") and i.endswith("b") and len(i) >= 2),
    "a*%*b": ["a%b", "a%%b"],
    "a*_*": ["a_b"],
    "*[*": ["a[b", "a[b]"],
    "*?": [],
    "*?*": ["a?b"],
    "*]": ["a[b]"],
    "x*x": ["xabcx"],
    "zzz*": [],
}


@pytest.mark.parametrize(("pattern", "expected"), list(PATTERNS.items()), ids=list(PATTERNS))
async def test_search_pattern(store: Store, pattern: str, expected: list[str]) -> None:
    await insert(store, *(mk(i) for i in PATTERN_IDS))
    got = await search_ids(store, pattern=pattern, limit=1000)
    assert sorted(got) == sorted(expected)
    assert len(got) == len(set(got))


@pytest.mark.parametrize("id", [i for i in ODD_IDS if "*" not in i], ids=lambda i: i[:24])
async def test_search_literal_pattern_finds_exactly_that_id(store: Store, id: str) -> None:
    await insert(store, *(mk(i) for i in ODD_IDS))
    assert await search_ids(store, pattern=id) == [id]


# -- search: state judged at now -------------------------------------------------------------


STATE_SET = [
    mk("live", timeout=NOW + 1),
    mk("live-timer", timeout=NOW + 1, tags=TIMER),
    mk("due-at-now", timeout=NOW),  # the deadline itself counts as expired
    mk("due-past", timeout=NOW - 100),
    mk("due-timer", timeout=NOW - 1, tags=TIMER),
    mk("resolved", state=State.RESOLVED),
    mk("rejected", state=State.REJECTED),
    mk("canceled", state=State.REJECTED_CANCELED),
    mk("timedout", state=State.REJECTED_TIMEDOUT, timeout=NOW - 10, completed_on=NOW - 10),
    # Completed before a deadline that has since passed: stays what it is.
    mk("resolved-late", state=State.RESOLVED, timeout=NOW - 10, tags=TIMER),
    mk("rejected-late", state=State.REJECTED, timeout=NOW - 10),
]
STATE_FILTERS = {
    None: [p.id for p in STATE_SET],
    "pending": ["live", "live-timer"],
    "resolved": ["due-timer", "resolved", "resolved-late"],
    "rejected": ["due-at-now", "due-past", "rejected", "canceled", "timedout", "rejected-late"],
}


@pytest.mark.parametrize("state", list(STATE_FILTERS), ids=lambda s: str(s))
async def test_search_state_is_judged_at_now(store: Store, state: str | None) -> None:
    await insert(store, *STATE_SET)
    got = await search(store, state=state)
    assert sorted(p.id for _, p in got) == sorted(STATE_FILTERS[state])
    # The store only filters: it returns the records as stored (the engine times them out).
    by_id = {p.id: p for p in STATE_SET}
    assert all(p == by_id[p.id] for _, p in got)
    assert await get(store, "due-past") == by_id["due-past"]


async def test_search_state_moves_with_now(store: Store) -> None:
    await insert(store, mk("p", timeout=NOW), mk("t", timeout=NOW, tags=TIMER))
    assert await search_ids(store, now=NOW - 1, state="pending") == ["t", "p"]
    assert await search_ids(store, now=NOW, state="pending") == []
    assert await search_ids(store, now=NOW, state="resolved") == ["t"]
    assert await search_ids(store, now=NOW, state="rejected") == ["p"]


# -- search: tags ----------------------------------------------------------------------------

TAG_SET = [
    mk("t1", tags={"a": "1", "b": "2"}),
    mk("t2", tags={"a": "1"}),
    mk("t3", tags={"a": "2", "b": "2"}),
    mk("t4"),
    mk("t5", tags={"a": "1", "b": "2", "c": "3"}),
    mk("t6", tags={"b": "1", "a": "2"}),  # swapped pairs must not match {"a":"1","b":"2"}
    mk("t7", tags={"a": "1 "}),
]
TAG_FILTERS: list[tuple[dict[str, str], list[str]]] = [
    ({}, ["t1", "t2", "t3", "t4", "t5", "t6", "t7"]),
    ({"a": "1"}, ["t1", "t2", "t5"]),
    ({"a": "1", "b": "2"}, ["t1", "t5"]),
    ({"b": "2", "a": "2"}, ["t3"]),
    ({"c": "3"}, ["t5"]),
    ({"a": "3"}, []),
    ({"zz": "1"}, []),
    ({"a": ""}, []),
]


@pytest.mark.parametrize(("tags", "expected"), TAG_FILTERS, ids=[str(t) for t, _ in TAG_FILTERS])
async def test_search_tags_all_pairs_must_match(
    store: Store, tags: dict[str, str], expected: list[str]
) -> None:
    await insert(store, *TAG_SET)
    assert sorted(await search_ids(store, tags=tags)) == expected


async def test_search_combines_pattern_state_and_tags(store: Store) -> None:
    await insert(
        store,
        mk("job/1", tags={"g": "x"}),
        mk("job/2", tags={"g": "x"}, state=State.RESOLVED),
        mk("job/3", tags={"g": "y"}),
        mk("task/4", tags={"g": "x"}),
        mk("job/5", tags={"g": "x"}, timeout=NOW - 1),
    )
    assert await search_ids(store, pattern="job/*", state="pending", tags={"g": "x"}) == ["job/1"]
    assert await search_ids(store, pattern="job/*", state="rejected", tags={"g": "x"}) == ["job/5"]
    assert await search_ids(store, pattern="*", tags={"g": "x"}) == [
        "job/5",
        "task/4",
        "job/2",
        "job/1",
    ]


# -- search: order, paging, limit ------------------------------------------------------------

ORDER_IDS = ["m", "c", "x", "a", "q", "b", "z", "e", "y", "d"]


async def _insert_ordered(store: Store) -> None:
    # Half in one transaction, half one per transaction: order is insertion order either way.
    await insert(store, *(mk(i) for i in ORDER_IDS[:5]))
    for i in ORDER_IDS[5:]:
        await insert(store, mk(i))


async def test_search_is_newest_first(store: Store) -> None:
    await _insert_ordered(store)
    rows = await search(store)
    assert [p.id for _, p in rows] == ORDER_IDS[::-1]
    seqs = [seq for seq, _ in rows]
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("limit", [1, 3, 9, 10, 11, 1000])
async def test_search_limit(store: Store, limit: int) -> None:
    await _insert_ordered(store)
    assert await search_ids(store, limit=limit) == ORDER_IDS[::-1][:limit]


@pytest.mark.parametrize("page", [1, 3, 4, 10])
async def test_search_before_pages_through_everything_once(store: Store, page: int) -> None:
    await _insert_ordered(store)
    seen: list[str] = []
    before = None
    while True:
        rows = await search(store, limit=page, before=before)
        seen += [p.id for _, p in rows]
        if len(rows) < page:
            break
        before = rows[-1][0]
    assert seen == ORDER_IDS[::-1]


async def test_search_before_is_exclusive(store: Store) -> None:
    await _insert_ordered(store)
    rows = await search(store)
    third_seq = rows[2][0]
    assert await search_ids(store, before=third_seq) == [p.id for _, p in rows[3:]]
    assert await search_ids(store, before=rows[-1][0]) == []
    assert await search_ids(store, before=rows[0][0] + 1_000) == ORDER_IDS[::-1]


async def test_search_empty_store(store: Store) -> None:
    assert await search(store) == []
    assert await search(store, state="pending", tags={"a": "b"}, pattern="x*") == []


# -- the sweeper's queries -------------------------------------------------------------------


async def test_due_promises_earliest_first_with_limit(store: Store) -> None:
    await insert(
        store,
        mk("later", timeout=NOW + 5),
        mk("three", timeout=NOW - 3),
        mk("at-now", timeout=NOW),
        mk("ten", timeout=NOW - 10, tags=TIMER),
        mk("next", timeout=NOW + 1),
        mk("done-early", state=State.RESOLVED, timeout=NOW - 100),
        mk("timedout", state=State.REJECTED_TIMEDOUT, timeout=NOW - 50, completed_on=NOW - 50),
    )
    due = await store.read(lambda tx: tx.due_promises(NOW, 100))
    assert [p.id for p in due] == ["ten", "three", "at-now"]
    assert due[0] == mk("ten", timeout=NOW - 10, tags=TIMER)
    assert [p.id for p in await store.read(lambda tx: tx.due_promises(NOW, 2))] == [
        "ten",
        "three",
    ]
    assert await store.read(lambda tx: tx.due_promises(NOW - 11, 100)) == []
    assert [p.id for p in await store.read(lambda tx: tx.due_promises(NOW + 5, 100))] == [
        "ten",
        "three",
        "at-now",
        "next",
        "later",
    ]


async def test_next_deadline(store: Store) -> None:
    assert await store.read(lambda tx: tx.next_deadline()) is None
    a = mk("a", timeout=NOW + 30)
    b = mk("b", timeout=NOW + 20)
    await insert(store, a, b, mk("c", state=State.RESOLVED, timeout=NOW + 1))
    assert await store.read(lambda tx: tx.next_deadline()) == NOW + 20
    await store.write(lambda tx: tx.update_promise(done(b, State.RESOLVED)))
    assert await store.read(lambda tx: tx.next_deadline()) == NOW + 30
    await store.write(lambda tx: tx.update_promise(done(a, State.REJECTED_CANCELED)))
    assert await store.read(lambda tx: tx.next_deadline()) is None


# -- metadata --------------------------------------------------------------------------------


async def test_meta_get_set(store: Store) -> None:
    assert await store.read(lambda tx: tx.get_meta("k")) is None
    await store.write(lambda tx: tx.set_meta("k", "v1"))
    assert await store.read(lambda tx: tx.get_meta("k")) == "v1"
    await store.write(lambda tx: tx.set_meta("k", "v2"))
    await store.write(lambda tx: tx.set_meta("other", "ü" * 100))
    assert await store.read(lambda tx: (tx.get_meta("k"), tx.get_meta("other"))) == (
        "v2",
        "ü" * 100,
    )


# -- transactions ----------------------------------------------------------------------------


class Boom(Exception):
    pass


async def test_failing_op_rolls_back_only_its_own_writes(store: Store) -> None:
    n = 20
    base = [mk(f"u/good/{i}") for i in range(n)] + [mk(f"u/bad/{i}") for i in range(n)]
    await insert(store, *base)
    await store.write(lambda tx: tx.set_meta("shared", "before"))

    def good(i: int) -> Callable[[Tx], str]:
        def op(tx: Tx) -> str:
            tx.insert_promise(mk(f"good/{i}"))
            tx.update_promise(done(base[i], State.RESOLVED, iku=f"g{i}"))
            tx.set_meta(f"good/{i}", "1")
            tx.set_meta("shared", "good")
            return f"ok/{i}"

        return op

    def bad(i: int) -> Callable[[Tx], str]:
        def op(tx: Tx) -> str:
            tx.insert_promise(mk(f"bad/{i}"))
            tx.update_promise(done(base[n + i], State.REJECTED, iku=f"b{i}"))
            tx.set_meta(f"bad/{i}", "1")
            tx.set_meta("shared", "bad")  # must be undone, restoring what was there
            raise Boom(f"boom {i}")

        return op

    ops = [op for i in range(n) for op in (good(i), bad(i))]
    results = await asyncio.gather(*(store.write(op) for op in ops), return_exceptions=True)
    for i in range(n):
        assert results[2 * i] == f"ok/{i}"
        err = results[2 * i + 1]
        assert isinstance(err, Boom) and str(err) == f"boom {i}"

    for i in range(n):
        assert await get(store, f"good/{i}") == mk(f"good/{i}")
        assert await get(store, f"bad/{i}") is None
        assert await get(store, f"u/good/{i}") == done(base[i], State.RESOLVED, iku=f"g{i}")
        assert await get(store, f"u/bad/{i}") == base[n + i]
        assert await store.read(lambda tx, i=i: tx.get_meta(f"good/{i}")) == "1"
        assert await store.read(lambda tx, i=i: tx.get_meta(f"bad/{i}")) is None
    assert await store.read(lambda tx: tx.get_meta("shared")) == "good"
    assert sorted(await search_ids(store, pattern="bad/*")) == []
    assert len(await search_ids(store, pattern="good/*")) == n
    # The store still works after the failures.
    await insert(store, mk("after"))
    assert await get(store, "after") == mk("after")


async def test_failing_op_after_update_restores_previous_record(store: Store) -> None:
    p = mk("x", tags={"k": "v"})
    await insert(store, p)

    def op(tx: Tx) -> None:
        tx.update_promise(done(p, State.RESOLVED, value=Value(data=b"no")))
        tx.update_promises([done(p, State.REJECTED)])
        raise Boom("no")

    with pytest.raises(Boom):
        await store.write(op)
    assert await get(store, "x") == p
    assert await search_ids(store, state="pending", tags={"k": "v"}) == ["x"]


# -- durability ------------------------------------------------------------------------------


async def test_acknowledged_writes_survive_close_and_reopen(
    make_durable_store: StoreFactory,
) -> None:
    first = make_durable_store()
    await first.open()
    ps = [mk(f"d/{i}", param=Value(data=bytes([i])), tags={"i": str(i)}) for i in range(50)]
    await asyncio.gather(*(insert(first, p) for p in ps))
    completed = done(ps[0], State.RESOLVED, value=Value(data=b"\x00\xff"), iku="k")
    await first.write(lambda tx: tx.update_promise(completed))
    await first.write(lambda tx: tx.set_meta("m", "v"))
    await first.close()

    second = make_durable_store()
    await second.open()
    try:
        assert await get(second, "d/0") == completed
        for p in ps[1:]:
            assert await get(second, p.id) == p
        assert await second.read(lambda tx: tx.get_meta("m")) == "v"
        assert await search_ids(second, tags={"i": "7"}) == ["d/7"]
        # New writes continue the order after the old ones.
        await insert(second, mk("d/new"))
        assert (await search_ids(second, limit=2)) == ["d/new", "d/49"]
    finally:
        await second.close()


async def test_close_finishes_or_fails_each_queued_write(make_durable_store: StoreFactory) -> None:
    first = make_durable_store()
    await first.open()
    tasks = [asyncio.create_task(insert(first, mk(f"q/{i}"))) for i in range(100)]
    await asyncio.sleep(0)  # let the tasks queue their writes
    await first.close()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for o in outcomes:
        assert o is None or isinstance(o, StoreUnavailable)

    second = make_durable_store()
    await second.open()
    try:
        for i, o in enumerate(outcomes):
            assert (await get(second, f"q/{i}") is not None) is (o is None), i
    finally:
        await second.close()


def _migrations(path: Path) -> list[tuple[int, str, int]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(
            conn.execute("SELECT version, name, applied_on FROM schema_migrations ORDER BY 1")
        )


async def test_sqlite_migrations_recorded_and_not_reapplied(tmp_path: Path) -> None:
    shipped = SqliteStore.migrations()
    assert shipped, "no migrations found"
    assert [v for v, _, _ in shipped] == sorted({v for v, _, _ in shipped})

    url = f"sqlite:///{tmp_path}/m.db"
    first = SqliteStore(url)
    await first.open()
    await insert(first, mk("kept"))
    await first.close()
    recorded = _migrations(tmp_path / "m.db")
    assert [(v, n) for v, n, _ in recorded] == [(v, n) for v, n, _ in shipped]

    second = SqliteStore(url)
    await second.open()
    try:
        assert await get(second, "kept") == mk("kept")
    finally:
        await second.close()
    # Same rows, same applied_on: nothing was applied again.
    assert _migrations(tmp_path / "m.db") == recorded


# -- SQLite group commit: operations on the loop, COMMIT (WAL write + fsync) on a thread ------


class _Gate:
    """Holds the SQLite committer thread before each COMMIT until ``release``."""

    def __init__(self, store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.batches: list[int] = []
        commit = store._commit

        def gated(batch: list[Any], outcomes: list[Any], started: float) -> None:
            self.entered.set()
            self.go.wait()
            commit(batch, outcomes, started)

        monkeypatch.setattr(store, "_commit", gated)
        store.on_commit = lambda n, _seconds: self.batches.append(n)

    async def held(self) -> None:
        """Wait until a COMMIT is being held."""
        await asyncio.get_running_loop().run_in_executor(None, self.entered.wait)
        self.entered.clear()

    def release(self) -> None:
        self.go.set()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(f"sqlite:///{tmp_path}/g.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_sqlite_write_answers_and_shows_only_after_its_commit(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    gate = _Gate(store, monkeypatch)
    first = asyncio.create_task(insert(store, mk("first")))
    await gate.held()
    # The operation has run (on the loop) but its transaction is not committed: the caller
    # is not answered and no reader sees the row, so nothing is visible before its fsync.
    assert not first.done()
    assert await get(store, "first") is None
    assert await search_ids(store) == []
    # Writes queued meanwhile wait for a later commit of their own (group commit).
    later = [asyncio.create_task(insert(store, mk(f"later/{i}"))) for i in range(5)]
    assert await store.read(lambda tx: tx.get_meta("nothing")) is None  # the loop is free
    assert not any(t.done() for t in later)
    gate.release()
    await asyncio.gather(first, *later)
    assert await get(store, "first") == mk("first")
    assert sorted(await search_ids(store)) == ["first"] + [f"later/{i}" for i in range(5)]
    assert gate.batches == [1, 5]


async def test_sqlite_failing_op_in_a_batch_fails_alone(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    gate = _Gate(store, monkeypatch)
    hold = asyncio.create_task(insert(store, mk("hold")))
    await gate.held()

    def bad(tx: Tx) -> None:
        tx.insert_promise(mk("bad"))
        raise Boom("bad")

    ops: list[Callable[[Tx], None]] = [
        lambda tx: tx.insert_promise(mk("a")),
        bad,
        lambda tx: tx.insert_promise(mk("b")),
        lambda tx: tx.insert_promise(mk("a")),  # a duplicate id: a constraint error
        lambda tx: tx.insert_promise(mk("c")),
    ]
    batch = [asyncio.create_task(store.write(op)) for op in ops]
    await asyncio.sleep(0)
    gate.release()
    await hold
    results = await asyncio.gather(*batch, return_exceptions=True)
    assert gate.batches == [1, 5]  # the five operations shared one transaction
    assert results[0] is None and results[2] is None and results[4] is None
    assert isinstance(results[1], Boom)
    assert isinstance(results[3], sqlite3.IntegrityError)
    assert sorted(await search_ids(store)) == ["a", "b", "c", "hold"]


async def test_sqlite_failed_commit_fails_the_whole_batch_and_the_store_recovers(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    commit = store._commit
    failed: list[int] = []

    def failing(batch: list[Any], outcomes: list[Any], started: float) -> None:
        # As if COMMIT hit a full disk: the loop rolls back and fails every caller.
        failed.append(len(batch))
        monkeypatch.setattr(store, "_commit", commit)
        store._post(store._finish, batch, [], sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(store, "_commit", failing)
    results = await asyncio.gather(
        *(insert(store, mk(f"lost/{i}")) for i in range(3)), return_exceptions=True
    )
    assert failed == [3]
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert await search_ids(store) == []
    await insert(store, mk("after"))
    assert await search_ids(store) == ["after"]


async def test_sqlite_waits_for_another_writer_without_blocking_the_loop(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    store = sqlite_store
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        write = asyncio.create_task(insert(store, mk("waited")))
        await asyncio.sleep(0)
        # The store's loop still serves reads while the write waits for the lock.
        assert await get(store, "waited") is None
        assert not write.done()
        other.execute("COMMIT")
        await write
        assert await get(store, "waited") == mk("waited")
    finally:
        other.close()


async def test_sqlite_write_from_another_event_loop(sqlite_store: SqliteStore) -> None:
    store = sqlite_store

    def elsewhere() -> str:
        async def go() -> str:
            await insert(store, mk("from/thread"))
            return await store.write(lambda tx: "ok")

        return asyncio.run(go())

    assert await asyncio.get_running_loop().run_in_executor(None, elsewhere) == "ok"
    assert await get(store, "from/thread") == mk("from/thread")
