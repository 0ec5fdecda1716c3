"""Retry policies: delays, decisions, and the retry loop with a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from troth.sdk.retry import Retry, run_with_retry

# -- delays ---------------------------------------------------------------------------------


def test_exponential_delays_without_jitter() -> None:
    policy = Retry.exponential(initial=0.5, factor=3.0, max_delay=10.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_exponential_defaults() -> None:
    policy = Retry.exponential(jitter=False)
    assert [policy.delay(n) for n in range(1, 5)] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert policy.delay(100) == 60.0
    assert policy.delay(10_000) == 60.0  # no OverflowError for huge attempts
    assert policy.max_attempts == 5 and policy.timeout is None
    assert Retry.exponential().jitter
    assert Retry() == Retry.exponential()


def test_linear_delays_grow_by_delay() -> None:
    policy = Retry.linear(delay=timedelta(seconds=2))
    assert [policy.delay(n) for n in range(1, 5)] == [2.0, 4.0, 6.0, 8.0]
    capped = Retry.linear(delay=2.0, max_delay=5.0)
    assert [capped.delay(n) for n in range(1, 5)] == [2.0, 4.0, 5.0, 5.0]


def test_constant_delays() -> None:
    policy = Retry.constant(delay=timedelta(milliseconds=250), max_attempts=3)
    assert [policy.delay(n) for n in range(1, 10)] == [0.25] * 9
    assert policy.max_attempts == 3


def test_none_is_a_single_attempt() -> None:
    policy = Retry.none()
    assert policy.max_attempts == 1
    assert not policy.should_retry(ValueError(), 1, 0.0)
    assert policy.delay(1) == 0.0


@pytest.mark.parametrize(
    "policy",
    [
        Retry.exponential(initial=1.0, max_delay=30.0),
        Retry.linear(delay=1.5, jitter=True),
        Retry.constant(delay=4.0, jitter=True),
    ],
)
def test_equal_jitter_stays_within_half_to_full_nominal(policy: Retry) -> None:
    rng = random.Random(1234)
    unjittered = dataclasses.replace(policy, jitter=False)
    for attempt in range(1, 12):
        nominal = unjittered.delay(attempt)
        draws = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(nominal / 2 <= d <= nominal for d in draws)
        assert len(set(draws)) > 1  # actually jittered
    assert policy.nominal_delay(3) == unjittered.delay(3)


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = Retry.exponential(initial=1.0)
    first = [policy.delay(n, random.Random(7)) for n in range(1, 6)]
    second = [policy.delay(n, random.Random(7)) for n in range(1, 6)]
    assert first == second


def test_jitter_without_rng_uses_module_random() -> None:
    policy = Retry.exponential(initial=2.0)
    assert 1.0 <= policy.delay(1) <= 2.0


@given(
    initial=st.floats(0, 100),
    factor=st.floats(1, 10),
    max_delay=st.floats(0, 1000),
    attempt=st.integers(1, 5000),
    seed=st.integers(),
)
def test_exponential_delay_is_bounded(
    initial: float, factor: float, max_delay: float, attempt: int, seed: int
) -> None:
    policy = Retry.exponential(initial=initial, factor=factor, max_delay=max_delay)
    d = policy.delay(attempt, random.Random(seed))
    assert 0.0 <= d <= max_delay


def test_attempts_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="counted from 1"):
        Retry.constant().delay(0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Retry.exponential(max_attempts=0),
        lambda: Retry.exponential(initial=-1),
        lambda: Retry.exponential(factor=0),
        lambda: Retry.linear(delay=float("inf")),
        lambda: Retry.constant(timeout=-5),
        lambda: Retry(kind="bogus"),  # type: ignore[arg-type]
    ],
)
def test_invalid_policies_are_rejected(make: Callable[[], Retry]) -> None:
    with pytest.raises(ValueError):
        make()


def test_non_retryable_must_be_exception_classes() -> None:
    with pytest.raises(TypeError, match="exception classes"):
        Retry.exponential(non_retryable=[int])  # type: ignore[list-item]
    assert Retry.constant(non_retryable=KeyError).non_retryable == (KeyError,)
    assert Retry.linear(non_retryable=[KeyError, OSError]).non_retryable == (KeyError, OSError)


def test_timeout_accepts_timedelta() -> None:
    assert Retry.exponential(timeout=timedelta(minutes=2)).timeout == 120.0


def test_policies_are_frozen_and_hashable() -> None:
    policy = Retry.constant(delay=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 9  # type: ignore[misc]
    assert hash(policy) == hash(Retry.constant(delay=1.0))


# -- should_retry ---------------------------------------------------------------------------


class Fatal(Exception):
    pass


class VeryFatal(Fatal):
    pass


def test_should_retry_until_attempts_exhausted() -> None:
    policy = Retry.constant(delay=1.0, max_attempts=3)
    assert policy.should_retry(ValueError(), 1, 0.0)
    assert policy.should_retry(ValueError(), 2, 0.0)
    assert not policy.should_retry(ValueError(), 3, 0.0)
    assert not policy.should_retry(ValueError(), 4, 0.0)


def test_should_not_retry_non_retryable_including_subclasses() -> None:
    policy = Retry.constant(non_retryable=(Fatal, KeyError))
    assert not policy.should_retry(Fatal(), 1, 0.0)
    assert not policy.should_retry(VeryFatal(), 1, 0.0)
    assert not policy.should_retry(KeyError("k"), 1, 0.0)
    assert policy.should_retry(LookupError(), 1, 0.0)  # superclass is still retryable


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), SystemExit(1), asyncio.CancelledError(), GeneratorExit()]
)
def test_should_not_retry_base_exceptions(exc: BaseException) -> None:
    assert not Retry.constant().should_retry(exc, 1, 0.0)


def test_should_not_retry_past_the_budget() -> None:
    policy = Retry.linear(delay=1.0, timeout=10.0, max_attempts=100)
    # Next delay after attempt 3 is 3s: starting at 7 + 3 = 10 fits exactly, later does not.
    assert policy.should_retry(ValueError(), 3, 7.0)
    assert not policy.should_retry(ValueError(), 3, 7.01)
    assert not policy.should_retry(ValueError(), 1, 10.5)


def test_budget_uses_nominal_delay_even_with_jitter() -> None:
    policy = Retry.exponential(initial=4.0, jitter=True, timeout=5.0)
    # A jittered wait could be as short as 2s, but the check is deterministic on 4s.
    assert not policy.should_retry(ValueError(), 1, 1.5)
    assert policy.should_retry(ValueError(), 1, 1.0)


# -- run_with_retry -------------------------------------------------------------------------


class FakeTime:
    """A clock that advances only when the fake sleep is awaited (or an attempt runs)."""

    def __init__(self, attempt_cost: float = 0.0) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.attempt_cost = attempt_cost

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``result``."""

    def __init__(
        self,
        failures: int,
        error: type[BaseException] = ConnectionError,
        result: str = "ok",
        time: FakeTime | None = None,
    ) -> None:
        self.failures = failures
        self.error = error
        self.result = result
        self.calls = 0
        self.time = time

    async def __call__(self) -> str:
        self.calls += 1
        if self.time is not None:
            self.time.now += self.time.attempt_cost
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return self.result


