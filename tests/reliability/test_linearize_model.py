"""The checker's model and search, on the seed table and on synthetic histories."""

from __future__ import annotations

import itertools
import math
from typing import Any

import msgspec
import pytest
from tools.linearize.checker import check_history, check_key
from tools.linearize.model import TARGETS, Op, PState, canon_value, step

from troth import rules
from troth.model import EMPTY, Promise, State, Value

NOW = 1_000_000
KEYS = (None, "a", "b")


def _pstate(p: Promise | None) -> PState | None:
    if p is None:
        return None
    wire = msgspec.to_builtins(p)
    return PState(
        state=p.state.value,
        param=canon_value(wire.get("param")),
        value=canon_value(wire.get("value")),
        timeout=p.timeout,
        ikc=p.idempotency_key_for_create,
        iku=p.idempotency_key_for_complete,
        tags=tuple(sorted((p.tags or {}).items())),
        created_on=p.created_on,
        completed_on=p.completed_on,
    )


def _stored() -> list[Promise | None]:
    """Every stored form the seed table distinguishes, plus expired and timer variants."""
    out: list[Promise | None] = [None]
    for ikc, timeout, timer in itertools.product(KEYS, (NOW + 10, NOW), (False, True)):
        tags = {"resonate:timeout": "true"} if timer else None
        out.append(
            Promise(
                id="p",
                state=State.PENDING,
                timeout=timeout,
                created_on=NOW - 5,
                idempotency_key_for_create=ikc,
                tags=tags,
            )
        )
    for state, ikc, iku in itertools.product(list(State)[1:], KEYS, KEYS):
        out.append(
            Promise(
                id="p",
                state=state,
                timeout=NOW + 10,
                created_on=NOW - 5,
                completed_on=NOW - 1,
                idempotency_key_for_create=ikc,
                idempotency_key_for_complete=None if state is State.REJECTED_TIMEDOUT else iku,
                value=EMPTY if state is State.REJECTED_TIMEDOUT else Value(data=b"v"),
            )
        )
    return out


def _body(d: rules.Decision) -> Any:
    if d.ok:
        return msgspec.to_builtins(d.promise)
    return {"error": {"code": d.code, "message": "", "details": []}}


def _op(kind: Any, args: dict[str, Any], status: int, body: Any) -> Op:
    return Op(
        index=0, client=0, kind=kind, id="p", inv=NOW, ret=NOW, args=args, status=status, body=body
    )


def _agrees(stored: Promise | None, op_args: dict[str, Any], kind: str, d: rules.Decision) -> None:
    good = _op(kind, op_args, d.status, _body(d))
    after = step(_pstate(stored), good, slack=0)
    assert after, f"model refuses what rules.py answers: {stored} {op_args} -> {d.status}"
    expected = _pstate(d.write or stored)
    assert expected in after
    for wrong in (200, 201, 403, 404, 409):
        if wrong != d.status:
            assert not step(_pstate(stored), _op(kind, op_args, wrong, _body(d)), slack=0)


@pytest.mark.parametrize("stored", _stored(), ids=str)
def test_model_agrees_with_rules_on_every_combination(stored: Promise | None) -> None:
    """The checker's independent model and troth.rules agree on the whole seed table."""
    for ikey, strict in itertools.product(KEYS, (False, True)):
        new = Promise(
            id="p",
            state=State.PENDING,
            timeout=NOW + 10,
            created_on=NOW,
            idempotency_key_for_create=ikey,
        )
        d = rules.decide_create(stored, new, strict, NOW)
        args = {"ikey": ikey, "strict": strict, "timeout": NOW + 10, "param": None, "tags": {}}
        _agrees(stored, args, "create", d)
        for target in TARGETS:
            value = Value(data=b"w")
            d = rules.decide_complete(stored, State(target), value, ikey, strict, NOW)
            args = {"ikey": ikey, "strict": strict, "state": target, "value": {"data": "dw=="}}
            _agrees(stored, args, "complete", d)


# -- synthetic histories ---------------------------------------------------------------


def _create(i: int, client: int, inv: float, ret: float, status: int, **kw: Any) -> Op:
    body: Any = (
        {
            "id": "x",
            "state": "PENDING",
            "param": {},
            "value": {},
            "timeout": 10**12,
            "createdOn": int(inv),
            **kw,
        }
        if status < 300
        else {"error": {"code": 40900}}
    )
    args = {
        "ikey": kw.get("idempotencyKeyForCreate"),
        "strict": False,
        "timeout": 10**12,
        "param": None,
        "tags": {},
    }
    return Op(i, client, "create", "x", inv, ret, args, status, body)


def _complete(
    i: int,
    client: int,
    inv: float,
    ret: float,
    status: int,
    state: str,
    ikey: str | None = None,
    code: int = 0,
    completed: int | None = None,
) -> Op:
    if status < 300:
        body: Any = {
            "id": "x",
            "state": state,
            "param": {},
            "value": {},
            "timeout": 10**12,
            "createdOn": 100,
            "completedOn": completed or int(inv),
        }
        if ikey:
            body["idempotencyKeyForComplete"] = ikey
    else:
        body = {"error": {"code": code}}
    args = {"ikey": ikey, "strict": False, "state": state, "value": None}
    return Op(i, client, "complete", "x", inv, ret, args, status, body)


