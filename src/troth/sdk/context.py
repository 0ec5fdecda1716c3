"""The durable context: what a durable function may do, each call recorded as a promise.

Contract (the replay invariants):
- Every durable call (``run``, ``rpc``, ``sleep``, ``promise``, ``detached``, and a call
  through a child context) gets the id ``<context id>.<n>``, ``n`` counting calls in the
  order they are *made* (synchronously, before the first ``await``), so
  ``asyncio.gather(ctx.run(a), ctx.run(b))`` numbers ``a`` 1 and ``b`` 2 on every replay.
- A call whose promise is already completed returns the recorded outcome without running
  anything: completed steps never run again.
- A call whose recorded function (tag ``troth:func``) differs from the one now made at
  that position raises ``NonDeterminismError`` naming both.
- ``now()`` and ``random()`` are deterministic: ``now()`` is the latest time recorded by the
  execution so far (its start, then each awaited promise's completion), ``random()`` a
  generator seeded by the context id.
"""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Awaitable, Callable, Generator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from troth.model import Promise, State, Value
from troth.sdk.errors import NonDeterminismError
from troth.sdk.registry import return_type

if TYPE_CHECKING:
    from troth.sdk.runtime import Execution

T = TypeVar("T")
FUNC_TAG = "troth:func"
TIMER_TAG = "resonate:timeout"


def _ms(d: timedelta | float) -> int:
    return int((d.total_seconds() if isinstance(d, timedelta) else d) * 1000)


class DurablePromise(Awaitable[Any]):
    """A promise for someone else to complete (human in the loop). Its ``id`` is known at
    once; it is created in the background and awaiting it waits for its value."""

    def __init__(
        self, id: str, created: asyncio.Task[Promise], waiter: Callable[[], Awaitable[Any]]
    ) -> None:
        self.id = id
        self._created = created
        self._waiter = waiter

    async def created(self) -> Promise:
        """Wait until the promise is durably created (then others may complete it)."""
        return await self._created

    def __await__(self) -> Generator[Any, None, Any]:
        return self._waiter().__await__()


class Context:
    """Passed as the first argument (``ctx``) to every durable function."""

    def __init__(self, execution: Execution, id: str, timeout: int, started: int) -> None:
        self._x = execution
        self.id = id
        self.timeout = timeout
        self._seq = 0
        self._time = started
        self._rng = _random.Random(id)

    # -- deterministic helpers -----------------------------------------------------------

    def now(self) -> datetime:
        """Deterministic "now": the latest time this execution has recorded."""
        return datetime.fromtimestamp(self._time / 1000, tz=UTC)

    def random(self) -> float:
        """A deterministic random number in [0, 1) (same sequence on every replay)."""
        return self._rng.random()

    def _next(self) -> str:
        self._seq += 1
        return f"{self.id}.{self._seq}"

    def _saw(self, p: Promise) -> None:
        for t in (p.created_on, p.completed_on):
            if t is not None and t > self._time:
                self._time = t

    def _check(self, p: Promise, func: str) -> None:
        recorded = (p.tags or {}).get(FUNC_TAG)
        if recorded is not None and recorded != func:
            raise NonDeterminismError(
                f"{p.id}: this step was recorded as {recorded!r} but the replay called "
                f"{func!r}; durable functions must make the same calls in the same order"
            )

    # -- durable calls -------------------------------------------------------------------

    def run(
        self, fn: Callable[..., Any], *args: Any, retry: Any = None, **kwargs: Any
    ) -> Awaitable[Any]:
        """Run ``fn(*args, **kwargs)`` as a step: a child promise that records its result.

        ``fn`` may be sync (run in a thread) or async; if its first parameter is ``ctx`` it
        gets a child context and may make durable calls of its own. Retried per ``retry``
        (default: the runtime's step policy).
        """
        id = self._next()
        return self._x.step(self, id, fn, args, kwargs, retry)

    def rpc(
        self, func: str, *args: Any, target: str | None = None, **kwargs: Any
    ) -> Awaitable[Any]:
        """Call the registered function ``func`` on another worker group (``target``: a
        group name or a recv such as ``poll://any@mailers``) and await its result. Embedded,
        it runs in this process."""
        id = self._next()
        return self._x.rpc(self, id, func, args, kwargs, target)

    def detached(
        self, func: Callable[..., Any] | str, *args: Any, id: str | None = None, **kwargs: Any
    ) -> Awaitable[Any]:
        """Start ``func`` as an independent execution that outlives this one; return its
        handle (not awaited). Its id defaults to the next child id."""
        child = self._next()
        return self._x.detached(self, id or child, func, args, kwargs)

    def sleep(self, duration: timedelta | float) -> Awaitable[None]:
        """Sleep durably: a timer promise; after a crash only the rest of it is slept. A
        remote worker does not hold a sleeping function in memory."""
        id = self._next()
        return self._x.sleep(self, id, _ms(duration))

    def promise(
        self, id: str | None = None, timeout: timedelta | float | None = None
    ) -> DurablePromise:
        """A promise for someone else to complete (approve via CLI, curl or the dashboard).

        ``id`` defaults to the next child id; ``timeout`` to the execution's deadline.
        """
        seq_id = self._next()
        pid = id or seq_id
        deadline = (
            self.timeout if timeout is None else min(self.timeout, self._x.now() + _ms(timeout))
        )
        created = asyncio.ensure_future(self._x.create_plain(self, pid, deadline))
        return DurablePromise(pid, created, lambda: self._x.await_plain(self, created))

    # -- decoding helpers for the runtime --------------------------------------------------

    def _decode(self, p: Promise, fn: Callable[..., Any] | None = None) -> Any:
        """The recorded outcome of a completed promise (value, or raise its error)."""
        self._saw(p)
        return self._x.outcome(p, return_type(fn) if fn is not None else Any)


def value_of(p: Promise) -> Value:
    return p.value


def is_done(p: Promise) -> bool:
    return p.state is not State.PENDING
