"""A song purchase: charge the card, grant access, send the receipt — each exactly once.

    python examples/purchase.py --user alice --song 42 --price 1.29

The execution id is hierarchical, ``purchase/user/<user>/song/<song>``: it says what the
execution is, so it is unique per purchase and readable in the store. Because an id is an
identity, running the same purchase again does not charge the card a second time: it
returns the stored result. (Another user or song is another purchase.)

Each step is a child promise ``purchase/user/alice/song/42.1``, ``.2``, ``.3`` whose
result is recorded; if the process dies between two steps, running the command again
finishes the purchase without repeating the steps that completed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass

from troth import Context, Troth
from troth.errors import NotFound

STORE = os.environ.get("TROTH_STORE", "sqlite:///purchase.db")
troth = Troth(STORE)


@dataclass
class Charge:
    """Step results may be dataclasses: they are stored as JSON and come back typed."""

    charge_id: str
    user: str
    amount: float


# The steps: ordinary functions (sync ones run in a thread). They talk to the outside
# world, so each one runs as a step and its outcome is recorded.
def charge_card(user: str, song: str, amount: float) -> Charge:
    print(f"  charging {user}'s card {amount:.2f} for song {song}")
    # A real payment API would take an idempotency key; the step's promise id is a good one.
    return Charge(charge_id=f"ch_{user}_{song}", user=user, amount=amount)


def grant_access(user: str, song: str) -> str:
    print(f"  granting {user} access to song {song}")
    return f"library/{user}/{song}"


def send_receipt(charge: Charge, song: str) -> str:
    print(f"  emailing {charge.user} a receipt for {charge.charge_id}")
    return f"receipt for song {song}: {charge.amount:.2f} ({charge.charge_id})"


@troth.register(name="purchase")
async def purchase(ctx: Context, user: str, song: str, amount: float) -> dict[str, str]:
    charge = await ctx.run(charge_card, user, song, amount)
    assert isinstance(charge, Charge)  # decoded with the step's return annotation
    access = await ctx.run(grant_access, user, song)
    receipt = await ctx.run(send_receipt, charge, song)
    return {"charge": charge.charge_id, "access": access, "receipt": receipt}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="alice")
    parser.add_argument("--song", default="42")
    parser.add_argument("--price", type=float, default=1.29)
    args = parser.parse_args()

    # The naming scheme: one purchase per user and song.
    id = f"purchase/user/{args.user}/song/{args.song}"
    async with troth:
        try:
            await troth.get(id)
            print(f"{id} exists: no new charge, here is its stored result")
        except NotFound:
            print(f"new purchase {id}")
        handle = await troth.run(id, purchase, args.user, args.song, args.price)
        result = await handle.result()
        print(f"done: {result}")


if __name__ == "__main__":
    asyncio.run(main())
