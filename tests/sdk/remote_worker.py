"""A troth SDK worker process, for the remote-mode tests (``tests/sdk/test_remote.py``).

    python tests/sdk/remote_worker.py --url URL --group G [--process-id P] [--ttl-ms N] [--log FILE]

Creates ``Troth(url=URL, group=G, process_id=P, ttl=N ms)``, registers the durable functions
below and runs until killed. Steps append one line ``"<step> <execution id> <pid>"`` to
``--log`` (opened, written, flushed and closed per line, so the file is readable while the
worker runs and survives a SIGKILL; several workers may share it: lines are appended), so a
test can see which steps ran, where, and how often.

Functions (all registered by name):

- ``pipeline(x, slow_s)``: steps ``one`` (x + 1), ``two`` (doubles, sleeping ``slow_s``
  seconds, logging ``two-start`` first), ``three`` (+ 100); returns the three values.
- ``flow(x)``: a step ``one``, a durable ``ctx.sleep(0.2)``, then ``ctx.rpc("square", ...)``
  (another execution, on any worker of the group); returns a dict.
- ``square(x)``: one step ``square``; returns x * x.
- ``approval(amount)``: a step ``asked``, then awaits ``ctx.promise(id="approve/<id>")``
  (human in the loop), then a step ``decided``; returns ``"<decision> <amount>"``.
- ``fan_out(xs)``: ``ctx.rpc("square", x)`` for each x, concurrently (``asyncio.gather``).
- ``fails(message)``: a step ``boom`` that raises ``ValueError(message)`` (no retries).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from datetime import timedelta
from pathlib import Path

from troth import Context, Retry, Troth

LOG: Path | None = None


def note(step: str, execution_id: str) -> None:
    if LOG is None:
        return
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(f"{step} {execution_id} {os.getpid()}\n")
        f.flush()


async def one(execution_id: str, x: int) -> int:
    note("one", execution_id)
    return x + 1


async def two(execution_id: str, x: int, slow_s: float) -> int:
    note("two-start", execution_id)
    await asyncio.sleep(slow_s)
    note("two", execution_id)
    return x * 2


async def three(execution_id: str, x: int) -> int:
    note("three", execution_id)
    return x + 100


async def square_step(execution_id: str, x: int) -> int:
    note("square", execution_id)
    return x * x


async def asked(execution_id: str) -> None:
    note("asked", execution_id)


async def decided(execution_id: str, decision: str) -> str:
    note("decided", execution_id)
    return decision


async def boom(execution_id: str, message: str) -> None:
    note("boom", execution_id)
    raise ValueError(message)


def register(troth: Troth) -> None:
    @troth.register
    async def pipeline(ctx: Context, x: int, slow_s: float = 0.0) -> list[int]:
        a = await ctx.run(one, ctx.id, x)
        b = await ctx.run(two, ctx.id, a, slow_s)
        c = await ctx.run(three, ctx.id, b)
        return [a, b, c]

    @troth.register
    async def flow(ctx: Context, x: int) -> dict[str, int]:
        a = await ctx.run(one, ctx.id, x)
        await ctx.sleep(timedelta(milliseconds=200))
        sq = await ctx.rpc("square", a)
        return {"one": a, "square": sq}

    @troth.register
    async def square(ctx: Context, x: int) -> int:
        result: int = await ctx.run(square_step, ctx.id, x)
        return result

    @troth.register
    async def approval(ctx: Context, amount: int) -> str:
        await ctx.run(asked, ctx.id)
        decision = await ctx.promise(id=f"approve/{ctx.id}")
        d = await ctx.run(decided, ctx.id, str(decision))
        return f"{d} {amount}"

    @troth.register
    async def fan_out(ctx: Context, xs: list[int]) -> list[int]:
        return list(await asyncio.gather(*(ctx.rpc("square", x) for x in xs)))

    @troth.register
    async def fails(ctx: Context, message: str) -> None:
        await ctx.run(boom, ctx.id, message, retry=Retry.none())


async def main() -> None:
    global LOG
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--process-id", default=None)
    parser.add_argument("--ttl-ms", type=int, default=30_000, help="task lease, ms")
    parser.add_argument("--log", type=Path, default=None, help="step log (appended)")
    args = parser.parse_args()
    LOG = args.log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    troth = Troth(
        url=args.url,
        group=args.group,
        process_id=args.process_id,
        ttl=timedelta(milliseconds=args.ttl_ms),
    )
    register(troth)
    async with troth:
        note("ready", troth.process_id)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
