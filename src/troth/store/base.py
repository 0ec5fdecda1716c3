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

from troth.model import Promise

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


class Tx(Protocol):
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
