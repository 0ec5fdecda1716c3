"""The checker's model of one durable promise, written from API.md 1.3-1.4 (not rules.py).

This is a second, independent transcription of the specification: it does not import
``troth.rules`` (or anything else from troth), so a bug shared by the server and its rules
module is not hidden by a checker that reuses them. ``tests/reliability`` cross-checks this
model against ``troth.rules`` on every combination of the seed table, so the two
transcriptions are known to agree.

A step takes the model state of one id (``None`` when absent) and one operation with its
observed response, and returns every state the id may be in afterwards (empty: the
operation cannot be linearized here). Nondeterminism comes from two places:

- lazy timeouts: the server judges expiry at an instant inside the operation's interval, so
  a pending promise whose deadline falls inside that interval may be seen either way;
- values the client cannot predict (``createdOn``, ``completedOn``): the first response that
  shows one binds it, and every later observation must agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

PENDING = "PENDING"
RESOLVED = "RESOLVED"
REJECTED = "REJECTED"
CANCELED = "REJECTED_CANCELED"
TIMEDOUT = "REJECTED_TIMEDOUT"
TARGETS = (RESOLVED, REJECTED, CANCELED)
ALREADY = {RESOLVED: 40301, REJECTED: 40302, CANCELED: 40303, TIMEDOUT: 40304}
TIMER_TAG = "resonate:timeout"

Kind = Literal["create", "complete", "get", "search", "search_has", "search_lacks"]


@dataclass(frozen=True, slots=True)
class PState:
    """What the model knows of one stored promise."""

    state: str
    param: str  # canonical JSON of the value, "" when empty
    value: str
    timeout: int
    ikc: str | None
    iku: str | None
    tags: tuple[tuple[str, str], ...]
    created_on: int | None  # None: not yet observed
    completed_on: int | None

    @property
    def timer(self) -> bool:
        return dict(self.tags).get(TIMER_TAG) == "true"


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a history, as one client saw it.

    ``ret`` is ``math.inf`` when the outcome is unknown (timeout, connection lost, 5xx): the
    operation may have taken effect at any point after ``inv``, or never.
    """

    index: int
    client: int
    kind: Kind
    id: str
    inv: float  # client wall clock, ms since the epoch
    ret: float
    args: dict[str, Any]
    status: int | None
    body: Any

    @property
    def known(self) -> bool:
        return self.ret != math.inf


def match(a: str | None, b: str | None) -> bool:
    """Two keys match only when both are present and equal (API.md 1.3)."""
    return a is not None and b is not None and a == b


def canon_value(v: Any) -> str:
    """A param/value in one canonical form: empty members dropped, keys sorted."""
    if not isinstance(v, dict):
        return ""
    headers = v.get("headers") or {}
    data = v.get("data") or ""
    if not headers and not data:
        return ""
    parts = []
    if data:
        parts.append(f"data={data}")
    if headers:
        parts.append("headers=" + ",".join(f"{k}:{headers[k]}" for k in sorted(headers)))
    return ";".join(parts)


def timed_out(p: PState) -> PState:
    """The timed-out form of a pending promise (API.md 1.4)."""
    return replace(
        p,
        state=RESOLVED if p.timer else TIMEDOUT,
        value="",
        iku=None,
        completed_on=p.timeout,
    )


def views(p: PState, op: Op, slack: float) -> list[PState]:
    """The forms ``p`` may have at the instant the server applied ``op``.

    The server reads its clock (integer ms) at some instant in ``[inv, ret]``: a pending
    promise is seen expired if that instant may be at or past the deadline, and pending if it
    may be before it; both when the deadline falls inside the interval.
    """
    if p.state != PENDING:
        return [p]
    out = []
    if op.ret + slack >= p.timeout:
        out.append(timed_out(p))
    if math.floor(op.inv) - slack < p.timeout:
        out.append(p)
    return out


def _bind(expected: PState, observed: Any, op: Op, slack: float, fresh: str) -> PState | None:
    """Compare an observed promise with the expected one; return it with unknowns bound.

    ``fresh`` names a time field this very operation set (``createdOn`` for a 201 create,
    ``completedOn`` for a 201 complete): it must fall inside the operation's interval.
    """
    if not isinstance(observed, dict):
        return None
    tags = observed.get("tags") or {}
    if (
        observed.get("id") != op.id
        or observed.get("state") != expected.state
        or canon_value(observed.get("param")) != expected.param
        or canon_value(observed.get("value")) != expected.value
        or observed.get("timeout") != expected.timeout
        or observed.get("idempotencyKeyForCreate") != expected.ikc
        or observed.get("idempotencyKeyForComplete") != expected.iku
        or tuple(sorted(tags.items())) != expected.tags
    ):
        return None
    created = observed.get("createdOn")
    completed = observed.get("completedOn")
    if not isinstance(created, int):
        return None
    if expected.created_on is not None and created != expected.created_on:
        return None
    if expected.state == PENDING:
        if completed is not None:
            return None
    elif not isinstance(completed, int) or (
        expected.completed_on is not None and completed != expected.completed_on
    ):
        return None
    for name, got in (("createdOn", created), ("completedOn", completed)):
        # The server's clock was read inside the request.
        if name == fresh and (
            got is None or not math.floor(op.inv) - slack <= got <= op.ret + slack
        ):
            return None
    return replace(expected, created_on=created, completed_on=completed)


