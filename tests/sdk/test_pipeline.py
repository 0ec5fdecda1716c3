"""Step records and the write pipeline (embedded): what is durable when, in which order.

- A step's outcome is recorded in one write: its promise is created already completed.
- ``checkpoints="pipelined"`` (default): the function goes on without waiting for that
  write; writes commit in submission order, so the root's result is acknowledged only once
  every record before it is durable. A crash can re-run a step whose record had not
  committed yet, never one whose record had (the kill -9 test below).
- ``checkpoints="strict"``: a record is durable before the function continues.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.sdk import crash_steps
from troth import Context, Troth
from troth.errors import AlreadyExists
from troth.model import State

ROOT = Path(__file__).resolve().parents[2]
# Imported (not run as __main__) so that the steps have the same names as in this process.
CHILD = (
    "import asyncio, sys; from tests.sdk import crash_steps;"
    " asyncio.run(crash_steps.child(sys.argv[1]))"
)


def spawn_child(db: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TROTH_TEST_LOG": str(log), "TROTH_TEST_BLOCK": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, db], cwd=ROOT, env=env)


def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/troth.db"


def rows(tmp_path: Path, pattern: str) -> dict[str, str]:
    """Committed promises (id -> state) read by another connection."""
    with sqlite3.connect(tmp_path / "troth.db") as conn:
        return dict(
            conn.execute("SELECT id, state FROM promises WHERE id GLOB ?", (pattern,)).fetchall()
        )


async def add(a: int, b: int) -> int:
    return a + b


async def test_a_quick_workflow_is_one_batch_create_records_and_result(tmp_path: Path) -> None:
    t = Troth(db_url(tmp_path))

    @t.register
    async def wf(ctx: Context, x: int) -> int:
        y = await ctx.run(add, x, 1)
        return int(await ctx.run(add, y, 2))

    async with t:
        assert t._pipeline is not None
        before = (t._pipeline.batches, t._pipeline.ops)
        handle = await t.run("quick/1", wf, 1)
        assert await handle.result() == 4
        # root create, two step records and the root's completion: one transaction
        assert (t._pipeline.batches - before[0], t._pipeline.ops - before[1]) == (1, 4)
    assert rows(tmp_path, "quick/1*") == {
        "quick/1": "RESOLVED",
        "quick/1.1": "RESOLVED",
        "quick/1.2": "RESOLVED",
    }


async def test_a_step_is_recorded_in_one_write_with_its_function(tmp_path: Path) -> None:
    t = Troth(db_url(tmp_path))

    @t.register
    async def wf(ctx: Context) -> int:
        return int(await ctx.run(add, 2, 3))

    async with t:
        await (await t.run("one/1", wf)).result()
        assert t._engine is not None
        step = await t._engine.get_promise("one/1.1")
    assert step.state is State.RESOLVED
    assert step.value.data == b"5"
    assert step.created_on == step.completed_on  # created completed, not created then completed
    assert step.idempotency_key_for_create == step.idempotency_key_for_complete == "one/1.1"
    assert (step.tags or {}).get("troth:func", "").endswith(".add")


async def test_the_result_is_acknowledged_only_with_every_record_durable(tmp_path: Path) -> None:
    t = Troth(db_url(tmp_path))

    @t.register
    async def fan(ctx: Context, n: int) -> int:
        parts = await asyncio.gather(*(ctx.run(add, i, 0) for i in range(n)))
        return sum(parts)

    async with t:
        handles = [await t.run(f"fan/{k}", fan, 20) for k in range(5)]
        for h in handles:
            assert await h.result() == 190
            committed = rows(tmp_path, f"{h.id}.*")  # the moment the result is known
            assert len(committed) == 20 and set(committed.values()) == {"RESOLVED"}


async def test_strict_checkpoints_make_each_record_durable_before_continuing(
    tmp_path: Path,
) -> None:
    seen: list[dict[str, str]] = []
    t = Troth(db_url(tmp_path), checkpoints="strict")

    async def look() -> None:
        seen.append(rows(tmp_path, "strict/1.*"))

    @t.register
    async def wf(ctx: Context) -> int:
        a = await ctx.run(add, 1, 1)
        await ctx.run(look)
        return int(a)

    async with t:
        assert await (await t.run("strict/1", wf)).result() == 2
    assert seen == [{"strict/1.1": "RESOLVED"}]


async def test_a_new_execution_whose_id_is_taken_meanwhile_completes_nothing(
    tmp_path: Path,
) -> None:
    """``run`` reads that the id is free, then starts the function while its create
    commits; if something else took the id in between, the create is refused and the
    function's result must not complete that other promise."""
    t = Troth(db_url(tmp_path))

    @t.register
    async def wf(ctx: Context) -> int:
        return int(await ctx.run(add, 1, 1))

    async with t:
        assert t._engine is not None
        await t._engine.create_promise("taken", 2**62)  # no idempotency key: not an SDK's

        async def free(id: str) -> None:  # the read happened before the id was taken
            return None

        t.backend.find = free  # type: ignore[method-assign]
        with pytest.raises(AlreadyExists):
            await t.run("taken", wf)
        await asyncio.sleep(0.05)
        p = await t._engine.get_promise("taken")
    assert p.state is State.PENDING


