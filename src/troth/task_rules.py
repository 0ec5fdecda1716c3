"""The task state machine as pure functions (API.md 3).

```
              dispatch (sent)              claim (counter matches)
    INIT ───────────────────────> ENQUEUED ───────────────────────> CLAIMED ──complete──> COMPLETED
     ^  ^                            │                                │  │
     │  └── lease/claim time passed ─┴────────────────────────────────┘  │ drop
     │      (counter + 1, re-dispatched)                                 │ (counter + 1)
     └───────────────────────────────────────────────────────────────────┘
    any unfinished state ── now >= task.timeout ──> TIMEDOUT
    root promise completed ──> its INIT/ENQUEUED/CLAIMED invoke and resume tasks: COMPLETED
```

Each function maps (task, request, now) to a ``TaskDecision`` — the status to answer, the
task to store (or ``None``) and the error code — exactly like ``troth.rules`` does for
promises. The ``counter`` is the fencing token: every hand-over of a task to a new holder
increments it, so a worker that lost its lease cannot act on the task any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec

from troth.model import Task, TaskKind, TaskState

TASK_NOT_FOUND: Final = 40403
CLAIMED: Final = 40306
COMPLETED: Final = 40307
BAD_COUNTER: Final = 40308
BAD_STATE: Final = 40309


@dataclass(frozen=True, slots=True)
class TaskDecision:
    status: int
    task: Task | None
    write: Task | None = None
    code: int = 0
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status < 400


def _not_found() -> TaskDecision:
    return TaskDecision(404, None, code=TASK_NOT_FOUND, reason="task not found")


def timed_out(task: Task, now: int) -> Task | None:
    """The TIMEDOUT form of an unfinished task past its timeout, else ``None``."""
    if task.state.final or now < task.timeout:
        return None
    return msgspec.structs.replace(
        task, state=TaskState.TIMEDOUT, expires_at=None, completed_on=now
    )


def reclaimable(task: Task, now: int) -> Task | None:
    """A sent or claimed task whose claim time or lease passed goes back to INIT, counter+1."""
    if not task.state.active or task.expires_at is None or now < task.expires_at:
        return None
    return msgspec.structs.replace(
        task,
        state=TaskState.INIT,
        counter=task.counter + 1,
        attempt=0,
        process_id=None,
        ttl=None,
        expires_at=None,
        ready_at=now,
    )


def overdue(task: Task, now: int) -> Task | None:
    """What the background loop does to a task that is due: time out, else reclaim."""
    return timed_out(task, now) or reclaimable(task, now)


def decide_claim(
    task: Task | None, counter: int, process_id: str, ttl: int, now: int
) -> TaskDecision:
    if task is None:
        return _not_found()
    done = timed_out(task, now)
    if done is not None:
        return TaskDecision(403, done, write=done, code=COMPLETED, reason="task timed out")
    if task.state.final:
        return TaskDecision(403, task, code=COMPLETED, reason=f"task is {task.state.value}")
    if counter != task.counter:
        return TaskDecision(
            403, task, code=BAD_COUNTER, reason=f"counter is {task.counter}, not {counter}"
        )
    if task.state is TaskState.CLAIMED:
        return TaskDecision(403, task, code=CLAIMED, reason="task is already claimed")
    claimed = msgspec.structs.replace(
        task,
        state=TaskState.CLAIMED,
        process_id=process_id,
        ttl=ttl,
        expires_at=now + ttl,
    )
    return TaskDecision(201, claimed, write=claimed)


def decide_complete(task: Task | None, counter: int, now: int) -> TaskDecision:
    if task is None:
        return _not_found()
    if task.state.final:
        return TaskDecision(200, task)
    done = timed_out(task, now)
    if done is not None:  # past its timeout, whether or not the loop noticed yet
        return TaskDecision(200, done, write=done)
    lost = reclaimable(task, now)
    if lost is not None:  # the lease ran out: the task goes back, this holder is out
        return TaskDecision(
            403, lost, write=lost, code=BAD_COUNTER, reason="the lease ran out; the task moved on"
        )
    if counter != task.counter:
        return TaskDecision(
            403, task, code=BAD_COUNTER, reason=f"counter is {task.counter}, not {counter}"
        )
    if task.state is not TaskState.CLAIMED:
        return TaskDecision(
            403, task, code=BAD_STATE, reason=f"task is {task.state.value}, not CLAIMED"
        )
    done = msgspec.structs.replace(
        task, state=TaskState.COMPLETED, expires_at=None, completed_on=now
    )
    return TaskDecision(201, done, write=done)


def decide_drop(task: Task | None, counter: int, now: int) -> TaskDecision:
    if task is None:
        return _not_found()
    done = timed_out(task, now)
    if done is not None:
        return TaskDecision(200, done, write=done)
    lost = reclaimable(task, now)
    if lost is not None:
        return TaskDecision(
            403, lost, write=lost, code=BAD_COUNTER, reason="the lease ran out; the task moved on"
        )
    if task.state is not TaskState.CLAIMED:
        return TaskDecision(200, task)
    if counter != task.counter:
        return TaskDecision(
            403, task, code=BAD_COUNTER, reason=f"counter is {task.counter}, not {counter}"
        )
    dropped = msgspec.structs.replace(
        task,
        state=TaskState.INIT,
        counter=task.counter + 1,
        attempt=0,
        process_id=None,
        ttl=None,
        expires_at=None,
        ready_at=now,
    )
    return TaskDecision(201, dropped, write=dropped)


def fence_holds(task: Task | None, counter: int, now: int) -> bool:
    """A fenced write may proceed only while its task is CLAIMED with exactly that counter
    and neither the lease nor the task has run out (an expired lease is as good as lost,
    even before the background loop notices)."""
    return (
        task is not None
        and task.state is TaskState.CLAIMED
        and task.counter == counter
        and (task.expires_at is None or now < task.expires_at)
        and now < task.timeout
    )


def completes_with_root(task: Task) -> bool:
    """Invoke and resume tasks end when their root promise completes; notifications don't."""
    return task.type is not TaskKind.NOTIFY and not task.state.final
