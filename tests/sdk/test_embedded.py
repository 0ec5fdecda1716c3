"""Durable functions in embedded mode: steps, identity, replay after a crash, sleep, human in
the loop, retries, errors, fan-out, non-determinism, versions, detached calls."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from troth import (
    Context,
    NonDeterminismError,
    PromiseCanceled,
    PromiseTimedOut,
    RemoteError,
    Retry,
    Troth,
)
from troth.model import State

calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/troth.db"


@pytest.fixture
async def troth(db: str) -> AsyncIterator[Troth]:
    t = Troth(db)
    async with t:
        yield t


def add(a: int, b: int) -> int:
    calls["add"] += 1
    return a + b


async def double(x: int) -> int:
    calls["double"] += 1
    return 2 * x


@dataclass
class Receipt:
    user: str
    total: int


def receipt(user: str, total: int) -> Receipt:
    calls["receipt"] += 1
    return Receipt(user, total)


def register_flow(t: Troth) -> Callable[..., Any]:
    @t.register
    async def flow(ctx: Context, user: str, x: int) -> dict[str, Any]:
        s = await ctx.run(add, x, 1)
        a, b = await asyncio.gather(ctx.run(double, s), ctx.run(double, s + 1))
        r = await ctx.run(receipt, user, a + b)
        assert isinstance(r, Receipt)  # typed results survive the durability boundary
        return {"user": r.user, "total": r.total}

    return flow


async def test_steps_are_child_promises_with_deterministic_ids(troth: Troth) -> None:
    flow = register_flow(troth)
    handle = await troth.run("purchase/u1", flow, "u1", 4)
    assert await handle.result() == {"user": "u1", "total": 22}
    assert await handle.done()
    engine = troth._engine
    children = await engine.search_promises(pattern="purchase/u1.*")
    ids = sorted(p.id for p in children.promises)
    assert ids == ["purchase/u1.1", "purchase/u1.2", "purchase/u1.3", "purchase/u1.4"]
    assert all(p.state is State.RESOLVED for p in children.promises)


async def test_an_id_is_an_identity(troth: Troth) -> None:
    flow = register_flow(troth)
    first = await (await troth.run("same", flow, "a", 1)).result()
    again = await (await troth.run("same", flow, "DIFFERENT", 100)).result()
    assert again == first
    assert calls["add"] == 1
    assert await (await troth.get("same")).result() == first


async def test_crash_and_recovery_replays_without_rerunning_steps(db: str) -> None:
    gate = asyncio.Event()

    def register(t: Troth) -> Callable[..., Any]:
        async def slow(x: int) -> int:
            calls["slow"] += 1
            await gate.wait()
            return x

        @t.register
        async def job(ctx: Context, x: int) -> int:
            a = await ctx.run(add, x, 1)
            b = await ctx.run(slow, a)
            return a + b

        return job

    first = Troth(db)
    job = register(first)
    await first.start()
    await first.run("job/1", job, 1)
    for _ in range(200):
        if calls["slow"]:
            break
        await asyncio.sleep(0.01)
    assert calls == {"add": 1, "slow": 1}
    await first.stop()  # "crash": the execution is abandoned mid-step

    gate.set()
    second = Troth(db)
    register(second)
    async with second:  # start() resumes pending executions by replay
        assert await (await second.get("job/1")).result(timeout=10) == 4
    assert calls == {"add": 1, "slow": 2}  # the completed step did not run again


async def test_durable_sleep_survives_restart(db: str, tmp_path: Path) -> None:
    def register(t: Troth) -> Callable[..., Any]:
        @t.register
        async def countdown(ctx: Context, n: int) -> list[str]:
            out = []
            for i in range(n, 0, -1):
                out.append(await ctx.run(str, i))
                await ctx.sleep(0.1)
            return out

        return countdown

    t1 = Troth(db)
    countdown = register(t1)
    await t1.start()
    await t1.run("countdown", countdown, 3)
    await asyncio.sleep(0.15)
    await t1.stop()
    t2 = Troth(db)
    register(t2)
    async with t2:
        assert await (await t2.get("countdown")).result(timeout=10) == ["3", "2", "1"]
        timers = await t2._engine.search_promises(
            pattern="countdown.*", tags={"resonate:timeout": "true"}
        )
        assert len(timers.promises) == 3


async def test_human_in_the_loop(troth: Troth) -> None:
    seen: list[str] = []

    @troth.register
    async def approval(ctx: Context, amount: int) -> str:
        p = ctx.promise(id=f"approve/{ctx.id}")
        seen.append(p.id)  # the id is known before awaiting
        decision = await p
        return f"{decision} {amount}"

    handle = await troth.run("order/9", approval, 50)
    for _ in range(200):
        if seen:
            break
        await asyncio.sleep(0.01)
    assert seen == ["approve/order/9"]
    for _ in range(200):
        try:
            await troth._engine.get_promise("approve/order/9")
            break
        except Exception:
            await asyncio.sleep(0.01)
    await troth.resolve("approve/order/9", "approved")
    assert await handle.result(timeout=10) == "approved 50"


async def test_reject_and_cancel_reach_the_awaiting_function(troth: Troth) -> None:
    @troth.register
    async def waits(ctx: Context, id: str) -> str:
        try:
            await ctx.promise(id=id)
        except ValueError as exc:
            return f"rejected: {exc}"
        except PromiseCanceled:
            return "canceled"
        return "resolved"

    rejected = await troth.run("r1", waits, "p/r1")
    canceled = await troth.run("c1", waits, "p/c1")
    for id in ("p/r1", "p/c1"):
        for _ in range(200):
            try:
                await troth._engine.get_promise(id)
                break
            except Exception:
                await asyncio.sleep(0.01)
    await troth.reject("p/r1", ValueError("no budget"))
    await troth.cancel("p/c1")
    assert await rejected.result(timeout=10) == "rejected: no budget"
    assert await canceled.result(timeout=10) == "canceled"


async def test_promise_timeout_raises_in_the_function(troth: Troth) -> None:
    @troth.register
    async def waits(ctx: Context) -> str:
        try:
            await ctx.promise(timeout=0.05)
        except PromiseTimedOut:
            return "gave up"
        return "approved"

    assert await (await troth.run("w", waits)).result(timeout=10) == "gave up"


async def test_retries_of_a_flaky_step(troth: Troth) -> None:
    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("try again")
        return "ok"

    @troth.register
    async def uses_flaky(ctx: Context) -> str:
        return await ctx.run(flaky, retry=Retry.constant(0.01, max_attempts=5))

    assert await (await troth.run("flaky", uses_flaky)).result(timeout=10) == "ok"
    assert calls["flaky"] == 3


class InsufficientFunds(Exception):
    pass


async def test_final_error_is_stored_and_reraised_with_its_type(troth: Troth) -> None:
    def charge() -> None:
        calls["charge"] += 1
        raise InsufficientFunds("balance 3, needed 5")

    @troth.register
    async def pay(ctx: Context) -> None:
        await ctx.run(charge, retry=Retry.none())

    handle = await troth.run("pay/1", pay)
    with pytest.raises(InsufficientFunds, match="balance 3"):
        await handle.result(timeout=10)
    with pytest.raises(InsufficientFunds):  # stored: the same error again, nothing re-run
        await (await troth.run("pay/1", pay)).result(timeout=10)
    assert calls["charge"] == 1
    p = await troth._engine.get_promise("pay/1")
    assert p.state is State.REJECTED


async def test_unimportable_error_type_becomes_remote_error(troth: Troth) -> None:
    def boom() -> None:
        class Local(Exception):
            pass

        raise Local("only here")

    @troth.register
    async def fails(ctx: Context) -> None:
        await ctx.run(boom, retry=Retry.none())

    with pytest.raises(RemoteError) as info:
        await (await troth.run("fails", fails)).result(timeout=10)
    assert "only here" in str(info.value)
    assert "Local" in str(info.value)


async def test_non_determinism_is_detected(db: str) -> None:
    gate = asyncio.Event()

    async def block() -> None:
        await gate.wait()

    first = Troth(db)

    @first.register(name="nd")
    async def v1(ctx: Context) -> None:
        await ctx.run(add, 1, 2)
        await ctx.run(block)

    await first.start()
    await first.run("nd/1", v1)
    for _ in range(200):
        if calls["add"]:
            break
        await asyncio.sleep(0.01)
    await first.stop()

    second = Troth(db)

    @second.register(name="nd")
    async def v1_changed(ctx: Context) -> None:
        await ctx.run(double, 1)  # a different function at the recorded position 1

    async with second:
        with pytest.raises(NonDeterminismError, match=r"add.*double"):
            await (await second.get("nd/1")).result(timeout=10)


async def test_executions_keep_their_version(db: str) -> None:
    t = Troth(db)

    @t.register(name="greet", version=1)
    async def greet_v1(ctx: Context, who: str) -> str:
        return f"hello {who}"

    async with t:
        assert await (await t.run("g1", "greet", "a")).result() == "hello a"

        @t.register(name="greet", version=2)
        async def greet_v2(ctx: Context, who: str) -> str:
            return f"hi {who}"

        assert await (await t.run("g2", "greet", "b")).result() == "hi b"
        p = await t._engine.get_promise("g1")
        assert p.tags is not None and p.tags["troth:version"] == "1"


async def test_detached_calls_outlive_the_caller(troth: Troth) -> None:
    @troth.register
    async def background(ctx: Context, x: int) -> int:
        await ctx.sleep(0.1)
        return x * 10

    @troth.register
    async def parent(ctx: Context) -> str:
        await ctx.detached(background, 7, id="bg/7")
        return "parent done"

    assert await (await troth.run("parent", parent)).result(timeout=10) == "parent done"
    assert not await (await troth.get("bg/7")).done()
    assert await (await troth.get("bg/7")).result(timeout=10) == 70


async def test_unencodable_values_fail_fast(troth: Troth) -> None:
    @troth.register
    async def bad(ctx: Context) -> object:
        return await ctx.run(lambda: object())

    with pytest.raises(Exception, match="object"):
        await (await troth.run("bad", bad)).result(timeout=10)


async def test_deterministic_now_and_random(troth: Troth) -> None:
    seen: list[tuple[Any, float]] = []

    @troth.register
    async def clocky(ctx: Context) -> None:
        seen.append((ctx.now(), ctx.random()))

    await (await troth.run("c1", clocky)).result()
    await (await troth.run("c2", clocky)).result()
    p = await troth._engine.get_promise("c1")
    assert seen[0][0].timestamp() * 1000 == p.created_on  # "now" is recorded time
    assert seen[0][1] != seen[1][1]  # seeded per execution id
    import random

    assert seen[0][1] == random.Random("c1").random()


async def test_results_with_annotations_msgspec_cannot_use_stay_values(troth: Troth) -> None:
    def loose() -> dict[str, object]:
        return {"a": 1, "b": [1, 2]}

    @troth.register
    async def uses(ctx: Context) -> Any:
        first = await ctx.run(loose)
        return first["a"]  # a dict, not its JSON text

    assert await (await troth.run("loose", uses)).result(timeout=10) == 1


async def test_recover_false_leaves_pending_executions_alone(db: str) -> None:
    gate = asyncio.Event()
    first = Troth(db)

    @first.register(name="parked")
    async def parked(ctx: Context) -> None:
        await ctx.run(add, 1, 1)
        await gate.wait()

    await first.start()
    await first.run("parked/1", parked)
    for _ in range(200):
        if calls["add"]:
            break
        await asyncio.sleep(0.01)
    await first.stop()

    reader = Troth(db, recover=False)
    async with reader:
        assert not reader._running
        assert not await (await reader.get("parked/1")).done()


async def test_schedule_runs_a_function_on_cron(troth: Troth) -> None:
    @troth.register
    async def tick(ctx: Context, label: str) -> str:
        calls["tick"] += 1
        return await ctx.run(str.upper, label)

    s1 = await troth.schedule("ticker", cron="* * * * * *", func=tick, args=["x"])  # every second
    s2 = await troth.schedule("ticker", cron="* * * * * *", func=tick, args=["x"])  # idempotent
    assert s1 == s2
    for _ in range(400):
        if calls["tick"] >= 2:
            break
        await asyncio.sleep(0.01)
    assert calls["tick"] >= 2
    runs = await troth._engine.search_promises(pattern="ticker/*", tags={"troth:root": "true"})
    assert len(runs.promises) >= 2
    first = runs.promises[-1]
    assert await (await troth.get(first.id)).result(timeout=10) == "X"
