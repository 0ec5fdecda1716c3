"""OpenAPI 3.1 document of the HTTP API (API.md sections 0 to 5), served at
``/openapi.json``.

Body schemas are derived from the msgspec structs the server really encodes and decodes
(``Promise``, ``Value``, ``SearchPage``, ``Lock``, ``Schedule``, ``CreatePromise``,
``CompletePromise``, ``CreateScheduleBody`` and the request bodies of
``troth.server.wire_tasks``), so a field added to a struct shows up
here without editing this file. What msgspec cannot say is patched in ``_components``: a
promise in a response never carries ``null`` members (empty ones are omitted) while
``param`` and ``value`` are always present, the case-insensitive enums of the wire are
written as patterns, and ``recv`` (decoded as any JSON value) gets its real shape. The
objects the server builds by hand (``Task.to_wire``, the callback, claim and stream
messages) are written out in ``_task_components``; the schedule search page (built by hand
in ``routes_schedules``) in ``_schedule_components``.

The document is built once (``functools.cache``); callers must not mutate it.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
from typing import Any, Final

import msgspec

from troth.model import Lock, Promise, Schedule, SearchPage, TaskKind, TaskState, Value
from troth.server import wire_tasks
from troth.server.openapi_sdk import sdk_components, sdk_paths
from troth.server.routes_schedules import CreateScheduleBody
from troth.server.routes_tasks import GET_CLAIM_TTL_MS
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


#: Request bodies of the task framework routes (``troth.server.wire_tasks``).
_TASK_BODIES: Final = (
    wire_tasks.CreatePromiseAndTask,
    wire_tasks.CallbackBody,
    wire_tasks.SubscribeBody,
    wire_tasks.LegacyCallbackBody,
    wire_tasks.LegacySubscriptionBody,
    wire_tasks.ClaimBody,
    wire_tasks.TaskRefBody,
    wire_tasks.ProcessBody,
    wire_tasks.AcquireLockBody,
    wire_tasks.ReleaseLockBody,
)

_BODY_TEXT: Final[dict[str, tuple[str, dict[str, str]]]] = {
    "CreatePromiseAndTask": (
        "Body of `POST /promises/task`. Unknown fields are ignored.",
        {
            "promise": "The promise, as in `POST /promises`.",
            "task": "Its invoke task `__invoke:<id>`, created already CLAIMED.",
        },
    ),
    "PromiseSpec": (
        "The promise of `POST /promises/task` (the fields of `CreatePromise`).",
        {
            "id": _PROMISE_FIELDS["id"],
            "timeout": "Absolute deadline, Unix epoch milliseconds.",
            "param": "Value of the promise's input; null = none.",
            "tags": "String tags; null = none.",
        },
    ),
    "TaskSpec": (
        "Who holds the new task, and for how long.",
        {
            "processId": "The process that holds the task (its heartbeats extend the lease).",
            "ttl": "Lease, ms: CLAIMED until `now + ttl`, extended by heartbeats.",
        },
    ),
    "CallbackBody": (
        "Body of `POST /promises/callback/{id}`. Unknown fields are ignored.",
        {
            "rootPromiseId": "Promise to resume: when promise `{id}` completes, the resume "
            "task `__resume:<rootPromiseId>:<id>` is sent to `recv`.",
            "timeout": "Timeout of the resume task, Unix epoch milliseconds.",
        },
    ),
    "SubscribeBody": (
        "Body of `POST /promises/subscribe/{id}`. Unknown fields are ignored.",
        {
            "id": "Subscription id, unique per promise: the notify task is "
            "`__notify:<promiseId>:<id>`.",
            "timeout": "Timeout of the notify task, Unix epoch milliseconds.",
        },
    ),
    "LegacyCallbackBody": (
        "Body of `POST /callbacks` (older alias of `POST /promises/callback/{id}`).",
        {
            "promiseId": "Promise whose completion resumes the root.",
            "rootPromiseId": "Promise to resume (task `__resume:<rootPromiseId>:<promiseId>`).",
            "timeout": "Timeout of the resume task, Unix epoch milliseconds.",
            "id": "Accepted for compatibility and ignored: the callback id is always "
            "`__resume:<rootPromiseId>:<promiseId>`.",
        },
    ),
    "LegacySubscriptionBody": (
        "Body of `POST /subscriptions` (older alias of `POST /promises/subscribe/{id}`).",
        {
            "id": "Subscription id, unique per promise.",
            "promiseId": "Promise to watch.",
            "timeout": "Timeout of the notify task, Unix epoch milliseconds.",
        },
    ),
    "ClaimBody": (
        "Body of `POST /tasks/claim`. Unknown fields are ignored.",
        {
            "id": "Task id, as received in the message.",
            "counter": "The task's counter as received; a stale one is answered 403 40308.",
            "processId": "The claiming process (its heartbeats extend the lease).",
            "ttl": "Lease, ms: CLAIMED until `now + ttl`, extended by heartbeats.",
        },
    ),
    "TaskRefBody": (
        "Body of `POST /tasks/complete` and `POST /tasks/drop`.",
        {"id": "Task id.", "counter": "The counter the caller claimed the task with."},
    ),
    "ProcessBody": (
        "Body of `POST /tasks/heartbeat` and `POST /locks/heartbeat`.",
        {"processId": "Every task (lock) this process holds is extended by its own ttl."},
    ),
    "AcquireLockBody": (
        "Body of `POST /locks/acquire`. Unknown fields are ignored.",
        {
            "resourceId": "What is locked.",
            "executionId": "The holder. Acquiring again with the same execution re-enters "
            "the lock and renews it.",
            "processId": "Process whose heartbeats (`POST /locks/heartbeat`) extend the lock.",
            "ttl": "Lease, ms: the lock expires at `now + ttl` unless heartbeated; an "
            "expired lock is taken over by the next acquire.",
        },
    ),
    "ReleaseLockBody": (
        "Body of `POST /locks/release`.",
        {"resourceId": "The locked resource.", "executionId": "The holder."},
    ),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _object(
    title: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "title": title,
        "description": description,
        "type": "object",
        "properties": properties,
        "required": required,
    }


def _ms(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "description": description}


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _task_components(schemas: dict[str, Any]) -> None:
    """Patch the derived task-framework schemas and add the hand-built wire objects."""
    for name, (description, fields) in _BODY_TEXT.items():
        schema = schemas[name]
        schema["description"] = description
        props = schema["properties"]
        for field, text in fields.items():
            props[field]["description"] = text
        if "recv" in props:
            props["recv"] = {
                "$ref": _REF.format(name="Recv"),
                "default": props["recv"].get("default", "default"),
                "description": "Where the task goes; omitted = `default`.",
            }

    lock = schemas["Lock"]
    lock["description"] = "A lock held by an execution until `expiresAt` (API.md 5)."
    lock_props = lock["properties"]
    lock_props["resourceId"]["description"] = "The locked resource."
    lock_props["executionId"]["description"] = "The holder."
    lock_props["processId"]["description"] = "Process whose heartbeats extend the lock."
    lock_props["ttl"].update(_ms("Lease, ms."))
    lock_props["expiresAt"].update(_ms("Unix epoch ms after which the lock may be taken over."))

    poll_data = _object(
        "PollRecvData",
        "A worker stream of `group` (`GET /poll/{group}/{id}`).",
        {
            "group": {"type": "string", "minLength": 1, "description": "Worker group."},
            "id": _text("Preferred (`any`) or only (`uni`) stream of the group."),
            "mode": {
                "type": "string",
                "enum": ["any", "uni"],
                "default": "any",
                "description": "`any`: the stream `id` if connected, else any stream of the "
                "group; `uni` (needs `id`): only stream `id`. Omitted in responses when `any`.",
            },
        },
        ["group"],
    )
    schemas["PollRecv"] = _object(
        "PollRecv",
        "Delivery over a worker stream (`poll://…`).",
        {"type": {"const": "poll"}, "data": poll_data},
        ["type", "data"],
    )
    http_data = _object(
        "HttpRecvData",
        "An HTTP(S) endpoint that receives each message as a POST.",
        {
            "url": {"type": "string", "pattern": "^https?://", "description": "Target URL."},
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Extra request headers; omitted when none.",
            },
        },
        ["url"],
    )
    schemas["HttpRecv"] = _object(
        "HttpRecv",
        "Delivery by HTTP POST (`http(s)://…`); any 2xx answer is delivery, failures are "
        "retried with backoff.",
        {"type": {"const": "http"}, "data": http_data},
        ["type", "data"],
    )
    schemas["RecvObject"] = {
        "title": "RecvObject",
        "description": "A receiver as the server answers it (normalized).",
        "oneOf": [_ref("PollRecv"), _ref("HttpRecv")],
    }
    schemas["Recv"] = {
        "title": "Recv",
        "description": "A receiver (API.md 2): `poll://any@<group>[/<id>]`, "
        "`poll://uni@<group>/<id>`, `poll://<group>[/<id>]` (= `any@`), `http(s)://…`, a "
        "logical name from configuration (`default` → `poll://any@default`), or an object. "
        "Anything else is answered 400.",
        "oneOf": [
            {"type": "string", "examples": ["poll://any@workers", "https://hooks.example/in"]},
            _ref("PollRecv"),
            _ref("HttpRecv"),
        ],
    }

    schemas["TaskState"] = {
        "title": "TaskState",
        "type": "string",
        "enum": [s.value for s in TaskState],
        "description": "INIT (waiting to be sent) → ENQUEUED (sent, waiting for a claim) → "
        "CLAIMED (leased by a process) → COMPLETED; TIMEDOUT once `now >= timeout`.",
    }
    schemas["TaskKind"] = {
        "title": "TaskKind",
        "type": "string",
        "enum": [k.value for k in TaskKind],
        "description": "`invoke`: run the root promise's function; `resume`: its awaited "
        "leaf completed; `notify`: a subscribed promise completed.",
    }
    schemas["Task"] = _object(
        "Task",
        "A task (API.md 3). Optional members are omitted when absent.",
        {
            "id": _text(
                "`__invoke:<rootPromiseId>`, `__resume:<rootPromiseId>:<leafPromiseId>` or "
                "`__notify:<promiseId>:<subscriptionId>`."
            ),
            "type": _ref("TaskKind"),
            "state": _ref("TaskState"),
            "counter": {
                "type": "integer",
                "minimum": 1,
                "description": "Fencing token: incremented at every hand-over (lease or "
                "claim time expired, drop).",
            },
            "timeout": _ms("Unix epoch ms at which an unfinished task becomes TIMEDOUT."),
            "rootPromiseId": _text("The promise the task's work belongs to."),
            "leafPromiseId": _text("The completed promise (resume and notify tasks)."),
            "processId": _text("Holder of a CLAIMED task."),
            "ttl": _ms("Lease of a CLAIMED task, ms."),
            "expiresAt": _ms(
                "Unix epoch ms at which the lease (CLAIMED) or the time to claim (ENQUEUED) "
                "runs out; the task then goes back to INIT with `counter + 1`."
            ),
            "createdOn": _ms("Server clock at creation, Unix epoch ms."),
            "completedOn": _ms("Server clock at completion or timeout, Unix epoch ms."),
        },
        ["id", "type", "state", "counter", "timeout", "rootPromiseId", "createdOn"],
    )
    schemas["Callback"] = _object(
        "Callback",
        "A registered callback (`__resume:<rootPromiseId>:<promiseId>`) or subscription "
        "(`__notify:<promiseId>:<id>`); it becomes a task when the promise completes.",
        {
            "id": _text("Callback id."),
            "promiseId": _text("The promise whose completion fires it."),
            "rootPromiseId": _text("Promise to resume (callbacks only)."),
            "recv": _ref("RecvObject"),
            "timeout": _ms("Timeout of the task it becomes, Unix epoch ms."),
            "createdOn": _ms("Server clock at registration, Unix epoch ms."),
        },
        ["id", "promiseId", "recv", "timeout", "createdOn"],
    )
    schemas["CallbackResult"] = _object(
        "CallbackResult",
        "`callback` is null when the promise is already completed (continue at once) or "
        "the callback already exists.",
        {
            "callback": {"anyOf": [_ref("Callback"), {"type": "null"}]},
            "promise": _ref("Promise"),
        },
        ["callback", "promise"],
    )
    schemas["PromiseAndTask"] = _object(
        "PromiseAndTask",
        "`task` is null when the create was deduplicated.",
        {"promise": _ref("Promise"), "task": {"anyOf": [_ref("Task"), {"type": "null"}]}},
        ["promise", "task"],
    )
    schemas["PromiseRef"] = _object(
        "PromiseRef",
        "A promise with its URL.",
        {
            "id": _text("Promise id."),
            "href": {
                "type": "string",
                "format": "uri",
                "description": "`<public URL>/promises/<id>`.",
            },
            "data": _ref("Promise"),
        },
        ["id", "href", "data"],
    )
    schemas["ClaimedTask"] = _object(
        "ClaimedTask",
        "What a worker needs to run a claimed task.",
        {
            "type": _ref("TaskKind"),
            "promises": {
                "type": "object",
                "properties": {
                    "root": _ref("PromiseRef"),
                    "leaf": {
                        "$ref": _REF.format(name="PromiseRef"),
                        "description": "The completed promise of a resume task.",
                    },
                },
                "required": ["root"],
            },
        },
        ["type", "promises"],
    )
    schemas["TasksAffected"] = _object(
        "TasksAffected",
        "Result of a task heartbeat.",
        {"tasksAffected": _ms("How many CLAIMED tasks had their lease extended.")},
        ["tasksAffected"],
    )
    schemas["LocksAffected"] = _object(
        "LocksAffected",
        "Result of a lock heartbeat.",
        {"locksAffected": _ms("How many locks were extended.")},
        ["locksAffected"],
    )
    link = {"type": "string", "format": "uri"}
    schemas["TaskMessage"] = _object(
        "TaskMessage",
        "An invoke or resume message, sent on a worker stream or POSTed to an http receiver. "
        "The `href` links are the GET forms of `/tasks/…` for this task and counter.",
        {
            "type": {"type": "string", "enum": [TaskKind.INVOKE.value, TaskKind.RESUME.value]},
            "task": _ref("Task"),
            "href": {
                "type": "object",
                "properties": {"claim": link, "complete": link, "heartbeat": link},
                "required": ["claim", "complete", "heartbeat"],
            },
        },
        ["type", "task", "href"],
    )
    schemas["NotifyMessage"] = _object(
        "NotifyMessage",
        "A subscribed promise completed (sent once, not claimed).",
        {"type": {"const": TaskKind.NOTIFY.value}, "promise": _ref("Promise")},
        ["type", "promise"],
    )
    schemas["StreamMessage"] = {
        "title": "StreamMessage",
        "description": "The JSON of one `data:` event of a worker stream (or one HTTP push).",
        "oneOf": [_ref("TaskMessage"), _ref("NotifyMessage")],
    }


_CRON_TEXT: Final = (
    "Cron expression, always UTC: 5 fields (minute hour day-of-month month day-of-week), an "
    "optional 6th for seconds (`0 * * * * 30` = every minute at second 30), or a shortcut "
    "`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly` (any "
    "case; stored lower-case and trimmed). Anything else is answered 400 naming `$.cron`."
)
_TEMPLATE_TEXT: Final = (
    "Template of the id of each run's promise: `{{.id}}` is replaced by the schedule id, "
    "`{{.timestamp}}` by the run time (Unix epoch ms), `{{.date}}` by its UTC date "
    "`YYYY-MM-DD`; e.g. `{{.id}}/{{.timestamp}}` or `news_feed_{{.date}}`."
)
_PROMISE_TAGS_TEXT: Final = (
    "Tags of each run's promise, to which the server adds `resonate:schedule = <schedule "
    'id>` and `resonate:invocation = "true"`. A `resonate:invoke = <recv>` tag makes each '
    "run an invocation: its promise gets an invoke task (the receiver is checked at "
    "creation, 400 if malformed)."
)

#: Descriptions of the members of ``Schedule`` (response) and ``CreateScheduleBody``.
_SCHEDULE_FIELDS: Final = {
    "id": "Schedule id; any characters, including `/`.",
    "description": "Free text; omitted when none.",
    "cron": _CRON_TEXT,
    "tags": "String tags of the schedule itself (searched by `tags[k]=v`); omitted when none.",
    "promiseId": _TEMPLATE_TEXT,
    "promiseTimeout": "Timeout of each run's promise, ms, relative to the run time: "
    "`timeout = run time + promiseTimeout` (capped at 2^63-1).",
    "promiseParam": "Param of each run's promise (`{}` when none).",
    "promiseTags": _PROMISE_TAGS_TEXT,
    "lastRunTime": "Scheduled time of the last run that fired, Unix epoch ms; omitted "
    "before the first run.",
    "nextRunTime": "Scheduled time of the next run, Unix epoch ms: the first cron time "
    "after creation, then after each run.",
    "idempotencyKey": "The `Idempotency-Key` of the create; omitted when none.",
    "createdOn": "Server clock at creation, Unix epoch ms.",
}
_SCHEDULE_BODY_FIELDS: Final = {
    **_SCHEDULE_FIELDS,
    "description": "Free text; null = none.",
    "tags": "String tags of the schedule itself; null = none.",
    "promiseParam": "Param of each run's promise; null = none.",
    "promiseTags": _PROMISE_TAGS_TEXT + " Null = none.",
}


def _schedule_components(schemas: dict[str, Any]) -> None:
    """Patch the derived ``Schedule`` / ``CreateScheduleBody`` and add the search page."""
    schedule = schemas["Schedule"]
    schedule["description"] = (
        "A durable cron schedule that creates a promise per run (API.md 4). Empty members "
        "are omitted; `promiseParam` is always present."
    )
    props = schedule["properties"]
    for name, prop in list(props.items()):
        props[name] = _not_null(prop)
        props[name]["description"] = _SCHEDULE_FIELDS[name]
    for name in ("promiseTimeout", "lastRunTime", "nextRunTime", "createdOn"):
        props[name]["minimum"] = 0
    if "promiseParam" not in schedule["required"]:  # always encoded, as {} when empty
        schedule["required"].append("promiseParam")

    body = schemas["CreateScheduleBody"]
    body["description"] = "Body of `POST /schedules`. Unknown fields are ignored."
    for name, prop in body["properties"].items():
        prop["description"] = _SCHEDULE_BODY_FIELDS[name]
    body["properties"]["cron"]["examples"] = ["*/15 * * * *", "0 * * * * 30", "@hourly"]
    body["properties"]["promiseId"]["examples"] = ["{{.id}}/{{.timestamp}}"]

    schemas["SchedulePage"] = _object(
        "SchedulePage",
        "One page of a schedule search, newest first.",
        {
            "schedules": {"type": "array", "items": _ref("Schedule")},
            "cursor": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "description": "Opaque cursor for the next page (pass it as `cursor`); "
                "`null` on the last page.",
            },
        },
        ["schedules", "cursor"],
    )


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
        [
            Promise,
            Value,
            SearchPage,
            CreatePromise,
            CompletePromise,
            Lock,
            Schedule,
            CreateScheduleBody,
            *_TASK_BODIES,
        ],
        ref_template=_REF,
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
                        "/ canceled / timed out, 40305 lock held, 40306 task claimed, 40307 "
                        "task completed or timed out, 40308 wrong task counter, 40309 task "
                        "not claimed, 40400 promise not found, 40402 lock not found, 40403 "
                        "task not found, 40401 schedule not found, 40900 promise exists, "
                        "40901 schedule exists, 41200 fencing failed, 41300 "
                        "body too large, 50000 internal, 50300 storage unavailable).",
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
    _task_components(schemas)
    _schedule_components(schemas)
    return {k: schemas[k] for k in sorted(schemas)}


#: Error responses by component name: ``E<status>[<Variant>]``.
_ERROR_TEXT: Final = {
    "400": "Invalid request (code 40000); the message names the field (a body member, a "
    "header such as `Strict` or `Task-Counter`, or the path).",
    "403": "The promise is already completed in another way (40301..40304 by its state), "
    "or it timed out and the completion was strict (40300).",
    "403Task": "The task cannot take this step (see the operation): 40306 already claimed, "
    "40307 completed or timed out, 40308 `counter` is not the task's current counter "
    "(the caller lost its lease), 40309 not claimed.",
    "403Lock": "The lock is held by another execution until its `expiresAt` (40305).",
    "404": "No promise with this id (40400).",
    "404Task": "No task with this id (40403); 40400 when the task's root promise is gone.",
    "404Lock": "This execution does not hold a lock on this resource (40402).",
    "404Schedule": "No schedule with this id (40401).",
    "409": "A promise with this id exists and the request does not deduplicate against it (40900).",
    "409Schedule": "A schedule with this id exists and the `Idempotency-Key` does not match "
    "the one it was created with (40901).",
    "412": "Fencing failed (41200): the task named by `Task-Id` is not CLAIMED with counter "
    "`Task-Counter`, or its lease has run out. Nothing was written.",
    "413": "The request body is larger than the server accepts (41300; 10 MiB by default).",
    "403Scope": "A token scoped to an id prefix named an id outside it, or a route closed to "
    "scoped tokens (40300).",
    "404File": "No such dashboard file (40400).",
    "401": "Authentication is on and the request has no valid credentials (40100); "
    "`details` names the scheme the server expects (`Basic` or `Bearer`).",
    "500": "Internal error (50000); the request may not have been applied.",
    "503": "Storage is unavailable (50300); the request was not applied. Retry later.",
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
    errors: tuple[int | str, ...],
    *,
    schema: str = "Promise",
    params: tuple[str, ...] = (),
    body: str | None = None,
    tag: str = "promises",
) -> dict[str, Any]:
    """One operation; ``errors`` name components of ``_ERROR_TEXT`` (``403`` or ``"403Task"``)
    and a 204 in ``ok`` has no body."""
    responses: dict[str, Any] = {
        str(status): {"description": text}
        if status == 204
        else {"description": text, "content": _json_content(schema)}
        for status, text in ok.items()
    }
    for error in errors:
        name = str(error)
        responses[name[:3]] = {"$ref": f"#/components/responses/E{name}"}
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
_FENCED: Final = (
    "With `Task-Id` and `Task-Counter` (both or neither, else 400) the write is fenced: it "
    "happens only while that task is CLAIMED with exactly that counter and an unexpired "
    "lease, else **412** and nothing is written."
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
                "compared: param, timeout and tags of a replay are not. A tag "
                "`resonate:invoke = <recv>` also creates the invoke task `__invoke:<id>` "
                "(not sent before the epoch-ms time in tag `resonate:delay`); a malformed "
                f"receiver or delay → **400**. {_FENCED}",
                {201: "Created.", 200: "Deduplicated: the stored promise."},
                (400, 409, 412, 413, 500, 503),
                params=("IdempotencyKey", "Strict", "TaskId", "TaskCounter"),
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
                "is always 403. Completing a promise turns its callbacks into tasks and "
                f"completes the unfinished invoke/resume tasks whose root it is. {_FENCED}",
                {201: "Completed.", 200: "Deduplicated: the stored promise."},
                (400, 403, 404, 412, 413, 500, 503),
                params=("IdempotencyKey", "Strict", "TaskId", "TaskCounter"),
                body="CompletePromise",
            ),
        },
        **_task_paths(),
        **_schedule_paths(),
    }


_STREAM_TEXT: Final = (
    "A worker stream: Server-Sent Events that never end on their own. The server writes a "
    "`: connected` comment first, then one event `data: <json>\\n\\n` per message (one line "
    "of JSON, a `StreamMessage`), and a `: keep-alive` comment (a line starting with `:`) "
    "every 15 s by default so proxies keep the stream open; clients ignore comment lines. "
    "Messages are invoke/resume `{type, task, href: {claim, complete, heartbeat}}` "
    '(`TaskMessage`) and notify `{"type": "notify", promise}` (`NotifyMessage`). One '
    "stream per (group, id): a new connection replaces the old one, which the server "
    "closes. A message lost with a dropped stream is sent again (counter + 1) when its time "
    "to claim runs out. The same stream is served at `GET /{group}/{id}` on the optional "
    "poll port."
)

_GET_FORMS: Final = {
    "claim": (
        "getClaimTask",
        "Claim a task (link form)",
        "As `POST /tasks/claim` with processId `<id>/<counter>` and a lease of "
        f"{GET_CLAIM_TTL_MS // 1000} s.",
        {201: "Claimed: the promises of the task."},
        ("400", "403Task", "404Task", "500", "503"),
        "ClaimedTask",
    ),
    "complete": (
        "getCompleteTask",
        "Complete a task (link form)",
        "As `POST /tasks/complete`.",
        {201: "Completed: the task.", 200: "Already COMPLETED or TIMEDOUT: the task."},
        ("400", "403Task", "404Task", "500", "503"),
        "Task",
    ),
    "drop": (
        "getDropTask",
        "Drop a task (link form)",
        "As `POST /tasks/drop`.",
        {201: "Dropped: the task, INIT with counter + 1.", 200: "Not CLAIMED: the task."},
        ("400", "403Task", "404Task", "500", "503"),
        "Task",
    ),
    "heartbeat": (
        "getHeartbeatTasks",
        "Heartbeat (link form)",
        "As `POST /tasks/heartbeat` with processId `<id>/<counter>`, i.e. extends the lease "
        "of a task claimed through its GET link.",
        {200: "How many leases were extended."},
        ("400", "500", "503"),
        "TasksAffected",
    ),
}


def _task_paths() -> dict[str, Any]:
    callback_text = (
        "Registers a callback `__resume:<rootPromiseId>:<id>`: when the promise completes "
        "(any way, timeout included), a resume task goes to `recv` → **201** "
        "`{callback, promise}`. **200** `{callback: null, promise}` when the promise is "
        "already completed (continue at once; an expired one is timed out first) or the "
        "callback already exists; **404** when the promise does not exist. "
    )
    subscribe_text = (
        "Registers a subscription `__notify:<promiseId>:<id>`: when the promise completes, "
        "a notify message (the completed promise) goes to `recv`, once → **201**. **200** "
        "`{callback: null, promise}` when the promise is already completed or the "
        "subscription exists; **404** when the promise does not exist."
    )
    callback_errors: tuple[int | str, ...] = (400, 404, 412, 413, 500, 503)
    subscribe_errors: tuple[int | str, ...] = (400, 404, 413, 500, 503)
    paths: dict[str, Any] = {
        "/promises/task": {
            "post": _operation(
                "createPromiseAndTask",
                "Create a promise and claim its invoke task",
                "Creates the promise (exactly as `POST /promises`, with `Idempotency-Key` "
                "and `Strict`) and its invoke task `__invoke:<id>`, already CLAIMED by "
                "`task.processId` for `task.ttl` ms → **201** `{promise, task}`. A "
                "deduplicated create → **200** `{promise, task: null}`; anything else on an "
                "existing id → **409**.",
                {201: "Created, with its claimed task.", 200: "Deduplicated; no task."},
                (400, 409, 413, 500, 503),
                schema="PromiseAndTask",
                params=("IdempotencyKey", "Strict"),
                body="CreatePromiseAndTask",
                tag="tasks",
            )
        },
        "/promises/callback/{id}": {
            "parameters": [_param("PromiseId")],
            "post": _operation(
                "registerCallback",
                "Resume a root promise when this one completes",
                callback_text + _FENCED,
                {201: "Registered.", 200: "Not registered; see `promise`."},
                callback_errors,
                schema="CallbackResult",
                params=("TaskId", "TaskCounter"),
                body="CallbackBody",
                tag="callbacks",
            ),
        },
        "/promises/subscribe/{id}": {
            "parameters": [_param("PromiseId")],
            "post": _operation(
                "subscribe",
                "Notify a receiver when this promise completes",
                subscribe_text,
                {201: "Subscribed.", 200: "Not subscribed; see `promise`."},
                subscribe_errors,
                schema="CallbackResult",
                body="SubscribeBody",
                tag="callbacks",
            ),
        },
        "/callbacks": {
            "post": _operation(
                "registerCallbackLegacy",
                "Register a callback (older alias)",
                "As `POST /promises/callback/{promiseId}`, with the promise id in the body. "
                + _FENCED,
                {201: "Registered.", 200: "Not registered; see `promise`."},
                callback_errors,
                schema="CallbackResult",
                params=("TaskId", "TaskCounter"),
                body="LegacyCallbackBody",
                tag="callbacks",
            )
        },
        "/subscriptions": {
            "post": _operation(
                "subscribeLegacy",
                "Subscribe (older alias)",
                "As `POST /promises/subscribe/{promiseId}`, with the promise id in the body.",
                {201: "Subscribed.", 200: "Not subscribed; see `promise`."},
                subscribe_errors,
                schema="CallbackResult",
                body="LegacySubscriptionBody",
                tag="callbacks",
            )
        },
        "/tasks/claim": {
            "post": _operation(
                "claimTask",
                "Claim a task",
                "Claims an ENQUEUED (or INIT) task whose counter is `counter` → **201**; it "
                "is CLAIMED by `processId` until `now + ttl`. The answer carries the root "
                "promise and, for a resume task, the leaf. **403**: 40306 already claimed, "
                "40307 completed or timed out, 40308 stale counter. **404**: 40403 no such "
                "task, 40400 its root promise is gone.",
                {201: "Claimed: the promises of the task."},
                (400, "403Task", "404Task", 413, 500, 503),
                schema="ClaimedTask",
                body="ClaimBody",
                tag="tasks",
            )
        },
        "/tasks/complete": {
            "post": _operation(
                "completeTask",
                "Complete a task",
                "A CLAIMED task with this counter becomes COMPLETED → **201**. Already "
                "COMPLETED or TIMEDOUT (for instance because its root promise completed) → "
                "**200**. **403**: 40308 stale counter, 40309 not claimed.",
                {201: "Completed: the task.", 200: "Already COMPLETED or TIMEDOUT: the task."},
                (400, "403Task", "404Task", 413, 500, 503),
                schema="Task",
                body="TaskRefBody",
                tag="tasks",
            )
        },
        "/tasks/drop": {
            "post": _operation(
                "dropTask",
                "Give a task back",
                "A CLAIMED task with this counter goes back to INIT with `counter + 1` and is "
                "sent again → **201**. A task that is not CLAIMED is left alone → **200**. "
                "**403** 40308: CLAIMED with another counter.",
                {201: "Dropped: the task.", 200: "Not CLAIMED: the task, unchanged."},
                (400, "403Task", "404Task", 413, 500, 503),
                schema="Task",
                body="TaskRefBody",
                tag="tasks",
            )
        },
        "/tasks/heartbeat": {
            "post": _operation(
                "heartbeatTasks",
                "Extend the leases of a process",
                "Every task CLAIMED by `processId` is leased until `now + its ttl`.",
                {200: "How many leases were extended."},
                (400, 413, 500, 503),
                schema="TasksAffected",
                body="ProcessBody",
                tag="tasks",
            )
        },
    }
    for verb, (op_id, summary, text, ok, errors, schema) in _GET_FORMS.items():
        paths[f"/tasks/{verb}/{{rest}}"] = {
            "parameters": [_param("TaskPath")],
            "get": _operation(
                op_id,
                summary,
                text + " These are the `href` links of a task message; GET so that a "
                "worker can follow them as they are.",
                ok,
                errors,
                schema=schema,
                tag="tasks",
            ),
        }
    paths["/poll/{group}/{id}"] = {
        "parameters": [_param("PollGroup"), _param("PollId")],
        "get": {
            "operationId": "pollTasks",
            "summary": "Worker stream (Server-Sent Events)",
            "description": _STREAM_TEXT,
            "tags": ["tasks"],
            "parameters": [_param("RequestId")],
            "responses": {
                "200": {
                    "description": "The stream (`Cache-Control: no-cache`).",
                    "content": {
                        "text/event-stream": {
                            "schema": {
                                "type": "string",
                                "description": "Events of `StreamMessage` JSON: "
                                "`data: <json>` lines, `:` comment lines as keep-alives.",
                            },
                            "example": ": connected\n\n"
                            'data: {"type":"invoke","task":{"id":"__invoke:job/1",'
                            '"type":"invoke","state":"ENQUEUED","counter":1,...},'
                            '"href":{"claim":"http://127.0.0.1:8001/tasks/claim/'
                            '__invoke:job/1/1",...}}\n\n'
                            ": keep-alive\n\n",
                        }
                    },
                },
                "400": {"$ref": "#/components/responses/E400"},
                "500": {"$ref": "#/components/responses/E500"},
                "503": {"$ref": "#/components/responses/E503"},
            },
        },
    }
    paths["/locks/acquire"] = {
        "post": _operation(
            "acquireLock",
            "Acquire a lock",
            "Takes the lock on `resourceId` for `executionId` until `now + ttl` → **201**. "
            "Re-entrant: the same execution acquires again (and renews). A lock whose "
            "`expiresAt` has passed is taken over at once. Held by another execution → "
            "**403** 40305.",
            {201: "Acquired: the lock."},
            (400, "403Lock", 413, 500, 503),
            schema="Lock",
            body="AcquireLockBody",
            tag="locks",
        )
    }
    paths["/locks/release"] = {
        "post": _operation(
            "releaseLock",
            "Release a lock",
            "Releases the lock on `resourceId` held by `executionId` → **204**; **404** "
            "40402 when that execution does not hold it.",
            {204: "Released (no body)."},
            (400, "404Lock", 413, 500, 503),
            body="ReleaseLockBody",
            tag="locks",
        )
    }
    paths["/locks/heartbeat"] = {
        "post": _operation(
            "heartbeatLocks",
            "Extend the locks of a process",
            "Every lock of `processId` expires at `now + its ttl`.",
            {200: "How many locks were extended."},
            (400, 413, 500, 503),
            schema="LocksAffected",
            body="ProcessBody",
            tag="locks",
        )
    }
    return paths


_FIRING_TEXT: Final = (
    "When a schedule's "
    "`nextRunTime` passes, the server creates the promise of that run, exactly once: its id "
    "is the `promiseId` template filled in (`{{.id}}`, `{{.timestamp}}` = the run time in "
    "ms, `{{.date}}` = its UTC date), `timeout = run time + promiseTimeout`, `param = "
    "promiseParam`, tags = `promiseTags` + `resonate:schedule = <schedule id>` + "
    '`resonate:invocation = "true"`; a `resonate:invoke` tag among them starts an invoke '
    "task for the run, as for any promise. The same transaction sets `lastRunTime` to the "
    "run time and `nextRunTime` to the next cron time after it, so a run fires exactly once "
    "even across crashes. Runs missed while the server was down are caught up one at a "
    "time, oldest first, each once (a run already past its promise's timeout creates that "
    "promise timed out). A generated id that already exists does not wedge the schedule: "
    "that run is skipped (the existing promise is left untouched) and the schedule "
    "advances. Deleting a schedule stops its runs; the promises it created stay."
)
_SCHEDULES_TEXT: Final = "Durable cron schedules that create promises (API.md 4). " + _FIRING_TEXT


def _schedule_paths() -> dict[str, Any]:
    return {
        "/schedules": {
            "post": _operation(
                "createSchedule",
                "Create a schedule",
                "Creates a schedule → **201**; its `nextRunTime` is the first cron time "
                "after now. If the id exists the request is deduplicated → **200** with the "
                "stored schedule when the idempotency keys match, else **409** 40901. "
                f"{_IDEMPOTENCY} Only the key is compared, not the other members. A bad "
                "cron expression → **400** naming `$.cron` (5 fields, an optional 6th for "
                "seconds, or an `@hourly`-style shortcut; UTC); a malformed "
                "`resonate:invoke` receiver in `promiseTags` → **400**. " + _FIRING_TEXT,
                {201: "Created.", 200: "Deduplicated: the stored schedule."},
                (400, "409Schedule", 413, 500, 503),
                schema="Schedule",
                params=("IdempotencyKey",),
                body="CreateScheduleBody",
                tag="schedules",
            ),
            "get": _operation(
                "searchSchedules",
                "Search schedules",
                "Schedules matching every given filter, newest first, as promise search: "
                "`id` pattern with `*`, `tags[k]=v` pairs, `limit` (1..1000, else 400) and "
                "a `cursor` that carries the whole query (the other filters are then "
                "ignored; a cursor of a promise search is answered 400).",
                {200: "One page of results."},
                (400, 500, 503),
                schema="SchedulePage",
                params=("SearchId", "SearchTags", "SearchLimit", "Cursor"),
                tag="schedules",
            ),
        },
        "/schedules/{id}": {
            "parameters": [_param("ScheduleId")],
            "get": _operation(
                "getSchedule",
                "Read a schedule",
                "The schedule, with `lastRunTime` / `nextRunTime` as of its last run → "
                "**200**; **404** 40401 when there is none.",
                {200: "The schedule."},
                ("404Schedule", 500, 503),
                schema="Schedule",
                tag="schedules",
            ),
            "delete": _operation(
                "deleteSchedule",
                "Delete a schedule",
                "Deletes the schedule → **204**: it fires no more runs; the promises it "
                "already created stay. **404** 40401 when there is none.",
                {204: "Deleted (no body)."},
                ("404Schedule", 500, 503),
                tag="schedules",
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
        "TaskId": {
            "name": "Task-Id",
            "in": "header",
            "required": False,
            "description": "Fencing: id of the task the caller holds. Give it together with "
            "`Task-Counter`; the write then happens only while that task is CLAIMED with "
            "that counter and an unexpired lease (else 412).",
            "schema": {"type": "string", "minLength": 1},
        },
        "TaskCounter": {
            "name": "Task-Counter",
            "in": "header",
            "required": False,
            "description": "Fencing: the counter of the task named by `Task-Id`, as received "
            "with the task. A non-negative integer; anything else is answered 400.",
            "schema": {"type": "integer", "minimum": 0},
        },
        "TaskPath": {
            "name": "rest",
            "in": "path",
            "required": True,
            "description": "`<task id>/<counter>`: the task id may itself contain `/` (the "
            "route is a catch-all and the counter is the last segment), so "
            "`/tasks/claim/__invoke:a/b/1` addresses task `__invoke:a/b` with counter 1. "
            "These are the links of a message's `href`. Anything else is answered 400.",
            "schema": {"type": "string", "pattern": "^.+/[0-9]+$"},
            "examples": {"invoke": {"value": "__invoke:job/1/1"}},
        },
        "PollGroup": {
            "name": "group",
            "in": "path",
            "required": True,
            "description": "Worker group: the `<group>` of `poll://any@<group>` receivers.",
            "schema": {"type": "string", "minLength": 1},
        },
        "PollId": {
            "name": "id",
            "in": "path",
            "required": True,
            "description": "Id of this worker within its group (the `<id>` of "
            "`poll://uni@<group>/<id>`); it may contain `/`. One stream per (group, id): a "
            "new connection replaces the old one, which the server closes. Empty → 400.",
            "schema": {"type": "string"},
        },
        "ScheduleId": {
            "name": "id",
            "in": "path",
            "required": True,
            "description": "Schedule id. It may contain `/` (the route is a catch-all: "
            "`/schedules/a/b` addresses the schedule `a/b`).",
            "schema": {"type": "string"},
        },
        "RequestId": {
            "name": "Request-Id",
            "in": "header",
            "required": False,
            "description": "Client-chosen request id (also accepted as `X-Request-Id`), "
            "written in the server's access log and echoed in the `X-Request-Id` response "
            "header; the server makes one up when none is given.",
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
            "exactly (extra tags on a promise or schedule are fine).",
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
            "description": "Opaque cursor from a previous page of the same kind of search "
            "(a promise cursor on `/schedules`, or the reverse, is answered 400); it carries "
            "the whole query.",
            "schema": {"type": "string"},
        },
    }


_DESCRIPTION: Final = """\
Bodies are JSON; times are integers, Unix epoch milliseconds. Every non-2xx response \
(including unknown routes, 404, and wrong methods, 405) has an `Error` body.

