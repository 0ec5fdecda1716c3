"""The promise routes in-process (httpx ASGITransport): status codes, bodies, bad input."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest

from troth.clock import FakeClock
from troth.engine import Engine
from troth.model import State
from troth.server import create_app
from troth.store.memory import MemoryStore

FAR = 2**63 - 1


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def create(
    http: httpx.AsyncClient, id: str, timeout: int = FAR, **extra: Any
) -> httpx.Response:
    headers = extra.pop("headers", {})
    return await http.post(
        "/promises", json={"id": id, "timeout": timeout, **extra}, headers=headers
    )


def assert_error(resp: httpx.Response, status: int, code: int, *fragments: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["code"] == code
    assert isinstance(err["details"], list)
    for fragment in fragments:
        assert fragment in err["message"], err["message"]


async def test_create_returns_the_promise_object(http: httpx.AsyncClient, clock: FakeClock) -> None:
    resp = await create(
        http,
        "a/b.c:d",
        param={"headers": {"h": "v"}, "data": b64("hi")},
        tags={"k": "v"},
        headers={"Idempotency-Key": "ik"},
    )
    assert resp.status_code == 201
    assert resp.json() == {
        "id": "a/b.c:d",
        "state": "PENDING",
        "param": {"headers": {"h": "v"}, "data": b64("hi")},
        "value": {},
        "timeout": FAR,
        "idempotencyKeyForCreate": "ik",
        "tags": {"k": "v"},
        "createdOn": clock.now(),
    }


async def test_create_dedup_and_conflict(http: httpx.AsyncClient) -> None:
    assert (await create(http, "p", headers={"idempotency-key": "k"})).status_code == 201
    again = await create(http, "p", timeout=5, headers={"Idempotency-Key": "k"})
    assert again.status_code == 200
    assert again.json()["timeout"] == FAR  # replay returns the stored promise, not the replay
    assert_error(await create(http, "p"), 409, 40900, "'p'", "PENDING")
    assert_error(await create(http, "p", headers={"Idempotency-Key": "other"}), 409, 40900)


async def test_strict_create_on_completed_promise_conflicts(http: httpx.AsyncClient) -> None:
    await create(http, "p", headers={"Idempotency-Key": "k"})
    resp = await http.patch("/promises/p", json={"state": "RESOLVED"})
    assert resp.status_code == 201
    lenient = await create(http, "p", headers={"Idempotency-Key": "k", "Strict": "false"})
    assert lenient.status_code == 200
    assert lenient.json()["state"] == "RESOLVED"
    strict = await create(http, "p", headers={"Idempotency-Key": "k", "Strict": "TRUE"})
    assert_error(strict, 409, 40900, "strict")


@pytest.mark.parametrize(
    ("state", "stored"),
    [
        ("RESOLVED", "RESOLVED"),
        ("resolved", "RESOLVED"),
        ("Rejected", "REJECTED"),
        ("REJECTED_CANCELED", "REJECTED_CANCELED"),
    ],
)
async def test_complete(http: httpx.AsyncClient, clock: FakeClock, state: str, stored: str) -> None:
    await create(http, "p")
    resp = await http.patch(
        "/promises/p",
        json={"state": state, "value": {"data": b64("v")}},
        headers={"Idempotency-Key": "u"},
    )
    assert resp.status_code == 201
    body = resp.json()
    assert body["state"] == stored
    assert body["value"] == {"data": b64("v")}
    assert body["idempotencyKeyForComplete"] == "u"
    assert body["completedOn"] == clock.now()
    replay = await http.patch(
        "/promises/p", json={"state": state}, headers={"Idempotency-Key": "u"}
    )
    assert replay.status_code == 200
    assert replay.json() == body


async def test_complete_refusals(http: httpx.AsyncClient) -> None:
    assert_error(await http.patch("/promises/none", json={"state": "RESOLVED"}), 404, 40400)
    await create(http, "p")
    await http.patch("/promises/p", json={"state": "REJECTED"})
    assert_error(
        await http.patch("/promises/p", json={"state": "RESOLVED"}), 403, 40302, "REJECTED"
    )
    await create(http, "c")
    await http.patch("/promises/c", json={"state": "REJECTED_CANCELED"})
    assert_error(await http.patch("/promises/c", json={"state": "RESOLVED"}), 403, 40303)


@pytest.mark.parametrize("state", ["PENDING", "REJECTED_TIMEDOUT", "done", ""])
async def test_complete_to_a_state_that_is_not_a_completion(
    http: httpx.AsyncClient, state: str
) -> None:
    await create(http, "p")
    assert_error(await http.patch("/promises/p", json={"state": state}), 400, 40000, "$.state")
    assert (await http.get("/promises/p")).json()["state"] == "PENDING"


async def test_timeouts_are_lazy_and_complete_on_deadline(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    deadline = clock.now() + 1000
    await create(http, "p", timeout=deadline)
    await create(http, "t", timeout=deadline, tags={"resonate:timeout": "true"})
    clock.advance(1000)
    p = (await http.get("/promises/p")).json()
    assert p["state"] == "REJECTED_TIMEDOUT"
    assert p["completedOn"] == deadline
    assert p["value"] == {}
    t = (await http.get("/promises/t")).json()
    assert t["state"] == "RESOLVED"
    assert t["completedOn"] == deadline
    # completing after the deadline: non-strict dedups to the timeout, strict is refused
    assert (await http.patch("/promises/p", json={"state": "RESOLVED"})).status_code == 200
    strict = await http.patch("/promises/p", json={"state": "RESOLVED"}, headers={"Strict": "1"})
    assert_error(strict, 403, 40304)
    assert_error(await http.patch("/promises/t", json={"state": "REJECTED"}), 403, 40301)


async def test_create_with_past_deadline_is_stored_timed_out(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    resp = await create(http, "late", timeout=clock.now() - 1)
    assert resp.status_code == 201
    assert resp.json()["state"] == "REJECTED_TIMEDOUT"
    assert resp.json()["completedOn"] == clock.now() - 1


async def test_null_members_mean_absent(http: httpx.AsyncClient) -> None:
    resp = await http.post(
        "/promises",
        json={"id": "n", "timeout": 10**15, "param": None, "tags": None, "unknown": [1, 2]},
    )
    assert resp.status_code == 201
    assert resp.json()["param"] == {}
    assert "tags" not in resp.json()
    resp = await http.post(
        "/promises", json={"id": "m", "timeout": 10**15, "param": {"headers": None, "data": None}}
    )
    assert resp.json()["param"] == {}
    done = await http.patch("/promises/m", json={"state": "RESOLVED", "value": None})
    assert done.json()["value"] == {}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{", "malformed JSON"),
        (b"", "empty"),
        (b"[]", "Expected `object`"),
        (b'{"timeout": 1}', "missing required field `id`"),
        (b'{"id": "x"}', "missing required field `timeout`"),
        (b'{"id": 1, "timeout": 1}', "`$.id`"),
        (b'{"id": "x", "timeout": "1"}', "Expected `int`, got `str` - at `$.timeout`"),
        (b'{"id": "x", "timeout": -1}', "`$.timeout`"),
        (b'{"id": "x", "timeout": 9223372036854775808}', "`$.timeout`"),
        (b'{"id": "x", "timeout": 1.5}', "`$.timeout`"),
        (b'{"id": "x", "timeout": 1, "param": {"data": "@@@"}}', "base64"),
        (b'{"id": "x", "timeout": 1, "param": {"headers": {"a": 1}}}', "`$.param.headers"),
        (b'{"id": "x", "timeout": 1, "tags": ["a"]}', "`$.tags`"),
        (b'{"id": "", "timeout": 1}', "$.id"),
        (b'{"id": "\\ud800", "timeout": 1}', ""),
    ],
)
async def test_bad_create_bodies(http: httpx.AsyncClient, body: bytes, fragment: str) -> None:
    resp = await http.post("/promises", content=body)
    assert_error(resp, 400, 40000, fragment)
    assert (await http.get("/promises")).json()["promises"] == []


async def test_bad_headers(http: httpx.AsyncClient) -> None:
    assert_error(await create(http, "p", headers={"Strict": "yes"}), 400, 40000, "Strict")
    assert (await http.get("/promises/p")).status_code == 404


async def test_id_limit(http: httpx.AsyncClient) -> None:
    assert (await create(http, "x" * 1024)).status_code == 201
    assert (await create(http, "é" * 512)).status_code == 201  # 1,024 bytes
    assert_error(await create(http, "x" * 1025), 400, 40000, "1024 bytes")
    assert_error(await create(http, "é" * 513), 400, 40000, "1024 bytes")


async def test_too_many_tags(http: httpx.AsyncClient) -> None:
    tags = {f"k{i}": "v" for i in range(65)}
    assert_error(await create(http, "p", tags=tags), 400, 40000, "$.tags")


async def test_oversized_body_is_413(http: httpx.AsyncClient) -> None:
    data = "A" * (10 * 1024 * 1024 + 16)
    resp = await http.post(
        "/promises", content=f'{{"id":"big","timeout":1,"param":{{"data":"{data}"}}}}'
    )
    assert_error(resp, 413, 41300)

    async def chunks() -> Any:  # no Content-Length: the limit is enforced while streaming
        for _ in range(11):
            yield b"A" * (1024 * 1024)

    assert_error(await http.post("/promises", content=chunks()), 413, 41300)


async def test_ids_with_special_characters_round_trip(http: httpx.AsyncClient) -> None:
    for id in ["a/b/c", "x y", "100%", "q?x=1", "hash#frag", "ünï/ç😀", "a//b", "/lead"]:
        assert (await create(http, id)).status_code == 201, id
        quoted = "/promises/" + "".join(
            c if c.isalnum() or c in "/-._~" else "".join(f"%{b:02X}" for b in c.encode())
            for c in id
        )
        got = await http.get(quoted)
        assert got.status_code == 200, (id, quoted, got.text)
        assert got.json()["id"] == id


async def test_search(http: httpx.AsyncClient, clock: FakeClock) -> None:
    for i in range(5):
        await create(http, f"job/{i}", tags={"env": "prod" if i % 2 else "dev", "n": str(i)})
    await create(http, "other")
    await http.patch("/promises/job/1", json={"state": "RESOLVED"})
    await http.patch("/promises/job/2", json={"state": "REJECTED"})
    await create(http, "job/expired", timeout=clock.now() + 1)
    clock.advance(1)

    async def ids(**params: Any) -> list[str]:
        resp = await http.get("/promises", params=params)
        assert resp.status_code == 200, resp.text
        return [p["id"] for p in resp.json()["promises"]]

    assert await ids(id="job/*") == ["job/expired", "job/4", "job/3", "job/2", "job/1", "job/0"]
    assert await ids(id="job/*", state="PENDING") == ["job/4", "job/3", "job/0"]
    assert await ids(id="job/*", state="resolved") == ["job/1"]
    assert await ids(id="job/*", state="Rejected") == ["job/expired", "job/2"]
    assert await ids(**{"tags[env]": "prod"}) == ["job/3", "job/1"]
    assert await ids(**{"tags[env]": "prod", "tags[n]": "3"}) == ["job/3"]
    assert await ids(id="*/3") == ["job/3"]
    assert await ids(id="other") == ["other"]
    # the expired promise was timed out as it was returned
    assert (await http.get("/promises/job/expired")).json()["state"] == "REJECTED_TIMEDOUT"


async def test_search_wildcards_are_literal(http: httpx.AsyncClient) -> None:
    for id in ["a%c", "abc", "a_c", "a?c", "a[b]c", "a\\c"]:
        await create(http, id)

    async def ids(pattern: str) -> set[str]:
        resp = await http.get("/promises", params={"id": pattern})
        return {p["id"] for p in resp.json()["promises"]}

    assert await ids("a%c") == {"a%c"}
    assert await ids("a_c") == {"a_c"}
    assert await ids("a?c") == {"a?c"}
    assert await ids("a[b]c") == {"a[b]c"}
    assert await ids("a\\c") == {"a\\c"}
    assert await ids("a*c") == {"a%c", "abc", "a_c", "a?c", "a[b]c", "a\\c"}


async def test_search_paging_with_signed_cursor(http: httpx.AsyncClient) -> None:
    for i in range(25):
        await create(http, f"p/{i:02d}")
    await create(http, "q/0")
    seen: list[str] = []
    params: dict[str, Any] = {"id": "p/*", "limit": 10}
    pages = 0
    while True:
        body = (await http.get("/promises", params=params)).json()
        seen += [p["id"] for p in body["promises"]]
        pages += 1
        if body["cursor"] is None:
            break
        params = {"cursor": body["cursor"], "id": "*"}  # the cursor carries the whole query
    assert pages == 3
    assert seen == [f"p/{i:02d}" for i in reversed(range(25))]
    first = (await http.get("/promises", params={"id": "p/*", "limit": 10})).json()["cursor"]
    tampered = first[:-2] + ("AA" if not first.endswith("AA") else "BB")
    assert_error(await http.get("/promises", params={"cursor": tampered}), 400, 40000, "cursor")
    assert_error(await http.get("/promises", params={"cursor": "garbage"}), 400, 40000, "cursor")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"state": "done"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"tags": "x"}, "tags"),
        ({"tags[]": "x"}, "tags"),
    ],
)
async def test_bad_search_params(
    http: httpx.AsyncClient, params: dict[str, str], fragment: str
) -> None:
    assert_error(await http.get("/promises", params=params), 400, 40000, fragment)


async def test_wait_returns_on_completion(http: httpx.AsyncClient) -> None:
    await create(http, "w")
    waiter = asyncio.create_task(http.get("/promises/w", params={"wait": "30s"}))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await http.patch("/promises/w", json={"state": "RESOLVED"})
    resp = await asyncio.wait_for(waiter, 5)
    assert resp.status_code == 200
    assert resp.json()["state"] == "RESOLVED"


async def test_wait_elapses_with_pending(http: httpx.AsyncClient) -> None:
    await create(http, "w")
    resp = await http.get("/promises/w", params={"wait": "50"})
    assert resp.json()["state"] == "PENDING"


@pytest.mark.parametrize("wait", ["soon", "-1", "6m", "301s", "1x"])
async def test_bad_wait(http: httpx.AsyncClient, wait: str) -> None:
    await create(http, "w")
    assert_error(await http.get("/promises/w", params={"wait": wait}), 400, 40000, "wait")


async def test_wait_on_missing_promise_is_404(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/promises/nope", params={"wait": "1s"}), 404, 40400)


async def test_operational_routes(http: httpx.AsyncClient) -> None:
    assert (await http.get("/ping")).json() == {"status": "ok"}
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).json() == {"status": "ready"}


async def test_unknown_route_and_method_have_json_errors(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/nowhere"), 404, 40400, "/nowhere")
    assert_error(await http.delete("/promises/x"), 405, 40500, "DELETE")


async def test_readyz_reports_storage_down(clock: FakeClock) -> None:
    # A store that can be switched off (PostgreSQL going away: tests/e2e/test_postgres_cluster)
    store = MemoryStore()
    engine = Engine(store, clock)
    await engine.open()
    app = create_app(engine, manage=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as h:
        store.available = False
        assert_error(await h.get("/readyz"), 503, 50300)
        assert_error(await create(h, "p"), 503, 50300)
        store.available = True
        assert (await h.get("/readyz")).status_code == 200
    await engine.stop()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "a\u0000b"}, "$.id"),
        ({"id": "ok", "tags": {"k": "v\u0000"}}, "$.tags"),
        ({"id": "ok", "param": {"headers": {"h\u0000": "v"}}}, "$.param.headers"),
    ],
)
async def test_nul_is_refused_in_ids_tags_and_headers(
    http: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    resp = await http.post("/promises", json={"timeout": FAR, **body})
    assert_error(resp, 400, 40000, "NUL", field)
    assert (await http.get("/promises/ok")).status_code == 404  # nothing stored


async def test_nul_is_refused_in_idempotency_keys(engine: Engine) -> None:
    from troth.errors import ValidationError

    with pytest.raises(ValidationError, match="Idempotency-Key"):
        await engine.create_promise("nul/key", FAR, ikey="k\x00")
    await engine.create_promise("nul/key", FAR)
    with pytest.raises(ValidationError, match="Idempotency-Key"):
        await engine.complete_promise("nul/key", State.RESOLVED, ikey="\x00")
