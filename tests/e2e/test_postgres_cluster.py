"""Several ``troth serve`` processes on one PostgreSQL database, over real sockets.

Every rule must hold across processes (row locks, not in-process locks), a completion on one
process wakes waiters on another (LISTEN/NOTIFY), a worker stream on any process receives
tasks created on any other, and a restart of PostgreSQL loses nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.pg import BASE_URL, drop_schema, fresh_schema, pg_url
from tests.server_process import ServerProcess, free_port

FAR = 2**63 - 1


@pytest.fixture
def schema() -> Iterator[str]:
    name = fresh_schema()
    yield name
    drop_schema(name)


@contextlib.contextmanager
def cluster(url: str, n: int, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers = [
        ServerProcess(store=url, port=free_port(), log_path=tmp_path / f"server{i}.log")
        for i in range(n)
    ]
    try:
        for s in servers:
            s.start(timeout=60)
        yield servers
    finally:
        for s in servers:
            s.kill()


def limits(n: int) -> httpx.Limits:
    return httpx.Limits(max_connections=n, max_keepalive_connections=n)


async def test_racing_clients_on_three_processes_keep_every_rule(
    schema: str, tmp_path: Path
) -> None:
    """Clients spread over three processes race creates and completes on the same ids: each
    id is created (201) exactly once and completed (201) exactly once, and every other answer
    agrees with the winner."""
    ids = [f"race/{i}" for i in range(25)]
    rng = random.Random(11)
    with cluster(pg_url(schema), 3, tmp_path) as servers:
        clients = [
            httpx.AsyncClient(base_url=s.url, limits=limits(32), timeout=60) for s in servers
        ]
        try:

            async def create(id: str) -> tuple[str, int, dict[str, object]]:
                key = rng.choice(["k1", "k2", None])
                headers = {"Idempotency-Key": key} if key else {}
                r = await rng.choice(clients).post(
                    "/promises", json={"id": id, "timeout": FAR}, headers=headers
                )
                return id, r.status_code, r.json()

            async def complete(id: str) -> tuple[str, int, dict[str, object]]:
                state = rng.choice(["RESOLVED", "REJECTED", "REJECTED_CANCELED"])
                key = rng.choice(["u1", "u2", None])
                headers = {"Idempotency-Key": key} if key else {}
                r = await rng.choice(clients).patch(
                    f"/promises/{id}", json={"state": state}, headers=headers
                )
                return id, r.status_code, r.json()

            creates = await asyncio.gather(*(create(id) for id in ids for _ in range(12)))
            completes = await asyncio.gather(*(complete(id) for id in ids for _ in range(12)))
            finals = {id: (await clients[0].get(f"/promises/{id}")).json() for id in ids}
        finally:
            for c in clients:
                await c.aclose()

    assert Counter(id for id, status, _ in creates if status == 201) == Counter(
        {id: 1 for id in ids}
    )
    assert {status for _, status, _ in creates} <= {200, 201, 409}
    winners = {id: body for id, status, body in creates if status == 201}
    for id, status, body in creates:
        if status == 200:  # a dedup names the winner's create key
            assert body["idempotencyKeyForCreate"] == winners[id]["idempotencyKeyForCreate"]
    assert Counter(id for id, status, _ in completes if status == 201) == Counter(
        {id: 1 for id in ids}
    )
    done = {id: body for id, status, body in completes if status == 201}
    for id, status, body in completes:
        assert status in (200, 201, 403), body
        if status == 200:  # a dedup returns the stored completion
            assert body["state"] == done[id]["state"]
    for id in ids:
        assert finals[id]["state"] == done[id]["state"]
        assert finals[id]["completedOn"] == done[id]["completedOn"]


async def test_a_waiter_on_one_process_is_woken_by_a_resolve_on_another(
    schema: str, tmp_path: Path
) -> None:
    """The waiter's process re-checks only every 30 s here, so an answer well before that
    came from the notification of the other process's commit."""
    with cluster(pg_url(schema, recheck_ms=30_000), 2, tmp_path) as (a, b):
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.post(f"{a.url}/promises", json={"id": "wake/1", "timeout": FAR})
            assert r.status_code == 201
            waiter = asyncio.create_task(http.get(f"{a.url}/promises/wake/1?wait=60s"))
            await asyncio.sleep(0.5)  # the waiter is registered on A
            assert not waiter.done()
            started = time.monotonic()
            r = await http.patch(f"{b.url}/promises/wake/1", json={"state": "RESOLVED"})
            assert r.status_code == 201
            answer = await asyncio.wait_for(waiter, 20)
            woken_after = time.monotonic() - started
    assert answer.status_code == 200
    assert answer.json()["state"] == "RESOLVED"
    assert woken_after < 20  # not the 30 s re-check, not the 60 s wait


