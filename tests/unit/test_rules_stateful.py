"""A hypothesis state machine: the Engine against a small reference model of API.md 1.3-1.5.

Random sequences of create / resolve / reject / cancel / get / search / advance-clock / sweep
over a handful of ids and keys; every answer (status or exception and its code, and every
field of every returned promise) is compared with the model. The same machine runs over the
memory store and over SQLite.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.pg import OnPostgres
from troth.clock import FakeClock
from troth.engine import Engine
from troth.errors import AlreadyCompleted, AlreadyExists, NotFound
from troth.model import TIMER_TAG, Promise, State, Value
from troth.store.base import Store
from troth.store.memory import MemoryStore
from troth.store.sqlite import SqliteStore

T = TypeVar("T")

IDS = ("a/1", "a%2", "b_3", "b?4")
KEYS = (None, "k1", "k2")
PATTERNS = ("*", "a*", "*_*", "b?4", "a%2", "*4", "zzz")
START = 1_700_000_000_000

ids = st.sampled_from(IDS)
keys = st.sampled_from(KEYS)
values = st.one_of(
    st.just(Value()),
    st.builds(Value, data=st.binary(min_size=1, max_size=4)),
    st.builds(
        Value,
        headers=st.dictionaries(
            st.sampled_from("xy"),
            # NUL is refused in headers (docs/api.md)
            st.text(st.characters(exclude_characters="\x00"), max_size=2),
            min_size=1,
        ),
    ),
)
#: Timeouts relative to now: already due, short, long, "never".
timeouts = st.sampled_from([-5, 0, 3, 10, 50, 10_000, None])
advances = st.sampled_from([1, 3, 7, 10, 50, 10_000])


@dataclass(frozen=True)
class Rec:
    """The model's stored record (what the database holds, not what a client sees)."""

    id: str
    state: State
    param: Value
    value: Value
    timeout: int
    ikc: str | None
    iku: str | None
    tags: dict[str, str] | None
    created_on: int
    completed_on: int | None
    order: int

    @property
    def timer(self) -> bool:
        return self.tags is not None and self.tags.get(TIMER_TAG) == "true"

    def due(self, now: int) -> bool:
        return self.state is State.PENDING and now >= self.timeout

    def timed_out(self) -> Rec:
        return replace(
            self,
            state=State.RESOLVED if self.timer else State.REJECTED_TIMEDOUT,
            value=Value(),
            iku=None,
            completed_on=self.timeout,
        )

    def wire(self) -> Promise:
        return Promise(
            id=self.id,
            state=self.state,
            param=self.param,
            value=self.value,
            timeout=self.timeout,
            idempotency_key_for_create=self.ikc,
            idempotency_key_for_complete=self.iku,
            tags=self.tags,
            created_on=self.created_on,
            completed_on=self.completed_on,
        )


def _norm(v: Value) -> Value:
    return Value(headers=v.headers or None, data=v.data or None)


