"""The Durable Promise rules as pure functions (API.md 1.3 and 1.4).

Contract: every function here maps (stored record, request, now) to a ``Decision`` and does
no I/O. The engine applies a decision inside one store transaction: it persists
``decision.write`` (when not ``None``) and answers ``decision.status``. A decision may carry a
write *and* an error status: a complete on an expired promise stores the timeout and still
answers 403 — the timeout happened whether or not the caller liked the answer.

Invariants (tested exhaustively in ``tests/unit/test_rules.py``):
- a completed promise never changes again;
- a client never observes ``PENDING`` at or after the deadline;
- two absent idempotency keys never match.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from troth.model import EMPTY, Promise, State, Value

CREATED = 201
DEDUPLICATED = 200

#: Error code of a refused complete, by the state the promise is already in.
ALREADY_CODE: dict[State, int] = {
    State.RESOLVED: 40301,
    State.REJECTED: 40302,
    State.REJECTED_CANCELED: 40303,
    State.REJECTED_TIMEDOUT: 40304,
}
NOT_FOUND_CODE = 40400
EXISTS_CODE = 40900


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine must store and answer for one request."""

    status: int
    promise: Promise | None
    write: Promise | None = None
    code: int = 0

    @property
    def ok(self) -> bool:
        return self.status < 400


def match(stored: str | None, given: str | None) -> bool:
    """Idempotency keys match only when both are present and equal."""
    return stored is not None and given is not None and stored == given


def expire(promise: Promise, now: int) -> Promise | None:
    """Return the timed-out form of a pending promise past its deadline, else ``None``.

    A timer (tag ``resonate:timeout = "true"``) resolves; anything else is rejected as timed
    out. Either way the value is empty, there is no completion key, and ``completedOn`` is
    the deadline itself, not the moment somebody noticed.
    """
    if promise.state is not State.PENDING or now < promise.timeout:
        return None
    return msgspec.structs.replace(
        promise,
        state=State.RESOLVED if promise.is_timer else State.REJECTED_TIMEDOUT,
        value=EMPTY,
        idempotency_key_for_complete=None,
        completed_on=promise.timeout,
    )


def current(promise: Promise, now: int) -> Promise:
    """The promise as a client may observe it at ``now`` (timed out when due)."""
    return expire(promise, now) or promise


def decide_create(stored: Promise | None, new: Promise, strict: bool, now: int) -> Decision:
    """Create ``new`` (already stamped with ``createdOn = now`` and its create key)."""
    if stored is None:
        record = current(new, now)
        return Decision(CREATED, record, write=record)
    expired = expire(stored, now)
    record = expired or stored
    if (not strict or record.state is State.PENDING) and match(
        record.idempotency_key_for_create, new.idempotency_key_for_create
    ):
        return Decision(DEDUPLICATED, record, write=expired)
    return Decision(409, record, write=expired, code=EXISTS_CODE)


def decide_complete(
    stored: Promise | None,
    target: State,
    value: Value,
    key: str | None,
    strict: bool,
    now: int,
) -> Decision:
    """Complete ``stored`` to ``target`` (RESOLVED, REJECTED or REJECTED_CANCELED)."""
    if stored is None:
        return Decision(404, None, code=NOT_FOUND_CODE)
    if stored.state is State.PENDING:
        expired = expire(stored, now)
        if expired is None:
            done = msgspec.structs.replace(
                stored,
                state=target,
                value=value,
                idempotency_key_for_complete=key,
                completed_on=now,
            )
            return Decision(CREATED, done, write=done)
        if expired.state is State.RESOLVED or strict:
            return Decision(403, expired, write=expired, code=ALREADY_CODE[expired.state])
        return Decision(DEDUPLICATED, expired, write=expired)
    state = stored.state
    if (
        not (strict and state is not target) and match(stored.idempotency_key_for_complete, key)
    ) or (not strict and state is State.REJECTED_TIMEDOUT):
        return Decision(DEDUPLICATED, stored)
    return Decision(403, stored, code=ALREADY_CODE[state])