async def test_a_worker_on_one_process_receives_tasks_created_on_another(
    schema: str, tmp_path: Path
) -> None:
    with cluster(pg_url(schema), 3, tmp_path) as (a, b, c):
        async with httpx.AsyncClient(timeout=60) as http:
            messages: asyncio.Queue[str] = asyncio.Queue()

            async def listen() -> None:
                async with http.stream("GET", f"{c.url}/poll/workers/w1") as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data: "):
                            await messages.put(line[6:])

            listener = asyncio.create_task(listen())
            try:
                await asyncio.sleep(2.5)  # the stream is connected and announced
                ids = [f"job/{i}" for i in range(10)]
                for i, id in enumerate(ids):
                    target = (a, b)[i % 2]
                    r = await http.post(
                        f"{target.url}/promises",
                        json={
                            "id": id,
                            "timeout": FAR,
                            "tags": {"resonate:invoke": "poll://any@workers"},
                        },
                    )
                    assert r.status_code == 201
                got = [await asyncio.wait_for(messages.get(), 30) for _ in ids]
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            # Each task is sent once, and can be claimed and completed through any process.
            roots = sorted(msg.split('"rootPromiseId":"')[1].split('"')[0] for msg in got)
            assert roots == sorted(ids)
            for i, id in enumerate(ids):
                via = (a, b, c)[i % 3]
                r = await http.post(
                    f"{via.url}/tasks/claim",
                    json={"id": f"__invoke:{id}", "counter": 1, "processId": "w1", "ttl": 30_000},
                )
                assert r.status_code == 201, r.text
                r = await http.post(
                    f"{(a, b, c)[(i + 1) % 3].url}/tasks/claim",
                    json={"id": f"__invoke:{id}", "counter": 1, "processId": "w2", "ttl": 30_000},
                )
                assert r.status_code == 403  # claimed once, whichever process is asked


async def test_locks_are_held_once_across_processes(schema: str, tmp_path: Path) -> None:
    with cluster(pg_url(schema), 3, tmp_path) as servers:
        async with httpx.AsyncClient(timeout=60) as http:

            async def acquire(i: int) -> int:
                r = await http.post(
                    f"{servers[i % 3].url}/locks/acquire",
                    json={
                        "resourceId": "res/1",
                        "executionId": f"e{i}",
                        "processId": f"p{i}",
                        "ttl": 60_000,
                    },
                )
                return r.status_code

            statuses = await asyncio.gather(*(acquire(i) for i in range(30)))
    assert statuses.count(201) == 1
    assert set(statuses) <= {201, 403}


