"""Start a ``process_order`` execution on the ``workers`` group and print its result.

    python examples/remote/client.py --order 7 --seconds 3

The client does not run or even import the function: ``troth.rpc`` names it, and the server
turns the execution's promise into a task for a worker of the target group. The id
``orders/<order>`` is the execution's identity: run the client again with the same order
and it prints the stored result (or waits for the running execution) instead of starting
another one.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from troth import Troth

URL = os.environ.get("TROTH_URL", "http://127.0.0.1:8001")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", default="7")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each step")
    args = parser.parse_args()

    # A Troth with a url is also a worker of its own group; this one registers nothing,
    # so it uses a group of its own ("clients") where no task is ever sent.
    async with Troth(url=URL, group="clients") as troth:
        id = f"orders/{args.order}"
        handle = await troth.rpc(id, "process_order", args.order, args.seconds, target="workers")
        print(f"started {id}; waiting for its result ...", flush=True)
        result = await handle.result()
        print(f"{id} finished:")
        for step in result["steps"]:
            print(f"  {step}")


if __name__ == "__main__":
    asyncio.run(main())
