"""The write pipeline: the SDK's promise writes, batched and strictly ordered.

Every write an execution makes (create a child, record a step's outcome, complete the root)
is *submitted* here and gets a future. A single flusher sends what is queued as one batch —
one store transaction embedded, one ``POST /sdk/batch`` remote — waits for it to be
durable, resolves the futures, and sends the next batch. So:

- **Order**: batches are sent one at a time, in submission order, and a batch is one
  transaction; a write is therefore durable only if every write submitted before it is
  (or was refused on its own: each op has its own result). This holds for any store — it
  does not rely on the store committing concurrent writes in FIFO order.
- **Pipelining**: a caller that does not need the answer yet (a step's record) need not
  await its future; a later write that it awaits (the root's completion, a timer, an rpc)
  is durable only after the record is.
- **Batching**: while one batch is in flight, everything submitted queues up and goes in
  the next, so concurrent executions share transactions (and requests) the way group
  commit shares fsyncs. The flusher also yields one event-loop turn before it sends, so the
  writes an execution makes without awaiting anything in between (a root create, its steps
  and its completion, when the steps are quick) go in one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from troth.engine.sdkops import MAX_OPS, Op, OpResult

Send = Callable[[list[Op]], Awaitable[list[OpResult]]]


class Pipeline:
    def __init__(self, send: Send, *, max_batch: int = MAX_OPS) -> None:
        self._send = send
        self._max = max_batch
        self._queue: list[tuple[Op, asyncio.Future[OpResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: batches sent and ops sent (for tests and benchmarks)
        self.batches = 0
        self.ops = 0

    def submit(self, op: Op) -> asyncio.Future[OpResult]:
        """Queue ``op``; the future resolves once the batch holding it is durable."""
        fut: asyncio.Future[OpResult] = asyncio.get_running_loop().create_future()
        self._queue.append((op, fut))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="troth-pipeline")
        return fut

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let ready tasks add their writes to this batch
            while self._queue:
                batch = self._queue[: self._max]
                del self._queue[: self._max]
                try:
                    results = await self._send([op for op, _ in batch])
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                self.batches += 1
                self.ops += len(batch)
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._flusher = None
            if self._queue:  # cancelled with work left: fail it rather than hang
                err = asyncio.CancelledError()
                for _, fut in self._queue:
                    if not fut.done():
                        fut.set_exception(err)
                self._queue.clear()

    async def close(self) -> None:
        """Send what is queued, then stop."""
        task = self._flusher
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
