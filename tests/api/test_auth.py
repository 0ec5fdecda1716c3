"""Authentication (API.md 6, docs/auth.md): basic users, bearer tokens, prefix scopes;
401/403 with JSON bodies; public routes; credentials through the client."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from troth.client import AsyncClient, authorization
from troth.engine import Engine
from troth.errors import TrothError
from troth.logs import AccessLog
from troth.server import create_app
from troth.server.auth import Authenticator, task_promise_id

FAR = 2**63 - 1
TOKENS = ("root-token", "tenant-token:tenant-a/")


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client(engine: Engine, auth: Authenticator, **kw: object) -> httpx.AsyncClient:
    app = create_app(engine, manage=False, auth=auth, **kw)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://troth")


@pytest.fixture
async def tok(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async with client(engine, Authenticator("token", tokens=TOKENS)) as c:
        yield c


@pytest.fixture
async def bas(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async with client(engine, Authenticator("basic", users=["alice:wonder:land"])) as c:
        yield c


def assert_error(resp: httpx.Response, status: int, *fragments: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert err["code"] == status * 100
    for fragment in fragments:
        assert fragment in err["message"]
    return err  # type: ignore[no-any-return]


async def test_token_required_everywhere_but_public_routes(tok: httpx.AsyncClient) -> None:
    for method, path in [
        ("POST", "/promises"), ("GET", "/promises/x"), ("PATCH", "/promises/x"),
        ("GET", "/promises"), ("GET", "/schedules"), ("POST", "/tasks/claim"),
        ("GET", "/ui/api/tasks"), ("GET", "/ui/api/overview"), ("GET", "/poll/g/w"),
    ]:  # fmt: skip
        resp = await tok.request(method, path, json={"id": "x", "timeout": FAR})
        err = assert_error(resp, 401, "Authorization: Bearer")
        assert err["details"] == [{"scheme": "Bearer"}]
        assert resp.headers["www-authenticate"] == 'Bearer realm="troth"'
    for path in ("/ping", "/healthz", "/readyz", "/openapi.json", "/metrics", "/ui"):
        assert (await tok.get(path)).status_code == 200, path
    assert (await tok.get("/ui/static/app.js")).status_code == 200


async def test_wrong_or_malformed_token(tok: httpx.AsyncClient) -> None:
    assert_error(await tok.get("/promises/x", headers=bearer("nope")), 401, "invalid bearer token")
    assert_error(await tok.get("/promises/x", headers=bearer("root-token2")), 401)
    assert_error(await tok.get("/promises/x", headers=bearer("root-toke")), 401)
    assert_error(await tok.get("/promises/x", headers=basic("root", "token")), 401)


async def test_valid_token_reaches_the_api_and_the_fast_path(tok: httpx.AsyncClient) -> None:
    h = bearer("root-token")
    resp = await tok.post("/promises", json={"id": "any/1", "timeout": FAR}, headers=h)
    assert resp.status_code == 201  # POST /promises is the raw-ASGI fast path
    resp = await tok.patch("/promises/any/1", json={"state": "RESOLVED"}, headers=h)
    assert resp.status_code == 201 and resp.json()["state"] == "RESOLVED"
    assert (await tok.get("/promises/any/1", headers=h)).json()["state"] == "RESOLVED"
    assert (await tok.get("/promises?id=*", headers=h)).status_code == 200


async def test_dashboard_requests_get_no_browser_challenge(tok: httpx.AsyncClient) -> None:
    resp = await tok.get("/ui/api/overview", headers={"X-Requested-With": "troth-ui"})
    assert_error(resp, 401)
    assert "www-authenticate" not in resp.headers


async def test_scoped_token_only_touches_its_prefix(tok: httpx.AsyncClient) -> None:
    h = bearer("tenant-token")
    ok = await tok.post("/promises", json={"id": "tenant-a/1", "timeout": FAR}, headers=h)
    assert ok.status_code == 201
    # body id outside the prefix (fast path)
    resp = await tok.post("/promises", json={"id": "tenant-b/1", "timeout": FAR}, headers=h)
    assert_error(resp, 403, "'tenant-a/'", "'tenant-b/1'")
    # path ids
    root = bearer("root-token")
    await tok.post("/promises", json={"id": "tenant-b/2", "timeout": FAR}, headers=root)
    assert_error(await tok.get("/promises/tenant-b/2", headers=h), 403)
    assert_error(
        await tok.patch("/promises/tenant-b/2", json={"state": "RESOLVED"}, headers=h), 403
    )
    assert (await tok.get("/promises/tenant-b/2", headers=root)).json()["state"] == "PENDING"
    assert (await tok.get("/promises/tenant-a/1", headers=h)).status_code == 200
    resp = await tok.patch("/promises/tenant-a/1", json={"state": "RESOLVED"}, headers=h)
    assert resp.status_code == 201
    # search must stay inside the prefix
    assert_error(await tok.get("/promises", headers=h), 403, "id=tenant-a/*")
    assert_error(await tok.get("/promises?id=*", headers=h), 403)
    found = await tok.get("/promises?id=tenant-a/*", headers=h)
    assert [p["id"] for p in found.json()["promises"]] == ["tenant-a/1"]
    # tasks, promise-and-task, callbacks, schedules, locks
    claim = {"id": "__invoke:tenant-b/1", "counter": 1, "processId": "p", "ttl": 1000}
    assert_error(await tok.post("/tasks/claim", json=claim, headers=h), 403, "'tenant-b/1'")
    assert_error(await tok.get("/tasks/claim/__invoke:tenant-b/1/1", headers=h), 403)
    # heartbeats name a process, not ids: allowed
    beat = await tok.post("/tasks/heartbeat", json={"processId": "worker-9"}, headers=h)
    assert beat.status_code == 200, beat.text
    assert (await tok.get("/tasks/heartbeat/worker-9/1", headers=h)).status_code == 200
    pt = {"promise": {"id": "tenant-b/9", "timeout": FAR}, "task": {"processId": "p", "ttl": 1}}
    assert_error(await tok.post("/promises/task", json=pt, headers=h), 403)
    cb = {"rootPromiseId": "tenant-b/2", "timeout": FAR}
    assert_error(await tok.post("/promises/callback/tenant-a/1", json=cb, headers=h), 403)
    sched = {"id": "tenant-a/s", "cron": "* * * * *", "promiseId": "tenant-b/{{.id}}",
             "promiseTimeout": 1000}  # fmt: skip
    assert_error(await tok.post("/schedules", json=sched, headers=h), 403, "tenant-b/")
    lock = {"resourceId": "tenant-b/r", "executionId": "e", "processId": "p", "ttl": 1000}
    assert_error(await tok.post("/locks/acquire", json=lock, headers=h), 403)
    # routes the check does not know, and metrics, are closed to scoped tokens
    assert_error(await tok.get("/nope", headers=h), 403, "may not use GET /nope")
    assert_error(await tok.post("/sdk/batch", json={}, headers=h), 403, "/sdk/batch")
    # dashboard helpers filter or refuse
    assert_error(await tok.get("/ui/api/tasks?root=tenant-b/1", headers=h), 403)
    assert_error(await tok.get("/ui/api/callbacks/tenant-b/2", headers=h), 403)
    overview = await tok.get("/ui/api/overview", headers=h)
    assert overview.json()["prefix"] == "tenant-a/"


async def test_scoped_bad_json_still_answers_400(tok: httpx.AsyncClient) -> None:
    resp = await tok.post("/promises", content=b"{not json", headers=bearer("tenant-token"))
    assert resp.status_code == 400


async def test_basic_auth(bas: httpx.AsyncClient) -> None:
    resp = await bas.get("/promises/x")
    err = assert_error(resp, 401, "Authorization: Basic")
    assert err["details"] == [{"scheme": "Basic"}]
    assert resp.headers["www-authenticate"] == 'Basic realm="troth"'
    assert_error(await bas.get("/promises/x", headers=basic("alice", "wonder")), 401, "invalid")
    assert_error(await bas.get("/promises/x", headers=basic("mallory", "wonder:land")), 401)
    bad = {"Authorization": "Basic !!!"}
    assert_error(await bas.get("/promises/x", headers=bad), 401, "malformed")
    assert_error(await bas.get("/promises/x", headers=bearer("wonder:land")), 401)
    good = basic("alice", "wonder:land")  # a password may contain ':'
    resp = await bas.post("/promises", json={"id": "b/1", "timeout": FAR}, headers=good)
    assert resp.status_code == 201


async def test_metrics_can_require_credentials(engine: Engine) -> None:
    auth = Authenticator("token", tokens=TOKENS)
    async with client(engine, auth, metrics_public=False) as c:
        assert_error(await c.get("/metrics"), 401)
        assert (await c.get("/metrics", headers=bearer("root-token"))).status_code == 200
        assert_error(await c.get("/metrics", headers=bearer("tenant-token")), 403)


async def test_credentials_are_never_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    auth = Authenticator("token", tokens=["sup3r-secret-token"])
    caplog.set_level(logging.DEBUG)
    out = io.StringIO()
    access = AccessLog("text", stream=out)
    async with client(engine, auth, access_log=access) as c:
        await c.get("/promises/x", headers=bearer("sup3r-secret-token"))
        await c.get("/promises/x", headers=bearer("wrong-secret-value"))
        await c.get("/promises/x?token=sup3r-secret-token", headers=bearer("sup3r-secret-token"))
    access.flush()
    text = out.getvalue()
    text += "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("troth"))
    assert "GET /promises/x 404" in text and "GET /promises/x 401" in text
    assert "sup3r-secret-token" not in text and "wrong-secret-value" not in text


def test_authenticator_refuses_unusable_setups() -> None:
    with pytest.raises(ValueError, match="at least one --auth-user"):
        Authenticator("basic")
    with pytest.raises(ValueError, match="at least one --auth-token"):
        Authenticator("token")
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        Authenticator("basic", users=["alice"])
    with pytest.raises(ValueError, match="empty"):
        Authenticator("token", tokens=[":tenant/"])
    with pytest.raises(ValueError, match="none, basic or token"):
        Authenticator("oauth")


def test_task_ids_map_to_their_promise() -> None:
    assert task_promise_id("__invoke:a/b") == "a/b"
    assert task_promise_id("__resume:root:leaf") == "root:leaf"
    assert task_promise_id("__notify:p:s") == "p:s"
    assert task_promise_id("plain") == "plain"


def test_client_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TROTH_TOKEN", raising=False)
    monkeypatch.delenv("TROTH_USER", raising=False)
    assert authorization("http://h:1", None, None) == ("http://h:1", None)
    assert authorization("http://h:1", "t", None) == ("http://h:1", "Bearer t")
    url, header = authorization("http://al%40ce:p%3Aw@h:1/x", None, None)
    assert url == "http://h:1/x"
    assert header == "Basic " + base64.b64encode(b"al@ce:p:w").decode()
    assert authorization("http://u:p@h:1", "t", None) == ("http://h:1", "Bearer t")
    monkeypatch.setenv("TROTH_USER", "bob:pw")
    assert (
        authorization("http://h", None, None)[1] == "Basic " + base64.b64encode(b"bob:pw").decode()
    )
    monkeypatch.setenv("TROTH_TOKEN", "envtok")
    assert authorization("http://h", None, None)[1] == "Bearer envtok"
    with pytest.raises(TrothError, match="NAME:PASSWORD"):
        authorization("http://h", None, "nocolon")


async def test_async_client_sends_credentials(engine: Engine) -> None:
    app = create_app(engine, manage=False, auth=Authenticator("basic", users=["ops:pw"]))
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://ops:pw@troth", transport=transport) as c:
        await c.create_promise("via/client", FAR)
        assert (await c.get_promise("via/client")).id == "via/client"
    async with AsyncClient("http://troth", transport=transport, user="ops:bad") as c:
        with pytest.raises(TrothError) as info:
            await c.get_promise("via/client")
        assert info.value.code == 40100


async def test_the_poll_port_asks_for_credentials_too(engine: Engine) -> None:
    from troth.server.app import create_poll_app

    app = create_app(engine, manage=False, auth=Authenticator("token", tokens=TOKENS))
    poll = create_poll_app(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=poll), base_url="http://troth"
    ) as c:
        assert_error(await c.get("/workers/w1"), 401, "Bearer")
