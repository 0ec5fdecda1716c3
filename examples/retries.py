"""Retries: a flaky step is retried with exponential backoff; a hopeless one is not.

    python examples/retries.py --failures 3 --initial 0.2 --max-attempts 5

``fetch_rate`` stands in for a flaky service: it fails with ``ConnectionError`` the first
``--failures`` times it is called, then answers. Its step is retried by
``Retry.exponential(initial=..., max_attempts=...)``: waits of about initial, 2 x initial,
4 x initial, ... (with jitter: each wait is drawn from [d/2, d]). Only the final outcome is
recorded, so once the step has succeeded it never runs again, even after a crash.

``charge`` then fails with ``CardDeclined``, listed as ``non_retryable``: it is attempted
once, its error is recorded, and the function handles it like any exception.

With ``--failures`` at or above ``--max-attempts`` the flaky step runs out of attempts and
the execution fails with the last ``ConnectionError`` (stored: running it again re-raises
it without calling anything).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from troth import Context, Retry, Troth

STORE = os.environ.get("TROTH_STORE", "sqlite:///retries.db")
troth = Troth(STORE)


class CardDeclined(Exception):
    """Retrying a declined card does not help: marked non-retryable below."""


class FlakyService:
    """State kept across attempts, in this process: how many calls so far."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = time.monotonic()


flaky = FlakyService()


def fetch_rate(currency: str, failures: int) -> float:
    flaky.calls += 1
    at = time.monotonic() - flaky.started
    if flaky.calls <= failures:
        print(f"  attempt {flaky.calls} at {at:.2f}s: connection refused", flush=True)
        raise ConnectionError(f"rate service unavailable (attempt {flaky.calls})")
    print(f"  attempt {flaky.calls} at {at:.2f}s: ok", flush=True)
    return 1.08 if currency == "USD" else 0.86


def charge(amount: float) -> str:
    print(f"  charging {amount:.2f}: card declined", flush=True)
    raise CardDeclined(f"card declined for {amount:.2f}")


@troth.register
async def convert_and_charge(
    ctx: Context, amount: float, currency: str, failures: int, initial: float, max_attempts: int
) -> dict[str, Any]:
    # Retried on any Exception except the non-retryable types, up to max_attempts in all.
    policy = Retry.exponential(
        initial=initial, max_attempts=max_attempts, non_retryable=[CardDeclined]
    )
    rate = await ctx.run(fetch_rate, currency, failures, retry=policy)
    total = round(amount * rate, 2)
    try:
        receipt = await ctx.run(charge, total, retry=policy)  # one attempt: non-retryable
    except CardDeclined as exc:
        return {"rate": rate, "total": total, "charged": False, "reason": str(exc)}
    return {"rate": rate, "total": total, "charged": True, "receipt": receipt}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", type=int, default=3, help="failures before success")
    parser.add_argument("--initial", type=float, default=0.2, help="first backoff, seconds")
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--id", default="payments/1")
    args = parser.parse_args()

    async with troth:
        handle = await troth.run(
            args.id,
            convert_and_charge,
            100.0,
            "USD",
            args.failures,
            args.initial,
            args.max_attempts,
        )
        try:
            result = await handle.result()
        except ConnectionError as exc:
            print(f"{args.id} failed for good: {exc}")
            return
    if flaky.calls:
        print(f"rate {result['rate']} after {flaky.calls} call(s) to the rate service")
    else:
        print(f"rate {result['rate']} (stored: {args.id} had already run)")
    if result["charged"]:
        print(f"charged {result['total']:.2f}")
    else:
        print(f"not charged: {result['reason']} (no retries: non-retryable)")


if __name__ == "__main__":
    asyncio.run(main())
