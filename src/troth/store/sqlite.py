"""SQLite store: group commit on the event loop with a committer thread, reader threads.

Durability: WAL with ``synchronous=FULL`` by default, so a write acknowledged to a client
has been fsynced and survives kill -9 and power loss. ``?synchronous=normal`` in the URL
trades that for speed: a power loss (not a process crash) may then lose the last
transactions.

Group commit: write operations queue on the store's event loop; when the write connection is
free the loop takes everything queued (up to ``MAX_BATCH``), runs the operations inside one
``BEGIN IMMEDIATE`` transaction (an operation that raises is undone alone: see ``_apply``),
and hands the COMMIT (WAL write + one fsync, GIL released) to the committer thread; only
after it returns are the callers' futures completed. While one batch is being committed the
next one queues up, so throughput grows with concurrency instead of being capped at one
fsync per request, and the operations cost no thread hop or GIL hand-off each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, urlsplit

from troth.errors import StoreUnavailable, ValidationError
from troth.model import (
    TIMER_TAG,
    Callback,
    Lock,
    Promise,
    Schedule,
    State,
    Task,
    TaskState,
)
from troth.store import rows
from troth.store.base import PromiseQuery, Tx
from troth.store.sql import migrations

T = TypeVar("T")
log = logging.getLogger("troth.store.sqlite")

MAX_BATCH: Final = 1024

_COLUMNS: Final = rows.PROMISE_COLUMNS
_WATCH: Final = "UPDATE promises SET watched = 1 WHERE id = ? AND watched = 0"
_SELECT_BY_ID: Final = f"SELECT {_COLUMNS} FROM promises WHERE id = ?"
_INSERT_COLUMNS: Final = (
    "id",
    "state",
    "param_headers",
    "param_data",
    "value_headers",
    "value_data",
    "timeout",
    "ikey_create",
    "ikey_complete",
    "tags",
    "is_timer",
    "created_on",
    "completed_on",
)
_UPDATE_COLUMNS: Final = ("state", "value_headers", "value_data", "ikey_complete", "completed_on")
_UPDATE: Final = f"UPDATE promises SET {' = ?, '.join(_UPDATE_COLUMNS)} = ? WHERE id = ?"
_STATE_TEXT: Final = {s: s.value for s in State}


class _NullsInline:
    """The INSERT/UPDATE of a promise with its NULL values written into the SQL text.

    Binding ``None`` costs about 0.5 µs per parameter in Python's sqlite3 (it looks for an
    adapter and a ``__conform__`` method first), and a typical create binds eight of them:
    one statement per pattern of absent values (a handful occur) avoids that. ``args``
    gives the SQL and the non-None values, in order.
    """

    __slots__ = ("_cache", "_make")

    def __init__(self, make: Callable[[tuple[bool, ...]], str]) -> None:
        self._make = make
        self._cache: dict[tuple[bool, ...], str] = {}

    def args(self, values: tuple[Any, ...]) -> tuple[str, list[Any]]:
        nulls = tuple([v is None for v in values])
        sql = self._cache.get(nulls)
        if sql is None:
            sql = self._cache[nulls] = self._make(nulls)
        return sql, [v for v in values if v is not None]


def _marks(nulls: Sequence[bool]) -> list[str]:
    return ["NULL" if null else "?" for null in nulls]


_INSERTS: Final = _NullsInline(
    lambda nulls: (
        f"INSERT INTO promises ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join(_marks(nulls))})"
    )
)
_TRY_INSERTS: Final = _NullsInline(
    lambda nulls: (
        f"INSERT INTO promises ({', '.join(_INSERT_COLUMNS)})"
        f" VALUES ({', '.join(_marks(nulls))}) ON CONFLICT (id) DO NOTHING"
    )
)
_UPDATES: Final = _NullsInline(
    lambda nulls: (
        "UPDATE promises SET "
        + ", ".join(f"{c} = {m}" for c, m in zip(_UPDATE_COLUMNS, _marks(nulls[:-1]), strict=True))
        + " WHERE id = ?"
    )
)
_UPDATES_BY_SEQ: Final = _NullsInline(
    lambda nulls: (
        "UPDATE promises SET "
        + ", ".join(f"{c} = {m}" for c, m in zip(_UPDATE_COLUMNS, _marks(nulls[:-1]), strict=True))
        + " WHERE seq = ?"
    )
)
_STATE_FILTERS: Final = {
    "pending": "(state = 'PENDING' AND timeout > :now)",
    "resolved": "(state = 'RESOLVED' OR (state = 'PENDING' AND timeout <= :now AND is_timer = 1))",
    "rejected": (
        "(state IN ('REJECTED', 'REJECTED_CANCELED', 'REJECTED_TIMEDOUT')"
        " OR (state = 'PENDING' AND timeout <= :now AND is_timer = 0))"
    ),
}
_UNAVAILABLE_HINTS: Final = ("disk", "full", "readonly", "read-only", "locked", "unable to open")

# -- the task framework ----------------------------------------------------------------------

_CB_COLUMNS: Final = rows.CALLBACK_COLUMNS
_TASK_COLUMNS: Final = rows.TASK_COLUMNS
_LOCK_COLUMNS: Final = rows.LOCK_COLUMNS
# The state conditions below are spelled exactly as the WHERE clauses of the partial indexes
# of 0002_tasks.sql, or SQLite would not use those indexes.
_INIT: Final = "state = 'INIT'"
_ACTIVE: Final = "state IN ('ENQUEUED', 'CLAIMED')"
_UNFINISHED: Final = "state NOT IN ('COMPLETED', 'TIMEDOUT')"

_INSERT_CALLBACK: Final = (
    f"INSERT INTO callbacks ({_CB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_TAKE_CALLBACKS: Final = f"DELETE FROM callbacks WHERE promise_id = ? RETURNING {_CB_COLUMNS}"
_SELECT_TASK: Final = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?"
_INSERT_TASK: Final = (
    f"INSERT INTO tasks ({_TASK_COLUMNS}, recv_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_UPDATE_TASK: Final = (
    "UPDATE tasks SET state = ?, counter = ?, attempt = ?, process_id = ?, ttl = ?,"
    " expires_at = ?, ready_at = ?, completed_on = ? WHERE id = ?"
)
# The range ready_at <= now of the INIT index reads only the tasks that are ready (INIT tasks
# waiting for a worker or a delay can be many); each candidate is kept only if its root has no
# ENQUEUED/CLAIMED task and no older ready INIT task (one per root: the oldest), both answered
# by seeks in tasks_by_root. SQLite 3.40 picks these plans with and without ANALYZE
# statistics; INDEXED BY pins them (here and below) so that statistics gathered later cannot
# turn a hot query into a walk over every unfinished task.
_DISPATCHABLE: Final = (
    f"SELECT {_TASK_COLUMNS} FROM tasks AS t INDEXED BY tasks_init_by_ready"
    " WHERE t.state = 'INIT' AND t.ready_at <= :now AND t.timeout > :now"
    " AND NOT EXISTS (SELECT 1 FROM tasks AS a INDEXED BY tasks_by_root"
    "  WHERE a.root_promise_id = t.root_promise_id AND a.state IN ('ENQUEUED', 'CLAIMED'))"
    " AND NOT EXISTS (SELECT 1 FROM tasks AS o INDEXED BY tasks_by_root"
    "  WHERE o.root_promise_id = t.root_promise_id AND o.state = 'INIT'"
    "  AND (o.created_on, o.id) < (t.created_on, t.id)"
    "  AND o.ready_at <= :now AND o.timeout > :now)"
    " ORDER BY t.created_on, t.id LIMIT :limit"
)
# Two pinned index ranges merged by rowid. (SQLite plans the plain OR of both conditions as a
# MULTI-INDEX OR today, but an OR cannot be pinned with INDEXED BY.)
_OVERDUE: Final = (
    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE rowid IN ("
    f" SELECT rowid FROM tasks INDEXED BY tasks_active_by_expiry WHERE {_ACTIVE}"
    "  AND expires_at <= :now"
    f" UNION ALL SELECT rowid FROM tasks INDEXED BY tasks_unfinished_by_timeout"
    f"  WHERE {_UNFINISHED} AND timeout <= :now)"
    " ORDER BY created_on, id LIMIT :limit"
)
_NEXT_TASK_TIME: Final = (
    "SELECT min(t) FROM ("
    f"SELECT (SELECT ready_at FROM tasks INDEXED BY tasks_init_by_ready WHERE {_INIT}"
    " ORDER BY ready_at LIMIT 1) AS t"
    f" UNION ALL SELECT (SELECT expires_at FROM tasks INDEXED BY tasks_active_by_expiry"
    f" WHERE {_ACTIVE} AND expires_at IS NOT NULL ORDER BY expires_at LIMIT 1)"
    f" UNION ALL SELECT (SELECT timeout FROM tasks INDEXED BY tasks_unfinished_by_timeout"
    f" WHERE {_UNFINISHED} ORDER BY timeout LIMIT 1))"
)
_READY_TASKS_FOR: Final = (
    "UPDATE tasks INDEXED BY tasks_init_by_recv SET ready_at = :now"
    f" WHERE {_INIT} AND recv_key = :key AND ready_at > :now"
)
_HEARTBEAT_TASKS: Final = (
    "UPDATE tasks INDEXED BY tasks_claimed_by_process SET expires_at = :now + coalesce(ttl, 0)"
    " WHERE state = 'CLAIMED' AND process_id = :process AND expires_at > :now"
)
_PUT_LOCK: Final = (
    f"INSERT INTO locks ({_LOCK_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (resource_id) DO UPDATE SET execution_id = excluded.execution_id,"
    " process_id = excluded.process_id, ttl = excluded.ttl, expires_at = excluded.expires_at"
)

# -- schedules -------------------------------------------------------------------------------

_SCHEDULE_COLUMNS: Final = rows.SCHEDULE_COLUMNS
_SELECT_SCHEDULE: Final = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE id = ?"
_INSERT_SCHEDULE: Final = (
    "INSERT INTO schedules (id, description, cron, tags, promise_id, promise_timeout,"
    " promise_param_headers, promise_param_data, promise_tags, last_run_time, next_run_time,"
    " idempotency_key, created_on) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO NOTHING"
)
_UPDATE_SCHEDULE: Final = "UPDATE schedules SET last_run_time = ?, next_run_time = ? WHERE id = ?"
_DELETE_SCHEDULE: Final = "DELETE FROM schedules WHERE id = ? RETURNING seq, tags"
# INDEXED BY as for promises: the range next_run_time <= now of the index reads only the due
# schedules, already in (next_run_time, id) order, whatever statistics ANALYZE gathers later.
_DUE_SCHEDULES: Final = (
    f"SELECT {_SCHEDULE_COLUMNS} FROM schedules INDEXED BY schedules_by_next_run"
    " WHERE next_run_time <= ? ORDER BY next_run_time, id LIMIT ?"
)
_NEXT_SCHEDULE_TIME: Final = (
    "SELECT next_run_time FROM schedules INDEXED BY schedules_by_next_run"
    " ORDER BY next_run_time LIMIT 1"
)


def glob_pattern(pattern: str) -> str:
    """Turn a search pattern (``*`` wildcard, every other character literal) into a GLOB."""
    return pattern.replace("[", "[[]").replace("?", "[?]")


class SqliteTx:
    """``Tx`` over one sqlite3 connection that is inside a transaction.

    ``_quiet`` holds ids of promises read in this transaction whose ``watched`` flag was 0:
    they have no callbacks and root no task, so ``take_callbacks`` and ``tasks_of_root`` can
    answer ``[]`` without a query. Inserting a callback or a task sets the flag and drops the
    id from the set; ``reset`` empties it at every transaction start. ``_seqs`` remembers the
    rowid of each promise ``get_promise`` found, so that updating it (a completion reads, then
    updates) finds the row by rowid instead of searching the id index again.
    """

    __slots__ = ("_cur", "_quiet", "_seqs", "c")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn
        # One cursor for the statements whose rows are not iterated (writes, single-row
        # reads): saves creating a cursor object per statement on the hot paths.
        self._cur = conn.cursor()
        self._quiet: set[str] = set()
        self._seqs: dict[str, int] = {}

    def reset(self) -> None:
        self._quiet.clear()
        self._seqs.clear()

    def _note(self, row: tuple[Any, ...]) -> Promise:
        if not row[13]:
            self._quiet.add(row[1])
        return rows.promise(row)

    def _watch(self, promise_id: str) -> None:
        self._quiet.discard(promise_id)
        self.c.execute(_WATCH, (promise_id,))

    def get_promise(self, id: str) -> Promise | None:
        cur = self._cur
        cur.execute(_SELECT_BY_ID, (id,))
        row = cur.fetchone()
        if row is None:
            return None
        self._seqs[id] = row[0]
        return self._note(row)

    def insert_promise(self, p: Promise) -> None:
        self._insert(_INSERTS, p)

    def try_insert_promise(self, p: Promise) -> bool:
        return self._insert(_TRY_INSERTS, p)

    def _insert(self, statements: _NullsInline, p: Promise) -> bool:
        # The hot path of every create: no helper calls for the (usual) empty members.
        param, value, tags = p.param, p.value, p.tags
        sql, args = statements.args(
            (
                p.id,
                _STATE_TEXT[p.state],
                rows.dump(param.headers) if param.headers else None,
                param.data,
                rows.dump(value.headers) if value.headers else None,
                value.data,
                p.timeout,
                p.idempotency_key_for_create,
                p.idempotency_key_for_complete,
                rows.dump(tags) if tags else None,
                1 if tags and tags.get(TIMER_TAG) == "true" else 0,
                p.created_on,
                p.completed_on,
            )
        )
        cur = self._cur
        cur.execute(sql, args)
        if cur.rowcount != 1:
            return False
        if tags:
            seq = cur.lastrowid
            self.c.executemany(
                "INSERT INTO promise_tags (key, value, seq) VALUES (?, ?, ?)",
                [(k, v, seq) for k, v in tags.items()],
            )
        return True

    @staticmethod
    def _update_values(p: Promise) -> tuple[Any, ...]:
        value = p.value
        return (
            _STATE_TEXT[p.state],
            rows.dump(value.headers) if value.headers else None,
            value.data,
            p.idempotency_key_for_complete,
            p.completed_on,
            p.id,
        )

    def update_promise(self, p: Promise) -> None:
        seq = self._seqs.get(p.id)
        if seq is None:
            self._cur.execute(*_UPDATES.args(self._update_values(p)))
        else:
            self._cur.execute(*_UPDATES_BY_SEQ.args((*self._update_values(p)[:-1], seq)))

    def update_promises(self, promises: Sequence[Promise]) -> None:
        # One statement for all (executemany): the sweeper's batches can be thousands.
        self.c.executemany(_UPDATE, [self._update_values(p) for p in promises])

    def search_promises(self, query: PromiseQuery, now: int) -> list[tuple[int, Promise]]:
        where: list[str] = []
        args: dict[str, Any] = {"now": now, "limit": query.limit}
        if query.pattern != "*":
            where.append("id GLOB :pattern")
            args["pattern"] = glob_pattern(query.pattern)
        if query.state is not None:
            where.append(_STATE_FILTERS[query.state])
        for i, (k, v) in enumerate(sorted(query.tags.items())):
            where.append(
                f"seq IN (SELECT seq FROM promise_tags WHERE key = :tk{i} AND value = :tv{i})"
            )
            args[f"tk{i}"] = k
            args[f"tv{i}"] = v
        if query.before is not None:
            where.append("seq < :before")
            args["before"] = query.before
        sql = f"SELECT {_COLUMNS} FROM promises"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT :limit"
        return [(row[0], self._note(row)) for row in self.c.execute(sql, args)]

    # INDEXED BY: without ANALYZE statistics the planner prefers (state, seq) and scans every
    # pending row; the partial index on timeout makes both queries O(due) instead.
    def due_promises(self, now: int, limit: int) -> list[Promise]:
        found = self.c.execute(
            f"SELECT {_COLUMNS} FROM promises INDEXED BY promises_pending_by_timeout"
            " WHERE state = 'PENDING' AND timeout <= ? ORDER BY timeout LIMIT ?",
            (now, limit),
        )
        return [self._note(r) for r in found]

    def next_deadline(self) -> int | None:
        row = self.c.execute(
            "SELECT timeout FROM promises INDEXED BY promises_pending_by_timeout"
            " WHERE state = 'PENDING' ORDER BY timeout LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def get_meta(self, key: str) -> str | None:
        row = self.c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.c.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- callbacks and subscriptions ------------------------------------------------------

    def insert_callback(self, callback: Callback) -> bool:
        cb = callback
        cur = self.c.execute(
            _INSERT_CALLBACK,
            rows.callback_params(cb),
        )
        if cur.rowcount != 1:
            return False
        self._watch(cb.promise_id)
        return True

    def take_callbacks(self, promise_id: str) -> list[Callback]:
        if promise_id in self._quiet:
            return []
        # RETURNING yields rows in no defined order: sort them as documented.
        found = self.c.execute(_TAKE_CALLBACKS, (promise_id,)).fetchall()
        found.sort(key=lambda r: (r[5], r[0]))
        return [rows.callback(r) for r in found]

    # -- tasks ----------------------------------------------------------------------------

    def get_task(self, id: str) -> Task | None:
        row = self.c.execute(_SELECT_TASK, (id,)).fetchone()
        return rows.task(row) if row else None

    def insert_task(self, task: Task) -> bool:
        t = task
        cur = self.c.execute(
            _INSERT_TASK,
            rows.task_params(t),
        )
        if cur.rowcount != 1:
            return False
        self._watch(t.root_promise_id)
        return True

    def update_task(self, task: Task) -> None:
        t = task
        self.c.execute(
            _UPDATE_TASK,
            rows.task_update_params(t),
        )

    def tasks_of_root(self, root_promise_id: str, states: Sequence[TaskState]) -> list[Task]:
        if not states or root_promise_id in self._quiet:
            return []
        marks = ", ".join("?" * len(states))
        found = self.c.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks INDEXED BY tasks_by_root"
            f" WHERE root_promise_id = ? AND state IN ({marks}) ORDER BY created_on, id",
            (root_promise_id, *(s.value for s in states)),
        )
        return [rows.task(r) for r in found]

    def dispatchable_tasks(self, now: int, limit: int) -> list[Task]:
        found = self.c.execute(_DISPATCHABLE, {"now": now, "limit": limit})
        return [rows.task(r) for r in found]

    def overdue_tasks(self, now: int, limit: int) -> list[Task]:
        found = self.c.execute(_OVERDUE, {"now": now, "limit": limit})
        return [rows.task(r) for r in found]

    def next_task_time(self) -> int | None:
        row = self.c.execute(_NEXT_TASK_TIME).fetchone()
        return row[0] if row else None

    def ready_tasks_for(self, recv_key: str, now: int) -> int:
        return self.c.execute(_READY_TASKS_FOR, {"now": now, "key": recv_key}).rowcount

    def heartbeat_tasks(self, process_id: str, now: int) -> int:
        return self.c.execute(_HEARTBEAT_TASKS, {"now": now, "process": process_id}).rowcount

    # -- operator queries (metrics, dashboard) --------------------------------------------

    def count_pending_promises(self) -> int:
        row = self.c.execute(
            "SELECT count(*) FROM promises INDEXED BY promises_pending_by_timeout"
            " WHERE state = 'PENDING'"
        ).fetchone()
        return int(row[0])

    def count_tasks_by_state(self) -> dict[str, int]:
        found = self.c.execute(
            "SELECT state, count(*) FROM tasks INDEXED BY tasks_unfinished_by_timeout"
            f" WHERE {_UNFINISHED} GROUP BY state"
        )
        return {state: int(n) for state, n in found}

    def active_tasks(self, limit: int) -> list[Task]:
        found = self.c.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks INDEXED BY tasks_unfinished_by_timeout"
            f" WHERE {_UNFINISHED} ORDER BY timeout, id LIMIT ?",
            (limit,),
        )
        return [rows.task(r) for r in found]

    def callbacks_of(self, promise_id: str) -> list[Callback]:
        found = self.c.execute(
            f"SELECT {_CB_COLUMNS} FROM callbacks INDEXED BY callbacks_by_promise"
            " WHERE promise_id = ? ORDER BY created_on, id",
            (promise_id,),
        )
        return [rows.callback(r) for r in found]

    # -- locks ----------------------------------------------------------------------------

    def get_lock(self, resource_id: str) -> Lock | None:
        row = self.c.execute(
            f"SELECT {_LOCK_COLUMNS} FROM locks WHERE resource_id = ?", (resource_id,)
        ).fetchone()
        return rows.lock(row) if row else None

    def put_lock(self, lock: Lock) -> None:
        self.c.execute(
            _PUT_LOCK,
            (lock.resource_id, lock.execution_id, lock.process_id, lock.ttl, lock.expires_at),
        )

    def delete_lock(self, resource_id: str) -> None:
        self.c.execute("DELETE FROM locks WHERE resource_id = ?", (resource_id,))

    def heartbeat_locks(self, process_id: str, now: int) -> int:
        return self.c.execute(
            "UPDATE locks SET expires_at = ? + ttl WHERE process_id = ?", (now, process_id)
        ).rowcount

    # -- schedules ------------------------------------------------------------------------

    def insert_schedule(self, schedule: Schedule) -> bool:
        sc = schedule
        cur = self.c.execute(
            _INSERT_SCHEDULE,
            rows.schedule_params(sc),
        )
        if cur.rowcount != 1:
            return False
        if sc.tags:
            seq = cur.lastrowid
            self.c.executemany(
                "INSERT INTO schedule_tags (key, value, seq) VALUES (?, ?, ?)",
                [(k, v, seq) for k, v in sc.tags.items()],
            )
        return True

    def get_schedule(self, id: str) -> Schedule | None:
        row = self.c.execute(_SELECT_SCHEDULE, (id,)).fetchone()
        return rows.schedule(row) if row else None

    def update_schedule(self, schedule: Schedule) -> None:
        self.c.execute(
            _UPDATE_SCHEDULE, (schedule.last_run_time, schedule.next_run_time, schedule.id)
        )

    def delete_schedule(self, id: str) -> bool:
        row = self.c.execute(_DELETE_SCHEDULE, (id,)).fetchone()
        if row is None:
            return False
        seq, tags = row
        # Each tag row by its full primary key: the side table has no index on seq alone.
        self.c.executemany(
            "DELETE FROM schedule_tags WHERE key = ? AND value = ? AND seq = ?",
            [(k, v, seq) for k, v in (rows.headers(tags) or {}).items()],
        )
        return True

    def search_schedules(
        self, pattern: str, tags: dict[str, str], limit: int, before: int | None
    ) -> list[tuple[int, Schedule]]:
        where: list[str] = []
        args: dict[str, Any] = {"limit": limit}
        if pattern != "*":
            where.append("id GLOB :pattern")
            args["pattern"] = glob_pattern(pattern)
        for i, (k, v) in enumerate(sorted(tags.items())):
            where.append(
                f"seq IN (SELECT seq FROM schedule_tags WHERE key = :tk{i} AND value = :tv{i})"
            )
            args[f"tk{i}"] = k
            args[f"tv{i}"] = v
        if before is not None:
            where.append("seq < :before")
            args["before"] = before
        sql = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT :limit"
        return [(row[0], rows.schedule(row)) for row in self.c.execute(sql, args)]

    def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        return [rows.schedule(r) for r in self.c.execute(_DUE_SCHEDULES, (now, limit))]

    def next_schedule_time(self) -> int | None:
        row = self.c.execute(_NEXT_SCHEDULE_TIME).fetchone()
        return row[0] if row else None


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"SQLite: {exc}; the request was not applied")


def _is_unavailable(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) or any(h in text for h in _UNAVAILABLE_HINTS)


_Item = tuple[Callable[[Tx], Any], "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", bool, Any]


class _OpRaised(Exception):
    """An operation raised in a batch run without savepoints: re-run it isolated."""


class SqliteStore:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db``; ``?synchronous=normal``."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ValidationError(f"store URL {url!r} has no file path (sqlite:///troth.db)")
        self.path = path
        opts = {k.lower(): v[-1] for k, v in parse_qs(parts.query).items()}
        self.synchronous = opts.get("synchronous", "full").upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValidationError(f"synchronous must be full, normal or extra, got {url!r}")
        # The write side (see "the writer" below): the loop the store was opened on owns the
        # write connection except while a job of the committer thread uses it (``_busy``).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._tx: SqliteTx | None = None
        self._pending: list[_Item] = []
        self._busy = False
        self._scheduled = False
        self._drained: asyncio.Future[None] | None = None
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._committer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        #: Optional observer (metrics): called on the committer thread after each write
        #: transaction with its number of operations and its duration in seconds (from the
        #: start of the batch to the end of its COMMIT).
        self.on_commit: Callable[[int, float], None] | None = None

    # -- connections ---------------------------------------------------------------------

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (group commit needs it).
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # WAL: readers never block the writer and the writer never blocks readers.
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: fsync the WAL at every commit, so an acknowledged write survives power loss.
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        # Another process holding the write lock (a second server, a migration) is waited
        # for, not reported as an error.
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache per connection
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
            self._local.tx = SqliteTx(conn)
            with self._lock:
                self._read_conns.append(conn)
        return conn

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._committer = threading.Thread(
            target=self._committer_main, name="troth-sqlite-commit", daemon=True
        )
        self._committer.start()
        try:
            conn = await loop.run_in_executor(None, self._open_writer)
        except BaseException as exc:
            self._jobs.put(None)
            raise _wrap_open_error(exc, self.path) from None
        self._conn = conn
        self._tx = SqliteTx(conn)
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="troth-sqlite-read")

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect(readonly=False)
        try:
            self._migrate(conn)
            # The loop never waits for another process's write lock: BEGIN fails at once
            # and the committer thread does the waiting (``_begin_waiting``).
            conn.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._pending or self._busy or self._scheduled:
            self._drained = loop.create_future()
            await self._drained
        self._jobs.put(None)
        if self._committer is not None:
            await loop.run_in_executor(None, self._committer.join)
        if self._conn is not None:
            self._conn.close()
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()

    # -- migrations ----------------------------------------------------------------------

    @staticmethod
    def migrations() -> list[tuple[int, str, str]]:
        """Every migration shipped with troth: (version, name, SQL), in order."""
        return migrations("sqlite")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_on INTEGER NOT NULL)"
        )
        applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in self.migrations():
            if version in applied:
                continue
            script = (
                f"BEGIN IMMEDIATE;\n{sql}\n;INSERT INTO schema_migrations VALUES"
                f" ({version}, '{name}', {int(time.time() * 1000)});\nCOMMIT;"
            )
            try:
                conn.executescript(script)
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
                if version not in applied:  # not a concurrent migrator: a real failure
                    raise
            log.info("applied migration %04d_%s", version, name)

    # -- the writer ----------------------------------------------------------------------
    #
    # Operations run on the event loop, in the order ``write`` was called; only COMMIT (the
    # WAL write and its fsync, with the GIL released) runs on the committer thread. A batch
    # is everything queued when the write connection is free (up to MAX_BATCH): BEGIN
    # IMMEDIATE and the operations on the loop, then COMMIT on the thread while the loop
    # serves requests and queues the next batch, then one call back to the loop completes
    # the batch's futures. SQLite publishes a WAL commit to readers only after its fsync
    # (synchronous=FULL), so no reader ever sees a write before it is durable.

    def _committer_main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """From the committer thread: run ``fn(*args)`` on the store's loop."""
        assert self._loop is not None
        # RuntimeError: that event loop is closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    def _start(self) -> None:
        """On the loop: begin the next batch unless the connection is busy."""
        self._scheduled = False
        if self._busy or not self._pending:
            return
        conn = self._conn
        assert conn is not None
        batch = self._pending[:MAX_BATCH]
        del self._pending[:MAX_BATCH]
        started = time.perf_counter()
        self._busy = True
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            # Another process holds the write lock: wait for it off the loop.
            self._jobs.put(lambda: self._begin_waiting(batch, started))
            return
        except sqlite3.Error as exc:
            self._finish(batch, [], exc)
            return
        self._run(batch, started)

    def _begin_waiting(self, batch: list[_Item], started: float) -> None:
        """On the committer thread: BEGIN IMMEDIATE, retrying for up to 5 s (busy_timeout)."""
        conn = self._conn
        assert conn is not None
        deadline = time.monotonic() + 5.0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if time.monotonic() < deadline:
                    time.sleep(0.002)
                    continue
                self._post(self._finish, batch, [], exc)
                return
            except sqlite3.Error as exc:
                self._post(self._finish, batch, [], exc)
                return
            self._post(self._run, batch, started)
            return

    def _run(self, batch: list[_Item], started: float) -> None:
        """On the loop, inside BEGIN IMMEDIATE: run the batch's operations, then hand the
        COMMIT to the committer thread."""
        conn, tx = self._conn, self._tx
        assert conn is not None and tx is not None
        try:
            try:
                outcomes = self._apply(conn, tx, batch, isolate=False)
            except _OpRaised:
                outcomes = self._apply(conn, tx, batch, isolate=True)
        except sqlite3.Error as exc:
            self._finish(batch, [], exc)
            return
        self._jobs.put(lambda: self._commit(batch, outcomes, started))

    def _apply(
        self, conn: sqlite3.Connection, tx: SqliteTx, batch: list[_Item], *, isolate: bool
    ) -> list[_Outcome]:
        """Run a batch inside the open transaction (not committed here).

        Fast path (``isolate=False``): no savepoints. Engine operations decide before they
        write and do not raise, so this is the normal case; if one does raise, everything
        the batch did is rolled back (to the savepoint ``batch``, keeping the write lock)
        and ``_OpRaised`` tells the caller to re-run the batch with ``isolate=True``, where
        each operation has its own SAVEPOINT and only the failing one's changes are undone.
        Nothing was committed or answered before the re-run, and operations are pure
        functions of the transaction, so running them twice is safe.
        """
        outcomes: list[_Outcome] = []
        tx.reset()
        if not isolate:
            conn.execute("SAVEPOINT batch")
            for op, fut in batch:
                try:
                    outcomes.append((fut, True, op(tx)))
                except Exception as exc:
                    if isinstance(exc, sqlite3.Error) and _is_unavailable(exc):
                        raise
                    conn.execute("ROLLBACK TO batch")
                    raise _OpRaised() from None
            conn.execute("RELEASE batch")
            return outcomes
        conn.execute("RELEASE batch")
        for op, fut in batch:
            conn.execute("SAVEPOINT op")
            try:
                result = op(tx)
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                if isinstance(exc, sqlite3.Error) and _is_unavailable(exc):
                    raise
                outcomes.append((fut, False, exc))
            else:
                conn.execute("RELEASE op")
                outcomes.append((fut, True, result))
        return outcomes

    def _commit(self, batch: list[_Item], outcomes: list[_Outcome], started: float) -> None:
        """On the committer thread: COMMIT (WAL write + fsync), then back to the loop."""
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._post(self._finish, batch, [], exc)
            return
        if self.on_commit is not None:
            try:
                self.on_commit(len(batch), time.perf_counter() - started)
            except Exception:
                log.exception("on_commit observer failed")
        self._post(self._finish, batch, outcomes, None)

    def _finish(
        self, batch: list[_Item], outcomes: list[_Outcome], exc: sqlite3.Error | None
    ) -> None:
        """On the loop: the batch is committed (or failed); answer it, start the next."""
        if exc is not None:
            log.error("write transaction of %d operations failed: %s", len(batch), exc)
            conn = self._conn
            if conn is not None and conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed")
            err = _unavailable(exc)
            outcomes = [(fut, False, err) for _op, fut in batch]
        self._busy = False
        _deliver(outcomes)
        if self._pending:
            self._start()
        elif self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- the public interface ------------------------------------------------------------

    async def write(self, op: Callable[[Tx], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the store is closed (server shutting down)")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is None:
                raise StoreUnavailable("the store is not open")
            # Another event loop (another thread): run the write on the store's loop.
            done = asyncio.run_coroutine_threadsafe(self.write(op), self._loop)
            return await asyncio.wrap_future(done)
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, fut))
        if not self._busy and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start)
        return await fut

    def _read(self, op: Callable[[Tx], T]) -> T:
        conn = self._read_conn()
        tx: SqliteTx = self._local.tx
        tx.reset()
        try:
            conn.execute("BEGIN")
            try:
                return op(tx)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    async def read(self, op: Callable[[Tx], T]) -> T:
        if self._closed or self._readers is None:
            raise StoreUnavailable("the store is closed (server shutting down)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, op)

    async def check(self) -> None:
        await self.read(lambda tx: tx.get_meta("ping"))


def _deliver(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in items:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _wrap_open_error(exc: BaseException, path: str) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return StoreUnavailable(f"cannot open SQLite database {path!r}: {exc}")
    return exc
