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
