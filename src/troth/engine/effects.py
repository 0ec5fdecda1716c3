"""What else happens, in the same transaction, when a promise is created or completed.

- A promise created with tag ``resonate:invoke = <recv>`` gets an invoke task
  ``__invoke:<id>``, ready at the time in ``resonate:delay`` (ms) if present.
- A promise that completes — resolved, rejected, canceled, or timed out by anyone including
  the sweeper — turns each of its callbacks into a task (resume or notify) and deletes them,
  and completes the unfinished invoke/resume tasks whose root it is.

These run inside store operations (synchronous functions of a ``Tx``), so the promise change
and its tasks commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from troth import task_rules
from troth.errors import ValidationError
from troth.model import Promise, Recv, Task, TaskKind, TaskState
from troth.recv import parse_recv
from troth.store.base import Tx

INVOKE_TAG: Final = "resonate:invoke"
DELAY_TAG: Final = "resonate:delay"
_UNFINISHED: Final = (TaskState.INIT, TaskState.ENQUEUED, TaskState.CLAIMED)


def invoke_of(tags: dict[str, str] | None, receivers: Mapping[str, Any]) -> tuple[Recv, int] | None:
    """The receiver and ready time an invoke tag asks for, validated (400 if malformed)."""
    if not tags or INVOKE_TAG not in tags:
        return None
    recv = parse_recv(tags[INVOKE_TAG], f'$.tags["{INVOKE_TAG}"]', receivers)
    delay = tags.get(DELAY_TAG)
    if delay is None:
        return recv, 0
    try:
        ready_at = int(delay)
    except ValueError:
        raise ValidationError(
            f"{DELAY_TAG} must be a time in epoch milliseconds, got {delay!r}"
            f' - at $.tags["{DELAY_TAG}"]',
            details=[{"field": f'$.tags["{DELAY_TAG}"]'}],
        ) from None
    return recv, ready_at


def invoke_task_id(promise_id: str) -> str:
    return f"__invoke:{promise_id}"


def invoke_task(promise: Promise, recv: Recv, ready_at: int, now: int) -> Task:
    return Task(
        id=invoke_task_id(promise.id),
        type=TaskKind.INVOKE,
        state=TaskState.INIT,
        recv=recv,
        root_promise_id=promise.id,
        timeout=promise.timeout,
        ready_at=max(ready_at, 0),
        created_on=now,
    )


def on_completed(tx: Tx, promises: Iterable[Promise], now: int) -> list[Task]:
    """Fire callbacks and finish root tasks of promises that have just completed.

    Returns the tasks created (for the dispatcher to send).
    """
    created: list[Task] = []
    for p in promises:
        for cb in tx.take_callbacks(p.id):
            if cb.kind is TaskKind.RESUME:
                root = tx.get_promise(cb.root_promise_id) if cb.root_promise_id else None
                if root is not None and root.state.completed:
                    continue  # nothing left to resume
                task = Task(
                    id=cb.id,
                    type=TaskKind.RESUME,
                    state=TaskState.INIT,
                    recv=cb.recv,
                    root_promise_id=cb.root_promise_id or p.id,
                    leaf_promise_id=p.id,
                    timeout=cb.timeout,
                    ready_at=now,
                    created_on=now,
                )
            else:
                task = Task(
                    id=cb.id,
                    type=TaskKind.NOTIFY,
                    state=TaskState.INIT,
                    recv=cb.recv,
                    root_promise_id=p.id,
                    leaf_promise_id=p.id,
                    timeout=cb.timeout,
                    ready_at=now,
                    created_on=now,
                )
            if tx.insert_task(task):
                created.append(task)
        for t in tx.tasks_of_root(p.id, _UNFINISHED):
            if task_rules.completes_with_root(t):
                tx.update_task(
                    msgspec.structs.replace(
                        t, state=TaskState.COMPLETED, expires_at=None, completed_on=now
                    )
                )
    return created
