"""Regression (found by the history checker on three processes over PostgreSQL): a search
read a timer promise as pending past its deadline, another request (another process)
completed it before the search's timeout write, and the search returned the stale
``PENDING`` row — even under ``state=resolved``, and although a client must never observe
``PENDING`` at or after the deadline.

The race is reproduced deterministically: the store's read for the search is wrapped so
that the competing completion commits right after the search's snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from troth.clock import FakeClock
from troth.engine import Engine
from troth.model import Promise, State
from troth.store.memory import MemoryStore

T = 1_700_000_010_000


@pytest.fixture
async def racy() -> AsyncIterator[tuple[Engine, FakeClock]]:
    clock = FakeClock(T - 100)
    engine = Engine(MemoryStore(), clock)
    await engine.open()
    yield engine, clock
    await engine.stop()


async def _search_with_competing_complete(engine: Engine, state: str | None) -> list[Promise]:
    store = engine.store
    original_read = store.read
    done = False

    async def read(op: Callable[[Any], Any]) -> Any:
        nonlocal done
        result = await original_read(op)
        if not done:  # the other process's complete (decided before T) commits now
            done = True

            def complete(tx: Any) -> None:
                p = tx.get_promise("timer")
                tx.update_promise(
                    msgspec.structs.replace(p, state=State.REJECTED_CANCELED, completed_on=T - 5)
                )

            await store.write(complete)
        return result

    store.read = read  # type: ignore[method-assign]
    try:
        page = await engine.search_promises(pattern="timer", state=state)
    finally:
        store.read = original_read  # type: ignore[method-assign]
    return page.promises


@pytest.mark.parametrize("state", [None, "resolved"])
async def test_search_never_returns_a_stale_pending_row(
    racy: tuple[Engine, FakeClock], state: str | None
) -> None:
    engine, clock = racy
    await engine.create_promise("timer", T, tags={"resonate:timeout": "true"})
    clock.set(T)  # the deadline is reached: the search's read sees a due pending timer
    found = await _search_with_competing_complete(engine, state)
    assert all(p.state is not State.PENDING for p in found), found
    if state is None:
        assert [p.state for p in found] == [State.REJECTED_CANCELED]
    else:
        assert found == []  # it is not resolved: it was canceled
    assert (await engine.get_promise("timer")).state is State.REJECTED_CANCELED