**Tasks.** A task is a unit of work addressed to a receiver (`recv`): an *invoke* task \
when a promise is created with tag `resonate:invoke` (or by `POST /promises/task`), a \
*resume* task when a promise with a callback completes, a *notify* task when a promise \
with a subscription completes. Its life cycle:

- `INIT` → `ENQUEUED`: the server sends the message (worker stream or HTTP POST); it must \
be claimed within a time to claim (60 s by default).
- `ENQUEUED` → `CLAIMED`: a worker claims it with the current `counter`; it holds a lease \
of `ttl` ms, extended by heartbeats.
- `CLAIMED` → `COMPLETED`: the worker completes it (completing the root promise also \
completes its invoke and resume tasks). Drop gives it back (`INIT`, `counter + 1`).
- `TIMEDOUT`: an unfinished task once `now >= timeout`.
- Lease expiry: an `ENQUEUED` or `CLAIMED` task whose time to claim or lease runs out \
goes back to `INIT` with `counter + 1` and is sent again, so work survives a crashed \
worker.

The `counter` is a fencing token: every hand-over increments it, so a worker that lost \
its lease can no longer claim or complete the task (403 40308), and its promise writes \
carrying `Task-Id` + `Task-Counter` are refused (412 41200) without effect. At most one \
task per root promise is ENQUEUED or CLAIMED at a time."""


#: Routes that never ask for credentials (docs/auth.md); ``/metrics`` by default too.
_PUBLIC: Final = frozenset(
    {"/ping", "/healthz", "/readyz", "/openapi.json", "/ui", "/ui/", "/ui/static/{name}"}
)


def _with_auth(paths: dict[str, Any]) -> dict[str, Any]:
    """Add the 401 answer to every operation that needs credentials when auth is on, and
    mark the public ones as such (``security: []``)."""
    for path, item in paths.items():
        for method, op in item.items():
            if method == "parameters":
                continue
            if path in _PUBLIC:
                op["security"] = []
            else:
                op["responses"].setdefault("401", {"$ref": "#/components/responses/E401"})
    return paths


def _ui_operation(
    op_id: str, summary: str, description: str, schema: dict[str, Any], params: list[Any]
) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "summary": summary,
        "description": description,
        "tags": ["ops"],
        "parameters": [*params, _param("RequestId")],
        "responses": {
            "200": {"description": summary, "content": {JSON: {"schema": schema}}},
            "400": {"$ref": "#/components/responses/E400"},
            "403": {"$ref": "#/components/responses/E403Scope"},
            "500": {"$ref": "#/components/responses/E500"},
            "503": {"$ref": "#/components/responses/E503"},
        },
    }


def _page(name: str, description: str) -> dict[str, Any]:
    return {
        "operationId": name,
        "summary": description,
        "description": description + " Public: the files hold no data.",
        "tags": ["ops"],
        "parameters": [_param("RequestId")],
        "responses": {
            "200": {"description": description, "content": {"text/html": {"schema": {}}}},
            "500": {"$ref": "#/components/responses/E500"},
        },
    }


def _operator_paths() -> dict[str, Any]:
    """``/metrics`` and the dashboard (docs/metrics.md, docs/dashboard.md)."""
    now = {"type": "integer", "description": "Server clock, Unix epoch milliseconds."}
    return {
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "description": "Prometheus text exposition (docs/metrics.md). Public unless "
                "the server runs with `--no-metrics-public`.",
                "tags": ["ops"],
                "parameters": [_param("RequestId")],
                "responses": {
                    "200": {
                        "description": "Metrics in the Prometheus text format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "500": {"$ref": "#/components/responses/E500"},
                },
            }
        },
        "/ui": {"get": _page("dashboard", "The dashboard page.")},
        "/ui/": {"get": _page("dashboardSlash", "The dashboard page (same as `/ui`).")},
        "/ui/static/{name}": {
            "get": {
                **_page("dashboardFile", "A file of the dashboard (`app.js`, `style.css`)."),
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "description": "File name.",
                        "schema": {"type": "string", "enum": ["app.js", "style.css"]},
                    },
                    _param("RequestId"),
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    "404": {"$ref": "#/components/responses/E404File"},
                    "500": {"$ref": "#/components/responses/E500"},
                },
            }
        },
        "/ui/api/overview": {
            "get": _ui_operation(
                "uiOverview",
                "Counts for the dashboard header",
                "Pending promises, unfinished tasks by state, long-poll waiters and worker "
                "streams (indexed counts).",
                _ref("UiOverview"),
                [],
            )
        },
        "/ui/api/tasks": {
            "get": _ui_operation(
                "uiTasks",
                "Tasks and their leases",
                "Without `root`: unfinished tasks (INIT, ENQUEUED, CLAIMED), earliest timeout "
                "first. With `root`: every task of that root promise, oldest first.",
                {
                    "type": "object",
                    "required": ["tasks", "now"],
                    "properties": {
                        "tasks": {"type": "array", "items": _ref("UiTask")},
                        "now": now,
                    },
                },
                [
                    {
                        "name": "root",
                        "in": "query",
                        "required": False,
                        "description": "Root promise id.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "At most this many tasks (1 to 500).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                ],
            )
        },
        "/ui/api/callbacks/{id}": {
            "get": _ui_operation(
                "uiCallbacks",
                "Callbacks of a promise",
                "The callbacks and subscriptions registered on a promise, oldest first.",
                {
                    "type": "object",
                    "required": ["callbacks"],
                    "properties": {"callbacks": {"type": "array", "items": _ref("Callback")}},
                },
                [_param("PromiseId")],
            )
        },
    }


def _operator_components() -> dict[str, Any]:
    return {
        "UiOverview": {
            "type": "object",
            "required": ["pending", "tasks", "waiters", "streams", "now", "auth", "prefix"],
            "properties": {
                "pending": {"type": "integer"},
                "tasks": {"type": "object", "additionalProperties": {"type": "integer"}},
                "waiters": {"type": "integer"},
                "streams": {"type": "integer"},
                "now": {"type": "integer"},
                "auth": {"enum": ["none", "basic", "token"]},
                "prefix": {"type": ["string", "null"]},
            },
        },
        "UiTask": {
            "allOf": [_ref("Task")],
            "description": "A task with its lease: `processId`, `ttl`, `expiresAt` (lease "
            "or claim deadline), `readyAt`, `attempt`, `completedOn` and `recv`.",
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
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "promises", "description": "Durable promises (API.md 1)."},
            {
                "name": "callbacks",
                "description": "Callbacks (resume a root promise) and subscriptions "
                "(notify a receiver) when a promise completes (API.md 2).",
            },
            {
                "name": "tasks",
                "description": "Tasks and worker streams (API.md 3); see the life cycle "
                "in the document's description.",
            },
            {"name": "schedules", "description": _SCHEDULES_TEXT},
            {"name": "locks", "description": "Distributed locks with leases (API.md 5)."},
            {"name": "ops", "description": "Operational endpoints."},
            {"name": "sdk", "description": "Batched writes, claims and results for the SDK."},
        ],
        "paths": _with_auth({**_paths(), **_operator_paths(), **sdk_paths()}),
        "security": [{}, {"basicAuth": []}, {"bearerAuth": []}],
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A static token of `--auth token`; a token scoped to an "
                    "id prefix may only name ids that start with it (else 403, 40300).",
                },
            },
            "schemas": {**_components(), **_operator_components(), **sdk_components()},
            "parameters": _parameters(),
            "responses": {
                f"E{name}": {"description": text, "content": _json_content("Error")}
                for name, text in _ERROR_TEXT.items()
            },
        },
    }