def _matches(pattern: str, id: str) -> bool:
    """``*`` is any run of characters; everything else is literal (written without regex)."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return id == pattern
    first, *middle, last = parts
    if not id.startswith(first) or len(id) < len(first) + len(last):
        return False
    if not id.endswith(last):
        return False
    pos, end = len(first), len(id) - len(last)
    for part in middle:
        found = id.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return True


def _state_group(state: State) -> str:
    if state is State.PENDING:
        return "pending"
    if state is State.RESOLVED:
        return "resolved"
    return "rejected"


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(START)
        self.tmpdir: str | None = None
        self.engine = Engine(self.make_store(), self.clock)
        self.run(self.engine.open())
        self.db: dict[str, Rec] = {}
        self.order = 0

    def make_store(self) -> Store:
        return MemoryStore()

    def teardown(self) -> None:
        try:
            self.run(self.engine.stop())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def outcome(self, coro: Coroutine[Any, Any, T]) -> tuple[str, T | None, int]:
        """("ok", result, 0) or (exception class name, None, code)."""
        try:
            return "ok", self.run(coro), 0
        except (AlreadyExists, AlreadyCompleted, NotFound) as exc:
            return type(exc).__name__, None, exc.code

    # -- model helpers ----------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.clock.now()

    def touch(self, id: str) -> Rec | None:
        """Lazy timeout of one record (the engine writes it in the same transaction)."""
        rec = self.db.get(id)
        if rec is not None and rec.due(self.now):
            rec = self.db[id] = rec.timed_out()
        return rec

    # -- rules ------------------------------------------------------------------------------

    @rule(
        id=ids,
        key=keys,
        strict=st.booleans(),
        rel=timeouts,
        timer=st.booleans(),
        param=values,
        tag=st.sampled_from([None, "x", "y"]),
    )
    def create(
        self,
        id: str,
        key: str | None,
        strict: bool,
        rel: int | None,
        timer: bool,
        param: Value,
        tag: str | None,
    ) -> None:
        timeout = 2**63 - 1 if rel is None else max(0, self.now + rel)
        tags: dict[str, str] = {}
        if timer:
            tags[TIMER_TAG] = "true"
        if tag is not None:
            tags["t"] = tag
        got = self.outcome(
            self.engine.create_promise(
                id, timeout, param=param, tags=tags or None, ikey=key, strict=strict
            )
        )
        # Model (API.md 1.3 Create).
        rec = self.touch(id)
        if rec is None:
            self.order += 1
            rec = Rec(
                id=id,
                state=State.PENDING,
                param=_norm(param),
                value=Value(),
                timeout=timeout,
                ikc=key,
                iku=None,
                tags=tags or None,
                created_on=self.now,
                completed_on=None,
                order=self.order,
            )
            if rec.due(self.now):
                rec = rec.timed_out()
            self.db[id] = rec
            expected: tuple[str, Any, int] = ("ok", (rec.wire(), True), 0)
        else:
            same = key is not None and rec.ikc == key
            if same and (not strict or rec.state is State.PENDING):
                expected = ("ok", (rec.wire(), False), 0)
            else:
                expected = ("AlreadyExists", None, 40900)
        assert got == expected

    @rule(
        id=ids,
        goal=st.sampled_from([State.RESOLVED, State.REJECTED, State.REJECTED_CANCELED]),
        key=keys,
        strict=st.booleans(),
        value=values,
    )
    def complete(self, id: str, goal: State, key: str | None, strict: bool, value: Value) -> None:
        got = self.outcome(
            self.engine.complete_promise(id, goal, value=value, ikey=key, strict=strict)
        )
        codes = {
            State.RESOLVED: 40301,
            State.REJECTED: 40302,
            State.REJECTED_CANCELED: 40303,
            State.REJECTED_TIMEDOUT: 40304,
        }
        rec = self.db.get(id)
        expected: tuple[str, Any, int]
        if rec is None:
            expected = ("NotFound", None, 40400)
        elif rec.state is State.PENDING and not rec.due(self.now):
            rec = self.db[id] = replace(
                rec,
                state=goal,
                value=_norm(value),
                iku=key,
                completed_on=self.now,
            )
            expected = ("ok", (rec.wire(), True), 0)
        elif rec.state is State.PENDING:
            rec = self.db[id] = rec.timed_out()
            if rec.state is State.RESOLVED or strict:
                expected = ("AlreadyCompleted", None, codes[rec.state])
            else:
                expected = ("ok", (rec.wire(), False), 0)
        else:
            same = key is not None and rec.iku == key
            if (same and not (strict and rec.state is not goal)) or (
                not strict and rec.state is State.REJECTED_TIMEDOUT
            ):
                expected = ("ok", (rec.wire(), False), 0)
            else:
                expected = ("AlreadyCompleted", None, codes[rec.state])
        assert got == expected

    @rule(id=ids)
    def get(self, id: str) -> None:
        got = self.outcome(self.engine.get_promise(id))
        rec = self.touch(id)
        if rec is None:
            assert got == ("NotFound", None, 40400)
        else:
            assert got == ("ok", rec.wire(), 0)

    @rule(
        state=st.sampled_from([None, "pending", "resolved", "rejected", "PENDING", "Rejected"]),
        pattern=st.sampled_from(PATTERNS),
        tag=st.sampled_from([None, "x", "y"]),
    )
    def search(self, state: str | None, pattern: str, tag: str | None) -> None:
        tags = {"t": tag} if tag is not None else None
        page = self.run(
            self.engine.search_promises(pattern=pattern, state=state, tags=tags, limit=1000)
        )
        assert page.cursor is None
        now = self.now
        expected = []
        for rec in sorted(self.db.values(), key=lambda r: -r.order):
            visible = rec.timed_out() if rec.due(now) else rec
            if state is not None and _state_group(visible.state) != state.lower():
                continue
            if not _matches(pattern, rec.id):
                continue
            if tag is not None and (rec.tags or {}).get("t") != tag:
                continue
            expected.append(self.touch(rec.id))
        assert [p.id for p in page.promises] == [r.id for r in expected if r is not None]
        assert page.promises == [r.wire() for r in expected if r is not None]

    @rule(ms=advances)
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def sweep(self) -> None:
        count = self.run(self.engine.sweep())
        due = [id for id, rec in self.db.items() if rec.due(self.now)]
        for id in due:
            self.touch(id)
        assert count == len(due)

    @invariant()
    def store_matches_model(self) -> None:
        """The stored records (read raw, no lazy timeout) equal the model's."""
        raw = self.run(self.engine.store.read(lambda tx: {id: tx.get_promise(id) for id in IDS}))
        for id in IDS:
            rec = self.db.get(id)
            assert raw[id] == (rec.wire() if rec is not None else None)


EngineMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineOnMemory = EngineMachine.TestCase


class SqliteEngineMachine(EngineMachine):
    def make_store(self) -> Store:
        self.tmpdir = tempfile.mkdtemp(prefix="troth-stateful-")
        return SqliteStore(f"sqlite:///{self.tmpdir}/t.db")


SqliteEngineMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineOnSqlite = SqliteEngineMachine.TestCase


class PostgresEngineMachine(OnPostgres, EngineMachine):
    """The same machine on PostgreSQL."""


PostgresEngineMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineOnPostgres = PostgresEngineMachine.TestCase
