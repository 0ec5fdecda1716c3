"""An SDK worker for the chaos test (``test_sdk_chaos.py``); killed with -9 at random.

    python tests/reliability/chaos_worker.py --url URL --process-id P --log FILE

Registers ``chain(x, n, slow_s)``: ``n`` steps in sequence, step ``k`` adds ``k`` to the
running value after sleeping ``slow_s``, with a durable ``ctx.sleep`` in the middle. Every
step appends ``start <execution id> <k> <pid> <unix ms>`` when it begins and ``end ...``
when it returns (one line, flushed and closed at once, so lines survive a SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from troth import Context, Troth

LOG: Path


def note(what: str, execution_id: str, k: int) -> None:
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(f"{what} {execution_id} {k} {os.getpid()} {time.time_ns() // 1_000_000}\n")


async def step(execution_id: str, k: int, value: int, slow_s: float) -> int:
    note("start", execution_id, k)
    await asyncio.sleep(slow_s)
    note("end", execution_id, k)
    return value + k


async def main() -> None:
    global LOG
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--process-id", required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    LOG = args.log
    troth = Troth(
        url=args.url, group="chaos", process_id=args.process_id, ttl=timedelta(seconds=1.5)
    )

    @troth.register
    async def chain(ctx: Context, x: int, n: int, slow_s: float) -> int:
        value = x
        for k in range(1, n + 1):
            value = await ctx.run(step, ctx.id, k, value, slow_s)
            if k == n // 2:
                await ctx.sleep(timedelta(milliseconds=100))
        return value

    async with troth:
        note("ready", args.process_id, 0)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
