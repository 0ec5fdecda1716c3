"""Linearizability of a recorded history, per id (Wing & Gong's search, as in Porcupine).

A durable promise store is a map of independent objects, and linearizability is local
(Herlihy & Wing): the whole history is linearizable iff the sub-history of every id is. So
the checker splits the history by id and searches each part separately.

Searches touch many ids. A search is expanded into one read-like operation per id it
concerns, with the search's own interval: ``search_has`` (it returned this promise, in this
form) for every returned id, and ``search_lacks`` (absent, or not in the filtered state) for
every id of the run that it did not return. This checks that each search saw every id in a
state the id really had during the search; it does not require one snapshot across ids
(the API does not promise that either).

Besides linearizability, ``check_history`` checks what needs no search: every response of a
search matches its own state filter.

The search: ops are sorted by invocation. At each point the candidates to linearize next
are the not-yet-linearized ops invoked before the earliest pending return; the model says
which candidates may go next and in what states that leaves the id; visited
``(linearized set, state)`` pairs are memoized. Ops with an unknown outcome (``ret = inf``)
may be linearized anywhere after their invocation, or not at all.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from tools.linearize.model import SEARCH_CLASSES, Kind, Op, PState, step


@dataclass
class KeyResult:
    id: str
    ok: bool
    ops: int
    explored: int
    #: on failure: the longest linearizable prefix found, and the ops none of which could
    #: be linearized after it
    prefix: list[Op] = field(default_factory=list)
    stuck: list[Op] = field(default_factory=list)
    gave_up: bool = False


@dataclass
class Report:
    ok: bool
    keys: list[KeyResult]
    problems: list[str]

    def summary(self) -> str:
        ops = sum(k.ops for k in self.keys)
        explored = sum(k.explored for k in self.keys)
        bad = [k for k in self.keys if not k.ok]
        lines = [
            f"{'LINEARIZABLE' if self.ok else 'NOT LINEARIZABLE'}: {len(self.keys)} ids, "
            f"{ops} per-id operations, {explored} search states explored"
        ]
        lines += self.problems[:20]
        for k in bad[:5]:
            what = "search gave up (state limit)" if k.gave_up else "no linearization"
            lines.append(f"id {k.id!r}: {what}; longest linearizable prefix {len(k.prefix)} ops")
            for op in k.prefix[-5:]:
                lines.append(f"  ok    {describe(op)}")
            for op in k.stuck[:8]:
                lines.append(f"  STUCK {describe(op)}")
        return "\n".join(lines)


def describe(op: Op) -> str:
    ret = "?" if not op.known else f"{op.ret:.1f}"
    body = op.body
    if isinstance(body, dict) and "state" in body:
        body = {
            k: body[k]
            for k in ("state", "idempotencyKeyForCreate", "idempotencyKeyForComplete", "value")
            if k in body
        }
    elif isinstance(body, dict) and "error" in body:
        body = {"code": body["error"].get("code")}
    return (
        f"#{op.index} c{op.client} {op.kind} {op.args} [{op.inv:.1f}, {ret}] -> {op.status} {body}"
    )


def check_key(ops: list[Op], slack: float = 1.0, max_states: int = 2_000_000) -> KeyResult:
    """Search for a linearization of the operations on one id."""
    ops = sorted(ops, key=lambda o: o.inv)
    n = len(ops)
    rets = [o.ret for o in ops]
    known = 0
    for i, o in enumerate(ops):
        if o.known:
            known |= 1 << i
    all_bits = (1 << n) - 1
    seen: set[tuple[int, PState | None]] = set()
    best_mask, best_path = 0, []

    def candidates(mask: int) -> list[int]:
        rest = [i for i in range(n) if not mask >> i & 1]
        earliest = min((rets[i] for i in rest), default=math.inf)
        return [i for i in rest if ops[i].inv <= earliest]

    # Iterative depth-first search: each frame is (mask, state, remaining moves).
    stack: list[tuple[int, PState | None, list[tuple[int, PState | None]]]] = []
    path: list[int] = []

    def moves(mask: int, state: PState | None) -> list[tuple[int, PState | None]]:
        out = []
        for i in candidates(mask):
            for nxt in step(state, ops[i], slack):
                out.append((i, nxt))
        return out

    stack.append((0, None, moves(0, None)))
    seen.add((0, None))
    explored = 1
    while stack:
        mask, _state, todo = stack[-1]
        if mask & known == known:
            return KeyResult(ops[0].id if ops else "", True, n, explored)
        if bin(mask).count("1") > bin(best_mask).count("1"):
            best_mask, best_path = mask, list(path)
        if not todo:
            stack.pop()
            if path:
                path.pop()
            continue
        i, nxt = todo.pop()
        new_mask = mask | 1 << i
        if (new_mask, nxt) in seen:
            continue
        seen.add((new_mask, nxt))
        explored += 1
        if explored > max_states:
            break
        path.append(i)
        stack.append((new_mask, nxt, moves(new_mask, nxt) if new_mask != all_bits else []))
    result = KeyResult(ops[0].id if ops else "", False, n, explored)
    result.gave_up = explored > max_states
    result.prefix = [ops[i] for i in best_path]
    result.stuck = [ops[i] for i in candidates(best_mask)]
    return result


def expand_searches(ops: Iterable[Op], universe: Iterable[str]) -> tuple[list[Op], list[str]]:
    """Split every ``search`` record into per-id operations; check the state filters.

    A search op has ``kind == "search"`` in the raw history (``id`` is the pattern prefix);
    it becomes ``search_has`` ops for what it returned and ``search_lacks`` ops for the ids
    of ``universe`` under its pattern that it did not return.
    """
    out: list[Op] = []
    problems: list[str] = []
    ids = sorted(set(universe))
    for op in ops:
        if op.kind != "search":
            out.append(op)
            continue
        if not op.known or op.status != 200:
            if op.known and op.status is not None and op.status < 500:
                problems.append(f"search answered {op.status}: {describe(op)}")
            continue
        body = op.body
        prefix = op.args["prefix"]
        wanted = op.args.get("state")
        if body.get("cursor") is not None:
            problems.append(f"search was paged (raise its limit): {describe(op)}")
        returned: dict[str, dict[str, object]] = {}
        for p in body.get("promises", []):
            pid = p.get("id")
            if not isinstance(pid, str) or not pid.startswith(prefix):
                problems.append(f"search for {prefix}* returned {pid!r}")
                continue
            if pid in returned:
                problems.append(f"search returned {pid!r} twice: {describe(op)}")
            if wanted is not None and p.get("state") not in SEARCH_CLASSES[wanted]:
                problems.append(f"search state={wanted} returned {pid!r} in state {p.get('state')}")
            returned[pid] = p
        for pid in ids:
            if not pid.startswith(prefix):
                continue
            if pid in returned:
                out.append(_derived(op, "search_has", pid, returned[pid]))
            else:
                out.append(_derived(op, "search_lacks", pid, None))
        for pid in returned:
            if pid not in ids:
                out.append(_derived(op, "search_has", pid, returned[pid]))
    return out, problems


def _derived(op: Op, kind: Kind, id: str, body: object) -> Op:
    return Op(
        index=op.index,
        client=op.client,
        kind=kind,
        id=id,
        inv=op.inv,
        ret=op.ret,
        args=op.args,
        status=op.status,
        body=body,
    )


def check_history(ops: list[Op], slack: float = 1.0, max_states: int = 2_000_000) -> Report:
    """Check a whole history: search filters, then linearizability per id."""
    universe = {o.id for o in ops if o.kind != "search"}
    flat, problems = expand_searches(ops, universe)
    by_id: dict[str, list[Op]] = defaultdict(list)
    for op in flat:
        by_id[op.id].append(op)
    keys = [check_key(by_id[k], slack, max_states) for k in sorted(by_id)]
    return Report(ok=not problems and all(k.ok for k in keys), keys=keys, problems=problems)
