"""``POST /sdk/batch``, ``POST /sdk/claim`` and the results streams' watches, in-process
(on every backend of the shared ``engine`` fixture)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import msgspec

from troth.clock import FakeClock
from troth.engine import Engine
from troth.engine.sdkops import ClaimRef, Fence, Op, apply_ops, claim_tasks
from troth.model import State, Value
from troth.server.routes_sdk import SESSION_UNKNOWN, SdkApi

FAR = 2**62


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def batch(http: httpx.AsyncClient, *ops: dict[str, Any]) -> list[dict[str, Any]]:
    r = await http.post("/sdk/batch", json={"ops": list(ops)})
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    assert len(results) == len(ops)
    return results


async def test_record_creates_a_completed_promise_in_one_op(http: httpx.AsyncClient) -> None:
    [r] = await batch(
        http,
        {
            "kind": "record",
            "id": "wf.1",
            "timeout": FAR,
            "tags": {"troth:func": "add"},
            "state": "RESOLVED",
            "value": {"data": b64(b"3")},
            "at": 1234,
        },
    )
    assert r["status"] == 201
    p = r["promise"]
    assert p["state"] == "RESOLVED" and base64.b64decode(p["value"]["data"]) == b"3"
    assert p["createdOn"] == p["completedOn"] == 1234
    assert p["idempotencyKeyForCreate"] == p["idempotencyKeyForComplete"] == "wf.1"
    got = (await http.get("/promises/wf.1")).json()
    assert got["state"] == "RESOLVED" and got["tags"] == {"troth:func": "add"}


async def test_record_again_answers_the_stored_outcome(http: httpx.AsyncClient) -> None:
    rec = {"kind": "record", "id": "r.1", "timeout": FAR, "state": "RESOLVED"}
    await batch(http, {**rec, "value": {"data": b64(b"first")}})
    [again] = await batch(http, {**rec, "value": {"data": b64(b"second")}})
    assert again["status"] == 200
    assert base64.b64decode(again["promise"]["value"]["data"]) == b"first"


async def test_record_completes_a_pending_promise(http: httpx.AsyncClient) -> None:
    create = {"kind": "create", "id": "p.1", "timeout": FAR}
    record = {"kind": "record", "id": "p.1", "timeout": FAR, "state": "REJECTED"}
    created, recorded = await batch(http, create, record)
    assert created["status"] == 201 and created["promise"]["state"] == "PENDING"
    assert recorded["status"] == 200 and recorded["promise"]["state"] == "REJECTED"


async def test_ops_apply_in_order_and_fail_alone(http: httpx.AsyncClient) -> None:
    results = await batch(
        http,
        {"kind": "create", "id": "o.1", "timeout": FAR},
        {"kind": "complete", "id": "o.1", "state": "RESOLVED"},
        {"kind": "complete", "id": "missing", "state": "RESOLVED"},
        {"kind": "complete", "id": "o.1", "state": "REJECTED"},  # same key: deduplicated
        {"kind": "create", "id": "", "timeout": FAR},  # invalid
        {"kind": "create", "id": "o.2", "timeout": FAR},
    )
    assert [r["status"] for r in results] == [201, 201, 404, 200, 400, 201]
    assert results[3]["promise"]["state"] == "RESOLVED"
    assert results[4]["code"] == 40000
    assert (await http.get("/promises/o.2")).json()["state"] == "PENDING"


async def test_brief_answers_only_the_status(http: httpx.AsyncClient) -> None:
    op = {"kind": "record", "id": "b.1", "timeout": FAR, "state": "RESOLVED", "brief": True}
    [r] = await batch(http, op)
    assert r == {"status": 201}


async def test_a_fence_is_checked_per_op(engine: Engine) -> None:
    await apply_ops(engine, [Op(kind="create", id="root", timeout=FAR)])
    results = await apply_ops(
        engine,
        [
            Op(kind="record", id="root.1", timeout=FAR, state=State.RESOLVED),
            Op(
                kind="record",
                id="root.2",
                timeout=FAR,
                state=State.RESOLVED,
                fence=Fence("__invoke:root", 1),
            ),
        ],
    )
    assert [r.status for r in results] == [201, 412]
    assert results[1].code == 41200


async def test_a_create_with_an_invoke_tag_makes_its_task_and_claims_batch(
    engine: Engine,
) -> None:
    tags = {"resonate:invoke": "poll://any@workers"}
    ops = [Op(kind="create", id=f"job/{i}", timeout=FAR, tags=tags) for i in range(3)]
    assert [r.status for r in await apply_ops(engine, ops)] == [201, 201, 201]
    refs = [ClaimRef(f"__invoke:job/{i}", 1) for i in range(3)] + [ClaimRef("__invoke:x", 1)]
    results = await claim_tasks(engine, refs, process_id="w1", ttl=30_000)
    assert [r.status for r in results] == [201, 201, 201, 404]
    claimed = results[0].claimed()
    assert claimed.task.process_id == "w1" and claimed.root.id == "job/0"
    again = await claim_tasks(engine, refs[:1], process_id="w2", ttl=30_000)
    assert again[0].status == 403
    # completing the root (fenced by its task) completes the task too
    [done] = await apply_ops(
        engine,
        [
            Op(
                kind="complete",
                id="job/0",
                state=State.RESOLVED,
                value=Value(data=b"1"),
                fence=Fence("__invoke:job/0", 1),
            )
        ],
    )
    assert done.status == 201
    assert (await engine.get_task("__invoke:job/0")).state.value == "COMPLETED"


async def test_claim_route(http: httpx.AsyncClient) -> None:
    create = {
        "kind": "create",
        "id": "c/1",
        "timeout": FAR,
        "tags": {"resonate:invoke": "poll://any@w"},
    }
    await batch(http, create)
    body = {"tasks": [{"id": "__invoke:c/1", "counter": 1}], "processId": "p", "ttl": 1000}
    r = await http.post("/sdk/claim", json=body)
    assert r.status_code == 200
    [res] = r.json()["results"]
    assert res["status"] == 201 and res["root"]["id"] == "c/1"
    assert res["task"]["state"] == "CLAIMED" and res["task"]["processId"] == "p"


async def test_malformed_batches_are_refused(http: httpx.AsyncClient) -> None:
    r = await http.post("/sdk/batch", content=b"{")
    assert r.status_code == 400
    r = await http.post("/sdk/batch", json={"ops": [{"kind": "nope", "id": "x"}]})
    assert r.status_code == 400
    r = await http.post("/sdk/batch", json={"ops": [{"kind": "create", "id": "x"}] * 1001})
    assert r.status_code == 400


async def test_watch_without_a_stream_answers_session_unknown(http: httpx.AsyncClient) -> None:
    await batch(http, {"kind": "create", "id": "w.1", "timeout": FAR})
    [r] = await batch(http, {"kind": "watch", "id": "w.1", "session": "nobody"})
    assert r["status"] == 404 and r["code"] == SESSION_UNKNOWN


async def test_watches_send_completions_on_the_session_stream(
    engine: Engine, clock: FakeClock
) -> None:
    api = SdkApi(engine, lambda request: asyncio.sleep(0, b""))
    session = api.watches.open("s1")
    await apply_ops(
        engine,
        [
            Op(kind="create", id="a", timeout=FAR),
            Op(kind="record", id="done", timeout=FAR, state=State.RESOLVED),
        ],
    )
    answers: list[Any] = [None, None, None]
    ops = [
        (0, Op(kind="watch", id="a", session="s1")),
        (1, Op(kind="watch", id="done", session="s1")),
        (2, Op(kind="watch", id="absent", session="s1")),
    ]
    await api.watches.watch(ops, answers)
    assert [a.status for a in answers] == [202, 200, 404]
    assert answers[1].promise.id == "done"
    await apply_ops(engine, [Op(kind="complete", id="a", state=State.RESOLVED)])
    message = await asyncio.wait_for(session.queue.get(), 5)
    assert message is not None
    sent = msgspec.json.decode(message)
    assert [p["id"] for p in sent["promises"]] == ["a"]
    assert sent["promises"][0]["state"] == "RESOLVED"
    api.watches.close(session)
    assert "s1" not in api.watches.sessions
    await apply_ops(engine, [Op(kind="create", id="b", timeout=FAR)])
    session = api.watches.open("s1")
    await api.watches.watch([(0, Op(kind="watch", id="b", session="s1"))], answers)
    assert "b" in engine.waiters._by_id
    api.watches.close(session)
    assert "b" not in engine.waiters._by_id  # closing a stream drops its watches


async def test_a_watched_promise_that_times_out_is_sent(engine: Engine, clock: FakeClock) -> None:
    api = SdkApi(engine, lambda request: asyncio.sleep(0, b""))
    session = api.watches.open("s2")
    await apply_ops(engine, [Op(kind="create", id="t", timeout=clock.now() + 1000)])
    answers: list[Any] = [None]
    await api.watches.watch([(0, Op(kind="watch", id="t", session="s2"))], answers)
    assert answers[0].status == 202
    clock.advance(1000)
    await engine.sweep()  # the sweeper times it out and wakes its waiters
    message = await asyncio.wait_for(session.queue.get(), 5)
    assert message is not None
    assert msgspec.json.decode(message)["promises"][0]["state"] == "REJECTED_TIMEDOUT"


async def test_against_a_server_without_the_sdk_routes_writes_go_one_by_one(
    engine: Engine,
) -> None:
    """An older server (or a token scoped to an id prefix, which may not use /sdk/*): the
    SDK's batches and claims fall back to the single-promise and task routes."""
    from starlette.routing import Route

    from troth.client import AsyncClient
    from troth.sdk.backend import ClientBackend
    from troth.server import create_app

    app = create_app(engine, manage=False)
    app.router.routes = [
        r for r in app.router.routes if not (isinstance(r, Route) and r.path.startswith("/sdk"))
    ]
    client = AsyncClient("http://troth", transport=httpx.ASGITransport(app=app))
    backend = ClientBackend(client)
    tags = {"resonate:invoke": "poll://any@w"}
    results = await backend.batch(
        [
            Op(kind="create", id="old", timeout=FAR, tags=tags),
            Op(
                kind="record", id="old.1", timeout=FAR, state=State.RESOLVED, value=Value(data=b"1")
            ),
            Op(kind="complete", id="nope", state=State.RESOLVED),
            Op(kind="watch", id="old", session="s"),
        ]
    )
    assert backend.classic
    assert [r.status for r in results] == [201, 201, 404, 501]
    assert results[1].promise is not None and results[1].promise.state is State.RESOLVED
    [claim] = await backend.claim([ClaimRef("__invoke:old", 1)], "p", 1000)
    claimed = claim.claimed()
    assert claimed.root.id == "old" and claimed.task.counter == 1
    await client.close()
