"""End to end: a real ``troth serve`` process, real sockets, real SQLite files."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ServerProcess, free_port, running_server

FAR = 2**63 - 1


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "troth.db"


def limits(n: int) -> httpx.Limits:
    return httpx.Limits(max_connections=n, max_keepalive_connections=n)


async def test_racing_clients_keep_every_rule(db: Path) -> None:
    """Many clients race creates and completes on a few ids: each id is created (201) once
    and completed (201) once, and every other answer is consistent with the winner."""
    ids = [f"race/{i}" for i in range(20)]
    rng = random.Random(7)
    with running_server(sqlite_url(db)) as server:
        async with httpx.AsyncClient(base_url=server.url, limits=limits(64), timeout=30) as c:

            async def create(id: str) -> tuple[str, int, dict[str, object]]:
                key = rng.choice(["k1", "k2", None])
                headers = {"Idempotency-Key": key} if key else {}
                r = await c.post("/promises", json={"id": id, "timeout": FAR}, headers=headers)
                return id, r.status_code, r.json()

            async def complete(id: str) -> tuple[str, int, dict[str, object]]:
                state = rng.choice(["RESOLVED", "REJECTED", "REJECTED_CANCELED"])
                r = await c.patch(f"/promises/{id}", json={"state": state})
                return id, r.status_code, r.json()

            creates = await asyncio.gather(*(create(id) for id in ids for _ in range(10)))
            completes = await asyncio.gather(*(complete(id) for id in ids for _ in range(10)))
            finals = {id: (await c.get(f"/promises/{id}")).json() for id in ids}

    created = Counter(id for id, status, _ in creates if status == 201)
    assert created == Counter({id: 1 for id in ids})
    assert {status for _, status, _ in creates} <= {200, 201, 409}
    for id, status, body in creates:
        if status == 200:  # a dedup must carry the winner's create key
            assert body["idempotencyKeyForCreate"] == finals[id].get("idempotencyKeyForCreate")
    completed = Counter(id for id, status, _ in completes if status == 201)
    assert completed == Counter({id: 1 for id in ids})
    for id, status, body in completes:
        if status == 201:
            assert body["state"] == finals[id]["state"]
            assert body["completedOn"] == finals[id]["completedOn"]
        else:  # no keys were sent, so every loser is refused
            assert status == 403
            assert body["error"]["code"] in (40301, 40302, 40303)


async def _write_load(
    url: str, acked_creates: set[str], acked_resolves: set[str], stop: asyncio.Event
) -> None:
    async with httpx.AsyncClient(base_url=url, limits=limits(32), timeout=5) as c:

        async def worker(w: int) -> None:
            n = 0
            while not stop.is_set():
                id = f"load/{w}/{n}"
                n += 1
                try:
                    r = await c.post("/promises", json={"id": id, "timeout": FAR})
                    if r.status_code == 201:
                        acked_creates.add(id)
                    if n % 2 == 0:
                        r = await c.patch(f"/promises/{id}", json={"state": "RESOLVED"})
                        if r.status_code == 201:
                            acked_resolves.add(id)
                except httpx.HTTPError:
                    return  # the server died under us: what was acknowledged is recorded

        await asyncio.gather(*(worker(w) for w in range(32)))


async def test_kill_9_under_write_load_loses_no_acknowledged_write(db: Path) -> None:
    acked_creates: set[str] = set()
    acked_resolves: set[str] = set()
    for round in range(2):
        server = ServerProcess(store=sqlite_url(db), port=free_port())
        server.start()
        stop = asyncio.Event()
        load = asyncio.create_task(_write_load(server.url, acked_creates, acked_resolves, stop))
        # Kill once this round has had real load (polled: a busy machine is slow, not wrong).
        deadline = time.monotonic() + 60
        while len(acked_creates) < 60 * (round + 1) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        server.kill()  # SIGKILL mid-load: no shutdown code runs
        stop.set()
        await load
    assert len(acked_creates) > 100
    with running_server(sqlite_url(db)) as server:
        async with httpx.AsyncClient(base_url=server.url, limits=limits(16)) as c:
            stored = await asyncio.gather(*(c.get(f"/promises/{id}") for id in acked_creates))
    for r in stored:
        assert r.status_code == 200, r.text
        if r.json()["id"] in acked_resolves:
            assert r.json()["state"] == "RESOLVED", r.text
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM promises").fetchone()[0]
    assert rows >= len(acked_creates)


async def test_sigterm_finishes_in_flight_requests_and_releases_waiters(
    db: Path, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    server = ServerProcess(store=sqlite_url(db), port=free_port(), log_path=log)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, limits=limits(64), timeout=30) as c:
            await c.post("/promises", json={"id": "waited", "timeout": FAR})
            waiters = [
                asyncio.create_task(c.get("/promises/waited", params={"wait": "4m"}))
                for _ in range(10)
            ]
            writes = [
                asyncio.create_task(c.post("/promises", json={"id": f"w/{i}", "timeout": FAR}))
                for i in range(50)
            ]

            async def stream() -> list[str]:
                async with c.stream("GET", "/poll/g/w") as resp:
                    return [line async for line in resp.aiter_lines()]

            worker_stream = asyncio.create_task(stream())
            await asyncio.sleep(0.3)
            started = time.monotonic()
            assert server.proc is not None
            server.proc.terminate()
            for resp in await asyncio.gather(*waiters):
                assert resp.status_code == 200
                assert resp.json()["state"] == "PENDING"
            answered = await asyncio.gather(*writes, return_exceptions=True)
            # the worker stream is closed by the server, not left to the shutdown timeout
            assert (await asyncio.wait_for(worker_stream, 10))[0] == ": connected"
        code = server.proc.wait(30)
        # uvicorn re-raises the signal once shutdown is complete, so the exit status says
        # "terminated by SIGTERM"; the log proves the lifespan shutdown (store close) ran.
        assert code in (0, -15)
        assert "Application shutdown complete" in log.read_text()
        assert time.monotonic() - started < 10
    finally:
        server.kill()
    acked = [r for r in answered if isinstance(r, httpx.Response) and r.status_code == 201]
    stored = {
        row[0] for row in sqlite3.connect(db).execute("SELECT id FROM promises WHERE id LIKE 'w/%'")
    }
    assert {r.json()["id"] for r in acked} <= stored


async def _raw_wait(port: int, id: str, wait: str) -> dict[str, Any]:
    """One long poll on its own connection, spoken by hand: a thousand of them cost the client
    almost nothing (an httpx pool of a thousand connections was the slow, flaky part)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /promises/{id}?wait={wait} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body: dict[str, Any] = json.loads(await reader.readexactly(length))
        assert status == 200, body
        return body
    finally:
        writer.close()