def _pg(action: str) -> None:
    version = subprocess.run(
        ["ls", "/etc/postgresql"], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _wait_for_pg(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error), psycopg.connect(BASE_URL, connect_timeout=2):
            return
        time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not come back")


async def test_postgres_restart_under_load_loses_nothing_acknowledged(
    schema: str, tmp_path: Path
) -> None:
    """Writers on two processes keep creating while PostgreSQL restarts: requests during the
    outage fail with a 503 JSON error (never a hang, never a crash), readiness says so, the
    servers recover by themselves, and every create that was answered 201 is stored."""
    url = pg_url(schema)
    acked: list[str] = []
    failures: Counter[int] = Counter()
    with cluster(url, 2, tmp_path) as servers:
        async with httpx.AsyncClient(timeout=30) as http:
            stop = asyncio.Event()

            async def writer(w: int) -> None:
                n = 0
                while not stop.is_set():
                    id = f"load/{w}/{n}"
                    n += 1
                    try:
                        r = await http.post(
                            f"{servers[w % 2].url}/promises", json={"id": id, "timeout": FAR}
                        )
                    except httpx.HTTPError:
                        failures[0] += 1
                        await asyncio.sleep(0.05)
                        continue
                    if r.status_code == 201:
                        acked.append(id)
                    else:
                        assert r.status_code == 503, r.text
                        assert r.json()["error"]["code"] == 50300
                        failures[503] += 1
                        await asyncio.sleep(0.05)

            writers = [asyncio.create_task(writer(w)) for w in range(8)]
            await asyncio.sleep(1.0)
            before = len(acked)
            await asyncio.to_thread(_pg, "stop")
            try:
                await asyncio.sleep(1.0)
                ready = await http.get(f"{servers[0].url}/readyz")
                assert ready.status_code == 503
            finally:
                await asyncio.to_thread(_pg, "start")
                await asyncio.to_thread(_wait_for_pg)
            # Recovery: creates succeed again on both processes.
            deadline = time.monotonic() + 60
            recovered = False
            while time.monotonic() < deadline and not recovered:
                count = len(acked)
                await asyncio.sleep(1.0)
                recovered = len(acked) > count + 10
            stop.set()
            await asyncio.gather(*writers)
            for s in servers:
                assert (await http.get(f"{s.url}/readyz")).status_code == 200
                assert s.proc is not None and s.proc.poll() is None  # never crashed
    assert before > 0 and recovered
    assert failures[503] > 0  # the outage was seen, as 503s
    with psycopg.connect(BASE_URL) as conn:
        stored = {
            row[0]
            for row in conn.execute(
                f'SELECT id FROM "{schema}".promises WHERE id LIKE %s', ("load/%",)
            )
        }
    missing = [id for id in acked if id not in stored]
    assert not missing, f"{len(missing)} acknowledged creates lost, e.g. {missing[:5]}"


async def test_a_schedule_fires_every_run_once_across_processes(
    schema: str, tmp_path: Path
) -> None:
    """Three processes share one every-second schedule: each run creates its promise once
    (one transaction moves ``nextRunTime`` and creates it; rows are taken SKIP LOCKED), with
    no run missed between the first and the last."""
    with cluster(pg_url(schema), 3, tmp_path) as servers:
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.post(
                f"{servers[0].url}/schedules",
                json={
                    "id": "tick",
                    "cron": "* * * * * *",
                    "promiseId": "tick/{{.timestamp}}",
                    "promiseTimeout": 60_000,
                },
            )
            assert r.status_code == 201, r.text
            await asyncio.sleep(6)
            r = await http.delete(f"{servers[1].url}/schedules/tick")
            assert r.status_code == 204
            await asyncio.sleep(1)
            page = (
                await http.get(f"{servers[2].url}/promises", params={"id": "tick/*", "limit": 100})
            ).json()
    stamps = sorted(int(p["id"].split("/")[1]) for p in page["promises"])
    assert len(stamps) >= 3
    assert len(set(stamps)) == len(stamps)
    assert [b - a for a, b in itertools.pairwise(stamps)] == [1000] * (len(stamps) - 1)


async def test_durable_functions_on_two_processes_survive_a_worker_kill(
    schema: str, tmp_path: Path
) -> None:
    """SDK workers connected to different server processes share one group: executions
    started through process A run on workers of A and B (steps, durable sleep, rpc), and when
    a worker is killed mid-step its execution finishes on the other, through the other
    process, without re-running a recorded step."""
    from tests.sdk.test_remote import GROUP, StepLog, Worker, eventually
    from troth import Troth

    log = StepLog(tmp_path / "steps.log")
    with cluster(pg_url(schema), 2, tmp_path) as (a, b):
        workers = [
            Worker(a.url, "wa", tmp_path, log.path, ttl_ms=1500),
            Worker(b.url, "wb", tmp_path, log.path, ttl_ms=1500),
        ]
        try:
            async with Troth(url=a.url, group="client", process_id="pg-client") as client:
                flows = [await client.rpc(f"flow/{i}", "flow", i, target=GROUP) for i in range(6)]
                results = [await h.result(timeout=60) for h in flows]
                assert results == [{"one": i + 1, "square": (i + 1) ** 2} for i in range(6)]
                for i in range(6):
                    assert log.count("one", f"flow/{i}") == 1  # replays did not re-run it

                handle = await client.rpc("slow/1", "pipeline", 1, 3.0, target=GROUP)
                (_, _, pid) = (
                    await eventually(lambda: log.lines("two-start", "slow/1"), 30, "step two")
                )[0]
                (victim,) = [w for w in workers if w.pid == pid]
                victim.kill()
                assert await handle.result(timeout=60) == [2, 4, 104]
                assert log.count("one", "slow/1") == 1  # recorded before the kill: not re-run
                (survivor,) = [w for w in workers if w is not victim]
                assert ("three", "slow/1", survivor.pid) in log.lines("three", "slow/1")
        finally:
            for w in workers:
                w.stop()