async def test_succeeds_after_k_failures() -> None:
    t = FakeTime()
    fn = Flaky(failures=3)
    policy = Retry.exponential(initial=1.0, factor=2.0, jitter=False)
    result = await run_with_retry(policy, fn, sleep=t.sleep, clock=t.clock)
    assert result == "ok"
    assert fn.calls == 4
    assert t.sleeps == [1.0, 2.0, 4.0]


async def test_first_try_success_does_not_sleep() -> None:
    t = FakeTime()
    fn = Flaky(failures=0, result="first")
    assert await run_with_retry(Retry(), fn, sleep=t.sleep, clock=t.clock) == "first"
    assert t.sleeps == []


async def test_gives_up_after_max_attempts_reraising_last_error() -> None:
    t = FakeTime()
    fn = Flaky(failures=10)
    policy = Retry.linear(delay=1.0, max_attempts=4)
    with pytest.raises(ConnectionError, match="failure 4"):
        await run_with_retry(policy, fn, sleep=t.sleep, clock=t.clock)
    assert fn.calls == 4
    assert t.sleeps == [1.0, 2.0, 3.0]


async def test_stops_at_non_retryable() -> None:
    t = FakeTime()
    fn = Flaky(failures=10, error=Fatal)
    policy = Retry.constant(delay=1.0, non_retryable=Fatal)
    with pytest.raises(Fatal, match="failure 1"):
        await run_with_retry(policy, fn, sleep=t.sleep, clock=t.clock)
    assert fn.calls == 1
    assert t.sleeps == []


async def test_cancellation_is_never_retried() -> None:
    t = FakeTime()
    fn = Flaky(failures=10, error=asyncio.CancelledError)
    with pytest.raises(asyncio.CancelledError):
        await run_with_retry(Retry.constant(), fn, sleep=t.sleep, clock=t.clock)
    assert fn.calls == 1


async def test_none_policy_runs_once() -> None:
    t = FakeTime()
    fn = Flaky(failures=1)
    with pytest.raises(ConnectionError):
        await run_with_retry(Retry.none(), fn, sleep=t.sleep, clock=t.clock)
    assert fn.calls == 1


async def test_respects_the_time_budget() -> None:
    t = FakeTime(attempt_cost=0.5)
    fn = Flaky(failures=100, time=t)
    policy = Retry.constant(delay=2.0, max_attempts=100, timeout=timedelta(seconds=9))
    with pytest.raises(ConnectionError):
        await run_with_retry(policy, fn, sleep=t.sleep, clock=t.clock)
    # Attempts start at 0, 2.5, 5.0, 7.5; after the 4th fails at 8.0, 8.0 + 2 > 9.
    assert fn.calls == 4
    assert t.sleeps == [2.0, 2.0, 2.0]
    assert t.now - 100.0 == pytest.approx(8.0)


async def test_jittered_run_is_reproducible_and_bounded() -> None:
    policy = Retry.exponential(initial=1.0, factor=2.0)
    runs = []
    for _ in range(2):
        t = FakeTime()
        await run_with_retry(
            policy, Flaky(failures=4), sleep=t.sleep, clock=t.clock, rng=random.Random(42)
        )
        runs.append(t.sleeps)
    assert runs[0] == runs[1]
    for sleep, nominal in zip(runs[0], [1.0, 2.0, 4.0, 8.0], strict=True):
        assert nominal / 2 <= sleep <= nominal


async def test_default_sleep_and_clock() -> None:
    fn = Flaky(failures=2)
    policy = Retry.constant(delay=0.001)
    assert await run_with_retry(policy, fn) == "ok"
    assert fn.calls == 3