def test_checkpoints_must_be_known() -> None:
    with pytest.raises(ValueError, match="checkpoints"):
        Troth("memory://", checkpoints="sometimes")  # type: ignore[arg-type]


async def test_a_replay_reads_the_recorded_calls_once(tmp_path: Path) -> None:
    gate = asyncio.Event()
    runs: list[str] = []

    async def slow(x: int) -> int:
        runs.append("slow")
        await gate.wait()
        return x

    async def fast(x: int) -> int:
        runs.append("fast")
        return x

    def register(t: Troth) -> None:
        @t.register(name="rr")
        async def rr(ctx: Context) -> int:
            a = await ctx.run(fast, 1)
            b = await ctx.run(fast, 2)
            return int(a + b + await ctx.run(slow, 3))

    t1 = Troth(db_url(tmp_path))
    register(t1)
    await t1.start()
    await t1.run("rr/1", "rr")
    for _ in range(500):
        if "slow" in runs and len(rows(tmp_path, "rr/1.*")) == 2:
            break
        await asyncio.sleep(0.01)
    await t1.stop()
    assert runs == ["fast", "fast", "slow"]
    gate.set()
    t2 = Troth(db_url(tmp_path))
    register(t2)
    reads = 0
    async with t2:
        children = t2.backend.children

        async def counted(id: str) -> Any:
            nonlocal reads
            reads += 1
            return await children(id)

        t2.backend.children = counted  # type: ignore[method-assign]
        assert await (await t2.get("rr/1")).result(timeout=10) == 6
    assert runs == ["fast", "fast", "slow", "slow"]  # recorded steps did not run again
    assert reads <= 1


async def _eventually(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_kill_9_never_reruns_a_step_whose_record_committed(tmp_path: Path) -> None:
    """A real crash: the child process is killed with SIGKILL in the middle of the second
    step, after the first step's record has committed (seen from another connection). On
    restart the execution replays: the first step is not run again, the second is."""
    log = tmp_path / "steps.log"
    child = spawn_child(db_url(tmp_path), log)
    try:
        await _eventually(
            lambda: (
                log.exists()
                and "second" in log.read_text()
                and rows(tmp_path, "crash/1.1") == {"crash/1.1": "RESOLVED"}
            ),
            30,
            "the first step's record to commit and the second step to start",
        )
    finally:
        child.kill()
        child.wait()
    assert rows(tmp_path, "crash/1") == {"crash/1": "PENDING"}

    os.environ["TROTH_TEST_LOG"] = str(log)
    try:
        t = Troth(db_url(tmp_path))
        crash_steps.register(t)
        async with t:  # start() resumes the pending execution by replay
            assert await (await t.get("crash/1")).result(timeout=20) == 3
    finally:
        del os.environ["TROTH_TEST_LOG"]
    assert log.read_text().split() == ["first", "second", "second"]
