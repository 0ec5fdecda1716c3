"""The storage interface: transactional and dumb.

A store runs *operations* — plain synchronous functions of a ``Tx`` — inside a transaction.
All the rules live in the engine's operations; a store only loads, saves and answers indexed
queries. Writes go through ``Store.write``, which may batch operations from concurrent
requests into one transaction (group commit): each caller's awaitable completes only after
the transaction holding its operation is durably committed. If one operation raises, only its
own changes are rolled back and only its caller sees the exception.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from troth.model import Callback, Lock, Promise, Schedule, Task, TaskState

T = TypeVar("T")

#: How many expired promises one sweeper transaction times out.
SWEEP_BATCH = 2000


@dataclass(frozen=True, slots=True)
class PromiseQuery:
    """A search of API.md 1.5, already validated.

    ``pattern`` uses ``*`` as the only wildcard; ``state`` is ``pending``, ``resolved``,
    ``rejected`` or ``None`` and is judged as of ``now`` (an expired pending promise counts
    as the state it is about to time out to); ``before`` is the cursor position (a sequence
    number; results are newest first).
    """

    pattern: str = "*"
    state: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    limit: int = 100
    before: int | None = None


class ScheduleTx(Protocol):
    """Schedules (API.md 4); part of every ``Tx``."""

    def insert_schedule(self, schedule: Schedule) -> bool:
        """Insert unless a schedule with this id exists; return whether it was inserted."""
        ...

    def get_schedule(self, id: str) -> Schedule | None: ...

    def update_schedule(self, schedule: Schedule) -> None:
        """Store ``last_run_time`` and ``next_run_time`` of a schedule."""
        ...

    def delete_schedule(self, id: str) -> bool:
        """Delete a schedule; return whether it existed."""
        ...

    def search_schedules(
        self, pattern: str, tags: dict[str, str], limit: int, before: int | None
    ) -> list[tuple[int, Schedule]]:
        """Up to ``limit`` schedules whose id matches ``pattern`` (``*`` wildcard, all else
        literal) and whose tags include every pair of ``tags``, newest first, each with its
        sequence number; ``before`` pages (sequence numbers below it)."""
        ...

    def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        """Schedules with ``next_run_time <= now``, earliest first."""
        ...

    def next_schedule_time(self) -> int | None:
        """The earliest ``next_run_time`` of any schedule."""
        ...


class Tx(ScheduleTx, Protocol):
    """What an operation may do inside a transaction."""

    def get_promise(self, id: str) -> Promise | None: ...

    def insert_promise(self, promise: Promise) -> None: ...

    def try_insert_promise(self, promise: Promise) -> bool:
        """Insert unless the id exists; return whether it was inserted."""
        ...

    def update_promise(self, promise: Promise) -> None:
        """Store the new state, value, completion key and completion time of a promise."""
        ...

    def update_promises(self, promises: Sequence[Promise]) -> None: ...

    def search_promises(self, query: PromiseQuery, now: int) -> list[tuple[int, Promise]]:
        """Up to ``query.limit`` matches, newest first, each with its sequence number."""
        ...

    def due_promises(self, now: int, limit: int) -> list[Promise]:
        """Pending promises whose deadline is at or before ``now``, earliest first."""
        ...

    def next_deadline(self) -> int | None:
        """The earliest deadline of any pending promise."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    # -- callbacks and subscriptions ----------------------------------------------------

    def insert_callback(self, callback: Callback) -> bool:
        """Insert unless a callback with this id exists; return whether it was inserted."""
        ...

    def take_callbacks(self, promise_id: str) -> list[Callback]:
        """Delete and return every callback of a promise (it has just completed)."""
        ...

    # -- tasks ---------------------------------------------------------------------------

    def get_task(self, id: str) -> Task | None: ...

    def insert_task(self, task: Task) -> bool:
        """Insert unless a task with this id exists; return whether it was inserted."""
        ...

    def update_task(self, task: Task) -> None:
        """Store every mutable field of a task (state, counter, attempt, process, ttl,
        expires_at, ready_at, completed_on)."""
        ...

    def tasks_of_root(self, root_promise_id: str, states: Sequence[TaskState]) -> list[Task]:
        """Tasks whose root is ``root_promise_id`` and whose state is one of ``states``."""
        ...

    def dispatchable_tasks(self, now: int, limit: int) -> list[Task]:
        """INIT tasks with ``ready_at <= now`` and ``timeout > now`` whose root promise has no
        ENQUEUED or CLAIMED task, oldest first (at most one per root promise)."""
        ...

    def overdue_tasks(self, now: int, limit: int) -> list[Task]:
        """Tasks to move on: ENQUEUED/CLAIMED with ``expires_at <= now`` (lease or claim time
        passed), or not COMPLETED/TIMEDOUT with ``timeout <= now``."""
        ...

    def next_task_time(self) -> int | None:
        """The earliest of: ``ready_at`` of INIT tasks, ``expires_at`` of ENQUEUED/CLAIMED tasks,
        ``timeout`` of unfinished tasks."""
        ...

    def ready_tasks_for(self, recv_key: str, now: int) -> int:
        """Make INIT tasks addressed to ``recv_key`` (``Recv.key``) ready now (a worker stream
        of that group connected); return how many."""
        ...

    def heartbeat_tasks(self, process_id: str, now: int) -> int:
        """Extend the lease of every CLAIMED task of a process whose lease has not run out
        (``expires_at > now``: a lost lease is not revived) to ``now + ttl``; return how
        many."""
        ...

    # -- operator queries (metrics, dashboard): indexed, never a scan of all rows --------

    def count_pending_promises(self) -> int:
        """How many promises are PENDING (an index count; metrics read it per scrape)."""
        ...

    def count_tasks_by_state(self) -> dict[str, int]:
        """How many unfinished tasks there are per state (INIT, ENQUEUED, CLAIMED; states
        with none may be absent)."""
        ...

    def active_tasks(self, limit: int) -> list[Task]:
        """Up to ``limit`` unfinished tasks (INIT, ENQUEUED, CLAIMED), earliest ``timeout``
        first, then ``id``."""
        ...

    def callbacks_of(self, promise_id: str) -> list[Callback]:
        """The callbacks and subscriptions registered on a promise (without taking them),
        oldest first (``created_on``, ``id``)."""
        ...

    # -- locks ---------------------------------------------------------------------------

    def get_lock(self, resource_id: str) -> Lock | None: ...

    def put_lock(self, lock: Lock) -> None:
        """Insert or replace the lock on ``lock.resource_id``."""
        ...

    def delete_lock(self, resource_id: str) -> None: ...

    def heartbeat_locks(self, process_id: str, now: int) -> int:
        """Set ``expires_at = now + ttl`` on every lock of a process; return how many."""
        ...


class Store(Protocol):
    """A transactional backend, chosen by URL (see ``troth.store.open_store``)."""

    url: str

    async def open(self) -> None:
        """Connect and migrate; must be called before any other method."""
        ...

    async def close(self) -> None:
        """Finish queued writes (each is committed or failed), then release resources."""
        ...

    async def write(self, op: Callable[[Tx], T]) -> T:
        """Run ``op`` in a write transaction; return after it is durably committed."""
        ...

    async def read(self, op: Callable[[Tx], T]) -> T:
        """Run ``op`` against a consistent snapshot; it must not write."""
        ...

    async def check(self) -> None:
        """Raise ``StoreUnavailable`` unless storage answers (used by ``/readyz``)."""
        ...
