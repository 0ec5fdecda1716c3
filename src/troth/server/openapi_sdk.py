"""The OpenAPI fragment of the SDK routes (``troth.server.routes_sdk``), merged into the
document by ``troth.server.openapi``: ``POST /sdk/batch``, ``POST /sdk/claim`` and the
results stream ``GET /sdk/results/{session}``."""

from __future__ import annotations

from typing import Any, Final

_REF: Final = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


_FENCE: Final = {
    "type": "object",
    "required": ["id", "counter"],
    "properties": {"id": {"type": "string"}, "counter": {"type": "integer"}},
    "description": "Fence of this op: written only while that task is CLAIMED with that "
    "counter and an unexpired lease (else this op's result is 412).",
}


def sdk_components() -> dict[str, Any]:
    return {
        "SdkOp": {
            "type": "object",
            "required": ["kind", "id"],
            "properties": {
                "kind": {
                    "enum": ["create", "record", "complete", "watch"],
                    "description": "`create`: as `POST /promises`. `record`: create the "
                    "promise already completed with `state` and `value` (a pending one is "
                    "completed; a completed one is answered as stored). `complete`: as "
                    "`PATCH /promises/{id}`. `watch`: send the promise on the results "
                    "stream `session` once completed.",
                },
                "id": {
                    "type": "string",
                    "description": "Promise id; also the op's "
                    "idempotency key (create and completion).",
                },
                "timeout": {
                    "type": "integer",
                    "description": "create, record: deadline, Unix epoch ms.",
                },
                "param": _ref("Value"),
                "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                "state": {"enum": ["RESOLVED", "REJECTED", "REJECTED_CANCELED"]},
                "value": _ref("Value"),
                "at": {
                    "type": "integer",
                    "description": "create, record: creation (and "
                    "completion) time to store instead of the server clock, epoch ms.",
                },
                "fence": _FENCE,
                "brief": {
                    "type": "boolean",
                    "description": "Answer only the status when "
                    "the stored promise is the one the op describes.",
                },
                "session": {"type": "string", "description": "watch: the results stream."},
                "owned": {
                    "type": "boolean",
                    "description": "complete: only if the promise was created with its id "
                    "as idempotency key (else 409).",
                },
            },
        },
        "SdkBatchBody": {
            "type": "object",
            "required": ["ops"],
            "properties": {"ops": {"type": "array", "items": _ref("SdkOp"), "maxItems": 1000}},
        },
        "SdkOpResult": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {
                    "type": "integer",
                    "description": "201 written, 200 "
                    "deduplicated (or, for watch, already completed), 202 watched, else the "
                    "error status of the single-request route (412 fenced, 403, 404, 409, ...).",
                },
                "promise": _ref("Promise"),
                "code": {
                    "type": "integer",
                    "description": "Error code (API.md 0); 40410: "
                    "no results stream is open for the session.",
                },
                "message": {"type": "string"},
            },
        },
        "SdkBatchAnswer": {
            "type": "object",
            "required": ["results"],
            "properties": {"results": {"type": "array", "items": _ref("SdkOpResult")}},
        },
        "SdkClaimBody": {
            "type": "object",
            "required": ["tasks", "processId", "ttl"],
            "properties": {
                "tasks": {
                    "type": "array",
                    "maxItems": 1000,
                    "items": {
                        "type": "object",
                        "required": ["id", "counter"],
                        "properties": {"id": {"type": "string"}, "counter": {"type": "integer"}},
                    },
                },
                "processId": {"type": "string"},
                "ttl": {"type": "integer", "description": "Lease, ms."},
            },
        },
        "SdkClaimResult": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {
                    "type": "integer",
                    "description": "201 claimed, else the status `POST /tasks/claim` would answer.",
                },
                "task": {
                    "type": "object",
                    "description": "The claimed task record (every field, camelCase).",
                },
                "root": _ref("Promise"),
                "leaf": _ref("Promise"),
                "code": {"type": "integer"},
                "message": {"type": "string"},
            },
        },
        "SdkClaimAnswer": {
            "type": "object",
            "required": ["results"],
            "properties": {"results": {"type": "array", "items": _ref("SdkClaimResult")}},
        },
    }


def sdk_paths() -> dict[str, Any]:
    json = "application/json"
    return {
        "/sdk/batch": {
            "post": {
                "operationId": "sdkBatch",
                "summary": "Apply promise writes in one transaction",
                "description": "The ops are applied in order in one transaction: one "
                "commit for all. Each op has its own result (one op failing does not undo "
                "the others); the request itself fails only when malformed (400) or when "
                "the store is unavailable (503). Watch ops are answered after the writes. "
                "Used by the Python SDK (docs/sdk.md).",
                "tags": ["sdk"],
                "parameters": [{"$ref": "#/components/parameters/RequestId"}],
                "requestBody": {
                    "required": True,
                    "content": {json: {"schema": _ref("SdkBatchBody")}},
                },
                "responses": {
                    "200": {
                        "description": "One result per op, in order.",
                        "content": {json: {"schema": _ref("SdkBatchAnswer")}},
                    },
                    **_errors(400, 413, 500, 503),
                },
            }
        },
        "/sdk/claim": {
            "post": {
                "operationId": "sdkClaim",
                "summary": "Claim several tasks in one transaction",
                "description": "Each task is claimed for `processId` with lease `ttl` as "
                "`POST /tasks/claim` would claim it; one result per task.",
                "tags": ["sdk"],
                "parameters": [{"$ref": "#/components/parameters/RequestId"}],
                "requestBody": {
                    "required": True,
                    "content": {json: {"schema": _ref("SdkClaimBody")}},
                },
                "responses": {
                    "200": {
                        "description": "One result per task, in order.",
                        "content": {json: {"schema": _ref("SdkClaimAnswer")}},
                    },
                    **_errors(400, 413, 500, 503),
                },
            }
        },
        "/sdk/results/{session}": {
            "parameters": [
                {
                    "name": "session",
                    "in": "path",
                    "required": True,
                    "description": "A session id chosen by the client (a new stream with "
                    "the same id replaces the old one).",
                    "schema": {"type": "string"},
                }
            ],
            "get": {
                "operationId": "sdkResults",
                "summary": "Results stream (Server-Sent Events)",
                "description": 'Sends `data: {"promises": [...]}` with promises watched '
                "by `watch` ops of `POST /sdk/batch` once they complete. Watches live in "
                "the server's memory and end with the stream.",
                "tags": ["sdk"],
                "parameters": [{"$ref": "#/components/parameters/RequestId"}],
                "responses": {
                    "200": {
                        "description": "The stream (`Cache-Control: no-cache`).",
                        "content": {
                            "text/event-stream": {
                                "schema": {"type": "string"},
                                "example": ": connected\n\n"
                                'data: {"promises":[{"id":"order/1","state":"RESOLVED",'
                                "...}]}\n\n: keep-alive\n\n",
                            }
                        },
                    },
                    **_errors(500),
                },
            },
        },
    }
