"""Request bodies of the task framework routes (API.md 1.2, 2, 3, 5).

``recv`` is decoded as any JSON value and normalized by ``troth.recv.parse_recv`` so that
its errors name the field. Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from troth.errors import ValidationError
from troth.model import Value
from troth.server.wire import Timeout, decode_json

Ms = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Counter = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class PromiseSpec(msgspec.Struct, frozen=True):
    id: str
    timeout: Timeout
    param: Value | None = None
    tags: dict[str, str] | None = None


class TaskSpec(msgspec.Struct, frozen=True, rename="camel"):
    process_id: str
    ttl: Ms


class CreatePromiseAndTask(msgspec.Struct, frozen=True):
    promise: PromiseSpec
    task: TaskSpec


class CallbackBody(msgspec.Struct, frozen=True, rename="camel"):
    root_promise_id: str
    timeout: Timeout
    recv: Any = "default"


class SubscribeBody(msgspec.Struct, frozen=True):
    id: str
    timeout: Timeout
    recv: Any = "default"


class LegacyCallbackBody(msgspec.Struct, frozen=True, rename="camel"):
    promise_id: str
    root_promise_id: str
    timeout: Timeout
    recv: Any = "default"
    id: str | None = None


class LegacySubscriptionBody(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    promise_id: str
    timeout: Timeout
    recv: Any = "default"


class ClaimBody(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    counter: Counter
    process_id: str
    ttl: Ms


class TaskRefBody(msgspec.Struct, frozen=True):
    id: str
    counter: Counter


class ProcessBody(msgspec.Struct, frozen=True, rename="camel"):
    process_id: str


class AcquireLockBody(msgspec.Struct, frozen=True, rename="camel"):
    resource_id: str
    execution_id: str
    process_id: str
    ttl: Ms


class ReleaseLockBody(msgspec.Struct, frozen=True, rename="camel"):
    resource_id: str
    execution_id: str


_DECODERS: Final[dict[type, msgspec.json.Decoder[Any]]] = {}


def decode(cls: type[msgspec.Struct], body: bytes) -> Any:
    """Decode ``body`` as ``cls`` with 400s that name the field."""
    decoder = _DECODERS.get(cls)
    if decoder is None:
        decoder = _DECODERS[cls] = msgspec.json.Decoder(cls)
    return decode_json(decoder, body)


def parse_fence(task_id: str | None, counter: str | None) -> tuple[str, int] | None:
    """``Task-Id`` + ``Task-Counter`` headers: both or neither."""
    if task_id is None and counter is None:
        return None
    if task_id is None or counter is None or not task_id:
        raise ValidationError(
            "fencing needs both Task-Id and Task-Counter headers - at header Task-Id",
            details=[{"field": "Task-Id"}],
        )
    value = int(counter) if counter.isascii() and counter.isdigit() else -1
    if value < 0:
        raise ValidationError(
            f"Task-Counter must be a non-negative integer, got {counter!r} - at header "
            "Task-Counter",
            details=[{"field": "Task-Counter"}],
        )
    return task_id, value
