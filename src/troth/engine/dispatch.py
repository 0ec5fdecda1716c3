"""Task dispatch: sending INIT tasks to their receivers, and moving overdue tasks on.

Contract:
- A task is marked ENQUEUED (with ``expires_at = now + time_to_claim``) in a committed
  transaction *before* its message leaves, so two dispatch rounds (or two processes) never
  send one task version twice; if the message is lost, the claim time runs out and the task
  goes back to INIT with ``counter + 1`` and is sent again.
- ``poll`` receivers: the message goes to a connected worker stream chosen by the
  ``Delivery``; with no stream connected the task is *parked* (``ready_at = now + park``)
  and made ready again the moment a stream of its group connects (``stream_connected``).
- ``http`` receivers: the message is POSTed; a failed POST puts the task back to INIT with
  exponential backoff (``attempt`` counts the failures).
- ``notify`` tasks are sent once and COMPLETED when delivered.
- Overdue tasks (lease or claim time passed, or task timeout) are moved on in batches
  (``task_rules.overdue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import quote

import msgspec

from troth import task_rules
from troth.clock import Clock
from troth.errors import TrothError
from troth.model import Promise, Recv, Task, TaskKind, TaskState
from troth.store.base import Store, Tx

log = logging.getLogger("troth.dispatch")

_encode: Final = msgspec.json.encode
_ACTIVE: Final = (TaskState.ENQUEUED, TaskState.CLAIMED)


class Sink(Protocol):
    def send(self, message: bytes) -> bool:
        """Queue one message on a worker stream; ``False`` if the stream is gone."""
        ...


class Delivery(Protocol):
    """How messages reach receivers (the server: SSE streams and HTTP push)."""

    def stream_for(self, recv: Recv) -> Sink | None:
        """A connected worker stream for a ``poll`` receiver, or ``None``."""
        ...

    async def push(self, recv: Recv, message: bytes) -> bool:
        """POST a message to an ``http`` receiver; ``True`` on a 2xx answer."""
        ...


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """Dispatch knobs; defaults follow API.md 3."""

    time_to_claim_ms: int = 60_000
    park_ms: int = 5_000
    push_backoff_ms: int = 500
    push_backoff_max_ms: int = 60_000
    batch: int = 200
    max_sleep_s: float = 5.0
    base_url: str = "http://127.0.0.1:8001"


def task_message(task: Task, base_url: str) -> bytes:
    """The invoke/resume message of API.md 3, with the GET-form links for the worker."""
    path = f"{quote(task.id, safe='/:@')}/{task.counter}"
    return _encode(
        {
            "type": task.type.value,
            "task": task.to_wire(),
            "href": {
                "claim": f"{base_url}/tasks/claim/{path}",
                "complete": f"{base_url}/tasks/complete/{path}",
                "heartbeat": f"{base_url}/tasks/heartbeat/{path}",
            },
        }
    )


def notify_message(promise: Promise) -> bytes:
    return _encode({"type": "notify", "promise": promise})


@dataclass(frozen=True, slots=True)
class _Send:
    task: Task  # as marked (ENQUEUED or, for a poll notify, COMPLETED)
    message: bytes
    sink: Sink | None


class Dispatcher:
    def __init__(
        self, store: Store, clock: Clock, delivery: Delivery, settings: TaskSettings
    ) -> None:
        self.store = store
        self.clock = clock
        self.delivery = delivery
        self.settings = settings
        self.wake = asyncio.Event()
        #: Called before parked tasks are made ready for a newly connected stream (see
        #: ``stream_connected``); set by the server when several processes share a store.
        self.announce: Callable[[], Awaitable[None]] | None = None
        self._pushes: set[asyncio.Task[None]] = set()
        # Like the promise sweeper: the time the loop sleeps toward, whether it is awake,
        # and the earliest deadline announced while it was awake (see ``deadline``).
        self._armed_until: int | None = None
        self._awake = False
        self._seen_while_awake: int | None = None

    def deadline(self, at: int) -> None:
        """A task got a new deadline (a claim's lease): wake early enough to act on it."""
        if self._awake:
            seen = self._seen_while_awake
            if seen is None or at < seen:
                self._seen_while_awake = at
        elif self._armed_until is None or at < self._armed_until:
            self._armed_until = at
            self.wake.set()

    def _seen(self) -> int | None:
        return self._seen_while_awake

    # -- overdue ---------------------------------------------------------------------------

    async def advance(self) -> int:
        """Time out or reclaim every overdue task; return how many changed."""
        clock, batch = self.clock, self.settings.batch
        total = 0

        def op(tx: Tx) -> int:
            now = clock.now()
            changed = 0
            for t in tx.overdue_tasks(now, batch):
                moved = task_rules.overdue(t, now)
                if moved is not None:
                    tx.update_task(moved)
                    changed += 1
            return changed

        while True:
            n = await self.store.write(op)
            total += n
            if n < batch:
                return total

    # -- sending ---------------------------------------------------------------------------

    async def dispatch(self) -> int:
        """Send what is ready now; return how many messages left."""
        now = self.clock.now()
        ready = await self.store.read(lambda tx: tx.dispatchable_tasks(now, self.settings.batch))
        if not ready:
            return 0
        sinks: dict[str, Sink | None] = {}
        for t in ready:
            if t.recv.type == "poll":
                sinks[t.id] = self.delivery.stream_for(t.recv)
        sends = await self.store.write(lambda tx: self._mark(tx, ready, sinks))
        sent = 0
        for s in sends:
            if s.sink is not None:
                if s.sink.send(s.message):
                    sent += 1
            else:
                push = asyncio.create_task(self._push(s), name=f"troth-push:{s.task.id}")
                self._pushes.add(push)
                push.add_done_callback(self._pushes.discard)
        return sent + sum(1 for s in sends if s.sink is None)

    def _mark(self, tx: Tx, ready: list[Task], sinks: dict[str, Sink | None]) -> list[_Send]:
        now = self.clock.now()
        settings = self.settings
        shared = getattr(self.store, "shared", False)
        out: list[_Send] = []
        for seen in ready:
            t = tx.get_task(seen.id)
            if t is None or t.state is not TaskState.INIT or t.counter != seen.counter:
                continue  # moved on since we looked
            if shared and tx.tasks_of_root(t.root_promise_id, _ACTIVE):
                # Another process sent a task of this root since we looked (the store
                # serializes task writes per root, so this check sees its commit).
                continue
            if t.recv.type == "poll" and sinks.get(t.id) is None:
                tx.update_task(msgspec.structs.replace(t, ready_at=now + settings.park_ms))
                continue
            if t.type is TaskKind.NOTIFY:
                promise = tx.get_promise(t.leaf_promise_id or t.root_promise_id)
                if promise is None:
                    continue
                message = notify_message(promise)
                if t.recv.type == "poll":
                    marked = msgspec.structs.replace(t, state=TaskState.COMPLETED, completed_on=now)
                else:
                    marked = msgspec.structs.replace(
                        t,
                        state=TaskState.ENQUEUED,
                        expires_at=now + settings.time_to_claim_ms,
                    )
            else:
                marked = msgspec.structs.replace(
                    t, state=TaskState.ENQUEUED, expires_at=now + settings.time_to_claim_ms
                )
                message = task_message(marked, settings.base_url)
            tx.update_task(marked)
            out.append(_Send(marked, message, sinks.get(t.id)))
        return out

    async def _push(self, s: _Send) -> None:
        try:
            ok = await self.delivery.push(s.task.recv, s.message)
        except Exception:
            log.exception("push of task %s failed", s.task.id)
            ok = False
        clock, settings = self.clock, self.settings

        def op(tx: Tx) -> None:
            t = tx.get_task(s.task.id)
            if t is None or t.state is not TaskState.ENQUEUED or t.counter != s.task.counter:
                return
            now = clock.now()
            if ok:
                if t.type is TaskKind.NOTIFY:
                    tx.update_task(
                        msgspec.structs.replace(t, state=TaskState.COMPLETED, completed_on=now)
                    )
                return
            backoff = min(
                settings.push_backoff_ms * 2 ** min(t.attempt, 20), settings.push_backoff_max_ms
            )
            tx.update_task(
                msgspec.structs.replace(
                    t,
                    state=TaskState.INIT,
                    attempt=t.attempt + 1,
                    expires_at=None,
                    ready_at=now + backoff,
                )
            )

        try:
            await self.store.write(op)
        except TrothError as exc:
            log.warning("recording push of task %s: %s", s.task.id, exc)
        self.wake.set()

    async def stream_connected(self, recv_key: str) -> None:
        """A worker stream connected: tasks parked for its group are ready at once.

        With several server processes the delivery first tells the others that this
        process now has a stream of the group (``announce``), so that the one which picks
        the tasks up sends them here instead of parking them again.
        """
        if self.announce is not None:
            await self.announce()
        clock = self.clock
        n = await self.store.write(lambda tx: tx.ready_tasks_for(recv_key, clock.now()))
        if n:
            self.wake.set()

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.1
        while True:
            self.wake.clear()
            self._awake = True
            self._seen_while_awake = None
            try:
                await self.advance()
                await self.dispatch()
                nxt = await self.store.read(lambda tx: tx.next_task_time())
                backoff = 0.1
            except TrothError as exc:
                log.warning("dispatcher: %s; retrying in %.1fs", exc, backoff)
                self._awake = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.max_sleep_s)
                continue
            except Exception:
                log.exception("dispatcher failed; retrying")
                self._awake = False
                await asyncio.sleep(1.0)
                continue
            now = self.clock.now()
            # A time already past belongs to a task that could not be sent (its root has an
            # active task): completing or dropping that one wakes us, so don't spin on it.
            if nxt is not None and nxt <= now:
                nxt = None
            seen = self._seen()
            if seen is not None and (nxt is None or seen < nxt):
                nxt = seen
            self._awake = False
            delay = self.settings.max_sleep_s
            if nxt is not None:
                delay = min(delay, max(0.0, (nxt - now) / 1000))
            # It wakes by itself after ``delay``: only a deadline before that must wake it
            # (``deadline``), not every claim's lease.
            self._armed_until = now + int(delay * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    async def close(self) -> None:
        for push in list(self._pushes):
            push.cancel()
        for push in list(self._pushes):
            with contextlib.suppress(asyncio.CancelledError):
                await push
