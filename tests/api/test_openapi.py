"""``GET /openapi.json``: a valid OpenAPI 3.1 document that matches the real server.

Three kinds of drift fail here: a route or method of ``create_app`` missing from the
document (or documented but not served); a response whose status the document does not
list for that operation; a response body that does not validate against the schema the
document gives for that status. Bodies are validated strictly: an object schema with
``properties`` accepts no other members here, so an undocumented new field also fails.
Bodies are checked with ``OAS31Validator`` (jsonschema with the OpenAPI 3.1 dialect), refs
resolved through a ``referencing`` registry holding the whole document.

The task framework routes are driven on an engine with a dispatcher and a fake delivery
(worker streams in memory, HTTP pushes recorded), as in ``test_tasks_api``; the messages the
dispatcher sends are validated against the document's ``StreamMessage`` too.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import importlib.metadata
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from troth.clock import FakeClock
from troth.engine import Engine
from troth.engine.dispatch import TaskSettings
from troth.model import Recv
from troth.server import create_app
from troth.server.openapi import openapi_document
from troth.server.stream import StreamConn, StreamRegistry
from troth.store.memory import MemoryStore

DOC_URI = "urn:troth:openapi"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _strict(node: Any) -> Any:
    """A copy in which object schemas with ``properties`` forbid undocumented members."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and isinstance(out["properties"], dict):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


