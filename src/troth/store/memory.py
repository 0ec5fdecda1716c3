"""An in-memory store: the full interface, no durability, for fast tests and embedding.

Operations run on the event loop thread one at a time, so each is trivially atomic; an undo
log rolls back the changes of an operation that raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from troth.errors import StoreUnavailable
from troth.model import Callback, Lock, Promise, Schedule, State, Task, TaskState
from troth.store.base import PromiseQuery

T = TypeVar("T")

_REJECTED = {State.REJECTED, State.REJECTED_CANCELED, State.REJECTED_TIMEDOUT}


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Compile a search pattern: ``*`` matches any run of characters, all else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def state_matches(promise: Promise, state: str | None, now: int) -> bool:
    """Judge a search's state filter as of ``now`` (expired pending counts as timed out)."""
    if state is None:
        return True
    effective = promise.state
    if effective is State.PENDING and now >= promise.timeout:
        effective = State.RESOLVED if promise.is_timer else State.REJECTED_TIMEDOUT
    if state == "pending":
        return effective is State.PENDING
    if state == "resolved":
        return effective is State.RESOLVED
    return effective in _REJECTED


class MemoryTx:
    def __init__(self, store: MemoryStore) -> None:
        self._s = store
        self.undo: list[Callable[[], object]] = []

    def get_promise(self, id: str) -> Promise | None:
        entry = self._s.promises.get(id)
        return entry[1] if entry else None

    def insert_promise(self, promise: Promise) -> None:
        s = self._s
        if promise.id in s.promises:
            raise KeyError(f"promise {promise.id!r} exists")
        s.seq += 1
        s.promises[promise.id] = (s.seq, promise)
        self.undo.append(lambda: s.promises.pop(promise.id))

    def try_insert_promise(self, promise: Promise) -> bool:
        if promise.id in self._s.promises:
            return False
        self.insert_promise(promise)
        return True

    def update_promise(self, promise: Promise) -> None:
        s = self._s
        seq, old = s.promises[promise.id]
        s.promises[promise.id] = (seq, promise)
        self.undo.append(lambda: s.promises.__setitem__(promise.id, (seq, old)))

    def update_promises(self, promises: Sequence[Promise]) -> None:
        for p in promises:
            self.update_promise(p)

    def search_promises(self, query: PromiseQuery, now: int) -> list[tuple[int, Promise]]:
        regex = pattern_regex(query.pattern)
        out: list[tuple[int, Promise]] = []
        for seq, p in sorted(self._s.promises.values(), key=lambda e: -e[0]):
            if query.before is not None and seq >= query.before:
                continue
            if not regex.fullmatch(p.id) or not state_matches(p, query.state, now):
                continue
            if any((p.tags or {}).get(k) != v for k, v in query.tags.items()):
                continue
            out.append((seq, p))
            if len(out) >= query.limit:
                break
        return out

    def due_promises(self, now: int, limit: int) -> list[Promise]:
        due = [
            p for _, p in self._s.promises.values() if p.state is State.PENDING and p.timeout <= now
        ]
        due.sort(key=lambda p: p.timeout)
        return due[:limit]

    def next_deadline(self) -> int | None:
        pending = [p.timeout for _, p in self._s.promises.values() if p.state is State.PENDING]
        return min(pending) if pending else None

    def get_meta(self, key: str) -> str | None:
        return self._s.meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        s = self._s
        old = s.meta.get(key)
        s.meta[key] = value
        self.undo.append(lambda: s.meta.pop(key) if old is None else s.meta.__setitem__(key, old))

    # -- callbacks -------------------------------------------------------------------------

    def insert_callback(self, callback: Callback) -> bool:
        s = self._s
        if callback.id in s.callbacks:
            return False
        s.callbacks[callback.id] = callback
        self.undo.append(lambda: s.callbacks.pop(callback.id))
        return True

    def take_callbacks(self, promise_id: str) -> list[Callback]:
        s = self._s
        taken = [cb for cb in s.callbacks.values() if cb.promise_id == promise_id]
        for cb in taken:
            del s.callbacks[cb.id]
            self.undo.append(lambda cb=cb: s.callbacks.__setitem__(cb.id, cb))  # type: ignore[misc]
        return sorted(taken, key=lambda cb: (cb.created_on, cb.id))

    # -- tasks ---------------------------------------------------------------------------

    def get_task(self, id: str) -> Task | None:
        return self._s.tasks.get(id)

    def insert_task(self, task: Task) -> bool:
        s = self._s
        if task.id in s.tasks:
            return False
        s.tasks[task.id] = task
        self.undo.append(lambda: s.tasks.pop(task.id))
        return True

    def update_task(self, task: Task) -> None:
        s = self._s
        old = s.tasks[task.id]
        s.tasks[task.id] = task
        self.undo.append(lambda: s.tasks.__setitem__(task.id, old))

    def count_pending_promises(self) -> int:
        return sum(1 for _, p in self._s.promises.values() if p.state is State.PENDING)

    def count_tasks_by_state(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self._s.tasks.values():
            if not t.state.final:
                out[t.state.value] = out.get(t.state.value, 0) + 1
        return out

    def active_tasks(self, limit: int) -> list[Task]:
        active = [t for t in self._s.tasks.values() if not t.state.final]
        return sorted(active, key=lambda t: (t.timeout, t.id))[:limit]

    def callbacks_of(self, promise_id: str) -> list[Callback]:
        found = [cb for cb in self._s.callbacks.values() if cb.promise_id == promise_id]
        return sorted(found, key=lambda cb: (cb.created_on, cb.id))

    def tasks_of_root(self, root_promise_id: str, states: Sequence[TaskState]) -> list[Task]:
        return [
            t
            for t in self._s.tasks.values()
            if t.root_promise_id == root_promise_id and t.state in states
        ]

    def dispatchable_tasks(self, now: int, limit: int) -> list[Task]:
        tasks = self._s.tasks.values()
        busy = {t.root_promise_id for t in tasks if t.state.active}
        out: list[Task] = []
        for t in sorted(tasks, key=lambda t: (t.created_on, t.id)):
            if len(out) >= limit:
                break
            ready = t.state is TaskState.INIT and t.ready_at <= now < t.timeout
            if ready and t.root_promise_id not in busy:
                busy.add(t.root_promise_id)
                out.append(t)
        return out

    def overdue_tasks(self, now: int, limit: int) -> list[Task]:
        out = [
            t
            for t in self._s.tasks.values()
            if (t.state.active and t.expires_at is not None and t.expires_at <= now)
            or (not t.state.final and t.timeout <= now)
        ]
        out.sort(key=lambda t: (t.created_on, t.id))
        return out[:limit]

    def next_task_time(self) -> int | None:
        times: list[int] = []
        for t in self._s.tasks.values():
            if t.state.final:
                continue
            times.append(t.timeout)
            if t.state is TaskState.INIT:
                times.append(t.ready_at)
            elif t.expires_at is not None:
                times.append(t.expires_at)
        return min(times) if times else None

    def ready_tasks_for(self, recv_key: str, now: int) -> int:
        n = 0
        for t in list(self._s.tasks.values()):
            if t.state is TaskState.INIT and t.recv.key == recv_key and t.ready_at > now:
                self.update_task(msgspec.structs.replace(t, ready_at=now))
                n += 1
        return n

    def heartbeat_tasks(self, process_id: str, now: int) -> int:
        n = 0
        for t in list(self._s.tasks.values()):
            live = t.expires_at is None or t.expires_at > now
            if t.state is TaskState.CLAIMED and t.process_id == process_id and live:
                self.update_task(msgspec.structs.replace(t, expires_at=now + (t.ttl or 0)))
                n += 1
        return n

    # -- locks ---------------------------------------------------------------------------

    def get_lock(self, resource_id: str) -> Lock | None:
        return self._s.locks.get(resource_id)

    def put_lock(self, lock: Lock) -> None:
        s = self._s
        old = s.locks.get(lock.resource_id)
        s.locks[lock.resource_id] = lock
        self.undo.append(
            lambda: (
                s.locks.pop(lock.resource_id)
                if old is None
                else s.locks.__setitem__(lock.resource_id, old)
            )
        )

    def delete_lock(self, resource_id: str) -> None:
        s = self._s
        old = s.locks.pop(resource_id, None)
        if old is not None:
            self.undo.append(lambda: s.locks.__setitem__(resource_id, old))

    def heartbeat_locks(self, process_id: str, now: int) -> int:
        n = 0
        for lock in list(self._s.locks.values()):
            if lock.process_id == process_id:
                self.put_lock(msgspec.structs.replace(lock, expires_at=now + lock.ttl))
                n += 1
        return n

    # -- schedules -------------------------------------------------------------------------

    def insert_schedule(self, schedule: Schedule) -> bool:
        s = self._s
        if schedule.id in s.schedules:
            return False
        s.seq += 1
        s.schedules[schedule.id] = (s.seq, schedule)
        self.undo.append(lambda: s.schedules.pop(schedule.id))
        return True

    def get_schedule(self, id: str) -> Schedule | None:
        entry = self._s.schedules.get(id)
        return entry[1] if entry else None

    def update_schedule(self, schedule: Schedule) -> None:
        s = self._s
        seq, old = s.schedules[schedule.id]
        s.schedules[schedule.id] = (seq, schedule)
        self.undo.append(lambda: s.schedules.__setitem__(schedule.id, (seq, old)))

    def delete_schedule(self, id: str) -> bool:
        s = self._s
        old = s.schedules.pop(id, None)
        if old is None:
            return False
        self.undo.append(lambda: s.schedules.__setitem__(id, old))
        return True

    def search_schedules(
        self, pattern: str, tags: dict[str, str], limit: int, before: int | None
    ) -> list[tuple[int, Schedule]]:
        regex = pattern_regex(pattern)
        out: list[tuple[int, Schedule]] = []
        for seq, sc in sorted(self._s.schedules.values(), key=lambda e: -e[0]):
            if before is not None and seq >= before:
                continue
            if not regex.fullmatch(sc.id):
                continue
            if any((sc.tags or {}).get(k) != v for k, v in tags.items()):
                continue
            out.append((seq, sc))
            if len(out) >= limit:
                break
        return out

    def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        due = [sc for _, sc in self._s.schedules.values() if sc.next_run_time <= now]
        due.sort(key=lambda sc: (sc.next_run_time, sc.id))
        return due[:limit]

    def next_schedule_time(self) -> int | None:
        times = [sc.next_run_time for _, sc in self._s.schedules.values()]
        return min(times) if times else None


class MemoryStore:
    """Keeps everything in dictionaries; ``memory://`` in a store URL."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.promises: dict[str, tuple[int, Promise]] = {}
        self.meta: dict[str, str] = {}
        self.callbacks: dict[str, Callback] = {}
        self.tasks: dict[str, Task] = {}
        self.locks: dict[str, Lock] = {}
        self.schedules: dict[str, tuple[int, Schedule]] = {}
        self.seq = 0
        self.available = True

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _run(self, op: Callable[[MemoryTx], T]) -> T:
        if not self.available:
            raise StoreUnavailable("memory store marked unavailable")
        tx = MemoryTx(self)
        try:
            return op(tx)
        except BaseException:
            for undo in reversed(tx.undo):
                undo()
            raise

    async def write(self, op: Callable[[Any], T]) -> T:
        return self._run(op)

    async def read(self, op: Callable[[Any], T]) -> T:
        return self._run(op)

    async def check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory store marked unavailable")
