"""The SDK's write pipeline: one batch in flight, submission order, batching while a batch
is in flight, per-batch failures."""

from __future__ import annotations

import asyncio

import pytest

from troth.engine.sdkops import Op, OpResult
from troth.errors import StoreUnavailable
from troth.sdk.pipeline import Pipeline


class FakeStore:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def send(self, ops: list[Op]) -> list[OpResult]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.fail:
                raise StoreUnavailable("disk full")
            self.batches.append([op.id for op in ops])
            return [OpResult(status=201) for _ in ops]
        finally:
            self.in_flight -= 1


def op(id: str) -> Op:
    return Op(kind="create", id=id, timeout=1)


async def test_writes_submitted_together_go_in_one_batch_in_order() -> None:
    store = FakeStore()
    p = Pipeline(store.send)
    futs = [p.submit(op(str(i))) for i in range(5)]
    assert [r.status for r in await asyncio.gather(*futs)] == [201] * 5
    assert store.batches == [["0", "1", "2", "3", "4"]]


async def test_one_batch_in_flight_and_the_next_collects_meanwhile() -> None:
    store = FakeStore()
    store.release.clear()
    p = Pipeline(store.send)
    first = p.submit(op("a"))
    await asyncio.sleep(0.01)  # "a" is in flight
    later = [p.submit(op(x)) for x in "bcd"]
    await asyncio.sleep(0.01)
    assert not first.done() and store.batches == []
    store.release.set()
    await asyncio.gather(first, *later)
    assert store.batches == [["a"], ["b", "c", "d"]]
    assert store.most_in_flight == 1


async def test_a_batch_size_limit_keeps_order() -> None:
    store = FakeStore()
    p = Pipeline(store.send, max_batch=2)
    await asyncio.gather(*(p.submit(op(str(i))) for i in range(5)))
    assert store.batches == [["0", "1"], ["2", "3"], ["4"]]


async def test_a_failed_batch_fails_its_writes_only() -> None:
    store = FakeStore()
    store.fail = True
    p = Pipeline(store.send)
    failed = p.submit(op("x"))
    with pytest.raises(StoreUnavailable):
        await failed
    store.fail = False
    assert (await p.submit(op("y"))).status == 201
    assert store.batches == [["y"]]
