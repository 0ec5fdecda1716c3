"""Retry policies for durable functions and steps.

    Retry.exponential(initial=0.1s, factor=2, max_delay=60s)   0.1, 0.2, 0.4, ... ≤ 60s
    Retry.linear(delay=1s)                                      1, 2, 3, ... ≤ max_delay
    Retry.constant(delay=1s)                                    1, 1, 1, ...
    Retry.none()                                                a single attempt

Attempts are counted from 1; ``delay(n)`` is the wait after attempt ``n`` failed, before
attempt ``n + 1``. ``timeout`` is a total time budget measured from the start of the first
attempt: no new attempt starts if it would begin after the budget (a running attempt is
not interrupted).

Jitter is *equal jitter*: the wait is ``d/2 + uniform(0, d/2)`` for a nominal delay ``d``.
It spreads out retries of many executions that failed together, like full jitter
(``uniform(0, d)``) does, but keeps at least half of the backoff: a full-jitter draw near
zero would retry a failing dependency immediately, which is what backing off is meant to
avoid, and makes the minimum time between attempts impossible to reason about. Because a
jittered wait never exceeds ``d``, the budget check uses the nominal ``d`` and so holds
whatever the draw (and ``should_retry`` stays deterministic, which replay relies on).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, TypeVar

__all__ = ["Retry", "run_with_retry"]

T = TypeVar("T")

Kind = Literal["exponential", "linear", "constant", "none"]
Seconds = timedelta | float
NonRetryable = type[BaseException] | Iterable[type[BaseException]]


def _seconds(value: Seconds, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
    return seconds


def _types(value: NonRetryable) -> tuple[type[BaseException], ...]:
    types = (value,) if isinstance(value, type) else tuple(value)
    for tp in types:
        if not (isinstance(tp, type) and issubclass(tp, BaseException)):
            raise TypeError(f"non_retryable must hold exception classes, got {tp!r}")
    return types


@dataclass(frozen=True)
class Retry:
    """A retry policy; build one with ``exponential``, ``linear``, ``constant`` or ``none``.

    ``Retry()`` is ``Retry.exponential()``. Times are in seconds.
    """

    kind: Kind = "exponential"
    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 60.0
    max_attempts: int = 5
    jitter: bool = True
    non_retryable: tuple[type[BaseException], ...] = field(default=())
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("exponential", "linear", "constant", "none"):
            raise ValueError(f"unknown retry kind {self.kind!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not math.isfinite(self.factor) or self.factor <= 0:
            raise ValueError(f"factor must be a positive number, got {self.factor}")
        _seconds(self.initial, "initial delay")
        _seconds(self.max_delay, "max_delay")
        if self.timeout is not None:
            _seconds(self.timeout, "timeout")

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def exponential(
        cls,
        initial: Seconds = 0.1,
        factor: float = 2.0,
        max_delay: Seconds = 60.0,
        max_attempts: int = 5,
        jitter: bool = True,
        non_retryable: NonRetryable = (),
        timeout: Seconds | None = None,
    ) -> Retry:
        """Wait ``initial * factor ** (n - 1)`` after attempt ``n``, at most ``max_delay``."""
        return cls(
            kind="exponential",
            initial=_seconds(initial, "initial"),
            factor=float(factor),
            max_delay=_seconds(max_delay, "max_delay"),
            max_attempts=max_attempts,
            jitter=jitter,
            non_retryable=_types(non_retryable),
            timeout=None if timeout is None else _seconds(timeout, "timeout"),
        )

    @classmethod
    def linear(
        cls,
        delay: Seconds = 1.0,
        max_attempts: int = 5,
        max_delay: Seconds = 60.0,
        jitter: bool = False,
        non_retryable: NonRetryable = (),
        timeout: Seconds | None = None,
    ) -> Retry:
        """Wait ``delay * n`` after attempt ``n`` (d, 2d, 3d, ...), at most ``max_delay``."""
        return cls(
            kind="linear",
            initial=_seconds(delay, "delay"),
            max_delay=_seconds(max_delay, "max_delay"),
            max_attempts=max_attempts,
            jitter=jitter,
            non_retryable=_types(non_retryable),
            timeout=None if timeout is None else _seconds(timeout, "timeout"),
        )

    @classmethod
    def constant(
        cls,
        delay: Seconds = 1.0,
        max_attempts: int = 5,
        jitter: bool = False,
        non_retryable: NonRetryable = (),
        timeout: Seconds | None = None,
    ) -> Retry:
        """Wait ``delay`` after every failed attempt."""
        seconds = _seconds(delay, "delay")
        return cls(
            kind="constant",
            initial=seconds,
            max_delay=seconds,
            max_attempts=max_attempts,
            jitter=jitter,
            non_retryable=_types(non_retryable),
            timeout=None if timeout is None else _seconds(timeout, "timeout"),
        )

    @classmethod
    def none(cls) -> Retry:
        """A single attempt: failures are final."""
        return cls(kind="none", initial=0.0, max_delay=0.0, max_attempts=1, jitter=False)

    # -- decisions ------------------------------------------------------------------------

    def nominal_delay(self, attempt: int) -> float:
        """The un-jittered wait in seconds after attempt ``attempt`` (counted from 1)."""
        if attempt < 1:
            raise ValueError(f"attempts are counted from 1, got {attempt}")
        if self.kind == "none":
            return 0.0
        if self.kind == "constant":
            return self.initial
        if self.kind == "linear":
            return min(self.initial * attempt, self.max_delay)
        try:
            grown = self.initial * self.factor ** (attempt - 1)
        except OverflowError:
            return self.max_delay
        return min(grown, self.max_delay)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counted from 1).

        With ``jitter`` the wait is drawn from ``[d/2, d]`` (equal jitter) using ``rng``,
        or the ``random`` module's generator when ``rng`` is None.
        """
        nominal = self.nominal_delay(attempt)
        if not self.jitter or nominal == 0.0:
            return nominal
        half = nominal / 2
        draw = rng.uniform(0.0, half) if rng is not None else random.uniform(0.0, half)
        return min(half + draw, nominal)

    def should_retry(self, exc: BaseException, attempt: int, elapsed: float) -> bool:
        """Whether to try again after attempt ``attempt`` failed with ``exc``.

        False for a ``BaseException`` that is not an ``Exception`` (cancellation, exit),
        for an instance of a ``non_retryable`` type, when ``max_attempts`` are used up,
        and when the next attempt would start after the ``timeout`` budget (``elapsed``
        seconds since the first attempt started, plus the nominal next delay).
        """
        if not isinstance(exc, Exception) or isinstance(exc, self.non_retryable):
            return False
        if attempt >= self.max_attempts:
            return False
        return self.timeout is None or elapsed + self.nominal_delay(attempt) <= self.timeout


async def run_with_retry(
    policy: Retry,
    fn: Callable[[], Awaitable[T]],
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> T:
    """Await ``fn()`` until it succeeds or ``policy`` gives up; then re-raise the last error.

    ``sleep``, ``clock`` and ``rng`` are injectable for durable sleeps and for tests.
    """
    start = clock()
    attempt = 1
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not policy.should_retry(exc, attempt, clock() - start):
                raise
        await sleep(policy.delay(attempt, rng))
        attempt += 1
