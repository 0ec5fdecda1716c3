"""Records shared by the engine, the stores, the server and the clients.

One definition serves the wire and storage: a ``Promise`` encodes to exactly the JSON of
API.md 1.1 (camelCase, empty members omitted) and decodes from it on the client side.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

TIMER_TAG: Final = "resonate:timeout"
MAX_TIMEOUT: Final = 2**63 - 1
#: Longest lease (``ttl``, ms): ``now + ttl`` must fit a signed 64-bit integer in storage.
MAX_TTL: Final = 2**62


class State(enum.StrEnum):
    PENDING = "PENDING"
    RESOLVED = "RESOLVED"
    REJECTED = "REJECTED"
    REJECTED_CANCELED = "REJECTED_CANCELED"
    REJECTED_TIMEDOUT = "REJECTED_TIMEDOUT"

    @property
    def completed(self) -> bool:
        return self is not State.PENDING


#: Target states a client may ask for when completing a promise.
COMPLETIONS: Final = (State.RESOLVED, State.REJECTED, State.REJECTED_CANCELED)


class Value(msgspec.Struct, frozen=True, omit_defaults=True):
    """A param or value: opaque bytes (base64 on the wire) plus string headers."""

    headers: dict[str, str] | None = None
    data: bytes | None = None

    def normalized(self) -> Value:
        """Drop empty members so that ``{}``, ``{"headers": {}}`` and ``null`` store alike."""
        if self.headers or self.data:
            return Value(headers=self.headers or None, data=self.data or None)
        return EMPTY


EMPTY: Final = Value()


class Promise(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A durable promise as stored and as answered (API.md 1.1), fields in wire order."""

    id: str
    state: State
    # default_factory (not a default) so that param and value are always encoded, as ``{}``
    # when empty, while the optional members below are omitted when absent.
    param: Value = msgspec.field(default_factory=Value)
    value: Value = msgspec.field(default_factory=Value)
    timeout: int
    idempotency_key_for_create: str | None = None
    idempotency_key_for_complete: str | None = None
    tags: dict[str, str] | None = None
    created_on: int
    completed_on: int | None = None

    @property
    def is_timer(self) -> bool:
        """A timer (durable sleep) resolves rather than rejects at its deadline."""
        return self.tags is not None and self.tags.get(TIMER_TAG) == "true"


class SearchPage(msgspec.Struct, frozen=True):
    """One page of a promise search; ``cursor`` is ``None`` on the last page."""

    promises: list[Promise]
    cursor: str | None


# -- the task framework (API.md 2, 3, 5) ---------------------------------------------------


class TaskState(enum.StrEnum):
    INIT = "INIT"
    ENQUEUED = "ENQUEUED"
    CLAIMED = "CLAIMED"
    COMPLETED = "COMPLETED"
    TIMEDOUT = "TIMEDOUT"

    @property
    def active(self) -> bool:
        """Sent or held by a worker: at most one such task per root promise."""
        return self in (TaskState.ENQUEUED, TaskState.CLAIMED)

    @property
    def final(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.TIMEDOUT)


class TaskKind(enum.StrEnum):
    INVOKE = "invoke"
    RESUME = "resume"
    NOTIFY = "notify"


class Recv(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where a task is delivered, normalized (API.md 2).

    ``poll``: the worker stream of ``group`` — ``mode`` ``any`` prefers stream ``id`` when
    connected, else any stream of the group; ``uni`` only stream ``id``.
    ``http``: an HTTP(S) POST of the message to ``url`` with extra ``headers``.
    """

    type: str  # "poll" | "http"
    group: str | None = None
    id: str | None = None
    mode: str = "any"
    url: str | None = None
    headers: dict[str, str] | None = None

    @property
    def key(self) -> str:
        """What stream connections and push targets are indexed by."""
        return f"poll:{self.group}" if self.type == "poll" else f"http:{self.url}"

    def to_wire(self) -> dict[str, object]:
        if self.type == "poll":
            data: dict[str, object] = {"group": self.group}
            if self.id is not None:
                data["id"] = self.id
            if self.mode != "any":
                data["mode"] = self.mode
            return {"type": "poll", "data": data}
        data = {"url": self.url}
        if self.headers:
            data["headers"] = self.headers
        return {"type": "http", "data": data}


class Callback(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A resume callback or a notify subscription, stored with its promise."""

    id: str
    promise_id: str
    root_promise_id: str | None = None
    recv: Recv
    timeout: int
    created_on: int

    @property
    def kind(self) -> TaskKind:
        return TaskKind.NOTIFY if self.id.startswith("__notify:") else TaskKind.RESUME


class Task(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A unit of work addressed to a receiver, fenced by ``counter`` (API.md 3).

    ``expires_at`` is the lease (CLAIMED) or the time-to-claim (ENQUEUED) deadline; ``ready_at``
    is the earliest time an INIT task may be sent (``resonate:delay``, push backoff);
    ``attempt`` counts failed sends since the task last became INIT.
    """

    id: str
    type: TaskKind
    state: TaskState
    recv: Recv
    root_promise_id: str
    leaf_promise_id: str | None = None
    counter: int = 1
    attempt: int = 0
    process_id: str | None = None
    ttl: int | None = None
    timeout: int
    expires_at: int | None = None
    ready_at: int = 0
    created_on: int
    completed_on: int | None = None

    def to_wire(self) -> dict[str, object]:
        """The task object of the wire (API.md 3), plus troth's extra fields."""
        out: dict[str, object] = {
            "id": self.id,
            "type": self.type.value,
            "state": self.state.value,
            "counter": self.counter,
            "timeout": self.timeout,
            "rootPromiseId": self.root_promise_id,
            "createdOn": self.created_on,
        }
        if self.leaf_promise_id is not None:
            out["leafPromiseId"] = self.leaf_promise_id
        if self.process_id is not None:
            out["processId"] = self.process_id
        if self.ttl is not None:
            out["ttl"] = self.ttl
        if self.expires_at is not None:
            out["expiresAt"] = self.expires_at
        if self.completed_on is not None:
            out["completedOn"] = self.completed_on
        return out


class Lock(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    resource_id: str
    execution_id: str
    process_id: str
    ttl: int
    expires_at: int


class Schedule(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A durable cron schedule that creates promises (API.md 4)."""

    id: str
    description: str | None = None
    cron: str
    tags: dict[str, str] | None = None
    promise_id: str
    promise_timeout: int
    promise_param: Value = msgspec.field(default_factory=Value)
    promise_tags: dict[str, str] | None = None
    last_run_time: int | None = None
    next_run_time: int
    idempotency_key: str | None = None
    created_on: int
