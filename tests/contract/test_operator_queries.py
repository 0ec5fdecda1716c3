"""The operator queries of ``Tx`` (metrics and dashboard), on every backend:
``count_pending_promises``, ``count_tasks_by_state``, ``active_tasks`` and ``callbacks_of``."""

from __future__ import annotations

from tests.contract.test_task_store_contract import NOW, POLL, task
from troth.model import Callback, Promise, State, TaskState
from troth.store.base import Store


def promise(id: str, state: State = State.PENDING, timeout: int = NOW + 60_000) -> Promise:
    done = None if state is State.PENDING else NOW
    return Promise(id=id, state=state, timeout=timeout, created_on=NOW - 10, completed_on=done)


async def test_count_pending_promises(store: Store) -> None:
    assert await store.read(lambda tx: tx.count_pending_promises()) == 0

    def fill(tx):
        tx.insert_promise(promise("a"))
        tx.insert_promise(promise("b", timeout=NOW - 1))  # due, still stored as pending
        tx.insert_promise(promise("c", State.RESOLVED))
        tx.insert_promise(promise("d", State.REJECTED_TIMEDOUT))

    await store.write(fill)
    assert await store.read(lambda tx: tx.count_pending_promises()) == 2

    def resolve(tx):
        p = tx.get_promise("a")
        tx.update_promise(
            Promise(
                id=p.id,
                state=State.RESOLVED,
                timeout=p.timeout,
                created_on=p.created_on,
                completed_on=NOW,
            )
        )

    await store.write(resolve)
    assert await store.read(lambda tx: tx.count_pending_promises()) == 1


async def test_tasks_by_state_and_active_tasks(store: Store) -> None:
    assert await store.read(lambda tx: tx.count_tasks_by_state()) == {}
    tasks = [
        task("t-init-1", root="r1", timeout=NOW + 5_000),
        task("t-init-2", root="r2", timeout=NOW + 1_000),
        task("t-enq", state=TaskState.ENQUEUED, root="r3", expires_at=NOW + 10, timeout=NOW + 3),
        task(
            "t-claimed",
            state=TaskState.CLAIMED,
            root="r4",
            process_id="w1",
            ttl=1000,
            expires_at=NOW + 1000,
            timeout=NOW + 2_000,
        ),
        task("t-done", state=TaskState.COMPLETED, root="r5", completed_on=NOW),
        task("t-late", state=TaskState.TIMEDOUT, root="r6", completed_on=NOW),
    ]

    def fill(tx):
        for t in tasks:
            assert tx.insert_task(t)

    await store.write(fill)
    counts = await store.read(lambda tx: tx.count_tasks_by_state())
    assert {k: v for k, v in counts.items() if v} == {"INIT": 2, "ENQUEUED": 1, "CLAIMED": 1}

    active = await store.read(lambda tx: tx.active_tasks(10))
    assert [t.id for t in active] == ["t-enq", "t-init-2", "t-claimed", "t-init-1"]
    claimed = next(t for t in active if t.id == "t-claimed")
    assert (claimed.process_id, claimed.expires_at) == ("w1", NOW + 1000)
    assert [t.id for t in await store.read(lambda tx: tx.active_tasks(2))] == ["t-enq", "t-init-2"]


async def test_callbacks_of_lists_without_taking(store: Store) -> None:
    cbs = [
        Callback(id="cb2", promise_id="p", root_promise_id="root", recv=POLL, timeout=NOW,
                 created_on=NOW + 1),
        Callback(id="cb1", promise_id="p", root_promise_id="root", recv=POLL, timeout=NOW,
                 created_on=NOW + 1),
        Callback(id="cb0", promise_id="p", recv=POLL, timeout=NOW, created_on=NOW),
        Callback(id="other", promise_id="q", recv=POLL, timeout=NOW, created_on=NOW),
    ]  # fmt: skip

    def fill(tx):
        tx.insert_promise(promise("p"))
        tx.insert_promise(promise("q"))
        for cb in cbs:
            assert tx.insert_callback(cb)

    await store.write(fill)
    listed = await store.read(lambda tx: tx.callbacks_of("p"))
    assert [cb.id for cb in listed] == ["cb0", "cb1", "cb2"]
    assert listed[1] == cbs[1]
    assert await store.read(lambda tx: tx.callbacks_of("nope")) == []
    # Listing does not take: the callbacks are still there to take.
    taken = await store.write(lambda tx: tx.take_callbacks("p"))
    assert len(taken) == 3
