"""The Engine (API.md 1.3-1.6) over every storage backend, with a fake clock.

Covers the create / complete paths and their errors, lazy and active timeouts (including a
mass expiry of 100,000 promises), waiting, search paging with signed cursors, and races of
concurrent requests on one promise (group commit on SQLite).
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Callable

import msgspec
import pytest

from troth.clock import FakeClock
from troth.engine import Engine
from troth.errors import AlreadyCompleted, AlreadyExists, NotFound, ValidationError
from troth.model import EMPTY, TIMER_TAG, Promise, State, Value
from troth.store.base import PromiseQuery, Store, Tx
from troth.store.memory import MemoryStore

TIMER = {TIMER_TAG: "true"}
CODES = {
    State.RESOLVED: 40301,
    State.REJECTED: 40302,
    State.REJECTED_CANCELED: 40303,
    State.REJECTED_TIMEDOUT: 40304,
}


async def raw(engine: Engine, id: str) -> Promise | None:
    """The record as stored (no lazy timeout applied by this read)."""
    return await engine.store.read(lambda tx: tx.get_promise(id))


def timed_out(p: Promise) -> Promise:
    return Promise(
        id=p.id,
        state=State.RESOLVED
        if p.tags and p.tags.get(TIMER_TAG) == "true"
        else (State.REJECTED_TIMEDOUT),
        param=p.param,
        value=EMPTY,
        timeout=p.timeout,
        idempotency_key_for_create=p.idempotency_key_for_create,
        tags=p.tags,
        created_on=p.created_on,
        completed_on=p.timeout,
    )


# -- create ----------------------------------------------------------------------------------


async def test_create_stores_every_field(engine: Engine, clock: FakeClock) -> None:
    param = Value(headers={"h": "v"}, data=b"\x00\xff")
    p, created = await engine.create_promise(
        "a/b:c", clock.now() + 1_000, param=param, tags={"t": "1"}, ikey="k"
    )
    assert created is True
    assert p == Promise(
        id="a/b:c",
        state=State.PENDING,
        param=param,
        timeout=clock.now() + 1_000,
        idempotency_key_for_create="k",
        tags={"t": "1"},
        created_on=clock.now(),
    )
    assert await engine.get_promise("a/b:c") == p
    assert await raw(engine, "a/b:c") == p


async def test_create_normalizes_empty_members(engine: Engine, clock: FakeClock) -> None:
    p, _ = await engine.create_promise(
        "n", clock.now() + 10, param=Value(headers={}, data=b""), tags={}
    )
    assert p.param == EMPTY and p.tags is None
    assert await engine.get_promise("n") == p


async def test_create_replay_with_same_key_deduplicates(engine: Engine, clock: FakeClock) -> None:
    first, created = await engine.create_promise("d", clock.now() + 1_000, ikey="k")
    assert created
    clock.advance(10)
    # Only the key is compared: param, timeout and tags of the replay are ignored.
    again, created = await engine.create_promise(
        "d", clock.now() + 99_999, param=Value(data=b"other"), tags={"x": "y"}, ikey="k"
    )
    assert created is False
    assert again == first
    strict_again, created = await engine.create_promise("d", clock.now() + 1, ikey="k", strict=True)
    assert (strict_again, created) == (first, False)


@pytest.mark.parametrize(
    ("stored_key", "key"), [("k", "other"), ("k", None), (None, None), (None, "k")]
)
@pytest.mark.parametrize("strict", [False, True])
async def test_create_conflict_is_409(
    engine: Engine, clock: FakeClock, stored_key: str | None, key: str | None, strict: bool
) -> None:
    first, _ = await engine.create_promise("c", clock.now() + 1_000, ikey=stored_key)
    with pytest.raises(AlreadyExists) as info:
        await engine.create_promise("c", clock.now() + 1_000, ikey=key, strict=strict)
    assert info.value.code == 40900
    assert info.value.status == 409
    assert await raw(engine, "c") == first


async def test_create_on_completed_promise(engine: Engine, clock: FakeClock) -> None:
    await engine.create_promise("cc", clock.now() + 1_000, ikey="k")
    done, _ = await engine.complete_promise("cc", State.RESOLVED, ikey="u")
    again, created = await engine.create_promise("cc", clock.now() + 1_000, ikey="k")
    assert (again, created) == (done, False)
    with pytest.raises(AlreadyExists):
        await engine.create_promise("cc", clock.now() + 1_000, ikey="k", strict=True)


@pytest.mark.parametrize("timer", [False, True], ids=["plain", "timer"])
async def test_create_with_passed_deadline_is_stored_timed_out(
    engine: Engine, clock: FakeClock, timer: bool
) -> None:
    deadline = clock.now() - 5
    p, created = await engine.create_promise(
        "late", deadline, tags=TIMER if timer else None, ikey="k"
    )
    assert created is True
    assert p.state is (State.RESOLVED if timer else State.REJECTED_TIMEDOUT)
    assert p.completed_on == deadline
    assert p.value == EMPTY and p.idempotency_key_for_complete is None
    assert await raw(engine, "late") == p


@pytest.mark.parametrize(
    ("id", "ok"),
    [
        ("x" * 1024, True),
        ("x" * 1025, False),
        ("é" * 512, True),  # 1,024 bytes
        ("é" * 513, False),  # 1,026 bytes, only 513 characters
        ("🎉" * 256, True),
        ("🎉" * 256 + "x", False),
        ("", False),
    ],
    ids=[
        "1024-ascii",
        "1025-ascii",
        "1024-bytes-2b",
        "1026-bytes-2b",
        "1024-bytes-4b",
        "1025-4b",
        "empty",
    ],
)
async def test_id_length_limit_is_in_bytes(
    engine: Engine, clock: FakeClock, id: str, ok: bool
) -> None:
    if ok:
        p, created = await engine.create_promise(id, clock.now() + 1_000)
        assert created and await engine.get_promise(id) == p
    else:
        with pytest.raises(ValidationError):
            await engine.create_promise(id, clock.now() + 1_000)
        with pytest.raises(ValidationError):
            await engine.complete_promise(id, State.RESOLVED)


@pytest.mark.parametrize(
    ("timeout", "ok"), [(0, True), (2**63 - 1, True), (-1, False), (2**63, False)]
)
async def test_timeout_bounds(engine: Engine, timeout: int, ok: bool) -> None:
    if ok:
        p, _ = await engine.create_promise("t", timeout)
        assert p.timeout == timeout
        assert await engine.get_promise("t") == p
    else:
        with pytest.raises(ValidationError):
            await engine.create_promise("t", timeout)


async def test_at_most_64_tags(engine: Engine, clock: FakeClock) -> None:
    tags = {f"k{i}": str(i) for i in range(64)}
    p, _ = await engine.create_promise("tags", clock.now() + 1_000, tags=tags)
    assert p.tags == tags
    page = await engine.search_promises(tags={"k0": "0", "k63": "63"})
    assert page.promises == [p]
    with pytest.raises(ValidationError):
        await engine.create_promise("tags2", clock.now() + 1_000, tags={**tags, "k64": "x"})


async def test_id_that_is_not_valid_unicode_is_rejected(engine: Engine, clock: FakeClock) -> None:
    """An id with a lone surrogate cannot be stored as UTF-8 text: every backend must refuse
    it the same way, as a validation error (400), not crash with a UnicodeEncodeError (500)
    on one backend and accept it on another."""
    with pytest.raises(ValidationError):
        await engine.create_promise("bad\ud800id", clock.now() + 1_000)


# -- complete --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [State.RESOLVED, State.REJECTED, State.REJECTED_CANCELED])
async def test_complete_then_dedupe_then_403(
    engine: Engine, clock: FakeClock, target: State
) -> None:
    created, _ = await engine.create_promise("x", clock.now() + 1_000, ikey="c", tags={"t": "v"})
    clock.advance(7)
    value = Value(headers={"r": "1"}, data=b"\x00result")
    p, fresh = await engine.complete_promise("x", target, value=value, ikey="u")
    assert fresh is True
    assert p == Promise(
        id="x",
        state=target,
        param=created.param,
        value=value,
        timeout=created.timeout,
        idempotency_key_for_create="c",
        idempotency_key_for_complete="u",
        tags={"t": "v"},
        created_on=created.created_on,
        completed_on=clock.now(),
    )
    assert await engine.get_promise("x") == p

    # Same key: deduplicated, strict or not.
    assert await engine.complete_promise("x", target, ikey="u") == (p, False)
    assert await engine.complete_promise("x", target, ikey="u", strict=True) == (p, False)
    # Same key, other target: deduplicated only when not strict (the state is the stored one).
    other = State.REJECTED if target is State.RESOLVED else State.RESOLVED
    assert await engine.complete_promise("x", other, ikey="u") == (p, False)
    with pytest.raises(AlreadyCompleted) as info:
        await engine.complete_promise("x", other, ikey="u", strict=True)
    assert info.value.code == CODES[target]
    # Other key or none: 403 with the code of the stored state.
    for key in ("other", None):
        for strict in (False, True):
            with pytest.raises(AlreadyCompleted) as info:
                await engine.complete_promise("x", target, ikey=key, strict=strict)
            assert info.value.code == CODES[target]
            assert info.value.status == 403
    assert await raw(engine, "x") == p


async def test_complete_missing_is_404(engine: Engine) -> None:
    with pytest.raises(NotFound) as info:
        await engine.complete_promise("nope", State.RESOLVED, ikey="k")
    assert info.value.code == 40400
    with pytest.raises(NotFound):
        await engine.get_promise("nope")


@pytest.mark.parametrize("state", [State.PENDING, State.REJECTED_TIMEDOUT])
async def test_complete_to_non_completion_state_is_400(engine: Engine, state: State) -> None:
    with pytest.raises(ValidationError):
        await engine.complete_promise("any", state)


# -- lazy timeouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("timer", [False, True], ids=["plain", "timer"])
async def test_lazy_timeout_on_get(engine: Engine, clock: FakeClock, timer: bool) -> None:
    p, _ = await engine.create_promise(
        "g", clock.now() + 100, tags=TIMER if timer else None, ikey="k"
    )
    clock.advance(99)
    assert await engine.get_promise("g") == p
    clock.advance(1)  # exactly at the deadline
    got = await engine.get_promise("g")
    assert got == timed_out(p)
    assert got.state is (State.RESOLVED if timer else State.REJECTED_TIMEDOUT)
    assert got.completed_on == p.timeout
    assert await raw(engine, "g") == got  # written, not only answered
    clock.advance(1_000)
    assert await engine.get_promise("g") == got


async def test_lazy_timeout_on_create(engine: Engine, clock: FakeClock) -> None:
    p, _ = await engine.create_promise("lc", clock.now() + 10, ikey="k")
    clock.advance(10)
    with pytest.raises(AlreadyExists):
        await engine.create_promise("lc", clock.now() + 10, ikey="k", strict=True)
    assert await raw(engine, "lc") == timed_out(p)  # the 409 still wrote the timeout
    again, created = await engine.create_promise("lc", clock.now() + 10, ikey="k")
    assert (again, created) == (timed_out(p), False)


@pytest.mark.parametrize(
    ("timer", "strict", "code"),
    [(False, False, None), (False, True, 40304), (True, False, 40301), (True, True, 40301)],
    ids=["plain-lax", "plain-strict", "timer-lax", "timer-strict"],
)
async def test_lazy_timeout_on_complete(
    engine: Engine, clock: FakeClock, timer: bool, strict: bool, code: int | None
) -> None:
    p, _ = await engine.create_promise("lk", clock.now() + 10, tags=TIMER if timer else None)
    clock.advance(50)
    if code is None:
        got = await engine.complete_promise("lk", State.RESOLVED, ikey="u", strict=strict)
        assert got == (timed_out(p), False)
    else:
        with pytest.raises(AlreadyCompleted) as info:
            await engine.complete_promise("lk", State.RESOLVED, ikey="u", strict=strict)
        assert info.value.code == code
    stored = await raw(engine, "lk")
    assert stored == timed_out(p)  # a 403 on an expired promise still writes the timeout
    assert stored is not None and stored.completed_on == p.timeout


async def test_lazy_timeout_on_search(engine: Engine, clock: FakeClock) -> None:
    plain, _ = await engine.create_promise("s/plain", clock.now() + 10)
    timer, _ = await engine.create_promise("s/timer", clock.now() + 10, tags=TIMER)
    live, _ = await engine.create_promise("s/live", clock.now() + 1_000)
    clock.advance(10)
    pending = await engine.search_promises(pattern="s/*", state="pending")
    assert pending.promises == [live]
    # A pending-only search returns nothing expired, so it has nothing to time out.
    assert await raw(engine, "s/plain") == plain
    rejected = await engine.search_promises(pattern="s/*", state="REJECTED")
    assert rejected.promises == [timed_out(plain)]
    assert await raw(engine, "s/plain") == timed_out(plain)
    everything = await engine.search_promises(pattern="s/*")
    assert everything.promises == [live, timed_out(timer), timed_out(plain)]
    assert await raw(engine, "s/timer") == timed_out(timer)
    assert all(
        not (p.state is State.PENDING and p.timeout <= clock.now()) for p in everything.promises
    )


# -- the sweeper -----------------------------------------------------------------------------

MASS = 100_000


async def test_sweep_times_out_100k_promises_sharing_one_deadline(
    engine: Engine, clock: FakeClock
) -> None:
    start = clock.now()
    deadline = start + 1_000

    def bulk(tx: Tx) -> None:
        for i in range(MASS):
            tx.insert_promise(
                Promise(
                    id=f"mass/{i:06d}",
                    state=State.PENDING,
                    param=Value(data=b"p"),
                    timeout=deadline,
                    idempotency_key_for_create=f"k{i}",
                    tags=TIMER if i % 10 == 0 else {"i": "x"},
                    created_on=start,
                )
            )
        tx.insert_promise(
            Promise(id="later", state=State.PENDING, timeout=deadline + 1, created_on=start)
        )

    await engine.run_write(bulk)
    assert await engine.sweep() == 0  # nothing due yet
    clock.set(deadline)

    assert await engine.sweep() == MASS

    now = clock.now()
    assert await engine.store.read(lambda tx: tx.due_promises(now, 10)) == []
    assert await engine.store.read(lambda tx: tx.next_deadline()) == deadline + 1
    rows = await engine.store.read(
        lambda tx: tx.search_promises(PromiseQuery(pattern="mass/*", limit=MASS + 10), now)
    )
    assert len(rows) == MASS
    states: Counter[State] = Counter()
    for _, p in rows:
        i = int(p.id.removeprefix("mass/"))
        assert p.state is (State.RESOLVED if i % 10 == 0 else State.REJECTED_TIMEDOUT), p
        assert p.completed_on == deadline
        assert p.value == EMPTY and p.idempotency_key_for_complete is None
        assert p.idempotency_key_for_create == f"k{i}"
        states[p.state] += 1
    assert states == {State.RESOLVED: MASS // 10, State.REJECTED_TIMEDOUT: MASS - MASS // 10}
    assert (await raw(engine, "later")) is not None
    assert (await engine.get_promise("later")).state is State.PENDING
    assert await engine.sweep() == 0


async def test_sweep_skips_completed_and_live(engine: Engine, clock: FakeClock) -> None:
    a, _ = await engine.create_promise("a", clock.now() + 5)
    await engine.create_promise("b", clock.now() + 5)
    c, _ = await engine.create_promise("c", clock.now() + 50)
    done, _ = await engine.complete_promise("b", State.REJECTED_CANCELED)
    clock.advance(5)
    assert await engine.sweep() == 1
    assert await raw(engine, "a") == timed_out(a)
    assert await raw(engine, "b") == done
    assert await raw(engine, "c") == c


# -- waiting ---------------------------------------------------------------------------------


async def _until_waiting(engine: Engine, n: int) -> None:
    for _ in range(2_000):
        if len(engine.waiters) >= n:
            break
        await asyncio.sleep(0.005)
    assert len(engine.waiters) >= n
    await asyncio.sleep(0.05)  # let the waiters finish their first read


async def test_wait_wakes_on_complete(engine: Engine, clock: FakeClock) -> None:
    await engine.create_promise("w", clock.now() + 600_000)
    task = asyncio.create_task(engine.wait_promise("w", 60_000))
    await _until_waiting(engine, 1)
    assert not task.done()
    done, _ = await engine.complete_promise("w", State.RESOLVED, value=Value(data=b"v"))
    got = await asyncio.wait_for(task, 10)
    assert got == done
    assert got.state is State.RESOLVED
    assert len(engine.waiters) == 0


async def test_wait_wakes_on_sweeper_timeout(engine: Engine, clock: FakeClock) -> None:
    p, _ = await engine.create_promise("wt", clock.now() + 100_000)
    task = asyncio.create_task(engine.wait_promise("wt", 60_000))
    await _until_waiting(engine, 1)
    assert not task.done()
    clock.advance(100_000)
    assert await engine.sweep() == 1
    assert await asyncio.wait_for(task, 10) == timed_out(p)


async def test_wait_returns_completed_promise_at_once(engine: Engine, clock: FakeClock) -> None:
    await engine.create_promise("wd", clock.now() + 1_000)
    done, _ = await engine.complete_promise("wd", State.REJECTED)
    assert await asyncio.wait_for(engine.wait_promise("wd", 60_000), 5) == done


async def test_wait_elapses_with_pending(engine: Engine, clock: FakeClock) -> None:
    p, _ = await engine.create_promise("we", clock.now() + 600_000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    got = await engine.wait_promise("we", 50)
    elapsed = loop.time() - started
    assert got == p
    assert got.state is State.PENDING
    assert 0.045 <= elapsed < 5
    assert len(engine.waiters) == 0


async def test_wait_missing_is_404(engine: Engine) -> None:
    with pytest.raises(NotFound):
        await engine.wait_promise("nope", 50)


WAITERS = 10_000


@pytest.mark.parametrize("promises", [1, 100], ids=["one-promise", "100-promises"])
async def test_ten_thousand_waiters_all_woken(
    engine: Engine, clock: FakeClock, promises: int
) -> None:
    ids = [f"many/{i}" for i in range(promises)]
    for id in ids:
        await engine.create_promise(id, clock.now() + 600_000)
    tasks = [
        asyncio.create_task(engine.wait_promise(ids[i % promises], 60_000)) for i in range(WAITERS)
    ]
    try:
        await _until_waiting(engine, WAITERS)
        assert not any(t.done() for t in tasks)
        results = await asyncio.gather(
            *(engine.complete_promise(id, State.RESOLVED, value=Value(data=b"!")) for id in ids)
        )
        expected = {p.id: p for p, _ in results}
        got = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        for t in tasks:
            t.cancel()
    assert len(got) == WAITERS
    for i, p in enumerate(got):
        assert p == expected[ids[i % promises]]
        assert p.state is State.RESOLVED
    assert len(engine.waiters) == 0


# -- search paging and cursors ---------------------------------------------------------------


async def _populate_for_paging(engine: Engine, clock: FakeClock) -> list[str]:
    created = []
    for i in range(30):
        await engine.create_promise(f"page/{i:02d}", clock.now() + 10_000, tags={"g": str(i % 3)})
        created.append(f"page/{i:02d}")
        if i % 4 == 0:
            await engine.create_promise(f"other/{i:02d}", clock.now() + 10_000)
    return created


@pytest.mark.parametrize("limit", [1, 7, 10, 29, 30, 31])
async def test_search_paging_visits_every_match_once(
    engine: Engine, clock: FakeClock, limit: int
) -> None:
    created = await _populate_for_paging(engine, clock)
    seen: list[str] = []
    page = await engine.search_promises(pattern="page/*", limit=limit)
    pages = 1
    while True:
        assert len(page.promises) <= limit
        seen += [p.id for p in page.promises]
        if page.cursor is None:
            break
        assert len(page.promises) == limit
        # The cursor carries the whole query: other arguments are ignored.
        page = await engine.search_promises(
            pattern="other/*", state="resolved", limit=1, cursor=page.cursor
        )
        pages += 1
    assert seen == created[::-1]
    assert pages == max(1, -(-30 // limit))


async def test_search_paging_with_state_and_tags(engine: Engine, clock: FakeClock) -> None:
    created = await _populate_for_paging(engine, clock)
    for id in created[:6]:
        await engine.complete_promise(id, State.RESOLVED)
    expected = [i for i in created[6:] if int(i[-2:]) % 3 == 1][::-1]
    seen: list[str] = []
    cursor = None
    while True:
        page = await engine.search_promises(
            pattern="page/*", state="pending", tags={"g": "1"}, limit=2, cursor=cursor
        )
        seen += [p.id for p in page.promises]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == expected


def _tamper_body(cursor: str) -> str:
    body, sig = cursor.split(".", 1)
    first = "A" if body[0] != "A" else "B"
    return f"{first}{body[1:]}.{sig}"


def _forge_pattern(cursor: str) -> str:
    body, sig = cursor.split(".", 1)
    raw_body = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    fields = msgspec.msgpack.decode(raw_body)
    assert fields[1] == "page/*"  # [kind, pattern, state, tags, limit, before]
    fields[1] = "*"
    forged = base64.urlsafe_b64encode(msgspec.msgpack.encode(fields)).rstrip(b"=").decode()
    return f"{forged}.{sig}"


def _tamper_sig(cursor: str) -> str:
    body, sig = cursor.split(".", 1)
    first = "A" if sig[0] != "A" else "B"
    return f"{body}.{first}{sig[1:]}"


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_body,
        _forge_pattern,
        _tamper_sig,
        lambda c: c.split(".")[0],
        lambda c: "garbage",
        lambda c: "!!.!!",
        lambda c: c + "x",
    ],
    ids=["body", "forged-pattern", "signature", "no-signature", "garbage", "junk", "suffix"],
)
async def test_tampered_cursor_is_rejected(engine: Engine, clock: FakeClock, tamper) -> None:
    await _populate_for_paging(engine, clock)
    page = await engine.search_promises(pattern="page/*", limit=5)
    assert page.cursor is not None
    with pytest.raises(ValidationError) as info:
        await engine.search_promises(cursor=tamper(page.cursor))
    assert info.value.code == 40000


async def test_cursor_of_another_server_is_rejected(engine: Engine, clock: FakeClock) -> None:
    other = Engine(MemoryStore(), clock)
    await other.open()
    try:
        for i in range(3):
            await other.create_promise(f"page/{i}", clock.now() + 1_000)
        page = await other.search_promises(pattern="page/*", limit=1)
        assert page.cursor is not None
    finally:
        await other.stop()
    with pytest.raises(ValidationError):
        await engine.search_promises(cursor=page.cursor)


async def test_cursor_survives_restart(
    make_durable_store: Callable[[], Store], clock: FakeClock
) -> None:
    """The cursor key lives in the store, so a durable store's cursors outlive the process."""
    first = Engine(make_durable_store(), clock)
    await first.open()
    try:
        for i in range(5):
            await first.create_promise(f"r/{i}", clock.now() + 1_000)
        page = await first.search_promises(pattern="r/*", limit=2)
    finally:
        await first.stop()
    assert page.cursor is not None
    second = Engine(make_durable_store(), clock)
    await second.open()
    try:
        rest = await second.search_promises(cursor=page.cursor)
    finally:
        await second.stop()
    assert [p.id for p in rest.promises] == ["r/2", "r/1"]


