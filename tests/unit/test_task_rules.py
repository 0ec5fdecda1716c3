"""The task state machine (troth.task_rules): every decision for every state."""

from __future__ import annotations

import pytest

from troth import task_rules as r
from troth.model import Recv, Task, TaskKind, TaskState

NOW = 1_000_000


def task(state: TaskState, counter: int = 3, **kw: object) -> Task:
    base: dict[str, object] = {
        "id": "t",
        "type": TaskKind.INVOKE,
        "state": state,
        "recv": Recv(type="poll", group="g"),
        "root_promise_id": "root",
        "counter": counter,
        "timeout": NOW + 10_000,
        "created_on": NOW - 1,
    }
    if state is TaskState.CLAIMED:
        base.update(process_id="p", ttl=100, expires_at=NOW + 100)
    if state is TaskState.ENQUEUED:
        base.update(expires_at=NOW + 100)
    base.update(kw)
    return Task(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("state", [TaskState.INIT, TaskState.ENQUEUED])
def test_claim_sendable(state: TaskState) -> None:
    d = r.decide_claim(task(state), 3, "w", 500, NOW)
    assert d.status == 201
    assert d.write is not None
    assert d.write.state is TaskState.CLAIMED
    assert (d.write.process_id, d.write.ttl, d.write.expires_at) == ("w", 500, NOW + 500)
    assert d.write.counter == 3


@pytest.mark.parametrize(
    ("state", "counter", "code"),
    [
        (TaskState.CLAIMED, 3, r.CLAIMED),
        (TaskState.INIT, 2, r.BAD_COUNTER),
        (TaskState.ENQUEUED, 4, r.BAD_COUNTER),
        (TaskState.COMPLETED, 3, r.COMPLETED),
        (TaskState.TIMEDOUT, 3, r.COMPLETED),
    ],
)
def test_claim_refused(state: TaskState, counter: int, code: int) -> None:
    d = r.decide_claim(task(state), counter, "w", 500, NOW)
    assert (d.status, d.code, d.write) == (403, code, None)


def test_claim_after_timeout_times_the_task_out() -> None:
    d = r.decide_claim(task(TaskState.ENQUEUED, timeout=NOW), 3, "w", 500, NOW)
    assert (d.status, d.code) == (403, r.COMPLETED)
    assert d.write is not None and d.write.state is TaskState.TIMEDOUT


def test_not_found() -> None:
    for d in (
        r.decide_claim(None, 1, "w", 1, NOW),
        r.decide_complete(None, 1, NOW),
        r.decide_drop(None, 1, NOW),
    ):
        assert (d.status, d.code) == (404, r.TASK_NOT_FOUND)


def test_complete() -> None:
    d = r.decide_complete(task(TaskState.CLAIMED), 3, NOW)
    assert d.status == 201
    assert d.write is not None
    assert (d.write.state, d.write.completed_on, d.write.expires_at) == (
        TaskState.COMPLETED,
        NOW,
        None,
    )
    for state in (TaskState.COMPLETED, TaskState.TIMEDOUT):
        assert r.decide_complete(task(state), 99, NOW).status == 200
    assert r.decide_complete(task(TaskState.CLAIMED), 2, NOW).code == r.BAD_COUNTER
    for state in (TaskState.INIT, TaskState.ENQUEUED):
        assert r.decide_complete(task(state), 3, NOW).code == r.BAD_STATE


@pytest.mark.parametrize("decide", [r.decide_complete, r.decide_drop])
def test_complete_or_drop_after_timeout_is_timedout(decide: object) -> None:
    d = decide(task(TaskState.CLAIMED, timeout=NOW), 3, NOW)  # type: ignore[operator]
    assert d.status == 200
    assert d.write is not None and d.write.state is TaskState.TIMEDOUT


def test_drop() -> None:
    d = r.decide_drop(task(TaskState.CLAIMED), 3, NOW)
    assert d.status == 201
    assert d.write is not None
    assert (d.write.state, d.write.counter, d.write.process_id, d.write.ready_at) == (
        TaskState.INIT,
        4,
        None,
        NOW,
    )
    assert r.decide_drop(task(TaskState.CLAIMED), 2, NOW).code == r.BAD_COUNTER
    for state in (TaskState.INIT, TaskState.ENQUEUED, TaskState.COMPLETED):
        d = r.decide_drop(task(state), 3, NOW)
        assert (d.status, d.write) == (200, None)


def test_overdue() -> None:
    lease_over = task(TaskState.CLAIMED, expires_at=NOW)
    moved = r.overdue(lease_over, NOW)
    assert moved is not None
    assert (moved.state, moved.counter, moved.process_id) == (TaskState.INIT, 4, None)
    assert r.overdue(task(TaskState.CLAIMED), NOW) is None  # lease still running
    sent = r.overdue(task(TaskState.ENQUEUED, expires_at=NOW - 1), NOW)
    assert sent is not None and sent.state is TaskState.INIT and sent.counter == 4
    late = r.overdue(task(TaskState.CLAIMED, timeout=NOW, expires_at=NOW), NOW)
    assert late is not None and late.state is TaskState.TIMEDOUT  # timeout wins over reclaim
    assert r.overdue(task(TaskState.COMPLETED, timeout=NOW), NOW) is None


def test_fence() -> None:
    assert r.fence_holds(task(TaskState.CLAIMED), 3, NOW)
    assert not r.fence_holds(task(TaskState.CLAIMED), 2, NOW)
    assert not r.fence_holds(task(TaskState.CLAIMED, expires_at=NOW), 3, NOW)  # lease over
    for state in (TaskState.INIT, TaskState.ENQUEUED, TaskState.COMPLETED):
        assert not r.fence_holds(task(state), 3, NOW)
    assert not r.fence_holds(None, 3, NOW)


def test_completes_with_root() -> None:
    assert r.completes_with_root(task(TaskState.CLAIMED))
    assert r.completes_with_root(task(TaskState.INIT, type=TaskKind.RESUME))
    assert not r.completes_with_root(task(TaskState.INIT, type=TaskKind.NOTIFY))
    assert not r.completes_with_root(task(TaskState.COMPLETED))


def test_fence_refused_past_the_task_timeout() -> None:
    assert not r.fence_holds(task(TaskState.CLAIMED, timeout=NOW, expires_at=NOW + 50), 3, NOW)


@pytest.mark.parametrize("decide", [r.decide_complete, r.decide_drop])
def test_complete_or_drop_after_the_lease_ran_out(decide: object) -> None:
    d = decide(task(TaskState.CLAIMED, expires_at=NOW), 3, NOW)  # type: ignore[operator]
    assert (d.status, d.code) == (403, r.BAD_COUNTER)
    assert d.write is not None
    assert (d.write.state, d.write.counter, d.write.process_id) == (TaskState.INIT, 4, None)
