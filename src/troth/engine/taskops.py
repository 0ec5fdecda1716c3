"""Engine operations of the task framework: callbacks, subscriptions, tasks, locks.

A mixin of ``Engine`` (kept apart so that neither module grows past a readable size). Every
method is one store transaction; decisions come from ``troth.task_rules``; completing a
promise on the way (a lazily timed-out root) fires its callbacks through ``effects``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from troth import rules, task_rules
from troth.clock import Clock
from troth.engine import effects
from troth.engine.dispatch import Dispatcher
from troth.errors import FencingFailed, Forbidden, NotFound, TrothError, ValidationError
from troth.model import MAX_TTL, Callback, Lock, Promise, Task
from troth.recv import DEFAULT_RECEIVERS, parse_recv
from troth.store.base import Store, Tx

LOCK_HELD: Final = 40305
LOCK_NOT_FOUND: Final = 40402


def _need(value: str, field: str) -> None:
    if not value:
        raise ValidationError(f"{field} must not be empty - at {field}", details=[{"field": field}])


def _need_ms(value: int, field: str) -> None:
    if not 0 <= value <= MAX_TTL:
        raise ValidationError(
            f"{field} must be from 0 to 2^62 ms - at {field}", details=[{"field": field}]
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed task with the promises its worker needs."""

    task: Task
    root: Promise
    leaf: Promise | None


