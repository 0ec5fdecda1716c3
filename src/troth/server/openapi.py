"""OpenAPI 3.1 document of the HTTP API (API.md sections 0 and 1), served at ``/openapi.json``.

Body schemas are derived from the msgspec structs the server really encodes and decodes
(``Promise``, ``Value``, ``SearchPage``, ``CreatePromise``, ``CompletePromise``), so a field
added to a struct shows up here without editing this file. What msgspec cannot say is
patched in ``_components``: a promise in a response never carries ``null`` members (empty
ones are omitted) while ``param`` and ``value`` are always present, and the case-insensitive
enums of the wire are written as patterns.

The document is built once (``functools.cache``); callers must not mutate it.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
from typing import Any, Final

import msgspec

from troth.model import Promise, SearchPage, Value
from troth.server.wire import CompletePromise, CreatePromise

JSON: Final = "application/json"
_REF: Final = "#/components/schemas/{name}"

_PROMISE_FIELDS: Final = {
    "id": "Any characters, including `/`, `.` and `:` (hierarchical names are the norm); "
    "at most 1,024 bytes by default.",
    "state": "Current state. A client never observes `PENDING` at or after `timeout`.",
    "param": "Value given at creation (`{}` when none).",
    "value": "Value given at completion (`{}` while pending and after a timeout).",
    "timeout": "Absolute deadline, Unix epoch milliseconds.",
    "idempotencyKeyForCreate": "Idempotency key of the create; omitted when none.",
    "idempotencyKeyForComplete": "Idempotency key of the completion; omitted when none "
    "(and always after a timeout).",
    "tags": 'String tags; omitted when empty. `resonate:timeout = "true"` marks a timer, '
    "which resolves (rather than rejects) at its deadline.",
    "createdOn": "Server clock at creation, Unix epoch milliseconds.",
    "completedOn": "Server clock at completion, Unix epoch milliseconds; omitted while "
    "pending; equals `timeout` when the promise timed out.",
}


def _version() -> str:
    try:
        return importlib.metadata.version("troth")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _any_case(*words: str) -> str:
    """An ECMA-262 pattern matching exactly one of ``words``, in any letter case."""

    def one(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.upper() != c.lower() else c for c in word)

    return "^(?:" + "|".join(one(w) for w in words) + ")$"


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` with ``default: null`` -> ``X`` (for members omitted when empty)."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    rest = [s for s in options if s != {"type": "null"}]
    out = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    if len(rest) == 1:
        out.update(rest[0])
    else:
        out["anyOf"] = rest
    return out


def _components() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(
        [Promise, Value, SearchPage, CreatePromise, CompletePromise], ref_template=_REF
    )
    schemas = copy.deepcopy(schemas)

    state = schemas["State"]
    state["type"] = "string"
    state["description"] = (
        "`REJECTED_CANCELED` is a cancellation, `REJECTED_TIMEDOUT` a promise that reached "
        "its deadline while pending (a timer resolves instead)."
    )

    promise = schemas["Promise"]
    props = promise["properties"]
    for name, prop in list(props.items()):
        props[name] = _not_null(prop)
        if name in _PROMISE_FIELDS:
            props[name]["description"] = _PROMISE_FIELDS[name]
    for name in ("param", "value"):  # always encoded, as {} when empty
        if name not in promise["required"]:
            promise["required"].append(name)
    for name in ("timeout", "createdOn", "completedOn"):
        props[name]["minimum"] = 0
    promise["description"] = "A durable promise (API.md 1.1). Empty members are omitted."

    value = schemas["Value"]
    value["description"] = (
        "A param or value: opaque bytes (`data`, base64) plus string `headers`. Both are "
        "optional and `null` means absent; responses omit empty members, so an empty value "
        "is `{}`. Bad base64 is answered 400."
    )

    page = schemas["SearchPage"]
    page["description"] = "One page of a search, newest first."
    page["properties"]["cursor"]["description"] = (
        "Opaque cursor for the next page (pass it as `cursor`); `null` on the last page."
    )

    create = schemas["CreatePromise"]
    create["description"] = "Body of `POST /promises`. Unknown fields are ignored."
    create["properties"]["id"]["description"] = _PROMISE_FIELDS["id"]
    create["properties"]["timeout"]["description"] = (
        "Absolute deadline, Unix epoch milliseconds; 2^63-1 is commonly used for 'never'. "
        "A deadline already in the past stores the promise directly in its timed-out state."
    )
    create["properties"]["param"]["description"] = "Value of the promise's input; null = none."
    create["properties"]["tags"]["description"] = (
        "String tags (at most 64 pairs by default); null = none."
    )

    complete = schemas["CompletePromise"]
    complete["description"] = "Body of `PATCH /promises/{id}`. Unknown fields are ignored."
    complete["properties"]["state"].update(
        {
            "description": "Target state, read case-insensitively: `RESOLVED`, `REJECTED` or "
            "`REJECTED_CANCELED` (`PENDING` and `REJECTED_TIMEDOUT` are answered 400).",
            "pattern": _any_case("RESOLVED", "REJECTED", "REJECTED_CANCELED"),
            "examples": ["RESOLVED"],
        }
    )
    complete["properties"]["value"]["description"] = "Value of the completion; null = none."

    schemas["Error"] = {
        "title": "Error",
        "description": "Body of every non-2xx response (API.md 0).",
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {
                        "type": "integer",
                        "minimum": 10000,
                        "maximum": 59999,
                        "description": "Five digits; the first three are the HTTP status "
                        "(40000 validation, 40301..40304 promise already resolved / rejected "
                        "/ canceled / timed out, 40400 promise not found, 40900 promise "
                        "exists, 41300 body too large, 50000 internal, 50300 storage "
                        "unavailable).",
                    },
                    "message": {
                        "type": "string",
                        "description": "What went wrong and what to do; validation errors "
                        "name the field (e.g. ``Expected `int`, got `str` - at "
                        "`$.timeout` ``).",
                    },
                    "details": {"type": "array", "items": {}},
                },
                "required": ["code", "message", "details"],
            }
        },
        "required": ["error"],
    }
    schemas["Status"] = {
        "title": "Status",
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ok", "ready"]}},
        "required": ["status"],
    }
    return {k: schemas[k] for k in sorted(schemas)}


_ERROR_TEXT: Final = {
    400: "Invalid request (code 40000); the message names the field.",
    403: "The promise is already completed in another way (40301..40304 by its state), "
    "or it timed out and the completion was strict (40300).",
    404: "No promise with this id (40400).",
    409: "A promise with this id exists and the request does not deduplicate against it (40900).",
    413: "The request body is larger than the server accepts (41300; 10 MiB by default).",
    500: "Internal error (50000); the request may not have been applied.",
    503: "Storage is unavailable (50300); the request was not applied. Retry later.",
}


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _json_content(schema_name: str) -> dict[str, Any]:
    return {JSON: {"schema": {"$ref": _REF.format(name=schema_name)}}}


def _operation(
    op_id: str,
    summary: str,
    description: str,
    ok: dict[int, str],
    errors: tuple[int, ...],
    *,
    schema: str = "Promise",
    params: tuple[str, ...] = (),
    body: str | None = None,
    tag: str = "promises",
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(status): {"description": text, "content": _json_content(schema)}
        for status, text in ok.items()
    }
    for status in errors:
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "description": description,
        "tags": [tag],
        "parameters": [_param(p) for p in (*params, "RequestId")],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json_content(body)}
    return op


_IDEMPOTENCY: Final = (
    "Idempotency keys match only when both the stored and the given `Idempotency-Key` are "
    "present and equal (two absent keys never match)."
)


def _paths() -> dict[str, Any]:
    return {
        "/ping": {
            "get": _operation(
                "ping",
                "Liveness probe",
                'Answers `{"status": "ok"}`; never authenticated.',
                {200: "The server is up."},
                (500,),
                schema="Status",
                tag="ops",
            )
        },
        "/healthz": {
            "get": _operation(
                "healthz",
                "Process health",
                "Answers 200 while the process is alive.",
                {200: "Alive."},
                (500,),
                schema="Status",
                tag="ops",
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "Readiness probe",
                'Answers 200 `{"status": "ready"}` when storage is reachable, else 503.',
                {200: "Storage is reachable."},
                (500, 503),
                schema="Status",
                tag="ops",
            )
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "description": "The OpenAPI 3.1 description of every route of the server.",
                "tags": ["ops"],
                "parameters": [_param("RequestId")],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    },
                    "500": {"$ref": "#/components/responses/E500"},
                },
            }
        },
        "/promises": {
            "post": _operation(
                "createPromise",
                "Create a promise",
                "Creates a `PENDING` promise → **201**. If the id exists (timed out first "
                "if it is due), the request is deduplicated → **200** with the stored "
                "promise, in whatever state it now is, when the idempotency keys match "
                "and, under `Strict: true`, the stored promise is still pending; anything "
                f"else → **409**. {_IDEMPOTENCY} Only the key is "
                "compared: param, timeout and tags of a replay are not.",
                {201: "Created.", 200: "Deduplicated: the stored promise."},
                (400, 409, 413, 500, 503),
                params=("IdempotencyKey", "Strict"),
                body="CreatePromise",
            ),
            "get": _operation(
                "searchPromises",
                "Search promises",
                "Promises matching every given filter, newest first. Expired pending "
                "promises are timed out before they are returned. A `cursor` carries the "
                "whole query: when it is given the other filters are ignored.",
                {200: "One page of results."},
                (400, 500, 503),
                schema="SearchPage",
                params=("SearchId", "SearchState", "SearchTags", "SearchLimit", "Cursor"),
            ),
        },
        "/promises/{id}": {
            "parameters": [_param("PromiseId")],
            "get": _operation(
                "getPromise",
                "Read a promise, optionally waiting for it",
                "Reads a promise (timed out first if it is due). With `wait`, answers as "
                "soon as the promise is completed or times out, or when the wait elapses "
                "with the promise still pending (200 with `PENDING`).",
                {200: "The promise."},
                (400, 404, 500, 503),
                params=("Wait",),
            ),
            "patch": _operation(
                "completePromise",
                "Complete a promise",
                "Resolves, rejects or cancels a pending promise → **201**. On a promise "
                "that is already completed the request is deduplicated → **200** with "
                "the stored promise (its `state` may differ from the one asked for) when "
                "the idempotency keys match and, under `Strict: true`, the stored state "
                "is the one asked for; also 200 with the timed-out promise when it timed "
                f"out and the request is not strict. Anything else → **403**. {_IDEMPOTENCY}"
                " A promise that reached "
                "its deadline is timed out first; completing a timer after its deadline "
                "is always 403.",
                {201: "Completed.", 200: "Deduplicated: the stored promise."},
                (400, 403, 404, 413, 500, 503),
                params=("IdempotencyKey", "Strict"),
                body="CompletePromise",
            ),
        },
    }


def _parameters() -> dict[str, Any]:
    return {
        "PromiseId": {
            "name": "id",
            "in": "path",
            "required": True,
            "description": "Promise id. It may contain `/` (the route is a catch-all: "
            "`/promises/a/b/c` addresses the promise `a/b/c`); percent-encode other "
            "reserved characters.",
            "schema": {"type": "string"},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Idempotency key of this request; matches a stored key only when "
            "both are present and equal.",
            "schema": {"type": "string"},
        },
        "Strict": {
            "name": "Strict",
            "in": "header",
            "required": False,
            "description": "Strict deduplication: `true/false/t/f/1/0`, any case; absent "
            "means false; anything else is answered 400.",
            "schema": {
                "type": "string",
                "pattern": _any_case("true", "false", "t", "f", "1", "0"),
                "default": "false",
            },
        },
        "RequestId": {
            "name": "Request-Id",
            "in": "header",
            "required": False,
            "description": "Client-chosen request id, echoed in the server's logs.",
            "schema": {"type": "string"},
        },
        "Wait": {
            "name": "wait",
            "in": "query",
            "required": False,
            "description": "Wait up to this long for the promise to complete: milliseconds "
            "(`30000`) or a duration (`30s`, `1m30s`, `250ms`, `1h`); at most 5 minutes "
            "(longer is answered 400).",
            "schema": {
                "type": "string",
                "pattern": r"^(?:\d+|(?:\d+(?:\.\d+)?(?:ms|s|m|h))+)$",
                "examples": ["30s", "30000"],
            },
        },
        "SearchId": {
            "name": "id",
            "in": "query",
            "required": False,
            "description": "Id pattern: `*` matches any run of characters, every other "
            "character is literal.",
            "schema": {"type": "string", "default": "*"},
        },
        "SearchState": {
            "name": "state",
            "in": "query",
            "required": False,
            "description": "`pending`, `resolved` or `rejected` (rejected, canceled or timed "
            "out), any case; absent means every state.",
            "schema": {"type": "string", "pattern": _any_case("pending", "resolved", "rejected")},
        },
        "SearchTags": {
            "name": "tags",
            "in": "query",
            "required": False,
            "description": "Tag filters written `tags[key]=value`; every given pair must match "
            "exactly (extra tags on a promise are fine).",
            "style": "deepObject",
            "explode": True,
            "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "SearchLimit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Page size.",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
        "Cursor": {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "Opaque cursor from a previous page; it carries the whole query.",
            "schema": {"type": "string"},
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``create_app`` (built once)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "troth",
            "version": _version(),
            "summary": "Durable promises with a Resonate-compatible HTTP API.",
            "description": "Bodies are JSON; times are integers, Unix epoch milliseconds. "
            "Every non-2xx response (including unknown routes, 404, and wrong methods, "
            "405) has an `Error` body.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "promises", "description": "Durable promises (API.md 1)."},
            {"name": "ops", "description": "Operational endpoints."},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _components(),
            "parameters": _parameters(),
            "responses": {
                f"E{status}": {"description": text, "content": _json_content("Error")}
                for status, text in _ERROR_TEXT.items()
            },
        },
    }