def _get(
    i: int,
    client: int,
    inv: float,
    ret: float,
    state: str | None,
    completed: int | None = None,
    ikey: str | None = None,
) -> Op:
    if state is None:
        return Op(i, client, "get", "x", inv, ret, {}, 404, {"error": {"code": 40400}})
    body = {
        "id": "x",
        "state": state,
        "param": {},
        "value": {},
        "timeout": 10**12,
        "createdOn": 100,
    }
    if completed is not None:
        body["completedOn"] = completed
    if ikey:
        body["idempotencyKeyForComplete"] = ikey
    return Op(i, client, "get", "x", inv, ret, {}, 200, body)


def test_concurrent_history_with_overlaps_is_linearizable() -> None:
    ops = [
        _create(0, 0, 100, 110, 201),
        _complete(1, 1, 120, 200, 201, "RESOLVED", completed=150),
        # overlaps the complete: may see either state
        _get(2, 2, 130, 140, "PENDING"),
        _get(3, 3, 160, 190, "RESOLVED", completed=150),
        _complete(4, 2, 170, 180, 403, "REJECTED", code=40301),
    ]
    report = check_history(ops, slack=0)
    assert report.ok, report.summary()


def test_stale_read_after_acknowledged_complete_is_caught() -> None:
    ops = [
        _create(0, 0, 100, 110, 201),
        _complete(1, 1, 120, 130, 201, "RESOLVED", completed=125),
        _get(2, 2, 140, 150, "PENDING"),  # began after the complete returned
    ]
    report = check_history(ops, slack=0)
    assert not report.ok
    assert [op.index for op in report.keys[0].stuck] == [2]
    assert "NOT LINEARIZABLE" in report.summary()


def test_two_successful_completes_are_caught() -> None:
    ops = [
        _create(0, 0, 100, 110, 201),
        _complete(1, 1, 120, 160, 201, "RESOLVED", completed=130),
        _complete(2, 2, 125, 165, 201, "REJECTED", completed=140),
    ]
    assert not check_history(ops, slack=0).ok


def test_lost_write_after_restart_is_caught() -> None:
    ops = [
        _create(0, 0, 100, 110, 201),
        _complete(1, 1, 120, 130, 201, "RESOLVED", completed=125),
        _get(2, 2, 500, 510, None),  # the promise vanished
    ]
    assert not check_history(ops, slack=0).ok


def test_unknown_outcome_may_or_may_not_have_happened() -> None:
    lost = _complete(1, 1, 120, 130, 201, "RESOLVED")
    unknown = Op(1, 1, "complete", "x", 120, math.inf, lost.args, None, None)
    took_effect = [
        _create(0, 0, 100, 110, 201),
        unknown,
        _get(2, 2, 200, 210, "RESOLVED", completed=150),
    ]
    never = [_create(0, 0, 100, 110, 201), unknown, _get(2, 2, 200, 210, "PENDING")]
    assert check_key(took_effect, slack=0).ok
    assert check_key(never, slack=0).ok


def test_timeouts_are_judged_inside_the_interval() -> None:
    args = {"ikey": None, "strict": False, "timeout": 150, "param": None, "tags": {}}
    created = Op(
        0,
        0,
        "create",
        "x",
        100,
        110,
        args,
        201,
        {"id": "x", "state": "PENDING", "param": {}, "value": {}, "timeout": 150, "createdOn": 105},
    )
    timed_out = {
        "id": "x",
        "state": "REJECTED_TIMEDOUT",
        "param": {},
        "value": {},
        "timeout": 150,
        "createdOn": 105,
        "completedOn": 150,
    }
    pending = {**timed_out, "state": "PENDING"}
    pending.pop("completedOn")
    early = Op(1, 1, "get", "x", 120, 130, {}, 200, timed_out)  # before the deadline
    assert not check_key([created, early], slack=0).ok
    spanning = Op(1, 1, "get", "x", 140, 160, {}, 200, timed_out)
    assert check_key([created, spanning], slack=0).ok
    late_pending = Op(1, 1, "get", "x", 151, 160, {}, 200, pending)
    assert not check_key([created, late_pending], slack=0).ok


def _search(i: int, inv: float, ret: float, state: str | None, found: list[Any]) -> Op:
    return Op(
        i,
        9,
        "search",
        "",
        inv,
        ret,
        {"prefix": "x", "state": state},
        200,
        {"promises": found, "cursor": None},
    )


def test_search_must_see_states_the_ids_really_had() -> None:
    base = [_create(0, 0, 100, 110, 201), _complete(1, 1, 120, 130, 201, "RESOLVED", completed=125)]
    resolved = _get(9, 0, 0, 0, "RESOLVED", completed=125).body
    pending = _get(9, 0, 0, 0, "PENDING").body
    assert check_history([*base, _search(2, 140, 150, "resolved", [resolved])], slack=0).ok
    # after the complete returned, a search still saw it pending
    assert not check_history([*base, _search(2, 140, 150, None, [pending])], slack=0).ok
    # the search for resolved promises missed one
    assert not check_history([*base, _search(2, 140, 150, "resolved", [])], slack=0).ok
    # before the create, an empty search is right
    assert check_history([_search(2, 10, 20, None, []), *base], slack=0).ok
    # a state filter that lets the wrong state through
    report = check_history([*base, _search(2, 140, 150, "pending", [resolved])], slack=0)
    assert not report.ok
    assert any("state=pending returned" in p for p in report.problems)
