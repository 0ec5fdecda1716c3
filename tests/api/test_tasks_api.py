"""The task framework in-process: invoke → stream → claim → fenced resolve → complete,
leases, drops, callbacks (including by the sweeper), subscriptions, HTTP push retries, locks.

The dispatcher's steps (``advance``, ``dispatch``) are driven by the test with a fake clock;
the background loop is exercised end to end in ``tests/e2e``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pg import SESSION_SCHEMA, session_store, truncate
from troth.clock import FakeClock
from troth.engine import Engine
from troth.engine.dispatch import TaskSettings
from troth.model import Recv
from troth.server import create_app
from troth.server.stream import StreamConn, StreamRegistry
from troth.store.base import Store
from troth.store.memory import MemoryStore
from troth.store.sqlite import SqliteStore

FAR = 2**63 - 1


class Delivery:
    """Streams as in the server; HTTP pushes recorded, failing while ``down``."""

    def __init__(self, streams: StreamRegistry) -> None:
        self.streams = streams
        self.pushed: list[tuple[str, dict[str, Any]]] = []
        self.down = False

    def stream_for(self, recv: Recv) -> StreamConn | None:
        return self.streams.stream_for(recv)

    async def push(self, recv: Recv, message: bytes) -> bool:
        if self.down:
            return False
        assert recv.url is not None
        self.pushed.append((recv.url, json.loads(message)))
        return True


class World:
    def __init__(self, clock: FakeClock, store: Store) -> None:
        self.clock = clock
        self.streams = StreamRegistry()
        self.delivery = Delivery(self.streams)
        self.engine = Engine(
            store,
            clock,
            delivery=self.delivery,
            task_settings=TaskSettings(base_url="http://troth"),
        )
        self.app = create_app(self.engine, manage=False, streams=self.streams)
        self.http: httpx.AsyncClient

    async def step(self) -> None:
        """One dispatcher round, and let HTTP pushes finish."""
        assert self.engine.dispatcher is not None
        await self.engine.dispatcher.advance()
        await self.engine.dispatcher.dispatch()
        for push in list(self.engine.dispatcher._pushes):
            await push


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def world(
    clock: FakeClock, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[World]:
    """Every flow runs on each backend."""
    store: Store = (
        MemoryStore()
        if request.param == "memory"
        else SqliteStore(f"sqlite:///{tmp_path}/t.db")
        if request.param == "sqlite"
        else session_store()
    )
    w = World(clock, store)
    await w.engine.open()
    transport = httpx.ASGITransport(app=w.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://troth") as http:
        w.http = http
        yield w
    await w.engine.stop()
    if request.param == "postgres":
        truncate(SESSION_SCHEMA)


def messages(conn: StreamConn) -> list[dict[str, Any]]:
    out = []
    while not conn.queue.empty():
        raw = conn.queue.get_nowait()
        assert raw is not None
        out.append(json.loads(raw))
    return out


async def invoke(w: World, id: str, recv: str = "poll://any@g/w1", **tags: str) -> None:
    body = {"id": id, "timeout": FAR, "tags": {"resonate:invoke": recv, **tags}}
    assert (await w.http.post("/promises", json=body)).status_code == 201


async def test_invoke_claim_fenced_resolve_complete(world: World) -> None:
    w = world
    conn = w.streams.connect("g", "w1")
    await invoke(w, "job/1")
    await w.step()
    [msg] = messages(conn)
    assert msg["type"] == "invoke"
    task = msg["task"]
    assert task["id"] == "__invoke:job/1"
    assert task["counter"] == 1
    assert task["state"] == "ENQUEUED"
    assert task["rootPromiseId"] == "job/1"
    assert msg["href"]["claim"] == "http://troth/tasks/claim/__invoke:job/1/1"

    claim = {"id": task["id"], "counter": 1, "processId": "w1", "ttl": 30_000}
    r = await w.http.post("/tasks/claim", json=claim)
    assert r.status_code == 201, r.text
    assert r.json()["type"] == "invoke"
    assert r.json()["promises"]["root"]["id"] == "job/1"
    assert r.json()["promises"]["root"]["data"]["state"] == "PENDING"
    assert r.json()["promises"]["root"]["href"] == "http://troth/promises/job/1"
    again = await w.http.post("/tasks/claim", json=claim)
    assert again.status_code == 403
    assert again.json()["error"]["code"] == 40306

    wrong = {"Task-Id": task["id"], "Task-Counter": "2"}
    r = await w.http.patch("/promises/job/1", json={"state": "RESOLVED"}, headers=wrong)
    assert r.status_code == 412
    assert r.json()["error"]["code"] == 41200
    assert (await w.http.get("/promises/job/1")).json()["state"] == "PENDING"

    fence = {"Task-Id": task["id"], "Task-Counter": "1"}
    r = await w.http.patch("/promises/job/1", json={"state": "RESOLVED"}, headers=fence)
    assert r.status_code == 201
    done = await w.http.post("/tasks/complete", json={"id": task["id"], "counter": 1})
    assert done.status_code == 200  # the root's completion already completed its task
    assert done.json()["state"] == "COMPLETED"


async def test_complete_task_then_root(world: World) -> None:
    w = world
    w.streams.connect("g", "w1")
    await invoke(w, "job/2")
    await w.step()
    claim = {"id": "__invoke:job/2", "counter": 1, "processId": "w1", "ttl": 30_000}
    assert (await w.http.post("/tasks/claim", json=claim)).status_code == 201
    bad = await w.http.post("/tasks/complete", json={"id": "__invoke:job/2", "counter": 7})
    assert bad.json()["error"]["code"] == 40308
    r = await w.http.post("/tasks/complete", json={"id": "__invoke:job/2", "counter": 1})
    assert r.status_code == 201
    assert r.json()["completedOn"] == w.clock.now()
    assert (
        await w.http.post("/tasks/complete", json={"id": "__invoke:job/2", "counter": 1})
    ).status_code == 200
    missing = await w.http.post("/tasks/complete", json={"id": "nope", "counter": 1})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 40403


async def test_lease_expiry_redispatches_and_fences_out_the_old_holder(world: World) -> None:
    w = world
    conn = w.streams.connect("g", "w1")
    await invoke(w, "job/3")
    await w.step()
    messages(conn)
    claim = {"id": "__invoke:job/3", "counter": 1, "processId": "dead", "ttl": 1000}
    assert (await w.http.post("/tasks/claim", json=claim)).status_code == 201
    w.clock.advance(999)
    assert (await w.http.post("/tasks/heartbeat", json={"processId": "dead"})).json() == {
        "tasksAffected": 1
    }
    w.clock.advance(999)
    await w.step()
    assert messages(conn) == []  # heartbeat extended the lease
    w.clock.advance(1)
    await w.step()
    [msg] = messages(conn)
    assert msg["task"]["counter"] == 2
    late = {"Task-Id": "__invoke:job/3", "Task-Counter": "1"}
    r = await w.http.patch("/promises/job/3", json={"state": "RESOLVED"}, headers=late)
    assert r.status_code == 412
    r = await w.http.post("/tasks/claim", json=claim)
    assert r.json()["error"]["code"] == 40308
    claim2 = {"id": "__invoke:job/3", "counter": 2, "processId": "alive", "ttl": 1000}
    assert (await w.http.post("/tasks/claim", json=claim2)).status_code == 201


async def test_drop_and_get_forms(world: World) -> None:
    w = world
    conn = w.streams.connect("g", "w1")
    await invoke(w, "a/b/c")
    await w.step()
    messages(conn)
    r = await w.http.get("/tasks/claim/__invoke:a/b/c/1")
    assert r.status_code == 201, r.text
    assert (await w.http.get("/tasks/heartbeat/__invoke:a/b/c/1")).json() == {"tasksAffected": 1}
    r = await w.http.get("/tasks/drop/__invoke:a/b/c/1")
    assert r.status_code == 201
    assert r.json()["state"] == "INIT"
    assert r.json()["counter"] == 2
    assert (await w.http.get("/tasks/drop/__invoke:a/b/c/2")).status_code == 200  # not claimed
    await w.step()
    [msg] = messages(conn)
    assert msg["task"]["counter"] == 2
    assert (await w.http.get("/tasks/claim/x")).status_code == 400


async def test_no_stream_parks_until_one_connects(world: World) -> None:
    w = world
    await invoke(w, "job/4", recv="poll://any@workers")
    await w.step()
    task = await w.engine.get_task("__invoke:job/4")
    assert task.state.value == "INIT"
    assert task.ready_at > w.clock.now()
    assert w.engine.dispatcher is not None
    conn = w.streams.connect("workers", "x")
    await w.engine.dispatcher.stream_connected("poll:workers")
    await w.step()
    assert [m["task"]["id"] for m in messages(conn)] == ["__invoke:job/4"]


async def test_uni_addressing_and_newer_stream_wins(world: World) -> None:
    w = world
    other = w.streams.connect("g", "other")
    old = w.streams.connect("g", "w1")
    new = w.streams.connect("g", "w1")
    assert old.closed and not new.closed
    await invoke(w, "uni/1", recv="poll://uni@g/w1")
    await invoke(w, "uni/2", recv="poll://uni@g/absent")
    await w.step()
    assert [m["task"]["id"] for m in messages(new)] == ["__invoke:uni/1"]
    assert messages(other) == []


async def test_delay_tag(world: World) -> None:
    w = world
    conn = w.streams.connect("g", "w1")
    await invoke(w, "later", **{"resonate:delay": str(w.clock.now() + 5000)})
    await w.step()
    assert messages(conn) == []
    w.clock.advance(5000)
    await w.step()
    assert len(messages(conn)) == 1


async def test_callback_resume_and_timeout_by_sweeper(world: World) -> None:
    w = world
    conn = w.streams.connect("g", "w1")
    await w.http.post("/promises", json={"id": "root", "timeout": FAR})
    await w.http.post("/promises", json={"id": "leaf", "timeout": w.clock.now() + 100})
    body = {"rootPromiseId": "root", "timeout": FAR, "recv": "poll://any@g"}
    r = await w.http.post("/promises/callback/leaf", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["callback"]["id"] == "__resume:root:leaf"
    assert r.json()["callback"]["recv"] == {"type": "poll", "data": {"group": "g"}}
    assert (await w.http.post("/promises/callback/leaf", json=body)).json()["callback"] is None
    assert (await w.http.post("/promises/callback/none", json=body)).status_code == 404
    w.clock.advance(100)
    assert await w.engine.sweep() == 1  # nobody reads the leaf: the sweeper times it out
    await w.step()
    [msg] = messages(conn)
    assert msg["type"] == "resume"
    assert msg["task"]["rootPromiseId"] == "root"
    assert msg["task"]["leafPromiseId"] == "leaf"
    r = await w.http.post(
        "/tasks/claim", json={"id": msg["task"]["id"], "counter": 1, "processId": "p", "ttl": 5000}
    )
    assert r.json()["type"] == "resume"
    assert r.json()["promises"]["leaf"]["data"]["state"] == "REJECTED_TIMEDOUT"
    # on a completed promise: 200, no callback, continue at once
    late = await w.http.post("/promises/callback/leaf", json=body)
    assert late.status_code == 200
    assert late.json() == {"callback": None, "promise": late.json()["promise"]}


async def test_one_active_task_per_root(world: World) -> None:
    w = world
    conn = w.streams.connect("g", "w1")
    await invoke(w, "r")
    await w.step()
    messages(conn)
    claim = {"id": "__invoke:r", "counter": 1, "processId": "w1", "ttl": 60_000}
    await w.http.post("/tasks/claim", json=claim)
    await w.http.post("/promises", json={"id": "r.1", "timeout": FAR})
    await w.http.post(
        "/promises/callback/r.1",
        json={"rootPromiseId": "r", "timeout": FAR, "recv": "poll://any@g"},
    )
    await w.http.patch("/promises/r.1", json={"state": "RESOLVED"})
    await w.step()
    assert messages(conn) == []  # the invoke task of r is still claimed
    await w.http.post("/tasks/complete", json={"id": "__invoke:r", "counter": 1})
    await w.step()
    assert [m["type"] for m in messages(conn)] == ["resume"]


async def test_subscription_push_retries_until_delivered(world: World) -> None:
    w = world
    await w.http.post("/promises", json={"id": "watched", "timeout": FAR})
    r = await w.http.post(
        "/promises/subscribe/watched",
        json={"id": "s1", "timeout": FAR, "recv": "http://hooks.example/in"},
    )
    assert r.status_code == 201
    assert r.json()["callback"]["id"] == "__notify:watched:s1"
    w.delivery.down = True
    await w.http.patch("/promises/watched", json={"state": "RESOLVED"})
    await w.step()
    task = await w.engine.get_task("__notify:watched:s1")
    assert task.state.value == "INIT"
    assert task.attempt == 1
    w.clock.advance(500)
    await w.step()
    assert (await w.engine.get_task("__notify:watched:s1")).attempt == 2
    w.delivery.down = False
    w.clock.advance(1000)
    await w.step()
    [(url, msg)] = w.delivery.pushed
    assert url == "http://hooks.example/in"
    assert msg["type"] == "notify"
    assert msg["promise"]["state"] == "RESOLVED"
    assert (await w.engine.get_task("__notify:watched:s1")).state.value == "COMPLETED"


async def test_legacy_routes_and_bad_recv(world: World) -> None:
    w = world
    await w.http.post("/promises", json={"id": "p", "timeout": FAR})
    r = await w.http.post(
        "/callbacks",
        json={"promiseId": "p", "rootPromiseId": "q", "timeout": FAR, "recv": "default"},
    )
    assert r.status_code == 201
    assert r.json()["callback"]["recv"] == {"type": "poll", "data": {"group": "default"}}
    r = await w.http.post(
        "/subscriptions", json={"id": "s", "promiseId": "p", "timeout": FAR, "recv": "default"}
    )
    assert r.status_code == 201
    for recv in ["nowhere", "poll://uni@g", "ftp://x", 7, {"type": "poll", "data": {}}]:
        bad = await w.http.post(
            "/promises/subscribe/p", json={"id": "s2", "timeout": FAR, "recv": recv}
        )
        assert bad.status_code == 400, recv
        assert "recv" in bad.json()["error"]["message"]
    bad = await w.http.post(
        "/promises", json={"id": "x", "timeout": FAR, "tags": {"resonate:invoke": "bogus"}}
    )
    assert bad.status_code == 400
    assert (await w.http.get("/promises/x")).status_code == 404


async def test_promise_and_task(world: World) -> None:
    w = world
    body = {"promise": {"id": "pt", "timeout": FAR}, "task": {"processId": "me", "ttl": 10_000}}
    r = await w.http.post("/promises/task", json=body, headers={"Idempotency-Key": "k"})
    assert r.status_code == 201, r.text
    assert r.json()["promise"]["id"] == "pt"
    assert r.json()["task"]["state"] == "CLAIMED"
    assert r.json()["task"]["processId"] == "me"
    again = await w.http.post("/promises/task", json=body, headers={"Idempotency-Key": "k"})
    assert again.status_code == 200
    assert again.json()["task"] is None
    assert (await w.http.post("/promises/task", json=body)).status_code == 409
    fence = {"Task-Id": "__invoke:pt", "Task-Counter": "1"}
    r = await w.http.patch("/promises/pt", json={"state": "RESOLVED"}, headers=fence)
    assert r.status_code == 201
    half = await w.http.patch("/promises/pt", json={"state": "RESOLVED"}, headers={"Task-Id": "x"})
    assert half.status_code == 400


async def test_locks(world: World) -> None:
    w = world
    a = {"resourceId": "r", "executionId": "e1", "processId": "p1", "ttl": 1000}
    b = {"resourceId": "r", "executionId": "e2", "processId": "p2", "ttl": 1000}
    r = await w.http.post("/locks/acquire", json=a)
    assert r.status_code == 201
    assert r.json()["expiresAt"] == w.clock.now() + 1000
    assert (await w.http.post("/locks/acquire", json=a)).status_code == 201  # re-entrant
    held = await w.http.post("/locks/acquire", json=b)
    assert held.status_code == 403
    assert held.json()["error"]["code"] == 40305
    w.clock.advance(900)
    assert (await w.http.post("/locks/heartbeat", json={"processId": "p1"})).json() == {
        "locksAffected": 1
    }
    w.clock.advance(900)
    assert (await w.http.post("/locks/acquire", json=b)).status_code == 403
    w.clock.advance(100)
    assert (await w.http.post("/locks/acquire", json=b)).status_code == 201  # expired: taken over
    release = {"resourceId": "r", "executionId": "e1"}
    assert (await w.http.post("/locks/release", json=release)).status_code == 404
    release = {"resourceId": "r", "executionId": "e2"}
    assert (await w.http.post("/locks/release", json=release)).status_code == 204
    assert (await w.http.post("/locks/release", json=release)).status_code == 404


async def test_logical_receiver_names(clock: FakeClock) -> None:
    streams = StreamRegistry()
    engine = Engine(
        MemoryStore(),
        clock,
        delivery=Delivery(streams),
        receivers={"mailers": "poll://any@mailers"},
    )
    await engine.open()
    try:
        conn = streams.connect("mailers", "m1")
        await engine.create_promise("mail/1", FAR, tags={"resonate:invoke": "mailers"})
        await engine.create_promise("mail/2", FAR, tags={"resonate:invoke": "default"})
        assert engine.dispatcher is not None
        await engine.dispatcher.dispatch()
        assert [m["task"]["id"] for m in messages(conn)] == ["__invoke:mail/1"]
        assert (await engine.get_task("__invoke:mail/2")).recv.group == "default"
    finally:
        await engine.stop()


async def test_no_resume_for_a_root_that_is_already_complete(world: World) -> None:
    w = world
    await w.http.post("/promises", json={"id": "done-root", "timeout": FAR})
    await w.http.post("/promises", json={"id": "late-leaf", "timeout": FAR})
    body = {"rootPromiseId": "done-root", "timeout": FAR, "recv": "poll://any@g"}
    assert (await w.http.post("/promises/callback/late-leaf", json=body)).status_code == 201
    await w.http.patch("/promises/done-root", json={"state": "RESOLVED"})
    await w.http.patch("/promises/late-leaf", json={"state": "RESOLVED"})
    r = await w.http.post(
        "/tasks/claim",
        json={"id": "__resume:done-root:late-leaf", "counter": 1, "processId": "p", "ttl": 1},
    )
    assert r.status_code == 404  # nothing to resume: no task was created