def _error_code(body: Any) -> int | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return code if isinstance(code, int) else None
    return None


def _new(op: Op) -> PState:
    a = op.args
    return PState(
        state=PENDING,
        param=canon_value(a.get("param")),
        value="",
        timeout=int(a["timeout"]),
        ikc=a.get("ikey"),
        iku=None,
        tags=tuple(sorted((a.get("tags") or {}).items())),
        created_on=None,
        completed_on=None,
    )


def _create(p: PState | None, op: Op, slack: float) -> list[PState | None]:
    a = op.args
    strict = bool(a.get("strict"))
    if p is None:
        fresh = _new(op)
        out: list[PState | None] = []
        for v in views(fresh, op, slack):
            if not op.known:
                out.append(v)
            elif op.status == 201:
                bound = _bind(v, op.body, op, slack, "createdOn")
                if bound is not None:
                    out.append(bound)
        return out
    out = []
    for v in views(p, op, slack):
        ok = (not strict or v.state == PENDING) and match(v.ikc, a.get("ikey"))
        if not op.known:
            out.append(v)
        elif ok and op.status == 200:
            bound = _bind(v, op.body, op, slack, "")
            if bound is not None:
                out.append(bound)
        elif not ok and op.status == 409 and _error_code(op.body) == 40900:
            out.append(v)
    return out


def _complete(p: PState | None, op: Op, slack: float) -> list[PState | None]:
    a = op.args
    target, iku, strict = a["state"], a.get("ikey"), bool(a.get("strict"))
    if p is None:
        if not op.known or (op.status == 404 and _error_code(op.body) == 40400):
            return [None]
        return []
    out: list[PState | None] = []
    for v in views(p, op, slack):
        if p.state == PENDING and v.state == PENDING:
            # Pending before its deadline: this request completes it (keys play no part).
            done = replace(
                v,
                state=target,
                value=canon_value(a.get("value")),
                iku=iku,
                completed_on=None,
            )
            if not op.known:
                out.append(done)
            elif op.status == 201:
                bound = _bind(done, op.body, op, slack, "completedOn")
                if bound is not None:
                    out.append(bound)
            continue
        if p.state == PENDING:  # timed out by this very request
            ok = not (v.state == RESOLVED or strict)
        else:
            s = v.state
            ok = (not (strict and s != target) and match(v.iku, iku)) or (
                not strict and s == TIMEDOUT
            )
        if not op.known:
            out.append(v)
        elif ok and op.status == 200:
            bound = _bind(v, op.body, op, slack, "")
            if bound is not None:
                out.append(bound)
        elif not ok and op.status == 403 and _error_code(op.body) == ALREADY[v.state]:
            out.append(v)
    return out


def _read(p: PState | None, op: Op, slack: float) -> list[PState | None]:
    """A get (or a long poll that answered): the promise as it was at some instant."""
    if p is None:
        if not op.known or (op.status == 404 and _error_code(op.body) == 40400):
            return [None]
        return []
    out: list[PState | None] = []
    for v in views(p, op, slack):
        if not op.known:
            out.append(v)
        elif op.status == 200:
            bound = _bind(v, op.body, op, slack, "")
            if bound is not None:
                out.append(bound)
    return out


SEARCH_CLASSES = {
    "pending": (PENDING,),
    "resolved": (RESOLVED,),
    "rejected": (REJECTED, CANCELED, TIMEDOUT),
}


def _search_has(p: PState | None, op: Op, slack: float) -> list[PState | None]:
    """A search returned this promise: it existed, in exactly the returned form."""
    if p is None:
        return []
    out: list[PState | None] = []
    for v in views(p, op, slack):
        bound = _bind(v, op.body, op, slack, "")
        if bound is not None:
            out.append(bound)
    return out


def _search_lacks(p: PState | None, op: Op, slack: float) -> list[PState | None]:
    """A search whose query covers this id did not return it: absent or filtered out."""
    if p is None:
        return [None]
    wanted = op.args.get("state")
    if wanted is None:
        return []
    return [v for v in views(p, op, slack) if v.state not in SEARCH_CLASSES[wanted]]


_STEPS = {
    "create": _create,
    "complete": _complete,
    "get": _read,
    "search_has": _search_has,
    "search_lacks": _search_lacks,
}


def step(p: PState | None, op: Op, slack: float = 1.0) -> list[PState | None]:
    """Every state the id may be in after ``op`` (empty: ``op`` cannot happen now)."""
    return _STEPS[op.kind](p, op, slack)
