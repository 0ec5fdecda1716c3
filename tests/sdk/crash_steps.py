"""Steps shared by ``test_pipeline``'s crash test and the child process it kills: the
functions must have the same qualified names in both processes (steps record the name of
the function they ran; a replay that calls another one is non-deterministic)."""

from __future__ import annotations

import asyncio
import os

from troth import Context, Troth


def _log(name: str) -> None:
    with open(os.environ["TROTH_TEST_LOG"], "a") as f:
        f.write(name + "\n")


async def first(x: int) -> int:
    _log("first")
    return x + 1


async def second(x: int) -> int:
    _log("second")
    if os.environ.get("TROTH_TEST_BLOCK") == "1":
        await asyncio.sleep(3600)  # killed here
    return x + 1


def register(t: Troth) -> None:
    @t.register(name="crashy")
    async def crashy(ctx: Context, x: int) -> int:
        a = await ctx.run(first, x)
        return int(await ctx.run(second, a))


async def child(db: str) -> None:
    t = Troth(db)
    register(t)
    async with t:
        await t.run("crash/1", "crashy", 1)
        await asyncio.sleep(3600)
