"""Fan-out / fan-in: ask every supplier for a quote in parallel, then pick the cheapest.

    python examples/fanout.py --item widget --suppliers acme globex initech umbrella

Fan-out is ``asyncio.gather`` over ``ctx.run`` calls: the steps run concurrently, each
recorded as its own child promise. Fan-in is the gather's result, handed to one more step.

Step ids are numbered in the order the calls are *made*, not the order they finish, so
``gather(ctx.run(a), ctx.run(b))`` is ``.1`` and ``.2`` on every replay: after a crash the
quotes that came back are reused and only the missing ones are asked for again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import zlib
from dataclasses import dataclass
from typing import Any

from troth import Context, Troth

STORE = os.environ.get("TROTH_STORE", "sqlite:///fanout.db")
troth = Troth(STORE)


@dataclass
class Quote:
    supplier: str
    price: float


async def get_quote(ctx: Context, supplier: str, item: str, latency: float) -> Quote:
    """One supplier's quote. A step whose first parameter is ``ctx`` gets its own child
    context: ``ctx.id`` is the step's promise id (and it could make durable calls too)."""
    # Stand-in for an HTTP call: a deterministic price and a delay that varies by supplier.
    seed = zlib.crc32(f"{supplier}/{item}".encode())
    price = round(5 + (seed % 1000) / 100, 2)
    delay = latency * (1 + seed % 3) / 3
    print(f"  asking {supplier:<10} (step {ctx.id})", flush=True)
    await asyncio.sleep(delay)
    print(f"  {supplier:<10} quotes {price:6.2f} after {delay:.2f}s", flush=True)
    return Quote(supplier, price)


def cheapest(quotes: list[Quote]) -> Quote:
    return min(quotes, key=lambda q: q.price)


@troth.register
async def best_quote(
    ctx: Context, item: str, suppliers: list[str], latency: float
) -> dict[str, Any]:
    # Fan out: all the steps are started at once, and run concurrently.
    quotes = await asyncio.gather(*(ctx.run(get_quote, s, item, latency) for s in suppliers))
    # Fan in: the gathered results go into one more (recorded) step.
    best = await ctx.run(cheapest, list(quotes))
    return {"item": item, "best": best, "quotes": len(quotes)}  # best: stored as JSON


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--item", default="widget")
    parser.add_argument(
        "--suppliers", nargs="+", default=["acme", "globex", "initech", "umbrella", "hooli"]
    )
    parser.add_argument("--latency", type=float, default=1.0, help="slowest quote, seconds")
    parser.add_argument("--id", help="execution id (default: quotes/<item>)")
    args = parser.parse_args()
    id = args.id or f"quotes/{args.item}"

    async with troth:
        started = time.monotonic()
        handle = await troth.run(id, best_quote, args.item, args.suppliers, args.latency)
        result = await handle.result()
        elapsed = time.monotonic() - started
        best = result["best"]
        print(f"best price for {result['item']}: {best['price']:.2f} from {best['supplier']}")
        print(f"{result['quotes']} quotes in {elapsed:.2f}s (the slowest, not the sum)")


if __name__ == "__main__":
    asyncio.run(main())
