"""Countdown with durable sleep: kill it at any moment, run it again, it carries on.

    python examples/countdown.py 5 --interval 1

Each tick is a step (``ctx.run``) and each pause a durable timer (``ctx.sleep``): both are
promises in the store (``$TROTH_STORE``, default ``sqlite:///countdown.db`` here). Kill the
process (Ctrl-C, or ``kill -9``) in the middle and start it again with the same arguments:
the recorded ticks are not printed again and only the rest of the current pause is slept.

The execution id is ``countdown/<n>`` unless ``--id`` says otherwise: an id is an identity,
so running the same command after it has finished just prints the stored result. Delete
``countdown.db`` (or pass another ``--id``) to start over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from troth import Context, Troth
from troth.errors import NotFound

STORE = os.environ.get("TROTH_STORE", "sqlite:///countdown.db")
troth = Troth(STORE)


def tick(i: int) -> str:
    """A side effect (here, printing) done once per tick: a step records that it happened."""
    line = f"T-minus {i}"
    print(line, f"({time.strftime('%H:%M:%S')})", flush=True)
    return line


def liftoff() -> str:
    print("Liftoff!", flush=True)
    return "liftoff"


# Functions must be registered before the runtime starts: on start it resumes every
# pending execution found in the store, by calling its function again (a replay).
@troth.register
async def countdown(ctx: Context, n: int, interval: float) -> list[str]:
    # On a replay this loop runs again from the top, but every ``ctx.run`` / ``ctx.sleep``
    # that is already recorded returns at once, without running or sleeping: the function
    # fast-forwards to where it was.
    said = []
    for i in range(n, 0, -1):
        said.append(await ctx.run(tick, i))
        await ctx.sleep(interval)  # a timer promise: survives the process
    said.append(await ctx.run(liftoff))
    return said


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=5, help="seconds to count down from")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    parser.add_argument("--id", help="execution id (default: countdown/<n>)")
    args = parser.parse_args()
    id = args.id or f"countdown/{args.n}"

    async with troth:  # start() has already resumed a countdown left pending by a crash
        try:
            existing = await troth.get(id)
            if await existing.done():
                print(f"{id} has already finished; its stored result:")
            else:
                print(f"{id} was interrupted; resuming where it left off", flush=True)
        except NotFound:
            print(f"{id}: counting down from {args.n}", flush=True)
        # Starts the execution, or (same id) attaches to the one that exists.
        handle = await troth.run(id, countdown, args.n, args.interval)
        print("result:", await handle.result())


if __name__ == "__main__":
    asyncio.run(main())
