"""Human in the loop: an order waits, durably, for someone to approve it.

    python examples/approval.py --order 42 --approve-after 2     # approves itself after 2 s
    python examples/approval.py --order 43                       # waits for a human

The function creates the promise ``approval/<order>`` with ``ctx.promise(id=...)`` and
awaits it. Anyone may complete that promise, from anywhere, at any time before its
timeout; the function then goes on with the value (``approved`` ships the order, anything
else releases the stock). Waiting costs nothing and survives restarts: kill the process,
start it again, it is still waiting for the same promise.

Who resolves it:

- With a troth server (functions running on workers, ``Troth(url=...)``), a human runs
  ``troth promises resolve approval/43 --value approved`` or the equivalent ``curl``; the
  example prints both.
- Embedded (this script), ``--approve-after SECONDS`` resolves it from a background task
  of the same process, as a stand-in for the human.
- Or a second process on the same store::

      python examples/approval.py --resolve approval/43 --value approved

  The waiting process does not see a write made by another process at once (embedded,
  waiters are in-process; it re-reads every few minutes): stop it (Ctrl-C) before or after
  resolving and start it again with the same ``--order``, and it finishes at once.

The store is ``--store`` or ``$TROTH_STORE``, default ``sqlite:///approval.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os

from troth import Context, PromiseTimedOut, Troth
from troth.engine import Engine
from troth.errors import AlreadyCompleted, NotFound
from troth.model import State, Value
from troth.store import create_store


def approval_id(order: str) -> str:
    """The naming scheme: one approval per order, readable by the human who resolves it."""
    return f"approval/{order}"


def how_to_approve(pid: str, store: str) -> str:
    data = base64.b64encode(b"approved").decode()
    return "\n".join(
        [
            f"  waiting for promise {pid!r}. To approve it:",
            f"    troth promises resolve {pid} --value approved        # with a troth server",
            f"    curl -X PATCH localhost:8001/promises/{pid} "
            f"""-d '{{"state": "RESOLVED", "value": {{"data": "{data}"}}}}'""",
            f"    python examples/approval.py --store {store} --resolve {pid} --value approved",
            "  (any other value rejects the order)",
        ]
    )


# -- the steps -----------------------------------------------------------------------------


def reserve_stock(order: str) -> str:
    print(f"  reserved stock for order {order}", flush=True)
    return f"reservation/{order}"


def notify_approver(order: str, amount: float, instructions: str) -> None:
    # Stands in for an email or a chat message; a step, so it is sent once.
    print(f"  asking for approval of order {order} ({amount:.2f})", flush=True)
    print(instructions, flush=True)


def ship(order: str) -> str:
    print(f"  shipped order {order}", flush=True)
    return "shipped"


def release_stock(order: str) -> str:
    print(f"  released stock for order {order}", flush=True)
    return "released"


# -- the durable function ----------------------------------------------------------------


async def order_approval(
    ctx: Context, order: str, amount: float, wait: float, store: str
) -> dict[str, str]:
    await ctx.run(reserve_stock, order)

    # The promise for the human. Its id is known at once; ``created()`` waits until it is
    # in the store, so that nobody is told to resolve a promise that does not exist yet.
    approval = ctx.promise(id=approval_id(order), timeout=wait)
    await approval.created()
    await ctx.run(notify_approver, order, amount, how_to_approve(approval.id, store))

    try:
        decision = await approval  # the value the human gave, e.g. "approved"
    except PromiseTimedOut:
        decision = "timed out"

    if decision == "approved":
        outcome = await ctx.run(ship, order)
    else:
        outcome = await ctx.run(release_stock, order)
    return {"order": order, "decision": str(decision), "outcome": outcome}


def create_troth(store: str) -> Troth:
    # The store comes from the command line here, so the runtime is made in a function and
    # the durable function registered on it (before it starts: start() resumes executions).
    troth = Troth(store)
    troth.register(order_approval, name="order_approval")
    return troth


# -- resolving the promise -----------------------------------------------------------------


async def resolve(troth: Troth, pid: str, value: str) -> None:
    """Resolve a promise with ``value`` (as text, as ``troth promises resolve`` does).

    troth has no public ``resolve`` on ``Troth`` yet; ``troth.backend`` is the runtime's
    storage interface (the engine embedded, the HTTP API remote).
    """
    with contextlib.suppress(AlreadyCompleted):
        await troth.backend.complete(pid, State.RESOLVED, Value(data=value.encode()))


async def approve_later(troth: Troth, pid: str, after: float, value: str) -> None:
    """The stand-in human: once the promise exists, wait ``after`` seconds, resolve it."""
    while True:
        try:
            p = await troth.backend.get(pid)
            break
        except NotFound:
            await asyncio.sleep(0.05)
    if p.state is State.PENDING:
        await asyncio.sleep(after)
        print(f"  [approver] resolving {pid} with {value!r}", flush=True)
        await resolve(troth, pid, value)


async def resolve_from_another_process(store: str, pid: str, value: str) -> None:
    """``--resolve``: complete the promise in the store without running any function.

    A ``Troth`` on this store would also resume the pending executions it finds, so this
    opens the store with the engine alone (no public helper for this yet either).
    """
    engine = Engine(create_store(store))
    await engine.start()
    try:
        p, _ = await engine.complete_promise(pid, State.RESOLVED, value=Value(data=value.encode()))
        print(f"{pid} is now {p.state.value}")
    except (NotFound, AlreadyCompleted) as exc:
        print(f"could not resolve {pid}: {exc}")
    finally:
        await engine.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", default="42")
    parser.add_argument("--amount", type=float, default=250.0)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    parser.add_argument("--approve-after", type=float, metavar="SECONDS")
    parser.add_argument("--resolve", metavar="PROMISE_ID", help="resolve a promise and exit")
    parser.add_argument("--value", default="approved", help="for --resolve / --approve-after")
    parser.add_argument("--store", default=os.environ.get("TROTH_STORE", "sqlite:///approval.db"))
    args = parser.parse_args()

    if args.resolve:
        await resolve_from_another_process(args.store, args.resolve, args.value)
        return

    id = f"orders/{args.order}"
    pid = approval_id(args.order)
    troth = create_troth(args.store)
    async with troth:
        try:
            if not await (await troth.get(id)).done():
                print(f"{id} was interrupted; resuming", flush=True)
                with contextlib.suppress(NotFound):
                    if (await troth.backend.get(pid)).state is State.PENDING:
                        print(how_to_approve(pid, args.store), flush=True)
                    else:
                        print(f"  {pid} was completed meanwhile", flush=True)
        except NotFound:
            print(f"{id}: new order of {args.amount:.2f}", flush=True)
        approver = None
        if args.approve_after is not None:
            approver = asyncio.create_task(
                approve_later(troth, pid, args.approve_after, args.value)
            )
        try:
            handle = await troth.run(
                id, order_approval, args.order, args.amount, args.timeout, args.store
            )
            result = await handle.result()
        finally:
            if approver is not None:
                approver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await approver
        print(f"{id}: {result['decision']} -> {result['outcome']}")


if __name__ == "__main__":
    asyncio.run(main())