async def test_many_waiters_over_sockets_are_all_woken(db: Path, tmp_path: Path) -> None:
    n = 1000
    with running_server(sqlite_url(db), log_path=tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            for i in range(10):
                await c.post("/promises", json={"id": f"wait/{i}", "timeout": FAR})
            waiters = [
                asyncio.create_task(_raw_wait(server.port, f"wait/{i % 10}", "120s"))
                for i in range(n)
            ]
            await asyncio.sleep(2.0)
            assert not any(t.done() for t in waiters)
            for i in range(10):
                await c.patch(f"/promises/wait/{i}", json={"state": "RESOLVED"})
            done = await asyncio.wait_for(asyncio.gather(*waiters), 110)
    assert len(done) == n
    assert all(body["state"] == "RESOLVED" for body in done)


async def test_sweeper_times_out_unread_promises(db: Path) -> None:
    """Nobody reads the promise; the background sweeper still times it out on time."""
    with running_server(sqlite_url(db)) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            deadline = int(time.time() * 1000) + 300
            await c.post("/promises", json={"id": "sweep/me", "timeout": deadline})
            await c.post(
                "/promises",
                json={
                    "id": "sweep/timer",
                    "timeout": deadline,
                    "tags": {"resonate:timeout": "true"},
                },
            )
            conn = sqlite3.connect(db)
            states: dict[str, str] = {}
            for _ in range(100):
                await asyncio.sleep(0.05)
                states = dict(
                    conn.execute(
                        "SELECT id, state FROM promises WHERE id LIKE 'sweep/%'"
                    ).fetchall()
                )
                if states.get("sweep/me") != "PENDING" and states.get("sweep/timer") != "PENDING":
                    break
    assert states == {"sweep/me": "REJECTED_TIMEDOUT", "sweep/timer": "RESOLVED"}
