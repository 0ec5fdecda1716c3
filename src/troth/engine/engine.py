"""The engine: the only place the rules are applied, one store transaction per request.

Every public method builds an *operation* (a sync function of a ``Tx``) that reads the
current record, asks ``troth.rules`` for a decision, writes what the decision says, and
returns it. The store runs it in a transaction (batched with others by group commit); only
after the commit does the engine wake waiters and answer. Time is read inside the operation,
so the rules see the moment the transaction applies them.

Background work (``start``/``stop``): the timeout sweeper, which times out expired pending
promises without anybody reading them, so that timeouts are observed (and, later, callbacks
fire) on time even for promises nobody looks at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from troth import rules, task_rules
from troth.clock import Clock, SystemClock
from troth.engine import effects
from troth.engine.cursor import Cursors
from troth.engine.dispatch import Delivery, Dispatcher, TaskSettings
from troth.engine.schedules import ScheduleOps
from troth.engine.taskops import TaskOps
from troth.engine.waiters import Waiters
from troth.errors import (
    AlreadyCompleted,
    AlreadyExists,
    FencingFailed,
    NotFound,
    TrothError,
    ValidationError,
)
from troth.model import (
    COMPLETIONS,
    EMPTY,
    MAX_TIMEOUT,
    MAX_TTL,
    Promise,
    SearchPage,
    State,
    Task,
    TaskState,
    Value,
)
from troth.recv import DEFAULT_RECEIVERS, parse_recv
from troth.store.base import SWEEP_BATCH, PromiseQuery, Store, Tx

T = TypeVar("T")
log = logging.getLogger("troth.engine")

SEARCH_STATES = ("pending", "resolved", "rejected")


def _search_state(state: State) -> str:
    """The ``state`` search filter a stored state falls under (API.md 1.5)."""
    if state is State.PENDING:
        return "pending"
    return "resolved" if state is State.RESOLVED else "rejected"


Fence = tuple[str, int]
"""``(task id, counter)`` from the ``Task-Id`` / ``Task-Counter`` headers."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a promise operation decided and what tasks it created."""

    decision: rules.Decision | None = None
    tasks: list[Task] = field(default_factory=list)
    task: Task | None = None
    fenced: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits (API.md 0); configurable, these are the defaults."""

    max_id_bytes: int = 1024
    max_tags: int = 64
    max_wait_ms: int = 5 * 60 * 1000
    max_search_limit: int = 1000
    #: The sweeper never sleeps longer than this, so a clock jump is noticed eventually.
    max_sweep_sleep_s: float = 5.0


def _field_error(message: str, field: str) -> ValidationError:
    return ValidationError(f"{message} - at {field}", details=[{"field": field}])


def _check_strings(pairs: dict[str, str], field: str) -> None:
    """Refuse strings that cannot be stored as UTF-8 (embedded callers can pass them)."""
    try:
        for k, v in pairs.items():
            k.encode()
            v.encode()
            if "\x00" in k or "\x00" in v:
                raise _field_error("keys and values must not contain NUL (U+0000)", field)
    except (UnicodeEncodeError, AttributeError):
        raise _field_error("keys and values must be valid Unicode strings", field) from None


def check_key(key: str | None, field: str) -> None:
    """Idempotency keys: any Unicode text without NUL (PostgreSQL text cannot hold it)."""
    if key is not None and "\x00" in key:
        raise _field_error("must not contain NUL (U+0000)", field)


class Engine(TaskOps, ScheduleOps):
    """Durable promises over a ``Store``; shared by the HTTP server and the embedded SDK.

    Args:
        delivery: how task messages reach receivers; without one, tasks are stored and
            moved on (leases, timeouts) but never sent.
        receivers: logical receiver names (``default`` → ``poll://any@default``).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock | None = None,
        limits: Limits | None = None,
        *,
        delivery: Delivery | None = None,
        task_settings: TaskSettings | None = None,
        receivers: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.limits = limits or Limits()
        self.task_settings = task_settings or TaskSettings()
        self.receivers = {**DEFAULT_RECEIVERS, **(receivers or {})}
        self._task_wake = asyncio.Event()
        self._schedule_wake = asyncio.Event()
        self._schedule_armed = None
        self.dispatcher: Dispatcher | None = None
        if delivery is not None:
            self.dispatcher = Dispatcher(store, self.clock, delivery, self.task_settings)
            self._task_wake = self.dispatcher.wake
        self.waiters = Waiters()
        self._cursors: Cursors | None = None
        self._wake = asyncio.Event()
        # Sweeper scheduling (see ``_after``): the deadline it sleeps toward, whether it is
        # awake, and the earliest deadline created while it was awake.
        self._armed_until: int | None = None
        self._sweeper_awake = False
        self._seen_while_awake: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: More background loops to run from ``start`` to ``stop`` (name, coroutine
        #: function), e.g. the server's stream presence across processes.
        self.extra_loops: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._stopping = False
        #: Optional observer (metrics): called with every promise a write created, completed
        #: or timed out, after it committed.
        self.on_written: Callable[[Promise], None] | None = None

    # -- life cycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store and load the cursor key (creating it on first start)."""
        await self.store.open()

        def load_key(tx: Tx) -> str:
            key = tx.get_meta("cursor_key")
            if key is None:
                key = secrets.token_hex(32)
                tx.set_meta("cursor_key", key)
            return key

        self._cursors = Cursors(bytes.fromhex(await self.store.write(load_key)))

    async def start(self) -> None:
        """Open, then start background loops (the sweeper)."""
        if self._tasks:
            return
        await self.open()
        subscribe = getattr(self.store, "subscribe", None)
        if subscribe is not None:  # a store shared with other processes (PostgreSQL)
            subscribe(self._on_remote)
        for name, loop in self.extra_loops:
            self._tasks.append(asyncio.create_task(loop(), name=name))
        self._tasks.append(asyncio.create_task(self._sweeper(), name="troth-sweeper"))
        self._tasks.append(
            asyncio.create_task(
                self._schedule_loop(self.limits.max_sweep_sleep_s), name="troth-schedules"
            )
        )
        if self.dispatcher is not None:
            self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="troth-dispatcher"))

    def begin_shutdown(self) -> None:
        """Wake every long-poll waiter so that connections can drain (SIGTERM)."""
        self._stopping = True
        self.waiters.notify_all()

    async def stop(self) -> None:
        """Stop background loops, then close the store (queued commits finish first)."""
        self.begin_shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.dispatcher is not None:
            await self.dispatcher.close()
        await self.store.close()

    def _on_remote(self, event: dict[str, Any] | None) -> None:
        """Another process committed something (``NOTIFY``): wake what it concerns.

        ``None`` means notifications may have been missed (the listening connection was
        re-established): wake everything, each re-reads the store.
        """
        if event is None:
            self.waiters.wake_all()
            self.tasks_changed()
            self._wake.set()
            self._schedule_wake.set()
            return
        for id in event.get("c", ()):
            self.waiters.notify(id)
        deadline = event.get("d")
        if isinstance(deadline, int):
            self._deadline(deadline)
        if event.get("t"):
            self.tasks_changed()
        if event.get("s"):
            self._schedule_wake.set()

    # -- validation ----------------------------------------------------------------------

    def _check_id(self, id: str, field: str = "$.id") -> None:
        if not id:
            raise _field_error("id must not be empty", field)
        try:
            size = len(id.encode())
        except UnicodeEncodeError:
            raise _field_error("id is not valid Unicode (lone surrogate)", field) from None
        if size > self.limits.max_id_bytes:
            raise _field_error(f"id is longer than {self.limits.max_id_bytes} bytes", field)
        if "\x00" in id:
            # Every backend refuses it alike: PostgreSQL text cannot hold U+0000.
            raise _field_error("id must not contain NUL (U+0000)", field)

    def _check_create(self, id: str, timeout: int, tags: dict[str, str] | None) -> None:
        self._check_id(id)
        if not 0 <= timeout <= MAX_TIMEOUT:
            raise _field_error("timeout must be an integer from 0 to 2^63-1", "$.timeout")
        if tags is not None:
            if len(tags) > self.limits.max_tags:
                raise _field_error(f"at most {self.limits.max_tags} tags are allowed", "$.tags")
            _check_strings(tags, "$.tags")

    def _check_value(self, value: Value, field: str) -> None:
        if value.headers:
            _check_strings(value.headers, f"{field}.headers")

    # -- promises ------------------------------------------------------------------------

    async def create_promise(
        self,
        id: str,
        timeout: int,
        *,
        param: Value = EMPTY,
        tags: dict[str, str] | None = None,
        ikey: str | None = None,
        strict: bool = False,
        fence: Fence | None = None,
    ) -> tuple[Promise, bool]:
        """Create a promise (API.md 1.3); return it and whether it was newly created.

        A tag ``resonate:invoke`` also creates its invoke task, in the same transaction.

        Raises:
            AlreadyExists: the id exists and the request is not a replay (409).
            FencingFailed: ``fence`` names a task not CLAIMED with that counter (412).
        """
        out = await self._create(id, timeout, param, tags, ikey, strict, fence, None)
        assert out.decision is not None and out.decision.promise is not None
        return out.decision.promise, out.decision.status == rules.CREATED

    async def create_promise_and_task(
        self,
        id: str,
        timeout: int,
        *,
        process_id: str,
        ttl: int,
        param: Value = EMPTY,
        tags: dict[str, str] | None = None,
        ikey: str | None = None,
        strict: bool = False,
    ) -> tuple[Promise, Task | None]:
        """``POST /promises/task``: create a promise and its invoke task, already CLAIMED by
        ``process_id`` for ``ttl`` ms. A deduplicated create returns no task."""
        if not process_id:
            raise _field_error("processId must not be empty", "$.task.processId")
        if not 0 <= ttl <= MAX_TTL:
            raise _field_error("ttl must be from 0 to 2^62 ms", "$.task.ttl")
        out = await self._create(id, timeout, param, tags, ikey, strict, None, (process_id, ttl))
        assert out.decision is not None and out.decision.promise is not None
        return out.decision.promise, out.task

    async def _create(
        self,
        id: str,
        timeout: int,
        param: Value,
        tags: dict[str, str] | None,
        ikey: str | None,
        strict: bool,
        fence: Fence | None,
        claim: tuple[str, int] | None,
    ) -> _Outcome:
        self._check_create(id, timeout, tags)
        self._check_value(param, "$.param")
        check_key(ikey, "Idempotency-Key")
        param = param.normalized()
        tags = tags or None
        invoke = effects.invoke_of(tags, self.receivers)
        clock, receivers = self.clock, self.receivers

        def op(tx: Tx) -> _Outcome:
            now = clock.now()
            if fence is not None and not task_rules.fence_holds(
                tx.get_task(fence[0]), fence[1], now
            ):
                return _Outcome(fenced=True)
            new = Promise(
                id=id,
                state=State.PENDING,
                timeout=timeout,
                created_on=now,
                param=param,
                idempotency_key_for_create=ikey,
                tags=tags,
            )
            # Optimistic: most creates are of new ids, so try the insert the rules would
            # make for an absent id, and only read the stored promise when it exists.
            fresh = rules.decide_create(None, new, strict, now)
            created = fresh.write
            assert created is not None
            if tx.try_insert_promise(created):
                if created.state is not State.PENDING:
                    return _Outcome(fresh)
                if claim is not None:
                    recv = invoke[0] if invoke else parse_recv("default", receivers=receivers)
                    task = msgspec.structs.replace(
                        effects.invoke_task(created, recv, now, now),
                        state=TaskState.CLAIMED,
                        process_id=claim[0],
                        ttl=claim[1],
                        expires_at=now + claim[1],
                    )
                    tx.insert_task(task)
                    return _Outcome(fresh, task=task)
                if invoke is not None:
                    task = effects.invoke_task(created, invoke[0], invoke[1], now)
                    tx.insert_task(task)
                    return _Outcome(fresh, tasks=[task])
                return _Outcome(fresh)
            decision = rules.decide_create(tx.get_promise(id), new, strict, now)
            tasks: list[Task] = []
            if decision.write is not None:
                tx.update_promise(decision.write)
                tasks = effects.on_completed(tx, [decision.write], now)
            return _Outcome(decision, tasks=tasks)

        out = await self.store.write(op)
        self._settled(out)
        decision = out.decision
        assert decision is not None and decision.promise is not None
        if not decision.ok:
            p = decision.promise
            hint = (
                "send the same Idempotency-Key to deduplicate"
                if not strict or p.state is State.PENDING
                else "in strict mode only a pending promise deduplicates a create"
            )
            raise AlreadyExists(
                f"promise {id!r} already exists ({p.state.value}); {hint}",
                details=[{"promise": id, "state": p.state.value}],
            )
        return out

    async def complete_promise(
        self,
        id: str,
        state: State,
        *,
        value: Value = EMPTY,
        ikey: str | None = None,
        strict: bool = False,
        fence: Fence | None = None,
    ) -> tuple[Promise, bool]:
        """Resolve, reject or cancel a promise (API.md 1.3); return it and whether this
        request completed it. Its callbacks become tasks in the same transaction.

        Raises:
            NotFound: no such promise (404).
            AlreadyCompleted: completed differently or with another key (403).
            FencingFailed: ``fence`` names a task not CLAIMED with that counter (412).
        """
        self._check_id(id, "id")
        if state not in COMPLETIONS:
            raise _field_error("state must be RESOLVED, REJECTED or REJECTED_CANCELED", "$.state")
        self._check_value(value, "$.value")
        check_key(ikey, "Idempotency-Key")
        value = value.normalized()
        clock = self.clock

        def op(tx: Tx) -> _Outcome:
            now = clock.now()
            if fence is not None and not task_rules.fence_holds(
                tx.get_task(fence[0]), fence[1], now
            ):
                return _Outcome(fenced=True)
            decision = rules.decide_complete(tx.get_promise(id), state, value, ikey, strict, now)
            tasks: list[Task] = []
            if decision.write is not None:
                tx.update_promise(decision.write)
                tasks = effects.on_completed(tx, [decision.write], now)
            return _Outcome(decision, tasks=tasks)

        out = await self.store.write(op)
        self._settled(out)
        decision = out.decision
        assert decision is not None
        if decision.status == 404:
            raise NotFound(f"promise {id!r} not found", code=rules.NOT_FOUND_CODE)
        assert decision.promise is not None
        if not decision.ok:
            p = decision.promise
            raise AlreadyCompleted(
                f"promise {id!r} is already {p.state.value}; it cannot become {state.value}"
                + ("" if strict else " (send the same Idempotency-Key to deduplicate)"),
                code=decision.code,
                details=[{"promise": id, "state": p.state.value}],
            )
        return decision.promise, decision.status == rules.CREATED

    def _settled(self, out: _Outcome) -> None:
        """Post-commit effects of an operation's outcome (raises 412 if it was fenced out)."""
        if out.fenced:
            raise FencingFailed(
                "the fencing task is not claimed with that counter (lease lost?); "
                "nothing was written"
            )
        if out.decision is not None:
            self._after(out.decision.write)
        if out.tasks or out.task is not None:
            self.tasks_changed()

    async def _expire(self, ids: list[str]) -> dict[str, Promise]:
        """Time out (lazily) the given promises if they are still pending and due."""
        clock = self.clock

        def op(tx: Tx) -> tuple[list[Promise], list[Task]]:
            now = clock.now()
            done = []
            for id in ids:
                stored = tx.get_promise(id)
                expired = rules.expire(stored, now) if stored else None
                if expired is not None:
                    done.append(expired)
            if not done:
                return done, []
            tx.update_promises(done)
            return done, effects.on_completed(tx, done, now)

        done, tasks = await self.store.write(op)
        if tasks:
            self.tasks_changed()
        for p in done:
            self.waiters.notify(p.id)
            if self.on_written is not None:
                self.on_written(p)
        return {p.id: p for p in done}

    async def get_promise(self, id: str) -> Promise:
        """Read a promise, timing it out first if it is due. Raises ``NotFound``."""
        self._check_id(id, "id")
        p = await self.store.read(lambda tx: tx.get_promise(id))
        if p is None:
            raise NotFound(f"promise {id!r} not found", code=rules.NOT_FOUND_CODE)
        if p.state is State.PENDING and self.clock.now() >= p.timeout:
            expired = await self._expire([id])
            # Someone may have completed it between our read and the write: read again.
            p = expired.get(id) or await self.store.read(lambda tx: tx.get_promise(id)) or p
        return p

    async def wait_promise(self, id: str, wait_ms: int) -> Promise:
        """Read a promise, waiting up to ``wait_ms`` for it to complete (API.md 1.6).

        Returns as soon as it is completed or timed out, else when the wait elapses
        (still ``PENDING``). The waiter is registered before the first read, so a
        completion between the read and the wait is never missed.
        """
        if not 0 <= wait_ms <= self.limits.max_wait_ms:
            raise _field_error(f"wait must be between 0 and {self.limits.max_wait_ms} ms", "wait")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_ms / 1000
        while True:
            fut = self.waiters.register(id)
            try:
                p = await self.get_promise(id)
                remaining = give_up - loop.time()
                if p.state is not State.PENDING or remaining <= 0 or self._stopping:
                    return p
                until_deadline = max(0.0, (p.timeout - self.clock.now()) / 1000)
                # With a store shared by several processes, a completion elsewhere arrives as
                # a notification; re-reading now and then bounds the delay if one is missed.
                recheck = getattr(self.store, "recheck_s", None) or until_deadline + 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fut, min(remaining, until_deadline + 0.001, recheck))
            finally:
                self.waiters.discard(id, fut)

    async def search_promises(
        self,
        *,
        pattern: str = "*",
        state: str | None = None,
        tags: dict[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SearchPage:
        """Search promises newest first (API.md 1.5); a cursor carries the whole query."""
        assert self._cursors is not None, "Engine.open() was not called"
        if cursor:
            query = self._cursors.decode(cursor)
        else:
            if state is not None:
                state = state.lower()
                if state not in SEARCH_STATES:
                    raise _field_error("state must be one of pending, resolved, rejected", "state")
            if not 1 <= limit <= self.limits.max_search_limit:
                raise _field_error(
                    f"limit must be between 1 and {self.limits.max_search_limit}", "limit"
                )
            query = PromiseQuery(pattern or "*", state, dict(tags or {}), limit, None)
        probe = PromiseQuery(query.pattern, query.state, query.tags, query.limit + 1, query.before)
        now = self.clock.now()
        rows = await self.store.read(lambda tx: tx.search_promises(probe, now))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        due = [p.id for _, p in rows if p.state is State.PENDING and now >= p.timeout]
        next_cursor = self._cursors.encode(query, rows[-1][0]) if more and rows else None
        if due:
            expired = await self._expire(due)
            # A due promise that did not time out was completed by another request (another
            # process) after our read: never return the stale PENDING row; read it again and
            # keep it only if it still matches the state filter (found by tools/linearize).
            gone = [id for id in due if id not in expired]
            if gone:
                fresh = await self.store.read(lambda tx: {id: tx.get_promise(id) for id in gone})
                expired.update({id: p for id, p in fresh.items() if p is not None})
            rows = [(seq, expired.get(p.id, p)) for seq, p in rows]
            if query.state is not None:
                rows = [(seq, p) for seq, p in rows if _search_state(p.state) == query.state]
        return SearchPage(promises=[p for _, p in rows], cursor=next_cursor)

    # -- timeouts ------------------------------------------------------------------------

    def _after(self, written: Promise | None) -> None:
        """Post-commit effects of a write: wake waiters, re-arm the sweeper if needed.

        The sweeper is woken only by a deadline earlier than the one it sleeps toward; while
        it is awake, new deadlines are collected in ``_seen_while_awake`` and taken into
        account when it goes back to sleep. Creates under load therefore cost the sweeper
        nothing (an earlier version woke it for every create and made it spin).
        """
        if written is None:
            return
        if self.on_written is not None:
            self.on_written(written)
        if written.state is not State.PENDING:
            self.waiters.notify(written.id)
        else:
            self._deadline(written.timeout)

    def _deadline(self, at: int) -> None:
        """A pending promise with deadline ``at`` exists: make the sweeper wake by then."""
        if self._sweeper_awake:
            seen = self._seen_while_awake
            if seen is None or at < seen:
                self._seen_while_awake = at
        elif self._armed_until is None or at < self._armed_until:
            self._armed_until = at
            self._wake.set()

    async def sweep(self) -> int:
        """Time out every pending promise that is due now; return how many.

        Works in batches of ``SWEEP_BATCH`` per transaction so that a mass expiry (100,000
        promises with one deadline) neither holds the writer for long nor builds one huge
        transaction.
        """
        clock = self.clock
        total = 0

        def op(tx: Tx) -> tuple[list[Promise], list[Task]]:
            now = clock.now()
            expired = [e for p in tx.due_promises(now, SWEEP_BATCH) if (e := rules.expire(p, now))]
            if not expired:
                return expired, []
            tx.update_promises(expired)
            return expired, effects.on_completed(tx, expired, now)

        while True:
            batch, tasks = await self.store.write(op)
            if tasks:
                self.tasks_changed()
            for p in batch:
                self.waiters.notify(p.id)
                if self.on_written is not None:
                    self.on_written(p)
            total += len(batch)
            if len(batch) < SWEEP_BATCH:
                return total

    def _seen_deadline(self) -> int | None:
        # A method, not an inline read: the attribute changes across awaits (in ``_after``).
        return self._seen_while_awake

    @staticmethod
    def _earliest(a: int | None, b: int | None) -> int | None:
        return b if a is None else a if b is None else min(a, b)

    async def _sweeper(self) -> None:
        backoff = 0.1
        while True:
            self._wake.clear()
            self._sweeper_awake = True
            self._seen_while_awake = None
            try:
                await self.sweep()
                nxt = await self.store.read(lambda tx: tx.next_deadline())
                backoff = 0.1
            except TrothError as exc:
                log.warning("sweeper: %s; retrying in %.1fs", exc, backoff)
                self._sweeper_awake = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.limits.max_sweep_sleep_s)
                continue
            except Exception:
                log.exception("sweeper failed; retrying")
                self._sweeper_awake = False
                await asyncio.sleep(1.0)
                continue
            nxt = self._earliest(nxt, self._seen_deadline())
            self._sweeper_awake = False
            delay = self.limits.max_sweep_sleep_s
            if nxt is not None:
                delay = min(delay, max(0.0, (nxt - self.clock.now()) / 1000))
            # It wakes by itself after ``delay``: only a deadline before that must wake it
            # (``_after``), not every create (a root without a deadline, say).
            self._armed_until = self.clock.now() + int(delay * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- helpers for other front ends ----------------------------------------------------

    async def run_write(self, op: Callable[[Tx], T]) -> T:
        """Run an arbitrary operation in a write transaction (tools and tests)."""
        return await self.store.write(op)
