"""The Durable Promise rules (``troth.rules``) against the spec, case by case.

Two independent sources of truth:

1. the seed spec's transition table (``shared/seeds/001_*.txt``), pasted verbatim below and
   read row by row;
2. a reference oracle written here straight from the prose of API.md 1.3 and 1.4, as explicit
   branches, checked against ``rules.decide_create`` / ``rules.decide_complete`` for every
   (stored state, stored keys, action, request key, strict) combination.

Plus the invariants of API.md 1.1/1.4 checked on every one of those decisions.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import pytest

from troth import rules
from troth.model import EMPTY, TIMER_TAG, Promise, State, Value

# -- the seed spec's table, verbatim ---------------------------------------------------------

SEED_TABLE = """\
Init Create(id, ikᶜ, T) Pending(id, ikᶜ, ⊥) OK
Init Create(id, ikᶜ, F) Pending(id, ikᶜ, ⊥) OK
Pending(id, ikᶜ, ⊥) Create(id, ikᶜ, T) Pending(id, ikᶜ, ⊥) OK, Deduplicated
Pending(id, ikᶜ, ⊥) Create(id, ikᶜ, F) Pending(id, ikᶜ, ⊥) OK, Deduplicated
Pending(id, ikᶜ, ⊥) Create(id, ikᶜ’, T) Pending(id, ikᶜ, ⊥) KO, Already Pending
Pending(id, ikᶜ, ⊥) Create(id, ikᶜ’, F) Pending(id, ikᶜ, ⊥) KO, Already Pending
Pending(id, ikᶜ, ⊥) Resolve(id, ikᵘ, T) Resolved(id, ikᶜ, ikᵘ) OK
Pending(id, ikᶜ, ⊥) Resolve(id, ikᵘ, F) Resolved(id, ikᶜ, ikᵘ) OK
Pending(id, ikᶜ, ⊥) Reject(id, ikᵘ, T) Rejected(id, ikᶜ, ikᵘ) OK
Pending(id, ikᶜ, ⊥) Reject(id, ikᵘ, F) Rejected(id, ikᶜ, ikᵘ) OK
Pending(id, ikᶜ, ⊥) Cancel(id, ikᵘ, T) Rejected(id, ikᶜ, ikᵘ) OK
Pending(id, ikᶜ, ⊥) Cancel(id, ikᵘ, F) Rejected(id, ikᶜ, ikᵘ) OK
Resolved(id, ikᶜ, ikᵘ) Create(id, ikᶜ, T) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Create(id, ikᶜ’, T) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Create(id, ikᶜ, F) Resolved(id, ikᶜ, ikᵘ) OK, Deduplicated
Resolved(id, ikᶜ, ikᵘ) Create(id, ikᶜ’, F) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Resolve(id, ikᵘ, T) Resolved(id, ikᶜ, ikᵘ) OK, Deduplicated
Resolved(id, ikᶜ, ikᵘ) Resolve(id, ikᵘ’, T) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Resolve(id, ikᵘ, F) Resolved(id, ikᶜ, ikᵘ) OK, Deduplicated
Resolved(id, ikᶜ, ikᵘ) Resolve(id, ikᵘ’, F) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Reject(id, ikᵘ, T) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Reject(id, ikᵘ’, T) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Reject(id, ikᵘ, F) Resolved(id, ikᶜ, ikᵘ) OK, Deduplicated
Resolved(id, ikᶜ, ikᵘ) Reject(id, ikᵘ’, F) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Cancel(id, ikᵘ, T) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Cancel(id, ikᵘ’, T) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Resolved(id, ikᶜ, ikᵘ) Cancel(id, ikᵘ, F) Resolved(id, ikᶜ, ikᵘ) OK, Deduplicated
Resolved(id, ikᶜ, ikᵘ) Cancel(id, ikᵘ’, F) Resolved(id, ikᶜ, ikᵘ) KO, Already Resolved
Rejected(id, ikᶜ, ikᵘ) Create(id, ikᶜ, T) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Create(id, ikᶜ’, T) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Create(id, ikᶜ, F) Rejected(id, ikᶜ, ikᵘ) OK, Deduplicated
Rejected(id, ikᶜ, ikᵘ) Create(id, ikᶜ’, F) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Resolve(id, ikᵘ, T) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Resolve(id, ikᵘ’, T) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Resolve(id, ikᵘ, F) Rejected(id, ikᶜ, ikᵘ) OK, Deduplicated
Rejected(id, ikᶜ, ikᵘ) Resolve(id, ikᵘ’, F) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Reject(id, ikᵘ, T) Rejected(id, ikᶜ, ikᵘ) OK, Deduplicated
Rejected(id, ikᶜ, ikᵘ) Reject(id, ikᵘ’, T) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Reject(id, ikᵘ, F) Rejected(id, ikᶜ, ikᵘ) OK, Deduplicated
Rejected(id, ikᶜ, ikᵘ) Reject(id, ikᵘ’, F) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Cancel(id, ikᵘ, T) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Cancel(id, ikᵘ’, T) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
Rejected(id, ikᶜ, ikᵘ) Cancel(id, ikᵘ, F) Rejected(id, ikᶜ, ikᵘ) OK, Deduplicated
Rejected(id, ikᶜ, ikᵘ) Cancel(id, ikᵘ’, F) Rejected(id, ikᶜ, ikᵘ) KO, Already Rejected
"""

ROW_RE = re.compile(
    r"^(?P<cur>Init|\w+\([^)]*\)) (?P<act>\w+\([^)]*\)) (?P<nxt>\w+\([^)]*\)) (?P<out>.+)$"
)
ARGS_RE = re.compile(r"^(?P<name>\w+)\((?P<args>[^)]*)\)$")

#: Symbols of the table, as concrete keys. ⊥ is "no key".
KEYS = {"ikᶜ": "ikc", "ikᶜ’": "ikc-other", "ikᵘ": "iku", "ikᵘ’": "iku-other", "⊥": None}
#: A completing action of the table and the target state it asks for.
TARGETS = {
    "Resolve": State.RESOLVED,
    "Reject": State.REJECTED,
    "Cancel": State.REJECTED_CANCELED,
}
#: Current/next state names of the table. The table writes ``Rejected`` for both a rejected
#: and a canceled promise; API.md 1.1 distinguishes them (``Cancel`` yields
#: ``REJECTED_CANCELED``). A stored ``Rejected(...)`` row is read as ``REJECTED``.
STATE_NAMES = {"Pending": State.PENDING, "Resolved": State.RESOLVED, "Rejected": State.REJECTED}

NOW = 10_000
FUTURE = 20_000  # a deadline not yet reached at NOW
PAST = 5_000  # a deadline already passed at NOW
CREATED_ON = 1_000
COMPLETED_ON = 2_000


@dataclass(frozen=True)
class SeedRow:
    line: str
    current: str
    cur_keys: tuple[str | None, ...]
    action: str
    key: str | None
    strict: bool
    next_state: str
    next_keys: tuple[str | None, ...]
    output: str


def _split(text: str) -> tuple[str, list[str]]:
    m = ARGS_RE.match(text)
    if m is None:
        return text, []
    return m["name"], [a.strip() for a in m["args"].split(",")]


def _parse(line: str) -> SeedRow:
    m = ROW_RE.match(line)
    assert m is not None, f"unparsable table row: {line!r}"
    cur, cur_args = _split(m["cur"])
    act, act_args = _split(m["act"])
    nxt, nxt_args = _split(m["nxt"])
    assert act_args[0] == "id" and act_args[2] in ("T", "F")
    return SeedRow(
        line=line,
        current=cur,
        cur_keys=tuple(KEYS[a] for a in cur_args[1:]),
        action=act,
        key=KEYS[act_args[1]],
        strict=act_args[2] == "T",
        next_state=nxt,
        next_keys=tuple(KEYS[a] for a in nxt_args[1:]),
        output=m["out"],
    )


SEED_ROWS = [_parse(line) for line in SEED_TABLE.splitlines() if line.strip()]


def test_seed_table_is_complete() -> None:
    # 2 Init rows, 10 Pending rows, 16 Resolved rows, 16 Rejected rows.
    assert len(SEED_ROWS) == 44
    assert len({r.line for r in SEED_ROWS}) == 44


def _seed_stored(row: SeedRow) -> Promise | None:
    if row.current == "Init":
        return None
    ikc, iku = row.cur_keys
    state = STATE_NAMES[row.current]
    return Promise(
        id="p",
        state=state,
        param=Value(data=b"param"),
        value=EMPTY if state is State.PENDING else Value(data=b"value"),
        timeout=FUTURE,
        idempotency_key_for_create=ikc,
        idempotency_key_for_complete=iku,
        created_on=CREATED_ON,
        completed_on=None if state is State.PENDING else COMPLETED_ON,
    )


def _expected_status(row: SeedRow) -> int:
    """OK -> 201, OK Deduplicated -> 200, KO on create -> 409, KO on complete -> 403."""
    if row.output == "OK":
        return 201
    if row.output == "OK, Deduplicated":
        return 200
    assert row.output.startswith("KO, Already ")
    return 409 if row.action == "Create" else 403


@pytest.mark.parametrize("row", SEED_ROWS, ids=[r.line for r in SEED_ROWS])
def test_seed_transition_table(row: SeedRow) -> None:
    stored = _seed_stored(row)
    if row.action == "Create":
        new = Promise(
            id="p",
            state=State.PENDING,
            param=Value(data=b"replay"),
            timeout=FUTURE,
            idempotency_key_for_create=row.key,
            created_on=NOW,
        )
        decision = rules.decide_create(stored, new, row.strict, NOW)
    else:
        target = TARGETS[row.action]
        decision = rules.decide_complete(
            stored, target, Value(data=b"done"), row.key, row.strict, NOW
        )

    assert decision.status == _expected_status(row)
    after = decision.write or stored
    assert after is not None
    # Next-state column: state name and (ikc, iku).
    expected_next = STATE_NAMES[row.next_state]
    if row.current == "Pending" and row.action == "Cancel":
        expected_next = State.REJECTED_CANCELED
    assert after.state is expected_next
    after_keys = (after.idempotency_key_for_create, after.idempotency_key_for_complete)
    assert after_keys == row.next_keys
    if row.output.startswith("KO, Already "):
        already = row.output.removeprefix("KO, Already ")
        assert decision.write is None  # a refusal before the deadline writes nothing
        if row.action == "Create":
            assert decision.code == rules.EXISTS_CODE == 40900
        else:
            assert decision.code == {"Resolved": 40301, "Rejected": 40302}[already]
            assert already == row.current
    if stored is not None and stored.state is not State.PENDING:
        assert decision.write is None  # a completed promise never changes


# -- the reference oracle (API.md 1.3 and 1.4, written from the prose) ------------------------

ABSENT = "absent"
PENDING = "pending"
EXPIRED = "pending-expired"
EXPIRED_TIMER = "pending-expired-timer"
COMPLETED_BY_CLIENT = ("resolved", "rejected", "canceled")
TIMEDOUT = "timedout"
KINDS = (ABSENT, PENDING, EXPIRED, EXPIRED_TIMER, *COMPLETED_BY_CLIENT, TIMEDOUT)
KIND_STATE = {
    PENDING: State.PENDING,
    EXPIRED: State.PENDING,
    EXPIRED_TIMER: State.PENDING,
    "resolved": State.RESOLVED,
    "rejected": State.REJECTED,
    "canceled": State.REJECTED_CANCELED,
    TIMEDOUT: State.REJECTED_TIMEDOUT,
}
ACTIONS = ("create", "resolve", "reject", "cancel")
ACTION_TARGET = {
    "resolve": State.RESOLVED,
    "reject": State.REJECTED,
    "cancel": State.REJECTED_CANCELED,
}
STORED_IKC = "ikc-1"
STORED_IKU = "iku-1"
#: Request keys: absent, the same as the stored one, a different one.
REQUEST_KEYS = ("absent", "same", "different")

PLAIN_TAGS = {"kind": "plain"}
TIMER_TAGS = {TIMER_TAG: "true", "kind": "timer"}
STORED_PARAM = Value(headers={"p": "1"}, data=b"stored-param")
STORED_VALUE = Value(headers={"v": "1"}, data=b"stored-value")
NEW_PARAM = Value(data=b"new-param")
NEW_TIMEOUT = 30_000
NEW_TAGS = {"new": "yes"}
COMPLETE_VALUE = Value(headers={"c": "1"}, data=b"\x00done\xff")


@dataclass(frozen=True)
class Case:
    kind: str
    ikc: bool
    iku: bool
    action: str
    key: str
    strict: bool

    @property
    def id(self) -> str:
        parts = [self.kind]
        if self.kind != ABSENT:
            parts.append("ikc" if self.ikc else "no-ikc")
        if self.kind in COMPLETED_BY_CLIENT:
            parts.append("iku" if self.iku else "no-iku")
        parts += [self.action, f"key-{self.key}", "strict" if self.strict else "lax"]
        return "/".join(parts)

    def stored(self) -> Promise | None:
        if self.kind == ABSENT:
            return None
        state = KIND_STATE[self.kind]
        # Expired pending promises, and completed promises whose deadline has passed since
        # (they must not change because of it), have a past deadline.
        timeout = FUTURE if self.kind == PENDING else PAST
        completed_on = None
        if self.kind in COMPLETED_BY_CLIENT:
            completed_on = COMPLETED_ON
        elif self.kind == TIMEDOUT:
            completed_on = PAST
        return Promise(
            id="id/1",
            state=state,
            param=STORED_PARAM,
            value=STORED_VALUE if self.kind in COMPLETED_BY_CLIENT else EMPTY,
            timeout=timeout,
            idempotency_key_for_create=STORED_IKC if self.ikc else None,
            idempotency_key_for_complete=STORED_IKU if self.iku else None,
            tags=TIMER_TAGS if self.kind == EXPIRED_TIMER else PLAIN_TAGS,
            created_on=CREATED_ON,
            completed_on=completed_on,
        )

    def request_key(self) -> str | None:
        if self.key == "absent":
            return None
        stored = STORED_IKC if self.action == "create" else STORED_IKU
        return stored if self.key == "same" else "other-key"


def _cases() -> list[Case]:
    out = []
    for kind in KINDS:
        ikc_options = (False,) if kind == ABSENT else (True, False)
        # A completion key exists only on a promise a client completed (API.md 1.1:
        # "none after a timeout"; a pending promise has none yet).
        iku_options = (True, False) if kind in COMPLETED_BY_CLIENT else (False,)
        for ikc, iku, action, key, strict in itertools.product(
            ikc_options, iku_options, ACTIONS, REQUEST_KEYS, (True, False)
        ):
            out.append(Case(kind, ikc, iku, action, key, strict))
    return out


CASES = _cases()


@dataclass(frozen=True)
class Expected:
    status: int
    code: int  # 0 on success
    promise: Promise | None  # what the request observes
    write: Promise | None  # what must be stored (None: nothing)


def keys_match(stored: str | None, given: str | None) -> bool:
    # 1.3: "match(a, b) holds only when both keys are present and equal; two absent keys
    # never match."
    if stored is None or given is None:
        return False
    return stored == given


def timed_out_form(p: Promise) -> Promise:
    # 1.4: "it becomes REJECTED_TIMEDOUT; if it carries the tag resonate:timeout = "true" ...
    # it becomes RESOLVED instead. In both cases value = {}, no completion key,
    # completedOn = timeout."
    is_timer = bool(p.tags) and p.tags.get("resonate:timeout") == "true"
    return Promise(
        id=p.id,
        state=State.RESOLVED if is_timer else State.REJECTED_TIMEDOUT,
        param=p.param,
        value=Value(),
        timeout=p.timeout,
        idempotency_key_for_create=p.idempotency_key_for_create,
        idempotency_key_for_complete=None,
        tags=p.tags,
        created_on=p.created_on,
        completed_on=p.timeout,
    )


def already_code(state: State) -> int:
    # 0: "40301..40304 promise already resolved/rejected/canceled/timedout".
    if state == State.RESOLVED:
        return 40301
    if state == State.REJECTED:
        return 40302
    if state == State.REJECTED_CANCELED:
        return 40303
    if state == State.REJECTED_TIMEDOUT:
        return 40304
    raise AssertionError(f"no 403 code for {state}")


def oracle_create(stored: Promise | None, new: Promise, strict: bool, now: int) -> Expected:
    if stored is None:
        # 1.3 Create 1: "No promise id: insert it PENDING -> 201. (If its deadline has already
        # passed, it is stored directly in its timed-out state, see 1.4, and still answered
        # 201.)"
        if now >= new.timeout:
            record = timed_out_form(new)
            return Expected(201, 0, record, record)
        return Expected(201, 0, new, new)
    # 1.3 Create 2: "Otherwise time it out first if expired (1.4)".
    write = None
    current = stored
    if stored.state == State.PENDING and now >= stored.timeout:
        current = timed_out_form(stored)
        write = current
    same_key = keys_match(current.idempotency_key_for_create, new.idempotency_key_for_create)
    if strict:
        # "(not strict or state == PENDING) and match(...)": strict needs PENDING too.
        if current.state == State.PENDING and same_key:
            return Expected(200, 0, current, write)
        return Expected(409, 40900, current, write)
    # Not strict: only the key decides; "Only the key is compared".
    if same_key:
        # "-> 200 with the stored promise (in whatever state it now is)"
        return Expected(200, 0, current, write)
    return Expected(409, 40900, current, write)


def oracle_complete(
    stored: Promise | None,
    target: State,
    value: Value,
    key: str | None,
    strict: bool,
    now: int,
) -> Expected:
    # 1.3 Complete 1: "No promise -> 404".
    if stored is None:
        return Expected(404, 40400, None, None)
    if stored.state == State.PENDING:
        if now < stored.timeout:
            # 1.3 Complete 2: "PENDING, before its deadline -> set state, value, iku,
            # completedOn = now -> 201 (keys play no part)".
            done = Promise(
                id=stored.id,
                state=target,
                param=stored.param,
                value=value,
                timeout=stored.timeout,
                idempotency_key_for_create=stored.idempotency_key_for_create,
                idempotency_key_for_complete=key,
                tags=stored.tags,
                created_on=stored.created_on,
                completed_on=now,
            )
            return Expected(201, 0, done, done)
        # 1.3 Complete 3: "PENDING at/after its deadline -> time it out first (1.4), then:
        # a timer promise (now RESOLVED) -> 403; otherwise strict -> 403; otherwise -> 200
        # with the timed-out promise."
        timed_out = timed_out_form(stored)
        if timed_out.state == State.RESOLVED:
            return Expected(403, 40301, timed_out, timed_out)
        if strict:
            return Expected(403, 40304, timed_out, timed_out)
        return Expected(200, 0, timed_out, timed_out)
    # 1.3 Complete 4: already completed in state S:
    # "((not (strict and S != target)) and match(stored.iku, iku))
    #  or (not strict and S == REJECTED_TIMEDOUT) -> 200 with the stored promise;
    #  otherwise 403 with code 40301..40304 according to S."
    s = stored.state
    if not strict and s == State.REJECTED_TIMEDOUT:
        return Expected(200, 0, stored, None)
    if keys_match(stored.idempotency_key_for_complete, key):
        if not strict:
            return Expected(200, 0, stored, None)
        if s == target:
            return Expected(200, 0, stored, None)
    return Expected(403, already_code(s), stored, None)


def _run(case: Case) -> tuple[rules.Decision, Expected]:
    stored = case.stored()
    key = case.request_key()
    if case.action == "create":
        new = Promise(
            id="id/1",
            state=State.PENDING,
            param=NEW_PARAM,
            timeout=NEW_TIMEOUT,
            idempotency_key_for_create=key,
            tags=NEW_TAGS,
            created_on=NOW,
        )
        decision = rules.decide_create(stored, new, case.strict, NOW)
        expected = oracle_create(stored, new, case.strict, NOW)
    else:
        target = ACTION_TARGET[case.action]
        decision = rules.decide_complete(stored, target, COMPLETE_VALUE, key, case.strict, NOW)
        expected = oracle_complete(stored, target, COMPLETE_VALUE, key, case.strict, NOW)
    return decision, expected


def test_case_space() -> None:
    # absent: 1 stored variant; pending kinds: 3x2; completed by a client: 3x2x2;
    # timed out: 2 -> 21 stored variants x 4 actions x 3 keys x 2 strict.
    assert len(CASES) == 21 * 4 * 3 * 2
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rules_match_oracle(case: Case) -> None:
    decision, expected = _run(case)
    assert decision.status == expected.status
    if expected.status >= 400:
        assert decision.code == expected.code
    assert decision.ok is (expected.status < 400)
    assert decision.promise == expected.promise
    assert decision.write == expected.write


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rules_invariants(case: Case) -> None:
    stored = case.stored()
    decision, _ = _run(case)
    observed = decision.promise

    # A completed promise never changes.
    if stored is not None and stored.state is not State.PENDING:
        assert decision.write is None
        assert observed == stored

    # An expired pending promise is never returned (1.1: "A client never observes PENDING at
    # or after timeout").
    if observed is not None:
        assert not (observed.state is State.PENDING and observed.timeout <= NOW)

    expired_before = stored is not None and stored.state is State.PENDING and stored.timeout <= NOW
    if expired_before:
        # Every request on an expired pending promise writes its timeout, whatever it answers
        # (including a 403 or 409).
        written = decision.write
        assert written is not None
        assert observed == written
        assert written.state is (
            State.RESOLVED if case.kind == EXPIRED_TIMER else State.REJECTED_TIMEDOUT
        )
        # completedOn == timeout; value empty; no completion key.
        assert written.completed_on == written.timeout == stored.timeout
        assert written.value == EMPTY
        assert written.idempotency_key_for_complete is None
        # Everything else is kept.
        assert written.param == stored.param
        assert written.tags == stored.tags
        assert written.created_on == stored.created_on
        assert written.idempotency_key_for_create == stored.idempotency_key_for_create

    if decision.status == 403:
        assert observed is not None
        # The code matches the state the promise is (now) in.
        assert decision.code == rules.ALREADY_CODE[observed.state]
        assert decision.code == 40301 + [
            State.RESOLVED,
            State.REJECTED,
            State.REJECTED_CANCELED,
            State.REJECTED_TIMEDOUT,
        ].index(observed.state)
    if decision.status == 409:
        assert decision.code == 40900
    if decision.status == 404:
        assert stored is None and observed is None and decision.write is None

    # A successful create answers the stored promise, never the replay's param/timeout/tags.
    if case.action == "create" and decision.status == 200:
        assert observed is not None and stored is not None
        assert observed.param == stored.param
        assert observed.timeout == stored.timeout
        assert observed.tags == stored.tags

    # Two absent keys never deduplicate.
    if case.key == "absent" and decision.status == 200:
        assert stored is not None
        assert (
            case.action != "create"
            and not case.strict
            and (observed is not None and observed.state is State.REJECTED_TIMEDOUT)
        )


# -- edge cases outside the grid -------------------------------------------------------------


@pytest.mark.parametrize("timer", [False, True], ids=["plain", "timer"])
@pytest.mark.parametrize("deadline", [PAST, NOW], ids=["past", "now"])
def test_create_with_deadline_passed_stores_timed_out(timer: bool, deadline: int) -> None:
    new = Promise(
        id="late",
        state=State.PENDING,
        param=NEW_PARAM,
        timeout=deadline,
        idempotency_key_for_create="k",
        tags=TIMER_TAGS if timer else None,
        created_on=NOW,
    )
    decision = rules.decide_create(None, new, strict=True, now=NOW)
    assert decision.status == 201
    assert decision.write == decision.promise
    assert decision.promise is not None
    assert decision.promise.state is (State.RESOLVED if timer else State.REJECTED_TIMEDOUT)
    assert decision.promise.completed_on == deadline
    assert decision.promise.value == EMPTY
    assert decision.promise.idempotency_key_for_create == "k"
    assert decision.promise == oracle_create(None, new, True, NOW).promise


def test_deadline_is_inclusive() -> None:
    # 1.4: "When now >= timeout": the deadline itself is already expired.
    stored = Promise(id="p", state=State.PENDING, timeout=NOW, created_on=CREATED_ON)
    decision = rules.decide_complete(stored, State.RESOLVED, EMPTY, "k", False, NOW)
    assert decision.status == 200
    assert decision.promise is not None
    assert decision.promise.state is State.REJECTED_TIMEDOUT
    assert decision.promise.completed_on == NOW
    # One millisecond before, it can still be completed.
    decision = rules.decide_complete(stored, State.RESOLVED, EMPTY, "k", False, NOW - 1)
    assert decision.status == 201
    assert decision.promise is not None
    assert decision.promise.state is State.RESOLVED
    assert decision.promise.completed_on == NOW - 1


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (None, None, False),
        ("k", None, False),
        (None, "k", False),
        ("k", "k", True),
        ("k", "K", False),
    ],
)
def test_match(a: str | None, b: str | None, expected: bool) -> None:
    assert rules.match(a, b) is expected
    assert keys_match(a, b) is expected


@pytest.mark.parametrize("tags", [None, {}, {TIMER_TAG: "false"}, {TIMER_TAG: "TRUE"}])
def test_only_exact_timer_tag_makes_a_timer(tags: dict[str, str] | None) -> None:
    stored = Promise(id="p", state=State.PENDING, timeout=PAST, tags=tags, created_on=0)
    assert rules.current(stored, NOW).state is State.REJECTED_TIMEDOUT


def test_current_leaves_live_and_completed_promises_alone() -> None:
    live = Promise(id="p", state=State.PENDING, timeout=FUTURE, created_on=0)
    assert rules.current(live, NOW) is live
    assert rules.expire(live, NOW) is None
    done = Promise(
        id="p", state=State.REJECTED, timeout=PAST, created_on=0, completed_on=CREATED_ON
    )
    assert rules.current(done, NOW) is done
    assert rules.expire(done, NOW) is None
