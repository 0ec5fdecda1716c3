"""A troth worker: runs ``process_order`` executions the server sends to group ``workers``.

    python examples/remote/worker.py            # TROTH_URL, default http://127.0.0.1:8001

Start two or more (see README.md). Every step prints which worker ran it and returns it,
so the result shows how the work moved between workers. The server gives each execution
(a task) to one worker under a lease; this worker heartbeats its leases every ``ttl / 3``.
Kill it with ``kill -9`` in the middle of a step and, once the lease (``ttl``, 5 s here)
runs out, another worker claims the task with a higher counter and replays the function:
the steps that finished are not run again, the one that was cut off is.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from typing import Any

from troth import Context, Troth

URL = os.environ.get("TROTH_URL", "http://127.0.0.1:8001")

# A worker of group "workers". A short lease makes a dead worker's task move on quickly.
troth = Troth(url=URL, group="workers", ttl=timedelta(seconds=5))


def work(name: str, order: str, seconds: float) -> str:
    """One step: a slow call to some service. Returns who did it."""
    me = troth.process_id
    print(f"[{me}] order {order}: {name} ({seconds:g}s) ...", flush=True)
    time.sleep(seconds)  # sync steps run in a thread: the worker keeps heartbeating
    print(f"[{me}] order {order}: {name} done", flush=True)
    return f"{name}: {me}"


def reserve(order: str, seconds: float) -> str:
    return work("reserve stock", order, seconds)


def charge(order: str, seconds: float) -> str:
    return work("charge", order, seconds)


def pack(order: str, seconds: float) -> str:
    return work("pack", order, seconds)


def ship(order: str, seconds: float) -> str:
    return work("ship", order, seconds)


@troth.register
async def process_order(ctx: Context, order: str, seconds: float) -> dict[str, Any]:
    steps = [await ctx.run(reserve, order, seconds)]
    steps.append(await ctx.run(charge, order, seconds))
    # A durable sleep: the worker does not hold the execution while it waits; the timer
    # fires on the server and any worker of the group resumes it (by replay).
    await ctx.sleep(1)
    steps.append(await ctx.run(pack, order, seconds))
    steps.append(await ctx.run(ship, order, seconds))
    return {"order": order, "steps": steps}


async def main() -> None:
    async with troth:
        print(f"worker {troth.process_id} listening on {URL} (group 'workers')", flush=True)
        await asyncio.Event().wait()  # run until killed / Ctrl-C


if __name__ == "__main__":
    asyncio.run(main())
