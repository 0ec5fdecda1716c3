"""Schedules (API.md 4): durable cron that creates promises on time, exactly once.

Contract:
- ``nextRunTime`` is the next cron time after creation. When it passes, one operation
  creates the promise for that run (id from the template, ``timeout = run + promiseTimeout``,
  param, tags + ``resonate:schedule`` / ``resonate:invocation``) and advances ``lastRunTime``
  / ``nextRunTime`` — in one transaction, so a run fires exactly once even across crashes.
- After downtime, missed runs are caught up one at a time, oldest first, each once.
- A generated id that already exists never wedges a schedule: that run is skipped.
- A ``resonate:invoke`` tag in ``promiseTags`` makes each run an invocation (a task), like
  any promise created with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

import msgspec

from troth import cron, rules
from troth.clock import Clock
from troth.engine import effects
from troth.engine.cursor import Cursors
from troth.errors import AlreadyExists, NotFound, TrothError, ValidationError
from troth.model import MAX_TIMEOUT, Promise, Schedule, State, Task, Value
from troth.store.base import PromiseQuery, Store, Tx

log = logging.getLogger("troth.schedules")

SCHEDULE_NOT_FOUND: Final = 40401
SCHEDULE_EXISTS: Final = 40901
FIRE_BATCH: Final = 100


def _field(message: str, field: str) -> ValidationError:
    return ValidationError(f"{message} - at {field}", details=[{"field": field}])


class ScheduleOps:
    store: Store
    clock: Clock
    receivers: dict[str, Any]
    _cursors: Cursors | None
    #: Called (on the event loop) with the promises each firing round created.
    on_fired: Callable[[list[Promise]], None] | None = None

    def tasks_changed(self) -> None: ...  # provided by TaskOps

    # -- CRUD ----------------------------------------------------------------------------

    async def create_schedule(
        self,
        id: str,
        *,
        cron_expr: str,
        promise_id: str,
        promise_timeout: int,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        promise_param: Value | None = None,
        promise_tags: dict[str, str] | None = None,
        ikey: str | None = None,
    ) -> tuple[Schedule, bool]:
        """Create a schedule; ``(schedule, True)`` when new, ``(stored, False)`` when it
        exists with the same idempotency key. Raises ``AlreadyExists`` (409) otherwise."""
        if not id:
            raise _field("id must not be empty", "$.id")
        if not promise_id:
            raise _field("promiseId must not be empty", "$.promiseId")
        if not 0 <= promise_timeout <= MAX_TIMEOUT:
            raise _field("promiseTimeout must be from 0 to 2^63-1 ms", "$.promiseTimeout")
        expr = cron.validate(cron_expr)
        effects.invoke_of(promise_tags or None, self.receivers)  # 400 now, not at each run
        clock = self.clock

        def op(tx: Tx) -> tuple[Schedule, bool]:
            now = clock.now()
            schedule = Schedule(
                id=id,
                description=description,
                cron=expr,
                tags=tags or None,
                promise_id=promise_id,
                promise_timeout=promise_timeout,
                promise_param=(promise_param or Value()).normalized(),
                promise_tags=promise_tags or None,
                next_run_time=cron.next_after(expr, now),
                idempotency_key=ikey,
                created_on=now,
            )
            if tx.insert_schedule(schedule):
                return schedule, True
            stored = tx.get_schedule(id)
            assert stored is not None
            return stored, False

        schedule, created = await self.store.write(op)
        if created:
            self.schedules_changed(schedule.next_run_time)
            return schedule, True
        if rules.match(schedule.idempotency_key, ikey):
            return schedule, False
        raise AlreadyExists(
            f"schedule {id!r} already exists; send the same Idempotency-Key to deduplicate",
            code=SCHEDULE_EXISTS,
        )

    async def get_schedule(self, id: str) -> Schedule:
        s = await self.store.read(lambda tx: tx.get_schedule(id))
        if s is None:
            raise NotFound(f"schedule {id!r} not found", code=SCHEDULE_NOT_FOUND)
        return s

    async def delete_schedule(self, id: str) -> None:
        if not await self.store.write(lambda tx: tx.delete_schedule(id)):
            raise NotFound(f"schedule {id!r} not found", code=SCHEDULE_NOT_FOUND)

    async def search_schedules(
        self,
        *,
        pattern: str = "*",
        tags: dict[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Schedule], str | None]:
        assert self._cursors is not None, "Engine.open() was not called"
        if cursor:
            q = self._cursors.decode(cursor, "schedules")
        else:
            if not 1 <= limit <= 1000:
                raise _field("limit must be between 1 and 1000", "limit")
            q = PromiseQuery(pattern or "*", None, dict(tags or {}), limit, None)
        rows = await self.store.read(
            lambda tx: tx.search_schedules(q.pattern, q.tags, q.limit + 1, q.before)
        )
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        nxt = self._cursors.encode(q, rows[-1][0], "schedules") if more and rows else None
        return [s for _, s in rows], nxt

    # -- firing --------------------------------------------------------------------------

    def schedules_changed(self, next_run_time: int) -> None:
        """A schedule was created: wake the loop if it is due before what it sleeps toward."""
        armed = self._schedule_armed
        if armed is None or next_run_time < armed:
            self._schedule_armed = next_run_time
            self._schedule_wake.set()

    _schedule_armed: int | None = None
    _schedule_wake: asyncio.Event

    async def fire_schedules(self) -> int:
        """Fire every due run, oldest first, one run per schedule per transaction (a
        schedule that missed several runs catches up over several rounds); return how many
        runs fired."""
        clock, receivers = self.clock, self.receivers
        total = 0

        def op(tx: Tx) -> tuple[int, list[Promise], list[Task]]:
            now = clock.now()
            fired, created, tasks = 0, [], []
            for s in tx.due_schedules(now, FIRE_BATCH):
                run = s.next_run_time
                p, task = _promise_for(s, run, now, receivers)
                if tx.try_insert_promise(p):
                    created.append(p)
                    if task is not None:
                        tx.insert_task(task)
                        tasks.append(task)
                tx.update_schedule(
                    msgspec.structs.replace(
                        s, last_run_time=run, next_run_time=cron.next_after(s.cron, run)
                    )
                )
                fired += 1
            return fired, created, tasks

        while True:
            fired, created, tasks = await self.store.write(op)
            total += fired
            if tasks:
                self.tasks_changed()
            if created and self.on_fired is not None:
                self.on_fired(created)
            if fired == 0:
                return total

    async def _schedule_loop(self, max_sleep_s: float) -> None:
        while True:
            self._schedule_wake.clear()
            try:
                await self.fire_schedules()
                nxt = await self.store.read(lambda tx: tx.next_schedule_time())
            except TrothError as exc:
                log.warning("schedules: %s; retrying", exc)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                log.exception("schedule loop failed; retrying")
                await asyncio.sleep(1.0)
                continue
            self._schedule_armed = nxt
            delay = max_sleep_s
            if nxt is not None:
                delay = min(delay, max(0.0, (nxt - self.clock.now()) / 1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._schedule_wake.wait(), delay)


def _promise_for(
    s: Schedule, run: int, now: int, receivers: dict[str, Any]
) -> tuple[Promise, Task | None]:
    """The promise (and invoke task) of one run of a schedule."""
    tags = {**(s.promise_tags or {}), "resonate:schedule": s.id, "resonate:invocation": "true"}
    timeout = min(MAX_TIMEOUT, run + s.promise_timeout)
    p = Promise(
        id=cron.render(s.promise_id, s.id, run),
        state=State.PENDING,
        param=s.promise_param,
        timeout=timeout,
        tags=tags,
        created_on=now,
    )
    p = rules.current(p, now)  # a long-missed run may be past its deadline already
    task = None
    invoke = effects.invoke_of(tags, receivers)
    if invoke is not None and p.state is State.PENDING:
        task = effects.invoke_task(p, invoke[0], invoke[1], now)
    return p, task
