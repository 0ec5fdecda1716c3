"""An in-memory store: the full interface, no durability, for fast tests and embedding.

Operations run on the event loop thread one at a time, so each is trivially atomic; an undo
log rolls back the changes of an operation that raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from troth.errors import StoreUnavailable
from troth.model import Promise, State
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


class MemoryStore:
    """Keeps everything in dictionaries; ``memory://`` in a store URL."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.promises: dict[str, tuple[int, Promise]] = {}
        self.meta: dict[str, str] = {}
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
