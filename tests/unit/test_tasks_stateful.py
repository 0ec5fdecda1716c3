"""A hypothesis state machine over the task framework (API.md 3, docs/tasks.md).

An ``Engine`` with worker streams (one group ``g``, workers ``w1``..``w3``) and a fake clock,
driven by random sequences of: create roots (with or without an invoke task), register
callbacks (optionally fenced) from leaves to roots, complete promises (resume tasks),
dispatch, run the overdue loop, move the clock (fixed steps, or to just before / at / after
a lease, claim time or task timeout), kill and revive workers, and let a live worker act on
a (task, counter) it saw on its stream or claimed - with that counter or a stale one, now or
just at / before the end of its lease or its timeout: claim, heartbeat, complete, drop,
fenced completion of the task's root, suspend (fenced callback, then complete the task).

A reference model predicts every task field for field; after each step the stored tasks
(read raw from the store) and promise states must equal the model, and, independently of
the model:

- counters never decrease, and rise only by 1, on a hand-over (an ENQUEUED or CLAIMED task
  going back to INIT: lease or claim time passed, or a drop);
- COMPLETED / TIMEDOUT tasks never change again;
- at most one ENQUEUED or CLAIMED task per root promise.

Per step: every answer (result or error code) matches the model; a claim succeeds only for
the current counter of an INIT/ENQUEUED task and never twice for one (task, counter); a
fenced write succeeds only for the holder (CLAIMED, same counter, neither the lease nor the
task's own timeout run out), else ``FencingFailed`` and nothing is written; a heartbeat
extends only leases that have not run out (a lost lease is not revived); completing or
dropping a task whose lease or claim time ran out (and that is not timed out) is refused
(40308) and hands the task over as the loop would have (INIT, counter + 1); completing a
root completes its unfinished invoke/resume tasks; a resume task is created at most once per
(root, leaf) callback, when the leaf completes, and not at all if the root is already
completed; every stream message carries the task exactly as it was marked ENQUEUED (so its
counter at that time), and no task version is sent twice. The same machine runs over the
memory store and over SQLite.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tests.pg import OnPostgres
from troth.clock import FakeClock
from troth.engine import Engine
from troth.engine.dispatch import Dispatcher, TaskSettings
from troth.errors import FencingFailed, TrothError
from troth.model import Recv, State, Task, TaskKind, TaskState
from troth.recv import parse_recv
from troth.server.stream import StreamConn, StreamRegistry
from troth.store.base import Store
from troth.store.memory import MemoryStore
from troth.store.sqlite import SqliteStore

T = TypeVar("T")

START = 1_700_000_000_000
FAR = 2**63 - 1
GROUP = "g"
RECV = f"poll://any@{GROUP}"
TTC = 5_000  # time to claim
PARK = 1_000
SETTINGS = TaskSettings(time_to_claim_ms=TTC, park_ms=PARK, base_url="http://troth")

ROOTS = ("r1", "r2", "r3")
LEAVES = ("l1", "l2", "l3")
PROMISES = LEAVES + ROOTS  # leaves first: the simplest draw resumes a root
WORKERS = ("w1", "w2", "w3")
TASK_IDS = tuple(f"__invoke:{r}" for r in ROOTS) + tuple(
    f"__resume:{r}:{p}" for r in ROOTS for p in PROMISES
)
COMPLETIONS = (State.RESOLVED, State.REJECTED, State.REJECTED_CANCELED)

ttls = st.sampled_from([1_000, 5_000, 30_000])
deltas = st.sampled_from([0, 0, 0, 0, -1, 1])  # mostly the counter seen, sometimes stale
#: Small steps around the leases and the time to claim, and large ones across everything.
ticks = st.sampled_from([1_000, 5_000, 1, 999, 4_999, 30_000, 61_000, 500, 2_500, 10_000])
#: Whether a root gets an invoke task (``resonate:invoke``), mostly yes.
invokes = st.sampled_from([True, False])
#: Callback (resume task) timeouts relative to now; None is "never".
cb_timeouts = st.sampled_from([None, 20_000, 2_000, 0, 40_000])


class Delivery:
    """Worker streams only (no HTTP receivers here)."""

    def __init__(self, streams: StreamRegistry) -> None:
        self.streams = streams

    def stream_for(self, recv: Recv) -> StreamConn | None:
        return self.streams.stream_for(recv)

    async def push(self, recv: Recv, message: bytes) -> bool:
        raise AssertionError(f"no HTTP receiver expected, got {recv}")


@dataclass
class Worker:
    id: str
    alive: bool = False
    conn: StreamConn | None = None
    #: (task id, counter) of every message seen and every successful claim, oldest first.
    log: list[tuple[str, int]] = field(default_factory=list)

    def tokens(self) -> list[tuple[str, int]]:
        """What the worker knows of, the latest first (so the simplest draw is the freshest)."""
        return list(dict.fromkeys(reversed(self.log)))


def _handed_over(t: Task, now: int) -> Task:
    """Back to INIT for a new holder: the counter is the fencing token, so it moves on."""
    return msgspec.structs.replace(
        t,
        state=TaskState.INIT,
        counter=t.counter + 1,
        attempt=0,
        process_id=None,
        ttl=None,
        expires_at=None,
        ready_at=now,
    )


def _finished(t: Task, state: TaskState, now: int) -> Task:
    return msgspec.structs.replace(t, state=state, expires_at=None, completed_on=now)


class TaskMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(START)
        self.tmpdir: str | None = None
        self.streams = StreamRegistry()
        self.engine = Engine(
            self.make_store(), self.clock, delivery=Delivery(self.streams), task_settings=SETTINGS
        )
        self.run(self.engine.open())
        self.recv = parse_recv(RECV)
        # The model.
        self.promises: dict[str, State] = {}
        self.callbacks: dict[str, dict[str, int]] = {}  # leaf -> {root: timeout}
        self.tasks: dict[str, Task] = {}
        self.claimed: set[tuple[str, int]] = set()
        self.workers = {w: Worker(w) for w in WORKERS}
        self.last: dict[str, Task | None] = {}  # the stored tasks after the previous step

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

    # -- helpers ----------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def outcome(self, coro: Coroutine[Any, Any, T]) -> tuple[str, T | None, int]:
        """("ok", result, 0) or (exception class name, None, code)."""
        try:
            return "ok", self.run(coro), 0
        except TrothError as exc:
            return type(exc).__name__, None, exc.code

    @property
    def now(self) -> int:
        return self.clock.now()

    @property
    def dispatcher(self) -> Dispatcher:
        assert self.engine.dispatcher is not None
        return self.engine.dispatcher

    def stored_tasks(self) -> dict[str, Task | None]:
        return self.run(self.engine.store.read(lambda tx: {id: tx.get_task(id) for id in TASK_IDS}))

    def stored_state(self, id: str) -> State | None:
        p = self.run(self.engine.store.read(lambda tx: tx.get_promise(id)))
        return None if p is None else p.state

    def connect(self, w: Worker) -> None:
        w.conn = self.streams.connect(GROUP, w.id)
        w.alive = True

    def live(self) -> list[str]:
        return [w.id for w in self.workers.values() if w.alive]

    def acting(self) -> list[str]:
        return [w.id for w in self.workers.values() if w.alive and w.tokens()]

    def token(self, data: st.DataObject) -> tuple[Worker, str, int]:
        """A live worker and a (task id, counter) it knows of, maybe made stale."""
        w = self.workers[data.draw(st.sampled_from(self.acting()), label="worker")]
        id, counter = data.draw(st.sampled_from(w.tokens()), label="token")
        return w, id, counter + data.draw(deltas, label="delta")

    def timed_out(self, t: Task) -> bool:
        """Past its timeout: TIMEDOUT for every rule, whether or not the loop noticed yet."""
        return not t.state.final and self.now >= t.timeout

    def lease_lost(self, t: Task) -> bool:
        """ENQUEUED/CLAIMED with its claim time or lease run out (the loop may not know yet)."""
        return t.state.active and t.expires_at is not None and self.now >= t.expires_at

    def fence_holds(self, id: str, counter: int) -> bool:
        """The holder: CLAIMED with that counter, the lease not run out, and the task not past
        its own timeout (as for claim / complete / drop, whether or not the loop noticed)."""
        t = self.tasks.get(id)
        return (
            t is not None
            and t.state is TaskState.CLAIMED
            and t.counter == counter
            and t.expires_at is not None
            and self.now < t.expires_at
            and self.now < t.timeout
        )

    def completed(self, id: str) -> None:
        """Model: promise ``id`` has just completed (callbacks → resume tasks, root tasks end)."""
        now = self.now
        for root, timeout in self.callbacks.pop(id, {}).items():
            tid = f"__resume:{root}:{id}"
            assert tid not in self.tasks  # a resume task is created once per (root, leaf)
            if self.promises[root] is not State.PENDING:
                continue  # the root is completed (maybe ``id`` itself): nothing to resume
            self.tasks[tid] = Task(
                id=tid,
                type=TaskKind.RESUME,
                state=TaskState.INIT,
                recv=self.recv,
                root_promise_id=root,
                leaf_promise_id=id,
                timeout=timeout,
                ready_at=now,
                created_on=now,
            )
        for tid, t in self.tasks.items():
            if t.root_promise_id == id and not t.state.final:
                self.tasks[tid] = _finished(t, TaskState.COMPLETED, now)

    def check_root_tasks_done(self, root: str) -> None:
        """Right after a root completes, none of its tasks is unfinished (in the store)."""
        for id, t in self.stored_tasks().items():
            if t is not None and t.root_promise_id == root:
                assert t.state.final, (id, t)

    # -- rules: promises and callbacks -------------------------------------------------------

    @initialize(
        n=st.integers(2, 3),
        roots=st.lists(
            st.tuples(st.sampled_from(ROOTS), invokes), min_size=1, unique_by=lambda r: r[0]
        ),
        leaves=st.lists(st.sampled_from(LEAVES), min_size=2, unique=True),
        callbacks=st.lists(
            st.tuples(st.sampled_from(PROMISES), st.sampled_from(ROOTS), cb_timeouts), max_size=3
        ),
        resume=st.booleans(),
        claim_ttl=st.one_of(ttls, st.none()),
    )
    def start(
        self,
        n: int,
        roots: list[tuple[str, bool]],
        leaves: list[str],
        callbacks: list[tuple[str, str, int | None]],
        resume: bool,
        claim_ttl: int | None,
    ) -> None:
        """Workers connected, some roots and leaves, some callbacks from leaves to roots, with
        ``resume`` the first callback's promise completed (resume tasks from the start); the
        tasks sent (and, with ``claim_ttl``, claimed by their workers)."""
        for w in WORKERS[:n]:
            self.connect(self.workers[w])
        for root, invoke in roots:
            self.create_root(root, invoke)
        for leaf in leaves:
            self.create_leaf(leaf)
        for leaf, root, rel in callbacks:
            if root in self.promises:
                self.do_register(leaf, root, rel, None)
        if resume and callbacks:
            self.complete_promise(callbacks[0][0], State.RESOLVED)
        self.store_matches_model()
        self.dispatch(claim_ttl)

    @rule(root=st.sampled_from(ROOTS), invoke=invokes)
    def create_root(self, root: str, invoke: bool) -> None:
        """A root promise, with an invoke task (or without: its resume tasks need not wait for
        an invoke task to finish first, so they get claimed and fenced with more often)."""
        tags = {"resonate:invoke": RECV} if invoke else None
        got = self.outcome(self.engine.create_promise(root, FAR, tags=tags))
        if root in self.promises:
            assert got[0] == "AlreadyExists", got
            return
        assert got[0] == "ok", got
        assert got[1] is not None and got[1][1] is True
        self.promises[root] = State.PENDING
        if not invoke:
            return
        tid = f"__invoke:{root}"
        self.tasks[tid] = Task(
            id=tid,
            type=TaskKind.INVOKE,
            state=TaskState.INIT,
            recv=self.recv,
            root_promise_id=root,
            timeout=FAR,
            ready_at=0,
            created_on=self.now,
        )

    def create_leaf(self, leaf: str) -> None:
        got = self.outcome(self.engine.create_promise(leaf, FAR))
        if leaf in self.promises:
            assert got[0] == "AlreadyExists", got
        else:
            assert got[0] == "ok", got
            self.promises[leaf] = State.PENDING

    @precondition(lambda self: any(r in self.promises for r in ROOTS))
    @rule(data=st.data(), leaf=st.sampled_from(PROMISES), rel=cb_timeouts, fenced=st.booleans())
    def register_callback(
        self, data: st.DataObject, leaf: str, rel: int | None, fenced: bool
    ) -> None:
        root = data.draw(st.sampled_from([r for r in ROOTS if r in self.promises]), label="root")
        fence = None
        if fenced and self.acting():
            _, id, counter = self.token(data)
            fence = (id, counter)
        self.do_register(leaf, root, rel, fence)

    def do_register(
        self, leaf: str, root: str, rel: int | None, fence: tuple[str, int] | None
    ) -> None:
        timeout = FAR if rel is None else self.now + rel
        got = self.outcome(
            self.engine.register_callback(
                leaf, root_promise_id=root, timeout=timeout, recv=RECV, fence=fence
            )
        )
        if fence is not None and not self.fence_holds(*fence):
            assert got == ("FencingFailed", None, 41200)
            return
        if leaf not in self.promises:
            assert got == ("NotFound", None, 40400)
            return
        assert got[0] == "ok", got
        assert got[1] is not None
        cb, p = got[1]
        assert p.id == leaf
        assert p.state is self.promises[leaf]
        pending = self.callbacks.setdefault(leaf, {})
        if self.promises[leaf] is not State.PENDING or root in pending:
            assert cb is None  # continue at once / already registered
        else:
            assert cb is not None
            assert cb.id == f"__resume:{root}:{leaf}"
            pending[root] = timeout

    @rule(id=st.sampled_from(PROMISES), state=st.sampled_from(COMPLETIONS))
    def complete_promise(self, id: str, state: State) -> None:
        """An unfenced completion (a leaf: resumes its callbacks' roots; a root: ends tasks)."""
        got = self.outcome(self.engine.complete_promise(id, state))
        if id not in self.promises:
            assert got == ("NotFound", None, 40400)
        elif self.promises[id] is not State.PENDING:
            assert got[0] == "AlreadyCompleted", got
        else:
            assert got[0] == "ok", got
            self.promises[id] = state
            self.completed(id)
            self.check_root_tasks_done(id)

    # -- rules: the dispatcher ---------------------------------------------------------------

    @rule(claim_ttl=st.one_of(ttls, st.none()))
    def dispatch(self, claim_ttl: int | None) -> None:
        """A dispatch round; with ``claim_ttl``, live workers claim what they got at once."""
        now = self.now
        busy = {t.root_promise_id for t in self.tasks.values() if t.state.active}
        ready = sorted(
            (
                t
                for t in self.tasks.values()
                if t.state is TaskState.INIT and t.ready_at <= now < t.timeout
            ),
            key=lambda t: (t.created_on, t.id),
        )
        streaming = any(w.conn is not None for w in self.workers.values())
        expected: dict[str, Task] = {}
        for t in ready:
            if t.root_promise_id in busy:
                continue  # at most one ENQUEUED/CLAIMED task per root
            busy.add(t.root_promise_id)
            if streaming:
                marked = msgspec.structs.replace(t, state=TaskState.ENQUEUED, expires_at=now + TTC)
                self.tasks[t.id] = expected[t.id] = marked
            else:  # parked until a stream connects
                self.tasks[t.id] = msgspec.structs.replace(t, ready_at=now + PARK)

        sent = self.run(self.dispatcher.dispatch())
        assert sent == len(expected)
        got: dict[str, int] = {}
        for w in self.workers.values():
            if w.conn is None:
                continue
            while not w.conn.queue.empty():
                raw = w.conn.queue.get_nowait()
                assert raw is not None
                msg = json.loads(raw)
                task = msg["task"]
                assert task["id"] not in got, "one task version sent twice"
                assert task["id"] in expected, f"unexpected message {msg}"
                marked = expected[task["id"]]
                assert msg["type"] == marked.type.value
                # The task as marked ENQUEUED: in particular its counter at that moment.
                assert task == json.loads(msgspec.json.encode(marked.to_wire()))
                got[task["id"]] = task["counter"]
                w.log.append((task["id"], task["counter"]))
                if claim_ttl is not None and w.alive:
                    self.do_claim(w, task["id"], task["counter"], claim_ttl)
        assert got == {id: t.counter for id, t in expected.items()}

    @rule()
    def advance(self) -> None:
        now = self.now
        changed = 0
        for id, t in list(self.tasks.items()):
            if t.state.final:
                continue
            if now >= t.timeout:
                self.tasks[id] = _finished(t, TaskState.TIMEDOUT, now)
                changed += 1
            elif t.state.active and t.expires_at is not None and now >= t.expires_at:
                self.tasks[id] = _handed_over(t, now)  # lease or time to claim passed
                changed += 1
        assert self.run(self.dispatcher.advance()) == changed

    @rule(ms=ticks, loop=st.booleans())
    def tick(self, ms: int, loop: bool) -> None:
        """Time passes; with ``loop``, the background loop runs a round (advance, dispatch)."""
        self.clock.advance(ms)
        if loop:
            self.advance()
            self.store_matches_model()  # a hand-over, then maybe sent again
            self.dispatch(None)

    @precondition(lambda self: bool(self.deadlines()))
    @rule(data=st.data(), offset=st.sampled_from([0, -1, 1]), loop=st.booleans())
    def tick_to_deadline(self, data: st.DataObject, offset: int, loop: bool) -> None:
        """Time moves to just before, at, or just after the next lease, claim time, task
        timeout or ready time of some task (the boundaries are where the rules switch)."""
        at = data.draw(st.sampled_from(self.deadlines()), label="deadline") + offset
        self.tick(max(at - self.now, 0), loop)

    def deadlines(self) -> list[int]:
        times = set()
        for t in self.tasks.values():
            if t.state.final:
                continue
            times.add(t.timeout)
            times.add(t.ready_at if t.state is TaskState.INIT else (t.expires_at or FAR))
        return sorted(x for x in times if self.now < x < FAR)

    # -- rules: workers ----------------------------------------------------------------------

    @precondition(lambda self: bool(self.acting()))
    @rule(
        data=st.data(),
        action=st.sampled_from(["fenced_complete", "claim", "complete", "suspend", "drop", "beat"]),
        late=st.sampled_from([None, None, "lease", "timeout"]),
    )
    def work(self, data: st.DataObject, action: str, late: str | None) -> None:
        """A live worker acts on a (task, counter) it saw on its stream or claimed - the
        latest one most often, with that counter most often, else a stale one - now, or
        (``late``) just before / at the end of that task's lease or claim time, or of its
        own timeout, with no loop round in between (the loop may not have noticed yet):

        - ``claim`` with a lease of some ttl;
        - ``fenced_complete``: complete the task's root (or another promise) fenced by it;
        - ``complete`` / ``drop`` the task;
        - ``suspend``: a callback on a leaf for the task's root, fenced by the task, then
          complete the task (docs/tasks.md, a worker step 5);
        - ``beat``: heartbeat (every task the worker holds).
        """
        w, id, counter = self.token(data)
        if late is not None:
            t = self.tasks[id]
            at = (t.expires_at if t.state.active else None) if late == "lease" else t.timeout
            if at is not None and self.now < at < FAR:
                at += data.draw(st.sampled_from([0, -1]), label="offset")
                self.clock.advance(max(at - self.now, 0))
        if action == "claim":
            self.do_claim(w, id, counter, data.draw(ttls, label="ttl"))
        elif action == "fenced_complete":
            other = data.draw(st.sampled_from([None, *PROMISES]), label="other")
            state = data.draw(st.sampled_from(COMPLETIONS), label="state")
            self.do_fenced_complete(id, counter, other or self.tasks[id].root_promise_id, state)
        elif action == "complete":
            self.do_complete_task(id, counter)
        elif action == "drop":
            self.do_drop_task(id, counter)
        elif action == "suspend":
            leaf = data.draw(st.sampled_from(PROMISES), label="leaf")
            rel = data.draw(cb_timeouts, label="callback timeout")
            self.do_register(leaf, self.tasks[id].root_promise_id, rel, (id, counter))
            self.do_complete_task(id, counter)
        else:
            self.do_heartbeat(w.id)

    def do_claim(self, w: Worker, id: str, counter: int, ttl: int) -> None:
        before = self.tasks[id]
        got = self.outcome(self.engine.claim_task(id, counter, process_id=w.id, ttl=ttl))
        if self.timed_out(before):
            self.tasks[id] = _finished(before, TaskState.TIMEDOUT, self.now)
            assert got == ("Forbidden", None, 40307)
        elif before.state.final:
            assert got == ("Forbidden", None, 40307)
        elif counter != before.counter:
            assert got == ("Forbidden", None, 40308)
        elif before.state is TaskState.CLAIMED:
            assert got == ("Forbidden", None, 40306)
        else:
            assert got[0] == "ok", got
            assert before.state in (TaskState.INIT, TaskState.ENQUEUED)
            assert (id, counter) not in self.claimed, "one counter claimed twice"
            self.claimed.add((id, counter))
            w.log.append((id, counter))
            self.tasks[id] = msgspec.structs.replace(
                before,
                state=TaskState.CLAIMED,
                process_id=w.id,
                ttl=ttl,
                expires_at=self.now + ttl,
            )
            claimed = got[1]
            assert claimed is not None
            assert claimed.task == self.tasks[id]
            assert claimed.root.id == before.root_promise_id
            assert claimed.root.state is self.promises[before.root_promise_id]
            leaf = claimed.leaf.id if claimed.leaf is not None else None
            assert leaf == before.leaf_promise_id

    def do_heartbeat(self, w: str) -> None:
        n = 0
        for id, t in list(self.tasks.items()):
            if t.state is TaskState.CLAIMED and t.process_id == w and not self.lease_lost(t):
                assert t.ttl is not None
                self.tasks[id] = msgspec.structs.replace(t, expires_at=self.now + t.ttl)
                n += 1
        assert self.run(self.engine.heartbeat_tasks(w)) == n

    def do_complete_task(self, id: str, counter: int) -> None:
        before = self.tasks[id]
        got = self.outcome(self.engine.complete_task(id, counter))
        if before.state.final:
            assert got == ("ok", (before, False), 0)
        elif self.timed_out(before):
            self.tasks[id] = _finished(before, TaskState.TIMEDOUT, self.now)
            assert got == ("ok", (self.tasks[id], False), 0)
        elif self.lease_lost(before):  # refused, whatever the counter; the task moves on
            self.tasks[id] = _handed_over(before, self.now)
            assert got == ("Forbidden", None, 40308)
        elif counter != before.counter:
            assert got == ("Forbidden", None, 40308)
        elif before.state is not TaskState.CLAIMED:
            assert got == ("Forbidden", None, 40309)
        else:
            self.tasks[id] = _finished(before, TaskState.COMPLETED, self.now)
            assert got == ("ok", (self.tasks[id], True), 0)

    def do_drop_task(self, id: str, counter: int) -> None:
        before = self.tasks[id]
        got = self.outcome(self.engine.drop_task(id, counter))
        if self.timed_out(before):
            self.tasks[id] = _finished(before, TaskState.TIMEDOUT, self.now)
            assert got == ("ok", (self.tasks[id], False), 0)
        elif self.lease_lost(before):  # refused, whatever the counter; the task moves on
            self.tasks[id] = _handed_over(before, self.now)
            assert got == ("Forbidden", None, 40308)
        elif before.state is not TaskState.CLAIMED:
            assert got == ("ok", (before, False), 0)
        elif counter != before.counter:
            assert got == ("Forbidden", None, 40308)
        else:
            self.tasks[id] = _handed_over(before, self.now)
            assert got == ("ok", (self.tasks[id], True), 0)

    def do_fenced_complete(self, id: str, counter: int, target: str, state: State) -> None:
        before = self.stored_state(target)
        got = self.outcome(self.engine.complete_promise(target, state, fence=(id, counter)))
        if not self.fence_holds(id, counter):
            assert got == ("FencingFailed", None, 41200)
            assert self.stored_state(target) == before  # nothing was written
        elif target not in self.promises:
            assert got == ("NotFound", None, 40400)
        elif self.promises[target] is not State.PENDING:
            assert got[0] == "AlreadyCompleted", got
        else:
            assert got[0] == "ok", got
            self.promises[target] = state
            self.completed(target)
            self.check_root_tasks_done(target)

    @precondition(lambda self: bool(self.live()))
    @rule(data=st.data(), disconnect=st.booleans())
    def kill(self, data: st.DataObject, disconnect: bool) -> None:
        """A worker crashes: it stops acting; its stream stays open or goes away."""
        w = self.workers[data.draw(st.sampled_from(self.live()), label="worker")]
        w.alive = False
        if disconnect and w.conn is not None:
            self.streams.disconnect(w.conn)
            w.conn = None

    @precondition(lambda self: len(self.live()) < len(WORKERS))
    @rule(data=st.data())
    def revive(self, data: st.DataObject) -> None:
        """A (new) worker process connects its stream: parked tasks are ready at once."""
        dead = [w.id for w in self.workers.values() if not w.alive]
        w = self.workers[data.draw(st.sampled_from(dead), label="worker")]
        old = w.conn
        self.connect(w)
        if old is not None:
            assert old.closed  # the newer stream replaced it
            while not old.queue.empty():
                assert old.queue.get_nowait() is None  # messages were all drained already
        for id, t in list(self.tasks.items()):
            if t.state is TaskState.INIT and t.ready_at > self.now:
                self.tasks[id] = msgspec.structs.replace(t, ready_at=self.now)
        self.run(self.dispatcher.stream_connected(self.recv.key))

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        stored = self.stored_tasks()
        for id in TASK_IDS:
            assert stored[id] == self.tasks.get(id), id
        states = self.run(
            self.engine.store.read(lambda tx: {id: tx.get_promise(id) for id in PROMISES})
        )
        for id in PROMISES:
            p = states[id]
            assert (None if p is None else p.state) == self.promises.get(id), id

        # Independently of the model: history and exclusivity.
        active: dict[str, str] = {}
        for id, t in stored.items():
            prev = self.last.get(id)
            if t is None:
                assert prev is None
                continue
            if t.state.active:
                assert t.root_promise_id not in active, (id, active)
                active[t.root_promise_id] = id
            if prev is None:
                assert t.counter == 1
                continue
            if prev.state.final:
                assert t == prev, "a finished task changed"
            assert t.counter >= prev.counter, "counter went down"
            if t.counter != prev.counter:
                assert t.counter == prev.counter + 1
                assert prev.state.active and t.state is TaskState.INIT, (
                    "counter moved without a hand-over"
                )
        self.last = stored


TaskMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTasksOnMemory = TaskMachine.TestCase


class SqliteTaskMachine(TaskMachine):
    def make_store(self) -> Store:
        self.tmpdir = tempfile.mkdtemp(prefix="troth-tasks-stateful-")
        return SqliteStore(f"sqlite:///{self.tmpdir}/t.db")


SqliteTaskMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTasksOnSqlite = SqliteTaskMachine.TestCase


class PostgresTaskMachine(OnPostgres, TaskMachine):
    """The same machine on PostgreSQL."""


PostgresTaskMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTasksOnPostgres = PostgresTaskMachine.TestCase


async def test_fence_ends_at_the_task_timeout_before_the_lease() -> None:
    """Directed (the machine seldom builds it): a resume task claimed with a lease that
    outlasts its own timeout; its fence holds until the timeout, not after, even though
    the lease is still live and the loop has not timed the task out yet."""
    clock = FakeClock(START)
    streams = StreamRegistry()
    engine = Engine(MemoryStore(), clock, delivery=Delivery(streams), task_settings=SETTINGS)
    await engine.open()
    try:
        streams.connect(GROUP, "w1")
        for id in ("root", "l1", "l2", "l3"):
            await engine.create_promise(id, FAR)  # a root without an invoke task
        await engine.register_callback(
            "l1", root_promise_id="root", timeout=START + 2_000, recv=RECV
        )
        await engine.complete_promise("l1", State.RESOLVED)
        assert engine.dispatcher is not None
        assert await engine.dispatcher.dispatch() == 1
        id = "__resume:root:l1"
        claimed = await engine.claim_task(id, 1, process_id="w1", ttl=30_000)
        assert claimed.task.expires_at == START + 30_000

        clock.advance(1_999)  # just before the task timeout: the holder may write
        cb, _ = await engine.register_callback(
            "l2", root_promise_id="root", timeout=FAR, recv=RECV, fence=(id, 1)
        )
        assert cb is not None

        clock.advance(1)  # at the task timeout, the lease still live for 28 s
        with pytest.raises(FencingFailed):
            await engine.register_callback(
                "l3", root_promise_id="root", timeout=FAR, recv=RECV, fence=(id, 1)
            )
        with pytest.raises(FencingFailed):
            await engine.complete_promise("root", State.RESOLVED, fence=(id, 1))
        assert (await engine.get_task(id)).state is TaskState.CLAIMED  # the loop did not run
        assert (await engine.get_promise("root")).state is State.PENDING  # nothing written
        task, changed = await engine.complete_task(id, 1)
        assert (task.state, changed) == (TaskState.TIMEDOUT, False)
    finally:
        await engine.stop()