class TaskOps:
    store: Store
    clock: Clock
    receivers: dict[str, Any] = dict(DEFAULT_RECEIVERS)  # noqa: RUF012 (replaced per engine)
    _task_wake: asyncio.Event
    dispatcher: Dispatcher | None

    def tasks_changed(self) -> None:
        """Tell the dispatcher that tasks were created or became sendable."""
        self._task_wake.set()

    def task_deadline(self, at: int) -> None:
        """Tell the dispatcher that a task must be looked at again at ``at`` (ms)."""
        if self.dispatcher is not None:
            self.dispatcher.deadline(at)

    def _fail(self, decision: task_rules.TaskDecision, id: str) -> TrothError:
        if decision.status == 404:
            return NotFound(f"task {id!r} not found", code=decision.code)
        return Forbidden(f"task {id!r}: {decision.reason}", code=decision.code)

    # -- callbacks and subscriptions -----------------------------------------------------

    async def register_callback(
        self,
        promise_id: str,
        *,
        root_promise_id: str,
        timeout: int,
        recv: Any,
        fence: tuple[str, int] | None = None,
    ) -> tuple[Callback | None, Promise]:
        """Resume ``root_promise_id`` (a task to ``recv``) when ``promise_id`` completes.

        Returns ``(callback, promise)`` when newly registered, ``(None, promise)`` when the
        promise is already completed (continue at once) or the callback already exists.
        """
        _need(promise_id, "promiseId")
        _need(root_promise_id, "rootPromiseId")
        target = parse_recv(recv, "$.recv", self.receivers)
        id = f"__resume:{root_promise_id}:{promise_id}"
        return await self._register(id, promise_id, root_promise_id, timeout, target, fence)

    async def subscribe(
        self, promise_id: str, *, id: str, timeout: int, recv: Any
    ) -> tuple[Callback | None, Promise]:
        """Notify ``recv`` (once) when ``promise_id`` completes; see ``register_callback``."""
        _need(promise_id, "promiseId")
        _need(id, "id")
        target = parse_recv(recv, "$.recv", self.receivers)
        return await self._register(
            f"__notify:{promise_id}:{id}", promise_id, None, timeout, target, None
        )

    async def _register(
        self,
        id: str,
        promise_id: str,
        root_promise_id: str | None,
        timeout: int,
        recv: Any,
        fence: tuple[str, int] | None,
    ) -> tuple[Callback | None, Promise]:
        clock = self.clock

        def op(tx: Tx) -> tuple[str, Callback | None, Promise | None, list[Task]]:
            now = clock.now()
            if fence is not None and not task_rules.fence_holds(
                tx.get_task(fence[0]), fence[1], now
            ):
                return "fenced", None, None, []
            p = tx.get_promise(promise_id)
            if p is None:
                return "missing", None, None, []
            expired = rules.expire(p, now)
            if expired is not None:
                tx.update_promise(expired)
                return "done", None, expired, effects.on_completed(tx, [expired], now)
            if p.state.completed:
                return "done", None, p, []
            cb = Callback(
                id=id,
                promise_id=promise_id,
                root_promise_id=root_promise_id,
                recv=recv,
                timeout=timeout,
                created_on=now,
            )
            return "ok", (cb if tx.insert_callback(cb) else None), p, []

        status, cb, p, tasks = await self.store.write(op)
        if tasks:
            self.tasks_changed()
        if status == "fenced":
            raise FencingFailed(
                "the fencing task is not claimed with that counter; nothing was written"
            )
        if p is None:
            raise NotFound(f"promise {promise_id!r} not found", code=rules.NOT_FOUND_CODE)
        return cb, p

    # -- tasks ---------------------------------------------------------------------------

    async def claim_task(self, id: str, counter: int, *, process_id: str, ttl: int) -> Claimed:
        """Claim a task for ``process_id`` with a lease of ``ttl`` ms (API.md 3).

        Raises ``NotFound`` (404) or ``Forbidden`` (403: claimed 40306, completed/timed out
        40307, counter 40308).
        """
        _need(id, "id")
        _need(process_id, "processId")
        _need_ms(ttl, "ttl")
        clock = self.clock

        def op(tx: Tx) -> tuple[task_rules.TaskDecision, Promise | None, Promise | None, bool]:
            now = clock.now()
            task = tx.get_task(id)
            fired = False
            root = leaf = None
            if task is not None:
                root = tx.get_promise(task.root_promise_id)
                expired = rules.expire(root, now) if root is not None else None
                if expired is not None:  # the root timed out: that ends its tasks too
                    tx.update_promise(expired)
                    fired = bool(effects.on_completed(tx, [expired], now))
                    root, task = expired, tx.get_task(id)
                if task is not None and task.leaf_promise_id is not None:
                    leaf = tx.get_promise(task.leaf_promise_id)
            decision = task_rules.decide_claim(task, counter, process_id, ttl, now)
            if decision.write is not None:
                tx.update_task(decision.write)
            return decision, root, leaf, fired

        decision, root, leaf, fired = await self.store.write(op)
        if fired:
            self.tasks_changed()
        if not decision.ok:
            raise self._fail(decision, id)
        assert decision.task is not None
        if decision.task.expires_at is not None:
            self.task_deadline(decision.task.expires_at)  # notice the lease end on time
        if root is None:
            raise NotFound(f"root promise of task {id!r} not found", code=rules.NOT_FOUND_CODE)
        return Claimed(decision.task, root, leaf)

    async def complete_task(self, id: str, counter: int) -> tuple[Task, bool]:
        """Complete a CLAIMED task; ``(task, True)`` on 201, ``(task, False)`` when it was
        already COMPLETED or TIMEDOUT (200)."""
        result = await self._task_op(id, counter, task_rules.decide_complete)
        if result[1]:
            self.tasks_changed()  # a task queued behind this one (same root) may go now
        return result

    async def drop_task(self, id: str, counter: int) -> tuple[Task, bool]:
        """Give a CLAIMED task back: INIT, counter + 1, dispatched again (201); a no-op
        (200) when it is not CLAIMED."""
        result = await self._task_op(id, counter, task_rules.decide_drop)
        if result[1]:
            self.tasks_changed()
        return result

    async def _task_op(self, id: str, counter: int, decide: Any) -> tuple[Task, bool]:
        _need(id, "id")
        clock = self.clock

        def op(tx: Tx) -> task_rules.TaskDecision:
            decision: task_rules.TaskDecision = decide(tx.get_task(id), counter, clock.now())
            if decision.write is not None:
                tx.update_task(decision.write)
            return decision

        decision = await self.store.write(op)
        if not decision.ok:
            raise self._fail(decision, id)
        assert decision.task is not None
        return decision.task, decision.status == 201

    async def heartbeat_tasks(self, process_id: str) -> int:
        """Extend the lease of every task CLAIMED by ``process_id``; return how many."""
        _need(process_id, "processId")
        clock = self.clock
        return await self.store.write(lambda tx: tx.heartbeat_tasks(process_id, clock.now()))

    async def get_task(self, id: str) -> Task:
        task = await self.store.read(lambda tx: tx.get_task(id))
        if task is None:
            raise NotFound(f"task {id!r} not found", code=task_rules.TASK_NOT_FOUND)
        return task

    # -- locks ---------------------------------------------------------------------------

    async def acquire_lock(
        self, resource_id: str, *, execution_id: str, process_id: str, ttl: int
    ) -> Lock:
        """Take the lock on ``resource_id`` (re-entrant for the same execution; an expired
        lock is taken over at once). Raises ``Forbidden`` (40305) if another holds it."""
        _need(resource_id, "resourceId")
        _need(execution_id, "executionId")
        _need(process_id, "processId")
        _need_ms(ttl, "ttl")
        clock = self.clock

        def op(tx: Tx) -> tuple[Lock, bool]:
            now = clock.now()
            held = tx.get_lock(resource_id)
            if held is not None and held.execution_id != execution_id and now < held.expires_at:
                return held, False
            lock = Lock(
                resource_id=resource_id,
                execution_id=execution_id,
                process_id=process_id,
                ttl=ttl,
                expires_at=now + ttl,
            )
            tx.put_lock(lock)
            return lock, True

        lock, ok = await self.store.write(op)
        if not ok:
            raise Forbidden(
                f"lock {resource_id!r} is held by execution {lock.execution_id!r} until "
                f"{lock.expires_at}",
                code=LOCK_HELD,
            )
        return lock

    async def release_lock(self, resource_id: str, *, execution_id: str) -> None:
        """Release a lock held by ``execution_id``; ``NotFound`` (40402) otherwise."""
        _need(resource_id, "resourceId")
        _need(execution_id, "executionId")

        def op(tx: Tx) -> bool:
            held = tx.get_lock(resource_id)
            if held is None or held.execution_id != execution_id:
                return False
            tx.delete_lock(resource_id)
            return True

        if not await self.store.write(op):
            raise NotFound(
                f"lock {resource_id!r} is not held by execution {execution_id!r}",
                code=LOCK_NOT_FOUND,
            )

    async def heartbeat_locks(self, process_id: str) -> int:
        """Extend every lock of ``process_id`` by its ttl; return how many."""
        _need(process_id, "processId")
        clock = self.clock
        return await self.store.write(lambda tx: tx.heartbeat_locks(process_id, clock.now()))
