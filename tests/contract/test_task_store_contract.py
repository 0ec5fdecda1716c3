"""The task-framework part of the ``Tx`` contract (callbacks, tasks, locks), on every backend.

What the engine relies on: exact round-trips of every field, insert-unless-exists, the
dispatcher's and sweeper's queries (``dispatchable_tasks``, ``overdue_tasks``,
``next_task_time``) with the semantics of their docstrings in ``troth.store.base``, the bulk
updates (``ready_tasks_for``, ``heartbeat_tasks``, ``heartbeat_locks``), per-operation
rollback inside group commit, and durability.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from troth.model import MAX_TIMEOUT, Callback, Lock, Recv, Task, TaskKind, TaskState
from troth.store import sqlite as sqlite_store
from troth.store.base import Store, Tx

NOW = 1_700_000_000_000
INIT, ENQUEUED, CLAIMED = TaskState.INIT, TaskState.ENQUEUED, TaskState.CLAIMED
COMPLETED, TIMEDOUT = TaskState.COMPLETED, TaskState.TIMEDOUT
ACTIVE = (ENQUEUED, CLAIMED)

POLL = Recv(type="poll", group="workers", id="w1")
RECVS = {
    "poll-any": Recv(type="poll", group="default"),
    "poll-any-id": POLL,
    "poll-uni": Recv(type="poll", group="g/ü", id="w:2", mode="uni"),
    "http": Recv(type="http", url="https://example.com/hook?x=1"),
    "http-headers": Recv(
        type="http",
        url="http://localhost:9000/",
        headers={"Authorization": "Bearer t", "X-ü": 'ö "q" \n'},
    ),
}

StoreFactory = Callable[[], Store]


def task(
    id: str,
    *,
    state: TaskState = INIT,
    root: str = "root",
    recv: Recv = POLL,
    kind: TaskKind = TaskKind.INVOKE,
    leaf: str | None = None,
    counter: int = 1,
    attempt: int = 0,
    process_id: str | None = None,
    ttl: int | None = None,
    timeout: int = NOW + 60_000,
    expires_at: int | None = None,
    ready_at: int = 0,
    created_on: int = NOW - 1_000,
    completed_on: int | None = None,
) -> Task:
    return Task(
        id=id,
        type=kind,
        state=state,
        recv=recv,
        root_promise_id=root,
        leaf_promise_id=leaf,
        counter=counter,
        attempt=attempt,
        process_id=process_id,
        ttl=ttl,
        timeout=timeout,
        expires_at=expires_at,
        ready_at=ready_at,
        created_on=created_on,
        completed_on=completed_on,
    )


def callback(
    id: str,
    promise_id: str = "p",
    *,
    root: str | None = "root",
    recv: Recv = POLL,
    timeout: int = NOW + 60_000,
    created_on: int = NOW - 1_000,
) -> Callback:
    return Callback(
        id=id,
        promise_id=promise_id,
        root_promise_id=root,
        recv=recv,
        timeout=timeout,
        created_on=created_on,
    )


def lock(resource: str, *, execution: str = "e1", process: str = "p1", ttl: int = 5_000) -> Lock:
    return Lock(
        resource_id=resource,
        execution_id=execution,
        process_id=process,
        ttl=ttl,
        expires_at=NOW + ttl,
    )


def replace(t: Task, **changes: Any) -> Task:
    return msgspec.structs.replace(t, **changes)


async def insert_tasks(store: Store, *tasks: Task) -> list[bool]:
    return await store.write(lambda tx: [tx.insert_task(t) for t in tasks])


async def get_task(store: Store, id: str) -> Task | None:
    return await store.read(lambda tx: tx.get_task(id))


async def get_lock(store: Store, resource_id: str) -> Lock | None:
    return await store.read(lambda tx: tx.get_lock(resource_id))


async def put_locks(store: Store, *locks: Lock) -> None:
    def op(tx: Tx) -> None:
        for lk in locks:
            tx.put_lock(lk)

    await store.write(op)


async def take(store: Store, promise_id: str) -> list[Callback]:
    return await store.write(lambda tx: tx.take_callbacks(promise_id))


async def update(store: Store, t: Task) -> None:
    await store.write(lambda tx: tx.update_task(t))


async def of_root(store: Store, root: str, states: Sequence[TaskState]) -> list[Task]:
    return await store.read(lambda tx: tx.tasks_of_root(root, states))


async def dispatchable(store: Store, now: int = NOW, limit: int = 100) -> list[str]:
    return [t.id for t in await store.read(lambda tx: tx.dispatchable_tasks(now, limit))]


async def overdue(store: Store, now: int = NOW, limit: int = 100) -> list[str]:
    return [t.id for t in await store.read(lambda tx: tx.overdue_tasks(now, limit))]


async def next_time(store: Store) -> int | None:
    return await store.read(lambda tx: tx.next_task_time())


# -- callbacks and subscriptions -------------------------------------------------------------


@pytest.mark.parametrize("recv", list(RECVS.values()), ids=list(RECVS))
async def test_callback_round_trip(store: Store, recv: Recv) -> None:
    cbs = [
        callback("__resume:root:p", recv=recv, timeout=MAX_TIMEOUT),
        callback("__notify:p:sub", recv=recv, root=None, created_on=0, timeout=0),
    ]
    assert await store.write(lambda tx: [tx.insert_callback(cb) for cb in cbs]) == [True, True]
    taken = await store.write(lambda tx: tx.take_callbacks("p"))
    assert taken == sorted(cbs, key=lambda cb: (cb.created_on, cb.id))
    assert taken[1].recv == recv and taken[1].recv.key == recv.key
    assert taken[0].root_promise_id is None


async def test_insert_callback_conflict_returns_false_and_changes_nothing(store: Store) -> None:
    first = callback("__resume:root:p")
    other = callback("__resume:root:p", "q", root="r2", recv=RECVS["http"], timeout=1)
    assert await store.write(lambda tx: tx.insert_callback(first)) is True
    assert await store.write(lambda tx: tx.insert_callback(other)) is False
    assert await store.write(lambda tx: tx.insert_callback(first)) is False
    assert await store.write(lambda tx: tx.take_callbacks("q")) == []
    assert await store.write(lambda tx: tx.take_callbacks("p")) == [first]


async def test_take_callbacks_deletes_and_returns_only_that_promise(store: Store) -> None:
    mine = [
        callback("c", created_on=NOW - 5),
        callback("a", created_on=NOW - 5),
        callback("z", created_on=NOW - 9),
        callback("b", created_on=NOW),
    ]
    theirs = [callback("x", "p/2"), callback("y", "p*")]
    await store.write(lambda tx: [tx.insert_callback(cb) for cb in mine + theirs])

    taken = await store.write(lambda tx: tx.take_callbacks("p"))
    assert [cb.id for cb in taken] == ["z", "a", "c", "b"]  # (created_on, id)
    assert sorted(taken, key=lambda cb: cb.id) == sorted(mine, key=lambda cb: cb.id)
    assert await store.write(lambda tx: tx.take_callbacks("p")) == []
    assert await store.write(lambda tx: tx.take_callbacks("nobody")) == []
    # The same ids may be registered again once taken.
    assert await store.write(lambda tx: tx.insert_callback(mine[0])) is True
    assert await store.write(lambda tx: tx.take_callbacks("p/2")) == [theirs[0]]
    assert await store.write(lambda tx: tx.take_callbacks("p*")) == [theirs[1]]
    assert await store.write(lambda tx: tx.take_callbacks("p")) == [mine[0]]


# -- tasks: round trips ----------------------------------------------------------------------


def every_field(state: TaskState, recv: Recv = POLL) -> Task:
    return task(
        f"__resume:root/ü:leaf:{state.value}",
        state=state,
        root="root/ü",
        recv=recv,
        kind=TaskKind.RESUME,
        leaf="leaf",
        counter=7,
        attempt=3,
        process_id="proc/1" if state in (CLAIMED, COMPLETED) else None,
        ttl=30_000 if state in (CLAIMED, COMPLETED) else None,
        timeout=MAX_TIMEOUT,
        expires_at=NOW + 15_000 if state.active else None,
        ready_at=NOW + 1 if state is INIT else NOW - 1,
        created_on=NOW - 2_000,
        completed_on=NOW if state.final else None,
    )


@pytest.mark.parametrize("state", list(TaskState))
async def test_task_round_trip_in_every_state(store: Store, state: TaskState) -> None:
    t = every_field(state)
    assert await insert_tasks(store, t) == [True]
    got = await get_task(store, t.id)
    assert got == t
    assert got is not None and got.type is TaskKind.RESUME and got.state is state
    assert await get_task(store, "missing") is None


@pytest.mark.parametrize("recv", list(RECVS.values()), ids=list(RECVS))
@pytest.mark.parametrize("kind", list(TaskKind))
async def test_task_round_trip_every_recv_and_kind(
    store: Store, recv: Recv, kind: TaskKind
) -> None:
    minimal = task("min", recv=recv, kind=kind, timeout=0, created_on=0)
    full = replace(every_field(CLAIMED, recv), id="full", type=kind)
    await insert_tasks(store, minimal, full)
    assert await get_task(store, "min") == minimal
    assert await get_task(store, "full") == full


async def test_insert_task_conflict_returns_false_and_changes_nothing(store: Store) -> None:
    t = task("t", ready_at=NOW + 5)
    clash = every_field(CLAIMED, RECVS["http-headers"])
    clash = replace(clash, id="t", root_promise_id="other")
    assert await insert_tasks(store, t) == [True]
    assert await insert_tasks(store, clash, t) == [False, False]
    assert await get_task(store, "t") == t
    assert await store.read(lambda tx: tx.tasks_of_root("other", list(TaskState))) == []
    assert await store.write(lambda tx: tx.heartbeat_tasks("proc/1", NOW)) == 0


async def test_update_task_stores_every_mutable_field(store: Store) -> None:
    t = task("t", kind=TaskKind.RESUME, leaf="leaf", ready_at=NOW + 100)
    await insert_tasks(store, t, task("other"))
    steps = [
        replace(t, state=ENQUEUED, attempt=1, expires_at=NOW + 60_000, ready_at=NOW),
        replace(
            t, state=CLAIMED, counter=2, attempt=0, process_id="p", ttl=10, expires_at=NOW + 10
        ),
        replace(t, state=INIT, counter=3, process_id=None, ttl=None, expires_at=None),
        replace(t, state=COMPLETED, counter=3, process_id="p", ttl=10, completed_on=NOW),
        replace(t, state=TIMEDOUT, completed_on=NOW + 1, ready_at=0),
    ]
    for step in steps:
        await update(store, step)
        assert await get_task(store, "t") == step
        roots = await of_root(store, "root", [step.state])
        assert sorted(x.id for x in roots) == (["other", "t"] if step.state is INIT else ["t"])
    assert await get_task(store, "other") == task("other")


async def test_tasks_of_root_filters_root_and_states(store: Store) -> None:
    ts = [
        task("i1", root="r"),
        task("i2", root="r", created_on=NOW - 5_000),
        task("e", root="r", state=ENQUEUED, expires_at=NOW),
        task("c", root="r", state=CLAIMED, process_id="p", ttl=1, expires_at=NOW),
        task("done", root="r", state=COMPLETED, completed_on=NOW),
        task("tout", root="r", state=TIMEDOUT, completed_on=NOW),
        task("elsewhere", root="r/2"),
        task("elsewhere-c", root="r*", state=CLAIMED),
    ]
    await insert_tasks(store, *ts)

    async def ids(root: str, states: Sequence[TaskState]) -> list[str]:
        found = await store.read(lambda tx: tx.tasks_of_root(root, states))
        assert all(t.root_promise_id == root and t.state in states for t in found)
        return sorted(t.id for t in found)

    assert await ids("r", [INIT]) == ["i1", "i2"]
    assert await ids("r", ACTIVE) == ["c", "e"]
    assert await ids("r", (INIT, ENQUEUED, CLAIMED)) == ["c", "e", "i1", "i2"]
    assert await ids("r", [COMPLETED, TIMEDOUT]) == ["done", "tout"]
    assert await ids("r", list(TaskState)) == sorted(t.id for t in ts[:6])
    assert await ids("r", []) == []
    assert await ids("r/2", ACTIVE) == []
    assert await ids("nothing", list(TaskState)) == []
    found = await store.read(lambda tx: tx.tasks_of_root("r", [INIT]))
    assert sorted(found, key=lambda t: t.id) == [ts[0], ts[1]]


# -- dispatchable_tasks ----------------------------------------------------------------------


async def test_dispatchable_oldest_first_by_created_on_then_id(store: Store) -> None:
    await insert_tasks(
        store,
        task("b", root="r1", created_on=NOW - 10),
        task("a", root="r2", created_on=NOW - 10),
        task("z", root="r3", created_on=NOW - 20),
        task("m", root="r4", created_on=NOW),
    )
    assert await dispatchable(store) == ["z", "a", "b", "m"]
    got = await store.read(lambda tx: tx.dispatchable_tasks(NOW, 1))
    assert got == [task("z", root="r3", created_on=NOW - 20)]


async def test_dispatchable_one_per_root_the_oldest_ready(store: Store) -> None:
    await insert_tasks(
        store,
        task("r1/new", root="r1", created_on=NOW - 1),
        task("r1/b", root="r1", created_on=NOW - 50),
        task("r1/a", root="r1", created_on=NOW - 50),  # same time: the smaller id is older
        task("r2/old-not-ready", root="r2", created_on=NOW - 99, ready_at=NOW + 1),
        task("r2/old-expired", root="r2", created_on=NOW - 98, timeout=NOW),
        task("r2/ready", root="r2", created_on=NOW - 10),
        task("r2/newer", root="r2", created_on=NOW - 5),
        task("r3/only", root="r3", created_on=NOW - 30),
    )
    assert await dispatchable(store) == ["r1/a", "r3/only", "r2/ready"]
    assert await dispatchable(store, limit=2) == ["r1/a", "r3/only"]
    # Later, r2's delayed task is ready and is the oldest of its root.
    assert await dispatchable(store, now=NOW + 1) == ["r2/old-not-ready", "r1/a", "r3/only"]


@pytest.mark.parametrize("busy", [ENQUEUED, CLAIMED])
async def test_dispatchable_excludes_roots_with_an_active_task(
    store: Store, busy: TaskState
) -> None:
    active = task(
        "busy/active",
        root="busy",
        state=busy,
        created_on=NOW - 500,
        expires_at=NOW - 1,  # even with its lease passed: still ENQUEUED/CLAIMED
        process_id="p" if busy is CLAIMED else None,
        ttl=1 if busy is CLAIMED else None,
    )
    await insert_tasks(
        store,
        active,
        task("busy/init", root="busy", created_on=NOW - 100),
        task("free/init", root="free", created_on=NOW - 50),
        task("free/done", root="free", state=COMPLETED, completed_on=NOW, created_on=NOW - 90),
        task("free/tout", root="free", state=TIMEDOUT, completed_on=NOW, created_on=NOW - 80),
    )
    assert await dispatchable(store) == ["free/init"]
    await store.write(lambda tx: tx.update_task(replace(active, state=COMPLETED)))
    assert await dispatchable(store) == ["busy/init", "free/init"]


async def test_dispatchable_respects_ready_at_and_timeout(store: Store) -> None:
    await insert_tasks(
        store,
        task("ready-now", root="a", ready_at=NOW, created_on=1),
        task("ready-later", root="b", ready_at=NOW + 1, created_on=2),
        task("ready-long-ago", root="c", ready_at=0, created_on=3),
        task("timeout-now", root="d", timeout=NOW, created_on=4),
        task("timeout-next", root="e", timeout=NOW + 1, created_on=5),
        task("timeout-past", root="f", timeout=NOW - 1, created_on=6),
        task("enqueued", root="g", state=ENQUEUED, expires_at=NOW + 10, created_on=7),
        task("completed", root="h", state=COMPLETED, completed_on=NOW, created_on=8),
        task("timedout", root="i", state=TIMEDOUT, completed_on=NOW, created_on=9),
    )
    assert await dispatchable(store) == ["ready-now", "ready-long-ago", "timeout-next"]
    assert await dispatchable(store, now=NOW + 1) == ["ready-now", "ready-later", "ready-long-ago"]
    assert await dispatchable(store, now=NOW - 1) == [
        "ready-long-ago",
        "timeout-now",
        "timeout-next",
    ]
    assert await dispatchable(store, now=NOW + 60_000) == []


@pytest.mark.parametrize("limit", [0, 1, 3, 5, 6, 100])
async def test_dispatchable_limit(store: Store, limit: int) -> None:
    ts = [task(f"t{i}", root=f"r{i % 5}", created_on=NOW - 100 + i) for i in range(20)]
    await insert_tasks(store, *ts)
    assert await dispatchable(store, limit=limit) == [f"t{i}" for i in range(5)][:limit]


async def test_dispatchable_empty(store: Store) -> None:
    assert await dispatchable(store) == []


# -- overdue_tasks ---------------------------------------------------------------------------


async def test_overdue_tasks_both_conditions(store: Store) -> None:
    await insert_tasks(
        store,
        task("enq-expired", state=ENQUEUED, expires_at=NOW - 1, created_on=10),
        task("enq-at-now", state=ENQUEUED, expires_at=NOW, created_on=11),
        task("enq-live", state=ENQUEUED, expires_at=NOW + 1, created_on=12),
        task("clm-expired", state=CLAIMED, expires_at=NOW, process_id="p", ttl=1, created_on=13),
        task("clm-live", state=CLAIMED, expires_at=NOW + 1, process_id="p", created_on=14),
        task("enq-no-expiry", state=ENQUEUED, created_on=15),
        task("init-expires-at", expires_at=NOW - 1, created_on=16),  # INIT: no lease
        task("init-timeout", timeout=NOW, created_on=17),
        task("init-live", timeout=NOW + 1, created_on=18),
        task("clm-timeout", state=CLAIMED, timeout=NOW - 5, expires_at=NOW + 9, created_on=19),
        task("enq-both", state=ENQUEUED, timeout=NOW, expires_at=NOW, created_on=20),
        task("done", state=COMPLETED, timeout=NOW - 1, expires_at=NOW - 1, created_on=21),
        task("tout", state=TIMEDOUT, timeout=NOW - 1, expires_at=NOW - 1, created_on=22),
    )
    expected = [
        "enq-expired",
        "enq-at-now",
        "clm-expired",
        "init-timeout",
        "clm-timeout",
        "enq-both",
    ]
    assert await overdue(store) == expected
    assert await overdue(store, limit=4) == expected[:4]
    assert await overdue(store, limit=0) == []
    assert await overdue(store, now=NOW - 2) == ["clm-timeout"]
    assert await overdue(store, now=NOW + 1) == [
        "enq-expired",
        "enq-at-now",
        "enq-live",
        "clm-expired",
        "clm-live",
        "init-timeout",
        "init-live",
        "clm-timeout",
        "enq-both",
    ]
    got = await store.read(lambda tx: tx.overdue_tasks(NOW, 1))
    assert got == [task("enq-expired", state=ENQUEUED, expires_at=NOW - 1, created_on=10)]


async def test_overdue_tasks_order_and_empty(store: Store) -> None:
    assert await overdue(store) == []
    await insert_tasks(
        store,
        task("b", timeout=NOW, created_on=5),
        task("a", state=CLAIMED, expires_at=NOW, created_on=5),
        task("c", state=ENQUEUED, expires_at=NOW - 100, created_on=9),
        task("d", timeout=NOW - 100, created_on=1),
    )
    assert await overdue(store) == ["d", "a", "b", "c"]


# -- next_task_time --------------------------------------------------------------------------


async def test_next_task_time_none_without_unfinished_tasks(store: Store) -> None:
    assert await next_time(store) is None
    await insert_tasks(
        store,
        task("done", state=COMPLETED, timeout=NOW - 9, ready_at=1, expires_at=2, completed_on=3),
        task("tout", state=TIMEDOUT, timeout=NOW - 9, ready_at=1, expires_at=2, completed_on=3),
    )
    assert await next_time(store) is None


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        # INIT: ready_at (its expires_at, if any, is no deadline)
        ([task("t", ready_at=NOW + 5, expires_at=NOW + 1)], NOW + 5),
        ([task("t", ready_at=0)], 0),
        ([task("t", ready_at=NOW + 10**9, timeout=NOW + 7)], NOW + 7),
        # ENQUEUED / CLAIMED: expires_at (their ready_at is no deadline)
        ([task("t", state=ENQUEUED, expires_at=NOW + 3, ready_at=1)], NOW + 3),
        ([task("t", state=CLAIMED, expires_at=NOW + 4, ready_at=1)], NOW + 4),
        ([task("t", state=ENQUEUED, expires_at=None, timeout=NOW + 8)], NOW + 8),
        ([task("t", state=CLAIMED, expires_at=NOW + 10**9, timeout=NOW + 6)], NOW + 6),
        (
            [
                task("a", state=ENQUEUED, expires_at=None, timeout=NOW + 50),
                task("b", state=CLAIMED, expires_at=NOW + 5, timeout=NOW + 60),
                task("c", ready_at=NOW + 9, timeout=NOW + 70),
            ],
            NOW + 5,
        ),
        # the minimum over all three kinds
        (
            [
                task("a", ready_at=NOW + 30),
                task("b", state=ENQUEUED, expires_at=NOW + 20),
                task("c", state=CLAIMED, expires_at=NOW + 40, timeout=NOW + 10),
                task("d", state=COMPLETED, timeout=NOW, completed_on=NOW),
            ],
            NOW + 10,
        ),
        (
            [
                task("a", ready_at=NOW + 30),
                task("b", state=ENQUEUED, expires_at=NOW + 20),
                task("c", state=TIMEDOUT, ready_at=0, expires_at=0, timeout=0),
            ],
            NOW + 20,
        ),
    ],
)
async def test_next_task_time(store: Store, tasks: list[Task], expected: int) -> None:
    await insert_tasks(store, *tasks)
    assert await next_time(store) == expected


async def test_next_task_time_follows_updates(store: Store) -> None:
    t = task("t", ready_at=NOW + 100, timeout=NOW + 1_000)
    await insert_tasks(store, t)
    assert await next_time(store) == NOW + 100
    claimed = replace(t, state=CLAIMED, process_id="p", ttl=50, expires_at=NOW + 50)
    await store.write(lambda tx: tx.update_task(claimed))
    assert await next_time(store) == NOW + 50
    await store.write(lambda tx: tx.update_task(replace(claimed, state=COMPLETED)))
    assert await next_time(store) is None


# -- ready_tasks_for / heartbeat_tasks -------------------------------------------------------


async def test_ready_tasks_for_only_future_init_tasks_of_that_recv(store: Store) -> None:
    any_w1 = Recv(type="poll", group="g", id="w1")
    uni_w2 = Recv(type="poll", group="g", id="w2", mode="uni")
    bare = Recv(type="poll", group="g")
    other = Recv(type="poll", group="g2")
    hook = RECVS["http-headers"]
    ts = [
        task("later-1", recv=any_w1, ready_at=NOW + 1),
        task("later-2", recv=uni_w2, ready_at=MAX_TIMEOUT),
        task("later-3", recv=bare, ready_at=NOW + 10**6),
        task("already", recv=bare, ready_at=NOW - 5),
        task("at-now", recv=bare, ready_at=NOW),
        task("other-group", recv=other, ready_at=NOW + 1),
        task("http", recv=hook, ready_at=NOW + 1),
        task("enqueued", recv=bare, state=ENQUEUED, ready_at=NOW + 1, expires_at=NOW + 9),
        task("claimed", recv=bare, state=CLAIMED, ready_at=NOW + 1, expires_at=NOW + 9),
        task("done", recv=bare, state=COMPLETED, ready_at=NOW + 1, completed_on=NOW),
    ]
    await insert_tasks(store, *ts)
    assert bare.key == any_w1.key == uni_w2.key == "poll:g"

    assert await store.write(lambda tx: tx.ready_tasks_for("poll:g", NOW)) == 3
    by_id = {t.id: t for t in ts}
    for t in ts:
        got = await get_task(store, t.id)
        if t.id.startswith("later-"):
            assert got == replace(t, ready_at=NOW)
        else:
            assert got == by_id[t.id]
    assert await store.write(lambda tx: tx.ready_tasks_for("poll:g", NOW)) == 0
    assert await store.write(lambda tx: tx.ready_tasks_for("poll:nobody", NOW)) == 0
    assert await store.write(lambda tx: tx.ready_tasks_for(hook.key, NOW)) == 1
    assert await get_task(store, "http") == replace(by_id["http"], ready_at=NOW)
    assert await dispatchable(store) == []  # all of root "root": one at a time
    ids = [t.id for t in await store.read(lambda tx: tx.tasks_of_root("root", [INIT]))]
    assert sorted(ids) == sorted(t.id for t in ts if t.state is INIT)


async def test_heartbeat_tasks_only_live_claimed_tasks_of_that_process(store: Store) -> None:
    ts = [
        task("c1", state=CLAIMED, process_id="p", ttl=1_000, expires_at=NOW + 1),
        task("c2", state=CLAIMED, process_id="p", ttl=30_000, expires_at=NOW + 5),
        task("lost", state=CLAIMED, process_id="p", ttl=1_000, expires_at=NOW),  # ran out
        task("other", state=CLAIMED, process_id="q", ttl=1_000, expires_at=NOW + 1),
        task("enq", state=ENQUEUED, process_id="p", ttl=1_000, expires_at=NOW + 1),
        task("init", process_id="p", ttl=1_000),
        task("done", state=COMPLETED, process_id="p", ttl=1_000, expires_at=NOW, completed_on=1),
    ]
    await insert_tasks(store, *ts)
    assert await store.write(lambda tx: tx.heartbeat_tasks("p", NOW)) == 2
    assert await get_task(store, "c1") == replace(ts[0], expires_at=NOW + 1_000)
    assert await get_task(store, "c2") == replace(ts[1], expires_at=NOW + 30_000)
    for t in ts[2:]:  # a lost lease is not revived; other processes and states untouched
        assert await get_task(store, t.id) == t
    assert await store.write(lambda tx: tx.heartbeat_tasks("nobody", NOW)) == 0
    assert await store.write(lambda tx: tx.heartbeat_tasks("q", NOW)) == 1
    assert await get_task(store, "other") == replace(ts[3], expires_at=NOW + 1_000)


# -- locks -----------------------------------------------------------------------------------


async def test_lock_round_trip_upsert_delete(store: Store) -> None:
    assert await store.read(lambda tx: tx.get_lock("res")) is None
    first = lock("res/ü:1")
    await store.write(lambda tx: tx.put_lock(first))
    assert await store.read(lambda tx: tx.get_lock("res/ü:1")) == first
    taken_over = Lock(
        resource_id="res/ü:1", execution_id="e2", process_id="p2", ttl=9, expires_at=NOW + 9
    )
    await store.write(lambda tx: tx.put_lock(taken_over))
    assert await store.read(lambda tx: tx.get_lock("res/ü:1")) == taken_over
    await store.write(lambda tx: tx.put_lock(lock("res2")))
    await store.write(lambda tx: tx.delete_lock("res/ü:1"))
    assert await store.read(lambda tx: tx.get_lock("res/ü:1")) is None
    await store.write(lambda tx: tx.delete_lock("res/ü:1"))  # absent: no error
    await store.write(lambda tx: tx.delete_lock("never"))
    assert await store.read(lambda tx: tx.get_lock("res2")) == lock("res2")
    await store.write(lambda tx: tx.put_lock(first))  # re-acquired after release
    assert await store.read(lambda tx: tx.get_lock("res/ü:1")) == first


async def test_heartbeat_locks_only_that_process(store: Store) -> None:
    locks = [
        lock("a", process="p", ttl=1_000),
        lock("b", process="p", ttl=60_000, execution="e2"),
        lock("c", process="q", ttl=1_000),
    ]
    await put_locks(store, *locks)
    later = NOW + 5_000
    assert await store.write(lambda tx: tx.heartbeat_locks("p", later)) == 2
    got = await store.read(lambda tx: [tx.get_lock(r) for r in "abc"])
    assert got == [
        msgspec.structs.replace(locks[0], expires_at=later + 1_000),
        msgspec.structs.replace(locks[1], expires_at=later + 60_000),
        locks[2],
    ]
    assert await store.write(lambda tx: tx.heartbeat_locks("nobody", later)) == 0


# -- the queries against a reference model of the docstrings ---------------------------------


def _ref_dispatchable(tasks: Iterable[Task], now: int, limit: int) -> list[str]:
    tasks = list(tasks)
    busy = {t.root_promise_id for t in tasks if t.state in ACTIVE}
    ready = [t for t in tasks if t.state is INIT and t.ready_at <= now < t.timeout]
    oldest: dict[str, Task] = {}
    for t in sorted(ready, key=lambda t: (t.created_on, t.id)):
        if t.root_promise_id not in busy:
            oldest.setdefault(t.root_promise_id, t)
    out = sorted(oldest.values(), key=lambda t: (t.created_on, t.id))
    return [t.id for t in out[:limit]]


def _ref_overdue(tasks: Iterable[Task], now: int, limit: int) -> list[str]:
    out = [
        t
        for t in tasks
        if (t.state in ACTIVE and t.expires_at is not None and t.expires_at <= now)
        or (t.state not in (COMPLETED, TIMEDOUT) and t.timeout <= now)
    ]
    out.sort(key=lambda t: (t.created_on, t.id))
    return [t.id for t in out[:limit]]


def _ref_next(tasks: Iterable[Task]) -> int | None:
    times = [t.ready_at for t in tasks if t.state is INIT]
    times += [t.expires_at for t in tasks if t.state in ACTIVE and t.expires_at is not None]
    times += [t.timeout for t in tasks if t.state not in (COMPLETED, TIMEDOUT)]
    return min(times) if times else None


def _random_tasks(rng: random.Random, n: int) -> list[Task]:
    out = []
    for i in range(n):
        state = rng.choice([INIT, INIT, INIT, ENQUEUED, CLAIMED, COMPLETED, TIMEDOUT])
        out.append(
            task(
                f"t{rng.randrange(10**6)}-{i}",
                state=state,
                root=f"r{rng.randrange(n // 4 + 1)}",
                timeout=NOW + rng.randrange(-20, 40),
                ready_at=NOW + rng.randrange(-20, 20),
                expires_at=rng.choice([None, NOW + rng.randrange(-20, 20)]),
                created_on=NOW - rng.randrange(8),  # many ties: the id decides
            )
        )
    return out


@pytest.mark.parametrize("seed", range(4))
async def test_queries_match_the_documented_semantics(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    tasks = _random_tasks(rng, 300)
    await insert_tasks(store, *tasks)
    for now in (NOW - 25, NOW - 3, NOW, NOW + 7, NOW + 50):
        for limit in (1, 7, 1_000):
            assert await dispatchable(store, now, limit) == _ref_dispatchable(tasks, now, limit)
            assert await overdue(store, now, limit) == _ref_overdue(tasks, now, limit)
    assert await next_time(store) == _ref_next(tasks)


# -- transactions ----------------------------------------------------------------------------


class Boom(Exception):
    pass


async def test_failing_op_leaves_no_task_callback_or_lock_behind(store: Store) -> None:
    existing = task("existing", ready_at=NOW + 50)
    kept_cb = callback("kept", "p")
    held = lock("held", process="p")
    await insert_tasks(store, existing)
    await store.write(lambda tx: tx.insert_callback(kept_cb))
    await put_locks(store, held)

    def bad(i: int) -> Callable[[Tx], None]:
        def op(tx: Tx) -> None:
            assert tx.insert_task(task(f"bad/{i}", root=f"bad/{i}"))
            assert tx.insert_callback(callback(f"bad/{i}", "p"))
            assert tx.insert_callback(callback(f"bad/{i}/q", f"q/{i}"))
            tx.put_lock(lock(f"bad/{i}"))
            tx.put_lock(lock("held", execution=f"bad/{i}"))
            tx.update_task(replace(existing, state=CLAIMED, counter=9, process_id="p", ttl=5))
            tx.ready_tasks_for(POLL.key, NOW)
            tx.heartbeat_tasks("p", NOW)
            tx.heartbeat_locks("p", NOW + 10**6)
            raise Boom(f"boom {i}")

        return op

    def good(i: int) -> Callable[[Tx], str]:
        def op(tx: Tx) -> str:
            tx.insert_task(task(f"good/{i}", root=f"good/{i}"))
            tx.insert_callback(callback(f"good/{i}", f"g/{i}"))
            tx.put_lock(lock(f"good/{i}"))
            return f"ok/{i}"

        return op

    n = 10
    ops: list[Callable[[Tx], object]] = [op for i in range(n) for op in (good(i), bad(i))]
    results = await asyncio.gather(*(store.write(op) for op in ops), return_exceptions=True)
    for i in range(n):
        assert results[2 * i] == f"ok/{i}"
        err = results[2 * i + 1]
        assert isinstance(err, Boom) and str(err) == f"boom {i}"

    assert await get_task(store, "existing") == existing
    assert await store.read(lambda tx: tx.get_lock("held")) == held
    for i in range(n):
        assert await get_task(store, f"bad/{i}") is None
        assert await get_lock(store, f"bad/{i}") is None
        assert await take(store, f"q/{i}") == []
        assert await get_task(store, f"good/{i}") == task(f"good/{i}", root=f"good/{i}")
        assert await get_lock(store, f"good/{i}") == lock(f"good/{i}")
        assert await take(store, f"g/{i}") == [callback(f"good/{i}", f"g/{i}")]
    assert await store.write(lambda tx: tx.take_callbacks("p")) == [kept_cb]


async def test_failing_op_restores_taken_callbacks_and_deleted_lock(store: Store) -> None:
    cbs = [callback("a", "p"), callback("b", "p", created_on=NOW)]
    await store.write(lambda tx: [tx.insert_callback(cb) for cb in cbs])
    await store.write(lambda tx: tx.put_lock(lock("l")))

    def op(tx: Tx) -> None:
        assert tx.take_callbacks("p") == cbs
        tx.delete_lock("l")
        raise Boom("no")

    with pytest.raises(Boom):
        await store.write(op)
    assert await store.read(lambda tx: tx.get_lock("l")) == lock("l")
    assert await store.write(lambda tx: tx.take_callbacks("p")) == cbs


# -- durability ------------------------------------------------------------------------------


async def test_tasks_callbacks_and_locks_survive_close_and_reopen(
    make_durable_store: StoreFactory,
) -> None:
    tasks = [every_field(s, r) for s in TaskState for r in list(RECVS.values())[:1]]
    tasks += [replace(every_field(CLAIMED, r), id=f"claimed/{k}") for k, r in RECVS.items()]
    cbs = [callback(f"cb/{k}", "p", recv=r) for k, r in RECVS.items()]
    first = make_durable_store()
    await first.open()
    await asyncio.gather(*(insert_tasks(first, t) for t in tasks))
    await first.write(lambda tx: [tx.insert_callback(cb) for cb in cbs])
    await first.write(lambda tx: tx.put_lock(lock("res")))
    updated = replace(tasks[0], state=ENQUEUED, counter=8, expires_at=NOW + 1)
    await first.write(lambda tx: tx.update_task(updated))
    await first.close()

    second = make_durable_store()
    await second.open()
    try:
        assert await get_task(second, tasks[0].id) == updated
        for t in tasks[1:]:
            assert await get_task(second, t.id) == t
        assert await second.read(lambda tx: tx.get_lock("res")) == lock("res")
        taken = await second.write(lambda tx: tx.take_callbacks("p"))
        assert taken == sorted(cbs, key=lambda cb: cb.id)
        assert await second.write(lambda tx: tx.insert_task(tasks[1])) is False
    finally:
        await second.close()


# -- SQLite: every hot query is answered from an index ---------------------------------------


def _plans(path: Path) -> dict[str, list[str]]:
    m = sqlite_store
    queries: dict[str, tuple[str, Any]] = {
        "get_task": (m._SELECT_TASK, ("x",)),
        "update_task": (m._UPDATE_TASK, tuple(range(9))),
        "take_callbacks": (m._TAKE_CALLBACKS, ("p",)),
        "dispatchable_tasks": (m._DISPATCHABLE, {"now": NOW, "limit": 10}),
        "overdue_tasks": (m._OVERDUE, {"now": NOW, "limit": 10}),
        "next_task_time": (m._NEXT_TASK_TIME, ()),
        "ready_tasks_for": (m._READY_TASKS_FOR, {"now": NOW, "key": "poll:g"}),
        "heartbeat_tasks": (m._HEARTBEAT_TASKS, {"now": NOW, "process": "p"}),
    }
    conn = sqlite3.connect(path)
    try:
        return {
            name: [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
            for name, (sql, args) in queries.items()
        }
    finally:
        conn.close()


async def test_sqlite_task_queries_use_indexes(tmp_path: Path) -> None:
    store = sqlite_store.SqliteStore(f"sqlite:///{tmp_path}/plans.db")
    await store.open()
    try:
        await insert_tasks(store, *_random_tasks(random.Random(0), 200))
        await store.write(lambda tx: tx.insert_callback(callback("c")))
    finally:
        await store.close()
    for name, plan in _plans(tmp_path / "plans.db").items():
        for step in plan:
            table_scan = step.startswith("SCAN") and "USING" not in step and "CONSTANT" not in step
            assert not table_scan, (name, plan)
        assert any(("USING" in step and "INDEX" in step) for step in plan), (name, plan)
