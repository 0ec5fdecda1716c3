"""A durable cron schedule: a function that runs on a timetable, once per run.

    python examples/schedule.py --cron "* * * * * */2" --runs 3

``troth.schedule`` is idempotent (the id ``digest`` is the schedule's identity): run this
script again and it reuses the schedule. Each run is an execution named ``digest/<run time>``
whose steps are recorded like any other; the engine fires runs exactly once, and after
downtime catches up the runs it missed. Stop after ``--runs`` completed runs (the schedule
stays: delete it with ``troth schedules delete digest`` against a server, or drop the store).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from troth import Context, Troth

STORE = os.environ.get("TROTH_STORE", "sqlite:///schedule.db")
troth = Troth(STORE)
done = asyncio.Queue[str]()


def collect(label: str) -> str:
    return f"{label}: 3 new articles"


@troth.register
async def digest(ctx: Context, label: str) -> str:
    summary = await ctx.run(collect, label)
    line = f"run {ctx.id} at {ctx.now():%H:%M:%S}: {summary}"
    print(line, flush=True)
    done.put_nowait(line)
    return summary


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cron", default="* * * * * */2", help="cron, UTC (6th field: seconds)")
    parser.add_argument("--runs", type=int, default=3, help="stop after this many runs")
    args = parser.parse_args()
    async with troth:
        schedule = await troth.schedule("digest", cron=args.cron, func=digest, args=["daily"])
        print(f"schedule {schedule.id!r} ({schedule.cron}); next run at {schedule.next_run_time}")
        for _ in range(args.runs):
            await asyncio.wait_for(done.get(), timeout=120)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
