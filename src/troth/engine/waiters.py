"""Long-poll waiters: futures keyed by promise id, woken after a completion commits.

A waiter is one ``asyncio.Future`` — no thread, no database connection — so ten thousand
clients waiting on one server cost ten thousand small objects.
"""

from __future__ import annotations

import asyncio


class Waiters:
    def __init__(self) -> None:
        self._by_id: dict[str, set[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_id.values())

    def register(self, id: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_id.setdefault(id, set()).add(fut)
        return fut

    def discard(self, id: str, fut: asyncio.Future[None]) -> None:
        futs = self._by_id.get(id)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del self._by_id[id]

    def notify(self, id: str) -> None:
        """Wake everyone waiting on ``id`` (they re-read the promise themselves)."""
        for fut in self._by_id.pop(id, ()):
            if not fut.done():
                fut.set_result(None)

    def wake_all(self) -> None:
        """Wake every waiter to re-read its promise (notifications may have been missed);
        unlike shutdown, each goes on waiting if its promise is still pending."""
        self.notify_all()

    def notify_all(self) -> None:
        """Wake every waiter (shutdown: each answers with what it has)."""
        for id in list(self._by_id):
            self.notify(id)
