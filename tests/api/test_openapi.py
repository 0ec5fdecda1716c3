"""``GET /openapi.json``: a valid OpenAPI 3.1 document that matches the real server.

Three kinds of drift fail here: a route or method of ``create_app`` missing from the
document (or documented but not served); a response whose status the document does not
list for that operation; a response body that does not validate against the schema the
document gives for that status. Bodies are validated strictly: an object schema with
``properties`` accepts no other members here, so an undocumented new field also fails.
Bodies are checked with ``OAS31Validator`` (jsonschema with the OpenAPI 3.1 dialect), refs
resolved through a ``referencing`` registry holding the whole document.
"""

from __future__ import annotations

import base64
import copy
import importlib.metadata
import re
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
from troth.server import create_app
from troth.server.openapi import openapi_document

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
        content_type = resp.headers["content-type"].split(";")[0]
        assert content_type in node["content"], (path, method, status, content_type)
        schema_ref = f"{DOC_URI}#{pointer}/content/{_escape(content_type)}/schema"
        validator = OAS31Validator({"$ref": schema_ref}, registry=self.registry)
        body = resp.json()
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        assert not errors, "\n".join(
            f"{method.upper()} {path} {status}: {e.message} at {list(e.path)}" for e in errors
        )
        return body


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
            for code in codes - {"200", "201"}:
                assert op["responses"][code] == {"$ref": f"#/components/responses/E{code}"}
    assert len(ids) == len(set(ids))
    assert "/" in doc["components"]["parameters"]["PromiseId"]["description"]


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
