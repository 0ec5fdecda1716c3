"""A saga: book a flight, a hotel and a car; if a booking fails, undo the ones that worked.

    python examples/saga.py --trip rome          # the car step fails: hotel, flight undone
    python examples/saga.py --trip oslo --cars   # cars available: everything is booked

Every booking and every compensation (cancellation) is a step, so each happens once even
across crashes: if the process dies while compensating, running it again carries on with
the compensations that are left, in the same order. The car rental refuses with
``NoCarsAvailable``, which is not worth retrying (``Retry.none()``); the saga catches it,
runs the compensations registered so far in reverse order, and reports what it undid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from typing import Any

from troth import Context, Retry, Troth

STORE = os.environ.get("TROTH_STORE", "sqlite:///saga.db")
troth = Troth(STORE)


class NoCarsAvailable(Exception):
    """A business refusal: retrying will not help.

    Errors are stored as type + message + args and re-raised with their type on replay, so
    a module-level exception class built from its args comes back as itself.
    """


# -- the bookings and their compensations (each one a step) ------------------------------


def book_flight(trip: str) -> str:
    print(f"  booked flight for {trip}", flush=True)
    return f"FL-{trip}"


def book_hotel(trip: str) -> str:
    print(f"  booked hotel for {trip}", flush=True)
    return f"HT-{trip}"


def book_car(trip: str, available: bool) -> str:
    if not available:
        print(f"  car rental for {trip}: no cars available", flush=True)
        raise NoCarsAvailable(f"no cars available for {trip}")
    print(f"  booked car for {trip}", flush=True)
    return f"CR-{trip}"


def cancel_flight(booking: str) -> str:
    print(f"  cancelled flight {booking}", flush=True)
    return f"cancelled {booking}"


def cancel_hotel(booking: str) -> str:
    print(f"  cancelled hotel {booking}", flush=True)
    return f"cancelled {booking}"


@troth.register
async def book_trip(ctx: Context, trip: str, cars_available: bool) -> dict[str, Any]:
    # Compensations to run if a later step fails: (undo function, its argument).
    undo: list[tuple[Callable[[str], str], str]] = []
    booked: list[str] = []
    try:
        flight = await ctx.run(book_flight, trip)
        booked.append(flight)
        undo.append((cancel_flight, flight))

        hotel = await ctx.run(book_hotel, trip)
        booked.append(hotel)
        undo.append((cancel_hotel, hotel))

        car = await ctx.run(book_car, trip, cars_available, retry=Retry.none())
        booked.append(car)
    except NoCarsAvailable as exc:
        # Compensate in reverse order; each cancellation is a recorded step too.
        compensated = []
        for cancel, booking in reversed(undo):
            compensated.append(await ctx.run(cancel, booking))
        return {
            "trip": trip,
            "status": "rolled back",
            "error": str(exc),
            "compensated": compensated,
        }
    return {"trip": trip, "status": "booked", "bookings": booked}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trip", default="rome")
    parser.add_argument("--cars", action="store_true", help="cars are available")
    args = parser.parse_args()

    async with troth:
        handle = await troth.run(f"trips/{args.trip}", book_trip, args.trip, args.cars)
        result = await handle.result()
    print(f"trip {result['trip']}: {result['status']}")
    if result["status"] == "rolled back":
        print(f"  because: {result['error']}")
        print(f"  compensated: {', '.join(result['compensated'])}")
    else:
        print(f"  bookings: {', '.join(result['bookings'])}")


if __name__ == "__main__":
    asyncio.run(main())