@pytest.mark.parametrize(
    "kwargs", [{"state": "done"}, {"limit": 0}, {"limit": 1001}], ids=["state", "0", "1001"]
)
async def test_search_rejects_bad_arguments(engine: Engine, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        await engine.search_promises(**kwargs)  # type: ignore[arg-type]


# -- concurrency -----------------------------------------------------------------------------

RACERS = 50


async def test_concurrent_creates_same_key_create_exactly_once(
    engine: Engine, clock: FakeClock
) -> None:
    results = await asyncio.gather(
        *(
            engine.create_promise(
                "race", clock.now() + 1_000, param=Value(data=bytes([i])), ikey="k"
            )
            for i in range(RACERS)
        )
    )
    assert sum(created for _, created in results) == 1
    promises = {msgspec.json.encode(p) for p, _ in results}
    assert len(promises) == 1
    assert await raw(engine, "race") == results[0][0]


async def test_concurrent_creates_different_keys(engine: Engine, clock: FakeClock) -> None:
    results = await asyncio.gather(
        *(engine.create_promise("race2", clock.now() + 1_000, ikey=f"k{i}") for i in range(RACERS)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1 and winners[0][1] is True
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(losers) == RACERS - 1
    assert all(isinstance(e, AlreadyExists) for e in losers)
    assert await raw(engine, "race2") == winners[0][0]


async def test_concurrent_completes_different_keys_exactly_one_wins(
    engine: Engine, clock: FakeClock
) -> None:
    await engine.create_promise("race3", clock.now() + 1_000)
    targets = [State.RESOLVED, State.REJECTED, State.REJECTED_CANCELED]
    results = await asyncio.gather(
        *(
            engine.complete_promise(
                "race3", targets[i % 3], value=Value(data=str(i).encode()), ikey=f"u{i}"
            )
            for i in range(RACERS)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    won, fresh = winners[0]
    assert fresh is True
    i = int(won.idempotency_key_for_complete.removeprefix("u"))
    assert won.state is targets[i % 3] and won.value == Value(data=str(i).encode())
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(losers) == RACERS - 1
    for e in losers:
        assert isinstance(e, AlreadyCompleted)
        assert e.code == CODES[won.state]
    assert await engine.get_promise("race3") == won


async def test_concurrent_completes_same_key_deduplicate(engine: Engine, clock: FakeClock) -> None:
    await engine.create_promise("race4", clock.now() + 1_000)
    results = await asyncio.gather(
        *(engine.complete_promise("race4", State.RESOLVED, ikey="u") for _ in range(RACERS))
    )
    assert sum(fresh for _, fresh in results) == 1
    assert len({msgspec.json.encode(p) for p, _ in results}) == 1


async def test_concurrent_creates_on_distinct_ids_all_succeed(
    engine: Engine, clock: FakeClock
) -> None:
    results = await asyncio.gather(
        *(engine.create_promise(f"many/{i}", clock.now() + 1_000) for i in range(500))
    )
    assert all(created for _, created in results)
    page = await engine.search_promises(pattern="many/*", limit=1000)
    assert sorted(p.id for p in page.promises) == sorted(f"many/{i}" for i in range(500))