class Doc:
    """The served document plus a validator for the responses it describes."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        strict = _strict(copy.deepcopy(doc))
        # One resource for the whole document, so every "#/components/..." ref resolves.
        self.registry: Registry[Any] = Registry().with_resource(
            DOC_URI, Resource.from_contents(strict, default_specification=DRAFT202012)
        )

    def check(self, resp: httpx.Response, path: str, method: str) -> Any:
        """Assert ``resp`` is documented for ``method path`` and its body matches; return it."""
        responses = self.doc["paths"][path][method]["responses"]
        status = str(resp.status_code)
        assert status in responses, (
            f"{method.upper()} {path} answered {status}, not documented "
            f"(documented: {sorted(responses)}): {resp.text}"
        )
        # Follow the response's $ref (components/responses/...), keeping its JSON pointer.
        pointer = f"/paths/{_escape(path)}/{method}/responses/{status}"
        node = responses[status]
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.doc
            for part in pointer.split("/")[1:]:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        if "content" not in node:  # documented without a body (204)
            assert resp.content == b"", (path, method, status, resp.content)
            return None
        content_type = resp.headers["content-type"].split(";")[0]
        assert content_type in node["content"], (path, method, status, content_type)
        if content_type != "application/json":
            return resp.text  # a stream: its events are checked with ``validate``
        body = resp.json()
        self.validate(
            body,
            f"#{pointer}/content/{_escape(content_type)}/schema",
            f"{method.upper()} {path} {status}",
        )
        return body

    def validate(self, value: Any, ref: str, what: str = "") -> None:
        """Assert ``value`` matches the schema at ``ref`` (a ``#/...`` pointer), strictly."""
        validator = OAS31Validator({"$ref": f"{DOC_URI}{ref}"}, registry=self.registry)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        assert not errors, "\n".join(
            f"{what or ref}: {e.message} at {list(e.path)}" for e in errors
        )


def _escape(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


@pytest.fixture
async def doc(http: httpx.AsyncClient) -> Doc:
    resp = await http.get("/openapi.json")
    assert resp.status_code == 200
    served = resp.json()
    d = Doc(served)
    d.check(resp, "/openapi.json", "get")
    return d


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_document_is_valid_openapi_31(doc: Doc) -> None:
    assert doc.doc["openapi"].startswith("3.1")
    validate(doc.doc)  # raises on an invalid document


def test_document_is_built_once_and_versioned() -> None:
    assert openapi_document() is openapi_document()
    try:
        expected = importlib.metadata.version("troth")
    except importlib.metadata.PackageNotFoundError:
        expected = "0.0.0"
    assert openapi_document()["info"]["version"] == expected


def test_every_route_is_documented_and_vice_versa(engine: Engine) -> None:
    app = create_app(engine, manage=False)
    served: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET
                served.add((path, method.lower()))
    documented = {
        (path, method)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in METHODS
    }
    assert served == documented


def test_operations_are_complete() -> None:
    doc = openapi_document()
    ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            ids.append(op["operationId"])
            assert op["summary"] and op["description"], (path, method)
            codes = set(op["responses"])
            assert "500" in codes, (path, method)
            for code in codes - {"200", "201", "204"}:
                # E<status> or a variant of it (E403Task), which must exist
                ref = op["responses"][code]["$ref"]
                assert re.fullmatch(rf"#/components/responses/E{code}[A-Z]?[a-z]*", ref), ref
                assert ref.rsplit("/", 1)[1] in doc["components"]["responses"]
    assert len(ids) == len(set(ids))
    params = doc["components"]["parameters"]
    assert "/" in params["PromiseId"]["description"]
    assert "/" in params["TaskPath"]["description"]
    for path in ("/promises", "/promises/{id}", "/promises/callback/{id}", "/callbacks"):
        item = doc["paths"][path]
        op = item.get("post") or item["patch"]
        assert {"$ref": "#/components/parameters/TaskId"} in op["parameters"], path
        assert {"$ref": "#/components/parameters/TaskCounter"} in op["parameters"], path
        assert "412" in op["responses"], path
    for word in ("INIT", "ENQUEUED", "CLAIMED", "COMPLETED", "TIMEDOUT", "counter", "lease"):
        assert word in doc["info"]["description"], word


def test_recv_schema_accepts_every_form() -> None:
    """``recv`` is a string, a poll object or an http object; the response form too."""
    d = Doc(openapi_document())
    for recv in (
        "poll://any@g",
        "default",
        {"type": "poll", "data": {"group": "g"}},
        {"type": "poll", "data": {"group": "g", "id": "w", "mode": "uni"}},
        {"type": "http", "data": {"url": "https://x.example/in", "headers": {"a": "b"}}},
    ):
        d.validate(recv, "#/components/schemas/Recv", str(recv))
    for bad in (7, {"type": "poll", "data": {}}, {"type": "ftp", "data": {"url": "x"}}):
        with pytest.raises(AssertionError):
            d.validate(bad, "#/components/schemas/Recv")
    with pytest.raises(AssertionError):
        d.validate("poll://any@g", "#/components/schemas/RecvObject")


async def test_responses_match_the_document(
    doc: Doc, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    now = clock.now()
    P, ITEM = "/promises", "/promises/{id}"

    for path in ("/ping", "/healthz", "/readyz"):
        doc.check(await http.get(path), path, "get")

    # create: 201 with every optional member, 200 deduplicated, 409 conflict
    body = {
        "id": "app/a:1",
        "timeout": now + 60_000,
        "param": {"headers": {"h": "v"}, "data": _b64("in")},
        "tags": {"env": "test"},
    }
    resp = await http.post(P, json=body, headers={"Idempotency-Key": "k1", "Request-Id": "r"})
    assert resp.status_code == 201
    created = doc.check(resp, P, "post")
    assert created["idempotencyKeyForCreate"] == "k1"
    resp = await http.post(P, json=body, headers={"Idempotency-Key": "k1", "Strict": "TRUE"})
    assert resp.status_code == 200
    doc.check(resp, P, "post")
    resp = await http.post(P, json=body, headers={"Idempotency-Key": "other"})
    assert resp.status_code == 409
    doc.check(resp, P, "post")

    # minimal promise: param/value are {} and optional members are omitted
    resp = await http.post(P, json={"id": "app/b", "timeout": now + 1000, "param": None})
    assert resp.status_code == 201
    minimal = doc.check(resp, P, "post")
    assert minimal["param"] == {} and "tags" not in minimal

    # 400s: bad body, bad Strict header
    resp = await http.post(P, json={"id": "x", "timeout": "soon"})
    assert resp.status_code == 400
    doc.check(resp, P, "post")
    resp = await http.post(P, json={"id": "x", "timeout": 1}, headers={"Strict": "maybe"})
    assert resp.status_code == 400
    doc.check(resp, P, "post")

    # get, get with wait, 404, bad wait
    resp = await http.get("/promises/app/a:1")
    assert resp.status_code == 200
    assert doc.check(resp, ITEM, "get") == created
    resp = await http.get("/promises/app/a:1", params={"wait": "0"})
    assert resp.status_code == 200
    doc.check(resp, ITEM, "get")
    resp = await http.get("/promises/nope")
    assert resp.status_code == 404
    doc.check(resp, ITEM, "get")
    resp = await http.get("/promises/app/a:1", params={"wait": "6m"})
    assert resp.status_code == 400
    doc.check(resp, ITEM, "get")

    # complete: 201, 200 deduplicated, 403 already completed, 404, 400 bad state
    done = {"state": "resolved", "value": {"data": _b64("out")}}
    resp = await http.patch("/promises/app/a:1", json=done, headers={"Idempotency-Key": "c1"})
    assert resp.status_code == 201
    completed = doc.check(resp, ITEM, "patch")
    assert completed["state"] == "RESOLVED" and "completedOn" in completed
    resp = await http.patch("/promises/app/a:1", json=done, headers={"Idempotency-Key": "c1"})
    assert resp.status_code == 200
    doc.check(resp, ITEM, "patch")
    resp = await http.patch("/promises/app/a:1", json={"state": "REJECTED"})
    assert resp.status_code == 403
    doc.check(resp, ITEM, "patch")
    resp = await http.patch("/promises/nope", json=done)
    assert resp.status_code == 404
    doc.check(resp, ITEM, "patch")
    resp = await http.patch("/promises/app/b", json={"state": "PENDING"})
    assert resp.status_code == 400
    doc.check(resp, ITEM, "patch")

    # a timed-out promise: completedOn == timeout, no completion key
    clock.advance(2000)
    resp = await http.get("/promises/app/b")
    timed_out = doc.check(resp, ITEM, "get")
    assert timed_out["state"] == "REJECTED_TIMEDOUT"
    resp = await http.patch("/promises/app/b", json=done, headers={"Strict": "1"})
    assert resp.status_code == 403
    doc.check(resp, ITEM, "patch")

    # search: paged (cursor string), last page (cursor null), filters, 400
    resp = await http.get(P, params={"id": "app/*", "limit": "1"})
    assert resp.status_code == 200
    page = doc.check(resp, P, "get")
    assert len(page["promises"]) == 1 and isinstance(page["cursor"], str)
    resp = await http.get(P, params={"cursor": page["cursor"]})
    last = doc.check(resp, P, "get")
    assert len(last["promises"]) == 1 and last["cursor"] is None
    resp = await http.get(P, params={"state": "Resolved", "tags[env]": "test"})
    found = doc.check(resp, P, "get")
    assert [p["id"] for p in found["promises"]] == ["app/a:1"]
    for bad in ({"state": "done"}, {"limit": "0"}, {"limit": "x"}, {"tags": "env"}):
        resp = await http.get(P, params=bad)
        assert resp.status_code == 400, bad
        doc.check(resp, P, "get")


async def test_oversized_body_is_documented(engine: Engine, doc: Doc) -> None:
    app = create_app(engine, max_body=64, manage=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://troth") as client:
        big = {"id": "big", "timeout": 1, "tags": {"k": "v" * 100}}
        resp = await client.post("/promises", json=big)
        assert resp.status_code == 413
        doc.check(resp, "/promises", "post")
        resp = await client.patch("/promises/big", json={"state": "RESOLVED", "tags": big})
        assert resp.status_code == 413
        doc.check(resp, "/promises/{id}", "patch")


async def test_drift_is_caught(http: httpx.AsyncClient, clock: FakeClock) -> None:
    """The checker itself: a tampered document must reject the real responses."""
    resp = await http.post("/promises", json={"id": "d", "timeout": clock.now() + 1000})
    assert resp.status_code == 201
    undocumented_field = copy.deepcopy(openapi_document())
    del undocumented_field["components"]["schemas"]["Promise"]["properties"]["createdOn"]
    wrong_type = copy.deepcopy(openapi_document())
    wrong_type["components"]["schemas"]["Promise"]["properties"]["timeout"]["type"] = "string"
    wrong_status = copy.deepcopy(openapi_document())
    del wrong_status["paths"]["/promises"]["post"]["responses"]["201"]
    for tampered in (undocumented_field, wrong_type, wrong_status):
        with pytest.raises(AssertionError):
            Doc(tampered).check(resp, "/promises", "post")
    resp = await http.get("/promises/missing")
    wrong_error = copy.deepcopy(openapi_document())
    wrong_error["components"]["schemas"]["Error"]["properties"]["error"]["required"].append("x")
    with pytest.raises(AssertionError):
        Doc(wrong_error).check(resp, "/promises/{id}", "get")


# -- the task framework --------------------------------------------------------------------

FAR = 2**63 - 1
MESSAGE = "#/components/schemas/StreamMessage"


class Delivery:
    """Worker streams as in the server; HTTP pushes recorded (as in ``test_tasks_api``)."""

    def __init__(self, streams: StreamRegistry) -> None:
        self.streams = streams
        self.pushed: list[dict[str, Any]] = []

    def stream_for(self, recv: Recv) -> StreamConn | None:
        return self.streams.stream_for(recv)

    async def push(self, recv: Recv, message: bytes) -> bool:
        self.pushed.append(json.loads(message))
        return True


class Tasks:
    """An app whose engine dispatches tasks, driven step by step with a fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.streams = StreamRegistry()
        self.delivery = Delivery(self.streams)
        self.engine = Engine(
            MemoryStore(),
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


@pytest.fixture
async def tasks(clock: FakeClock) -> AsyncIterator[Tasks]:
    t = Tasks(clock)
    await t.engine.open()
    transport = httpx.ASGITransport(app=t.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://troth") as http:
        t.http = http
        yield t
    await t.engine.stop()


def _messages(doc: Doc, conn: StreamConn) -> list[dict[str, Any]]:
    """The messages queued on a stream, each validated against the document."""
    out = []
    while not conn.queue.empty():
        raw = conn.queue.get_nowait()
        assert raw is not None
        message = json.loads(raw)
        doc.validate(message, MESSAGE, "stream message")
        out.append(message)
    return out


async def test_task_responses_match_the_document(doc: Doc, tasks: Tasks) -> None:
    t, http = tasks, tasks.http
    P, ITEM = "/promises", "/promises/{id}"
    CLAIM, COMPLETE, DROP, BEAT = (
        "/tasks/claim",
        "/tasks/complete",
        "/tasks/drop",
        "/tasks/heartbeat",
    )
    conn = t.streams.connect("g", "w1")

    # create with an invoke tag -> dispatch -> invoke message on the stream
    body = {"id": "job/1", "timeout": FAR, "tags": {"resonate:invoke": "poll://any@g/w1"}}
    resp = await http.post(P, json=body)
    assert resp.status_code == 201
    doc.check(resp, P, "post")
    await t.step()
    [msg] = _messages(doc, conn)
    task = msg["task"]
    assert (msg["type"], task["state"], task["counter"]) == ("invoke", "ENQUEUED", 1)
    id = task["id"]

    # claim: 201, 403 claimed (40306), 403 stale counter (40308), 404 (40403), 400
    claim = {"id": id, "counter": 1, "processId": "w1", "ttl": 30_000}
    resp = await http.post(CLAIM, json=claim)
    assert resp.status_code == 201, resp.text
    claimed = doc.check(resp, CLAIM, "post")
    assert claimed["promises"]["root"]["data"]["state"] == "PENDING"
    assert "leaf" not in claimed["promises"]
    for bad, code in (({**claim}, 40306), ({**claim, "counter": 9}, 40308)):
        resp = await http.post(CLAIM, json=bad)
        assert resp.status_code == 403
        assert doc.check(resp, CLAIM, "post")["error"]["code"] == code
    resp = await http.post(CLAIM, json={**claim, "id": "nope"})
    assert resp.status_code == 404
    assert doc.check(resp, CLAIM, "post")["error"]["code"] == 40403
    resp = await http.post(CLAIM, json={**claim, "ttl": "long"})
    assert resp.status_code == 400
    doc.check(resp, CLAIM, "post")

    # heartbeat; fenced writes: 412 wrong counter, 400 half a fence, 201 with the fence
    resp = await http.post(BEAT, json={"processId": "w1"})
    assert doc.check(resp, BEAT, "post") == {"tasksAffected": 1}
    resp = await http.post(BEAT, json={})
    assert resp.status_code == 400
    doc.check(resp, BEAT, "post")
    wrong = {"Task-Id": id, "Task-Counter": "2"}
    resp = await http.patch("/promises/job/1", json={"state": "RESOLVED"}, headers=wrong)
    assert resp.status_code == 412
    assert doc.check(resp, ITEM, "patch")["error"]["code"] == 41200
    resp = await http.post(P, json={"id": "job/1.c", "timeout": FAR}, headers=wrong)
    assert resp.status_code == 412
    doc.check(resp, P, "post")
    resp = await http.post(P, json={"id": "job/1.c", "timeout": FAR}, headers={"Task-Id": id})
    assert resp.status_code == 400
    doc.check(resp, P, "post")
    fence = {"Task-Id": id, "Task-Counter": "1"}
    resp = await http.post(P, json={"id": "job/1.c", "timeout": FAR}, headers=fence)
    assert resp.status_code == 201
    doc.check(resp, P, "post")

    # callback on the child, fenced: 201, 200 (exists), 412, 404, 400 (bad recv)
    CB = "/promises/callback/{id}"
    cb_body = {"rootPromiseId": "job/1", "timeout": FAR, "recv": "poll://any@g"}
    resp = await http.post("/promises/callback/job/1.c", json=cb_body, headers=fence)
    assert resp.status_code == 201, resp.text
    registered = doc.check(resp, CB, "post")
    assert registered["callback"]["id"] == "__resume:job/1:job/1.c"
    resp = await http.post("/promises/callback/job/1.c", json=cb_body)
    assert resp.status_code == 200
    assert doc.check(resp, CB, "post")["callback"] is None
    resp = await http.post("/promises/callback/job/1.c", json=cb_body, headers=wrong)
    assert resp.status_code == 412
    doc.check(resp, CB, "post")
    resp = await http.post("/promises/callback/none", json=cb_body)
    assert resp.status_code == 404
    doc.check(resp, CB, "post")
    resp = await http.post("/promises/callback/job/1.c", json={**cb_body, "recv": "ftp://x"})
    assert resp.status_code == 400
    doc.check(resp, CB, "post")

    # complete the invoke task (201), then the child resolves -> resume with a leaf
    resp = await http.post(COMPLETE, json={"id": id, "counter": 1})
    assert resp.status_code == 201
    done = doc.check(resp, COMPLETE, "post")
    assert done["state"] == "COMPLETED" and "completedOn" in done
    resp = await http.post(COMPLETE, json={"id": id, "counter": 1})
    assert resp.status_code == 200
    doc.check(resp, COMPLETE, "post")
    resp = await http.post(COMPLETE, json={"id": "nope", "counter": 1})
    assert resp.status_code == 404
    doc.check(resp, COMPLETE, "post")
    resp = await http.patch("/promises/job/1.c", json={"state": "RESOLVED"})
    assert resp.status_code == 201
    await t.step()
    [msg] = _messages(doc, conn)
    assert msg["type"] == "resume" and msg["task"]["leafPromiseId"] == "job/1.c"
    resume = msg["task"]["id"]

    # complete 403 (40309 not claimed), GET claim 201 with leaf, GET forms
    resp = await http.post(COMPLETE, json={"id": resume, "counter": 1})
    assert resp.status_code == 403
    assert doc.check(resp, COMPLETE, "post")["error"]["code"] == 40309
    GCLAIM, GCOMPLETE = "/tasks/claim/{rest}", "/tasks/complete/{rest}"
    GDROP, GBEAT = "/tasks/drop/{rest}", "/tasks/heartbeat/{rest}"
    resp = await http.get(f"/tasks/claim/{resume}/1")
    assert resp.status_code == 201, resp.text
    assert doc.check(resp, GCLAIM, "get")["promises"]["leaf"]["id"] == "job/1.c"
    resp = await http.get(f"/tasks/claim/{resume}/1")
    assert resp.status_code == 403
    doc.check(resp, GCLAIM, "get")
    resp = await http.get("/tasks/claim/nope/1")
    assert resp.status_code == 404
    doc.check(resp, GCLAIM, "get")
    resp = await http.get("/tasks/claim/no-counter")
    assert resp.status_code == 400
    doc.check(resp, GCLAIM, "get")
    resp = await http.get(f"/tasks/heartbeat/{resume}/1")
    assert doc.check(resp, GBEAT, "get") == {"tasksAffected": 1}
    resp = await http.get("/tasks/heartbeat/x")
    assert resp.status_code == 400
    doc.check(resp, GBEAT, "get")

    # drop: 403 stale counter, 201 (INIT, counter + 1), 200 (not claimed), 404; POST and GET
    resp = await http.get(f"/tasks/drop/{resume}/7")
    assert resp.status_code == 403
    assert doc.check(resp, GDROP, "get")["error"]["code"] == 40308
    resp = await http.get(f"/tasks/drop/{resume}/1")
    assert resp.status_code == 201
    dropped = doc.check(resp, GDROP, "get")
    assert (dropped["state"], dropped["counter"]) == ("INIT", 2)
    resp = await http.post(DROP, json={"id": resume, "counter": 2})
    assert resp.status_code == 200
    doc.check(resp, DROP, "post")
    resp = await http.post(DROP, json={"id": "nope", "counter": 1})
    assert resp.status_code == 404
    doc.check(resp, DROP, "post")
    resp = await http.get("/tasks/drop/nope/1")
    assert resp.status_code == 404
    doc.check(resp, GDROP, "get")
    await t.step()
    [msg] = _messages(doc, conn)
    assert msg["task"]["counter"] == 2
    claim2 = {"id": resume, "counter": 2, "processId": "w1", "ttl": 1000}
    resp = await http.post(CLAIM, json=claim2)
    assert resp.status_code == 201
    resp = await http.post(DROP, json={"id": resume, "counter": 1})
    assert resp.status_code == 403
    doc.check(resp, DROP, "post")
    resp = await http.post(DROP, json={"id": resume, "counter": 2})
    assert resp.status_code == 201
    doc.check(resp, DROP, "post")
    await t.step()
    _messages(doc, conn)
    resp = await http.get(f"/tasks/claim/{resume}/3")
    assert resp.status_code == 201
    resp = await http.get(f"/tasks/complete/{resume}/3")
    assert resp.status_code == 201
    doc.check(resp, GCOMPLETE, "get")
    resp = await http.get(f"/tasks/complete/{resume}/3")
    assert resp.status_code == 200
    doc.check(resp, GCOMPLETE, "get")
    resp = await http.get(f"/tasks/complete/{resume}/1")  # completed: 200 whatever the counter
    assert resp.status_code == 200
    resp = await http.get("/tasks/complete/nope/1")
    assert resp.status_code == 404
    doc.check(resp, GCOMPLETE, "get")
    resp = await http.post(COMPLETE, json={"id": "x"})
    assert resp.status_code == 400
    doc.check(resp, COMPLETE, "post")

    # 403 40307: claiming a completed task
    resp = await http.post(CLAIM, json={**claim2, "counter": 3})
    assert resp.status_code == 403
    assert doc.check(resp, CLAIM, "post")["error"]["code"] == 40307


async def test_callback_routes_match_the_document(doc: Doc, tasks: Tasks) -> None:
    t, http = tasks, tasks.http
    SUB = "/promises/subscribe/{id}"
    await http.post("/promises", json={"id": "watched", "timeout": FAR})

    # subscribe: 201 (http recv object with headers), 200 exists, 404, 400
    recv = {"type": "http", "data": {"url": "http://hooks.example/in", "headers": {"a": "b"}}}
    sub = {"id": "s1", "timeout": FAR, "recv": recv}
    resp = await http.post("/promises/subscribe/watched", json=sub)
    assert resp.status_code == 201, resp.text
    assert doc.check(resp, SUB, "post")["callback"]["recv"] == recv
    resp = await http.post("/promises/subscribe/watched", json=sub)
    assert resp.status_code == 200
    doc.check(resp, SUB, "post")
    resp = await http.post("/promises/subscribe/none", json=sub)
    assert resp.status_code == 404
    doc.check(resp, SUB, "post")
    resp = await http.post("/promises/subscribe/watched", json={**sub, "recv": 7})
    assert resp.status_code == 400
    doc.check(resp, SUB, "post")

    # legacy aliases, with the uni poll object form and the default receiver
    legacy = {
        "promiseId": "watched",
        "rootPromiseId": "root",
        "timeout": FAR,
        "recv": {"type": "poll", "data": {"group": "g", "id": "w", "mode": "uni"}},
    }
    resp = await http.post("/callbacks", json=legacy)
    assert resp.status_code == 201, resp.text
    cb = doc.check(resp, "/callbacks", "post")["callback"]
    assert cb["rootPromiseId"] == "root" and cb["recv"]["data"]["mode"] == "uni"
    resp = await http.post("/callbacks", json=legacy)
    assert resp.status_code == 200
    doc.check(resp, "/callbacks", "post")
    resp = await http.post("/callbacks", json={**legacy, "promiseId": "none"})
    assert resp.status_code == 404
    doc.check(resp, "/callbacks", "post")
    fenced = {"Task-Id": "__invoke:nope", "Task-Counter": "1"}
    resp = await http.post("/callbacks", json=legacy, headers=fenced)
    assert resp.status_code == 412
    doc.check(resp, "/callbacks", "post")
    resp = await http.post("/callbacks", json={"promiseId": "watched"})
    assert resp.status_code == 400
    doc.check(resp, "/callbacks", "post")
    legacy_sub = {"id": "s2", "promiseId": "watched", "timeout": FAR}  # recv: default
    resp = await http.post("/subscriptions", json=legacy_sub)
    assert resp.status_code == 201
    sub_cb = doc.check(resp, "/subscriptions", "post")["callback"]
    assert sub_cb["recv"] == {"type": "poll", "data": {"group": "default"}}
    assert "rootPromiseId" not in sub_cb
    resp = await http.post("/subscriptions", json=legacy_sub)
    assert resp.status_code == 200
    doc.check(resp, "/subscriptions", "post")
    resp = await http.post("/subscriptions", json={**legacy_sub, "promiseId": "none"})
    assert resp.status_code == 404
    doc.check(resp, "/subscriptions", "post")

    # completion: the notify push is a documented message; on a completed promise -> 200
    await http.patch("/promises/watched", json={"state": "RESOLVED"})
    await t.step()
    assert [m["type"] for m in t.delivery.pushed] == ["notify"]
    for message in t.delivery.pushed:
        doc.validate(message, MESSAGE, "pushed message")
    resp = await http.post("/promises/subscribe/watched", json={**sub, "id": "late"})
    assert resp.status_code == 200
    assert doc.check(resp, SUB, "post")["callback"] is None


async def test_promise_and_task_and_locks_match_the_document(doc: Doc, tasks: Tasks) -> None:
    http = tasks.http
    PT = "/promises/task"
    body = {
        "promise": {"id": "pt", "timeout": FAR, "param": {"data": _b64("x")}, "tags": {"a": "b"}},
        "task": {"processId": "me", "ttl": 10_000},
    }
    resp = await http.post(PT, json=body, headers={"Idempotency-Key": "k"})
    assert resp.status_code == 201, resp.text
    created = doc.check(resp, PT, "post")
    assert created["task"]["state"] == "CLAIMED" and created["task"]["processId"] == "me"
    resp = await http.post(PT, json=body, headers={"Idempotency-Key": "k"})
    assert resp.status_code == 200
    assert doc.check(resp, PT, "post")["task"] is None
    resp = await http.post(PT, json=body)
    assert resp.status_code == 409
    doc.check(resp, PT, "post")
    resp = await http.post(PT, json={"promise": body["promise"]})
    assert resp.status_code == 400
    doc.check(resp, PT, "post")

    ACQ, REL, LBEAT = "/locks/acquire", "/locks/release", "/locks/heartbeat"
    a = {"resourceId": "r", "executionId": "e1", "processId": "p1", "ttl": 1000}
    resp = await http.post(ACQ, json=a)
    assert resp.status_code == 201
    assert doc.check(resp, ACQ, "post")["executionId"] == "e1"
    resp = await http.post(ACQ, json={**a, "executionId": "e2"})
    assert resp.status_code == 403
    assert doc.check(resp, ACQ, "post")["error"]["code"] == 40305
    resp = await http.post(ACQ, json={**a, "ttl": -1})
    assert resp.status_code == 400
    doc.check(resp, ACQ, "post")
    resp = await http.post(LBEAT, json={"processId": "p1"})
    assert doc.check(resp, LBEAT, "post") == {"locksAffected": 1}
    resp = await http.post(LBEAT, json={"processId": 1})
    assert resp.status_code == 400
    doc.check(resp, LBEAT, "post")
    release = {"resourceId": "r", "executionId": "e1"}
    resp = await http.post(REL, json=release)
    assert resp.status_code == 204
    assert doc.check(resp, REL, "post") is None
    resp = await http.post(REL, json=release)
    assert resp.status_code == 404
    assert doc.check(resp, REL, "post")["error"]["code"] == 40402
    resp = await http.post(REL, json={"resourceId": "r"})
    assert resp.status_code == 400
    doc.check(resp, REL, "post")


async def test_worker_stream_is_documented(doc: Doc, tasks: Tasks) -> None:
    t, http = tasks, tasks.http
    POLL = "/poll/{group}/{id}"
    assert "text/event-stream" in doc.doc["paths"][POLL]["get"]["responses"]["200"]["content"]

    async def connect() -> httpx.Response:
        return await http.get("/poll/g/a/b")  # the worker id may contain "/"

    # ASGITransport buffers the whole body: close the stream once it is connected.
    pending = asyncio.create_task(connect())
    for _ in range(1000):
        if len(t.streams):
            break
        await asyncio.sleep(0.001)
    conn = t.streams.stream_for(Recv(type="poll", group="g", id="a/b", mode="uni"))
    assert conn is not None
    conn.send(b'{"type":"notify"}')
    t.streams.close_all()
    resp = await asyncio.wait_for(pending, 5)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    text = doc.check(resp, POLL, "get")
    assert text.startswith(": connected") and 'data: {"type":"notify"}' in text

    resp = await http.get("/poll/g/")
    assert resp.status_code == 400
    doc.check(resp, POLL, "get")


async def test_task_drift_is_caught(tasks: Tasks) -> None:
    """Tampered task-framework schemas must reject the real responses."""
    http = tasks.http
    body = {"promise": {"id": "d", "timeout": FAR}, "task": {"processId": "p", "ttl": 1000}}
    headers = {"Idempotency-Key": "k"}
    created = await http.post("/promises/task", json=body, headers=headers)
    assert created.status_code == 201
    deduplicated = await http.post("/promises/task", json=body, headers=headers)
    assert deduplicated.status_code == 200
    no_counter = copy.deepcopy(openapi_document())
    del no_counter["components"]["schemas"]["Task"]["properties"]["counter"]
    with pytest.raises(AssertionError):
        Doc(no_counter).check(created, "/promises/task", "post")
    never_null = copy.deepcopy(openapi_document())
    never_null["components"]["schemas"]["PromiseAndTask"]["properties"]["task"] = {
        "$ref": "#/components/schemas/Task"
    }
    Doc(never_null).check(created, "/promises/task", "post")
    with pytest.raises(AssertionError):
        Doc(never_null).check(deduplicated, "/promises/task", "post")
    resp = await http.post("/locks/release", json={"resourceId": "r", "executionId": "e"})
    assert resp.status_code == 404
    wrong_status = copy.deepcopy(openapi_document())
    del wrong_status["paths"]["/locks/release"]["post"]["responses"]["404"]
    with pytest.raises(AssertionError):
        Doc(wrong_status).check(resp, "/locks/release", "post")


# -- schedules -----------------------------------------------------------------------------


async def test_schedule_routes_match_the_document(
    doc: Doc, http: httpx.AsyncClient, engine: Engine, clock: FakeClock
) -> None:
    S, ITEM = "/schedules", "/schedules/{id}"
    minute = 60_000
    full = {
        "id": "sched/a",
        "description": "every minute",
        "cron": "* * * * *",
        "tags": {"team": "x"},
        "promiseId": "{{.id}}/{{.timestamp}}",
        "promiseTimeout": minute,
        "promiseParam": {"headers": {"h": "v"}, "data": _b64("in")},
        "promiseTags": {"kind": "tick"},
    }

    # create: 201 with every optional member, 200 same key, 409 (40901) otherwise
    resp = await http.post(S, json=full, headers={"Idempotency-Key": "k"})
    assert resp.status_code == 201, resp.text
    created = doc.check(resp, S, "post")
    assert created["idempotencyKey"] == "k" and "lastRunTime" not in created
    resp = await http.post(S, json=full, headers={"Idempotency-Key": "k"})
    assert resp.status_code == 200
    assert doc.check(resp, S, "post") == created
    resp = await http.post(S, json=full, headers={"Idempotency-Key": "other"})
    assert resp.status_code == 409
    assert doc.check(resp, S, "post")["error"]["code"] == 40901

    # minimal: promiseParam is {} and every empty member is omitted
    minimal = {"id": "sched/b", "cron": "@hourly", "promiseId": "b", "promiseTimeout": 1}
    resp = await http.post(S, json=minimal)
    assert resp.status_code == 201
    m = doc.check(resp, S, "post")
    assert m["promiseParam"] == {} and m["cron"] == "@hourly"
    assert not {"description", "tags", "promiseTags", "idempotencyKey"} & set(m)

    # 400: bad cron (naming $.cron), bad body, bad invoke receiver
    for cron in ("61 * * * *", "* * *", "@fortnightly"):
        resp = await http.post(S, json={**minimal, "id": "bad", "cron": cron})
        assert resp.status_code == 400
        assert "$.cron" in doc.check(resp, S, "post")["error"]["message"]
    resp = await http.post(S, json={**minimal, "promiseTimeout": "soon"})
    assert resp.status_code == 400
    doc.check(resp, S, "post")
    resp = await http.post(S, json={**minimal, "promiseTags": {"resonate:invoke": "nowhere"}})
    assert resp.status_code == 400
    doc.check(resp, S, "post")

    # fire two runs: the schedule gains lastRunTime; the run's promise is a documented one
    clock.advance(2 * minute)
    assert await engine.fire_schedules() == 2
    resp = await http.get("/schedules/sched/a")
    assert resp.status_code == 200
    fired = doc.check(resp, ITEM, "get")
    assert fired["lastRunTime"] == created["nextRunTime"] + minute
    run = await http.get(f"/promises/sched/a/{created['nextRunTime']}")
    promise = doc.check(run, "/promises/{id}", "get")
    assert promise["tags"] == {
        "kind": "tick",
        "resonate:schedule": "sched/a",
        "resonate:invocation": "true",
    }
    resp = await http.get("/schedules/none")
    assert resp.status_code == 404
    assert doc.check(resp, ITEM, "get")["error"]["code"] == 40401

    # search: paged (cursor string), last page (cursor null), tags, 400s
    resp = await http.get(S, params={"id": "sched/*", "limit": "1"})
    assert resp.status_code == 200
    page = doc.check(resp, S, "get")
    assert [s["id"] for s in page["schedules"]] == ["sched/b"]
    assert isinstance(page["cursor"], str)
    resp = await http.get(S, params={"cursor": page["cursor"]})
    last = doc.check(resp, S, "get")
    assert [s["id"] for s in last["schedules"]] == ["sched/a"] and last["cursor"] is None
    resp = await http.get(S, params={"tags[team]": "x"})
    assert [s["id"] for s in doc.check(resp, S, "get")["schedules"]] == ["sched/a"]
    promise_cursor = (await http.get("/promises", params={"limit": "1"})).json()["cursor"]
    assert isinstance(promise_cursor, str)
    for bad in ({"limit": "0"}, {"limit": "x"}, {"cursor": promise_cursor}):
        resp = await http.get(S, params=bad)
        assert resp.status_code == 400, bad
        doc.check(resp, S, "get")

    # delete: 204 without a body, then 404
    resp = await http.delete("/schedules/sched/a")
    assert resp.status_code == 204
    assert doc.check(resp, ITEM, "delete") is None
    resp = await http.delete("/schedules/sched/a")
    assert resp.status_code == 404
    assert doc.check(resp, ITEM, "delete")["error"]["code"] == 40401


def test_schedule_firing_is_described() -> None:
    doc = openapi_document()
    post = doc["paths"]["/schedules"]["post"]
    text = post["description"]
    for phrase in (
        "exactly once",
        "one at a time",
        "already exists",
        "resonate:schedule",
        "resonate:invocation",
        "resonate:invoke",
        "{{.id}}",
        "{{.timestamp}}",
        "{{.date}}",
        "$.cron",
    ):
        assert phrase in text, phrase
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in post["parameters"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateScheduleBody"
    }
    props = doc["components"]["schemas"]["CreateScheduleBody"]["properties"]
    assert "6th" in props["cron"]["description"] and "@hourly" in props["cron"]["description"]
    assert "{{.date}}" in props["promiseId"]["description"]
    assert "/" in doc["components"]["parameters"]["ScheduleId"]["description"]


async def test_schedule_drift_is_caught(http: httpx.AsyncClient) -> None:
    """Tampered schedule schemas must reject the real responses."""
    body = {"id": "d", "cron": "* * * * *", "promiseId": "d", "promiseTimeout": 1}
    created = await http.post("/schedules", json=body)
    assert created.status_code == 201
    no_param = copy.deepcopy(openapi_document())
    del no_param["components"]["schemas"]["Schedule"]["properties"]["promiseParam"]
    never_null = copy.deepcopy(openapi_document())
    never_null["components"]["schemas"]["SchedulePage"]["properties"]["cursor"] = {"type": "string"}
    Doc(no_param).validate({"schedules": [], "cursor": None}, "#/components/schemas/SchedulePage")
    with pytest.raises(AssertionError):
        Doc(no_param).check(created, "/schedules", "post")
    page = await http.get("/schedules")
    Doc(never_null).check(created, "/schedules", "post")
    with pytest.raises(AssertionError):
        Doc(never_null).check(page, "/schedules", "get")
    missing = await http.delete("/schedules/none")
    assert missing.status_code == 404
    wrong_status = copy.deepcopy(openapi_document())
    del wrong_status["paths"]["/schedules/{id}"]["delete"]["responses"]["404"]
    with pytest.raises(AssertionError):
        Doc(wrong_status).check(missing, "/schedules/{id}", "delete")
