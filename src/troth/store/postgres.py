"""PostgreSQL store: many stateless server processes on one database.

Same shape as the SQLite store — operations are plain synchronous functions of a ``Tx`` —
but several processes (and several writer threads in each) apply them concurrently, so
every rule that needs mutual exclusion is enforced by the database, never in process:

- a write transaction reads promises, tasks and schedules ``FOR UPDATE`` (row locks: two
  processes can never both complete one promise or claim one task version), reads locks
  under an advisory transaction lock on the resource (two acquirers of a free lock are
  serialized, the second sees the first's row), and takes an advisory lock on a task's root
  promise when it reads the task, so dispatch keeps "one active task per root" across
  processes;
- the sweeper, overdue tasks and due schedules are read ``FOR UPDATE SKIP LOCKED``, so the
  processes share that work instead of queueing behind each other;
- inserts are ``ON CONFLICT DO NOTHING`` or guarded by unique constraints.

Isolation is READ COMMITTED: after waiting for a row lock a statement sees the row as
committed by the other transaction, which is exactly what the rules must decide on.

Group commit: ``writers`` threads (default 4) each take every queued operation (up to
``batch``) and run them in one transaction, answering each caller only after the commit
(PostgreSQL's own WAL flush is shared by concurrent commits as well). A batch that meets a
deadlock, a serialization failure or a unique violation is rolled back and run again; one
that keeps failing runs each operation in its own transaction. An operation that raises is
isolated with savepoints, as in SQLite, and only its caller sees the exception.

Wakeups across processes: a transaction that completes promises, creates deadlines or
changes tasks or schedules sends one ``NOTIFY troth`` (delivered at commit); every process
LISTENs and wakes its long-poll waiters, sweeper, dispatcher and schedule loop. Because a
notification can be missed (a listener reconnecting), waiters re-check periodically and a
reconnect wakes everything, so a missed notification delays a wakeup but never loses it.

URL: ``postgresql://user:pass@host:port/db?schema=troth&writers=4&batch=256&readers=8``
(other query parameters go to libpq, e.g. ``sslmode``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from troth.errors import StoreUnavailable, ValidationError
from troth.model import (
    Callback,
    Lock,
    Promise,
    Schedule,
    State,
    Task,
    TaskState,
)
from troth.store import rows
from troth.store.base import PromiseQuery
from troth.store.sql import migrations

T = TypeVar("T")
log = logging.getLogger("troth.store.postgres")

CHANNEL: Final = "troth"
#: NOTIFY payloads must stay under 8000 bytes.
_MAX_PAYLOAD: Final = 7000
_RETRIES: Final = 4
_SOON_MS: Final = 5_000
_encode = msgspec.json.encode
_COLUMNS: Final = rows.PROMISE_COLUMNS
_CB_COLUMNS: Final = rows.CALLBACK_COLUMNS
_TASK_COLUMNS: Final = rows.TASK_COLUMNS
_LOCK_COLUMNS: Final = rows.LOCK_COLUMNS
_SCHEDULE_COLUMNS: Final = rows.SCHEDULE_COLUMNS
_event_decode = msgspec.json.Decoder(dict[str, Any]).decode

#: Errors after which the same work, run again, will succeed.
_TRANSIENT: Final = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.UniqueViolation,
    pg_errors.LockNotAvailable,
)

_SELECT: Final = f"SELECT {_COLUMNS} FROM promises WHERE id = %s"
_INSERT: Final = (
    f"INSERT INTO promises ({rows.PROMISE_INSERT_COLUMNS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_UPDATE: Final = (
    "UPDATE promises SET state = %s, value_headers = %s, value_data = %s, ikey_complete = %s,"
    " completed_on = %s WHERE id = %s"
)
_STATE_FILTERS: Final = {
    "pending": "(state = 'PENDING' AND timeout > %(now)s)",
    "resolved": "(state = 'RESOLVED' OR (state = 'PENDING' AND timeout <= %(now)s AND is_timer))",
    "rejected": (
        "(state IN ('REJECTED', 'REJECTED_CANCELED', 'REJECTED_TIMEDOUT')"
        " OR (state = 'PENDING' AND timeout <= %(now)s AND NOT is_timer))"
    ),
}
_DISPATCHABLE: Final = (
    f"SELECT {_TASK_COLUMNS} FROM tasks AS t"
    " WHERE t.state = 'INIT' AND t.ready_at <= %(now)s AND t.timeout > %(now)s"
    " AND NOT EXISTS (SELECT 1 FROM tasks AS a WHERE a.root_promise_id = t.root_promise_id"
    "  AND a.state IN ('ENQUEUED', 'CLAIMED'))"
    " AND NOT EXISTS (SELECT 1 FROM tasks AS o WHERE o.root_promise_id = t.root_promise_id"
    "  AND o.state = 'INIT' AND (o.created_on, o.id) < (t.created_on, t.id)"
    "  AND o.ready_at <= %(now)s AND o.timeout > %(now)s)"
    " ORDER BY t.created_on, t.id LIMIT %(limit)s"
)
_OVERDUE: Final = (
    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id IN ("
    " SELECT id FROM tasks WHERE state IN ('ENQUEUED', 'CLAIMED') AND expires_at <= %(now)s"
    " UNION SELECT id FROM tasks WHERE state NOT IN ('COMPLETED', 'TIMEDOUT')"
    "  AND timeout <= %(now)s)"
    " ORDER BY created_on, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)
_NEXT_TASK_TIME: Final = (
    "SELECT least("
    "(SELECT min(ready_at) FROM tasks WHERE state = 'INIT'),"
    " (SELECT min(expires_at) FROM tasks WHERE state IN ('ENQUEUED', 'CLAIMED')),"
    " (SELECT min(timeout) FROM tasks WHERE state NOT IN ('COMPLETED', 'TIMEDOUT')))"
)


def like_pattern(pattern: str) -> str:
    """Turn a search pattern (``*`` wildcard, every other character literal) into a LIKE
    pattern with ``\\`` as its escape character."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


class Events:
    """What a transaction changed that other processes must hear about."""

    __slots__ = ("completed", "deadline", "schedules", "tasks")

    def __init__(self) -> None:
        self.completed: list[str] = []
        self.deadline: int | None = None
        self.tasks = False
        self.schedules = False

    def __bool__(self) -> bool:
        return bool(self.completed) or self.deadline is not None or self.tasks or self.schedules

    def merge(self, other: Events) -> None:
        self.completed.extend(other.completed)
        if other.deadline is not None and (self.deadline is None or other.deadline < self.deadline):
            self.deadline = other.deadline
        self.tasks = self.tasks or other.tasks
        self.schedules = self.schedules or other.schedules

    def payloads(self, origin: str) -> list[str]:
        """NOTIFY payloads (JSON), each under the size limit; ids are split across them."""
        head: dict[str, Any] = {"o": origin}
        if self.deadline is not None:
            head["d"] = self.deadline
        if self.tasks:
            head["t"] = 1
        if self.schedules:
            head["s"] = 1
        out: list[str] = []
        ids: list[str] = []
        size = 0
        for id in self.completed:
            cost = len(id.encode()) * 2 + 8  # JSON escaping can double it
            if ids and size + cost > _MAX_PAYLOAD:
                out.append(_encode({**head, "c": ids}).decode())
                ids, size = [], 0
            ids.append(id)
            size += cost
        out.append(_encode({**head, "c": ids} if ids else head).decode())
        return out


class PostgresTx:
    """``Tx`` over one psycopg connection inside a transaction.

    ``write`` transactions lock what they read (see the module docstring); read
    transactions never lock. ``events`` collects what other processes must be told.
    """

    __slots__ = ("_quiet", "c", "events", "write")

    def __init__(self, cursor: psycopg.Cursor[Any], write: bool) -> None:
        self.c = cursor
        self.write = write
        self.events = Events()
        self._quiet: set[str] = set()

    def reset(self) -> None:
        self._quiet.clear()
        self.events = Events()

    def _one(self, query: str, args: Any) -> tuple[Any, ...] | None:
        self.c.execute(query, args)
        return self.c.fetchone()

    def _all(self, query: str, args: Any) -> list[tuple[Any, ...]]:
        self.c.execute(query, args)
        return self.c.fetchall()

    def _run(self, query: str, args: Any) -> int:
        self.c.execute(query, args)
        return self.c.rowcount

    def _lock(self, key: str) -> None:
        self.c.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

    def _note(self, row: tuple[Any, ...]) -> Promise:
        if not row[13]:
            self._quiet.add(row[1])
        return rows.promise(row)

    def _watch(self, promise_id: str) -> None:
        self._quiet.discard(promise_id)
        self._run("UPDATE promises SET watched = TRUE WHERE id = %s AND NOT watched", (promise_id,))

    def _written(self, p: Promise) -> None:
        ev = self.events
        if p.state is not State.PENDING:
            ev.completed.append(p.id)
        elif p.timeout <= time.time() * 1000 + _SOON_MS and (
            ev.deadline is None or p.timeout < ev.deadline
        ):
            # Only near deadlines are announced: this process's own sweeper times the
            # promise out, and every sweeper looks at the database at least every 5 s; the
            # others need telling only so that one of them is on time if this one dies.
            ev.deadline = p.timeout

    # -- promises -------------------------------------------------------------------------

    def get_promise(self, id: str) -> Promise | None:
        row = self._one(_SELECT + " FOR UPDATE" if self.write else _SELECT, (id,))
        return self._note(row) if row else None

    def insert_promise(self, p: Promise) -> None:
        self._insert(_INSERT, p)

    def try_insert_promise(self, p: Promise) -> bool:
        return self._insert(_INSERT + " ON CONFLICT (id) DO NOTHING", p)

    def _insert(self, query: str, p: Promise) -> bool:
        n = self._run(query, rows.promise_params(p, p.is_timer))
        if n != 1:
            return False
        self._written(p)
        return True

    def update_promise(self, p: Promise) -> None:
        self._run(_UPDATE, rows.completion_params(p))
        self._written(p)

    def update_promises(self, promises: Sequence[Promise]) -> None:
        if not promises:
            return
        self.c.executemany(_UPDATE, [rows.completion_params(p) for p in promises])
        for p in promises:
            self._written(p)

    def search_promises(self, query: PromiseQuery, now: int) -> list[tuple[int, Promise]]:
        where: list[str] = []
        args: dict[str, Any] = {"now": now, "limit": query.limit}
        if query.pattern != "*":
            where.append("id LIKE %(pattern)s")
            args["pattern"] = like_pattern(query.pattern)
        if query.state is not None:
            where.append(_STATE_FILTERS[query.state])
        if query.tags:
            where.append("tags_index @> %(tags)s::jsonb")
            args["tags"] = _encode(query.tags).decode()
        if query.before is not None:
            where.append("seq < %(before)s")
            args["before"] = query.before
        text = f"SELECT {_COLUMNS} FROM promises"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += " ORDER BY seq DESC LIMIT %(limit)s"
        return [(row[0], self._note(row)) for row in self._all(text, args)]

    def due_promises(self, now: int, limit: int) -> list[Promise]:
        found = self._all(
            f"SELECT {_COLUMNS} FROM promises WHERE state = 'PENDING' AND timeout <= %s"
            " ORDER BY timeout LIMIT %s" + (" FOR UPDATE SKIP LOCKED" if self.write else ""),
            (now, limit),
        )
        return [self._note(r) for r in found]

    def next_deadline(self) -> int | None:
        row = self._one(
            "SELECT timeout FROM promises WHERE state = 'PENDING' ORDER BY timeout LIMIT 1", ()
        )
        return row[0] if row else None

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._run(
            "INSERT INTO meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- callbacks and subscriptions --------------------------------------------------------

    def insert_callback(self, callback: Callback) -> bool:
        cb = callback
        n = self._run(
            f"INSERT INTO callbacks ({_CB_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            rows.callback_params(cb),
        )
        if n != 1:
            return False
        self._watch(cb.promise_id)
        return True

    def take_callbacks(self, promise_id: str) -> list[Callback]:
        if promise_id in self._quiet:
            return []
        found = self._all(
            f"DELETE FROM callbacks WHERE promise_id = %s RETURNING {_CB_COLUMNS}", (promise_id,)
        )
        found.sort(key=lambda r: (r[5], r[0]))
        return [rows.callback(r) for r in found]

    # -- tasks ------------------------------------------------------------------------------

    def get_task(self, id: str) -> Task | None:
        if not self.write:
            row = self._one(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = %s", (id,))
            return rows.task(row) if row else None
        # Serialize every write touching tasks of one root (dispatch's "one active task per
        # root" check), then lock the row itself and read it as committed.
        row = self._one("SELECT root_promise_id FROM tasks WHERE id = %s", (id,))
        if row is None:
            return None
        self._lock("root:" + row[0])
        row = self._one(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = %s FOR UPDATE", (id,))
        return rows.task(row) if row else None

    def insert_task(self, task: Task) -> bool:
        t = task
        n = self._run(
            f"INSERT INTO tasks ({_TASK_COLUMNS}, recv_key)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            rows.task_params(t),
        )
        if n != 1:
            return False
        self.events.tasks = True
        self._watch(t.root_promise_id)
        return True

    def update_task(self, task: Task) -> None:
        self._run(
            "UPDATE tasks SET state = %s, counter = %s, attempt = %s, process_id = %s, ttl = %s,"
            " expires_at = %s, ready_at = %s, completed_on = %s WHERE id = %s",
            rows.task_update_params(task),
        )
        self.events.tasks = True

    def tasks_of_root(self, root_promise_id: str, states: Sequence[TaskState]) -> list[Task]:
        if not states or root_promise_id in self._quiet:
            return []
        found = self._all(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE root_promise_id = %s"
            " AND state = ANY(%s) ORDER BY created_on, id" + (" FOR UPDATE" if self.write else ""),
            (root_promise_id, [s.value for s in states]),
        )
        return [rows.task(r) for r in found]

    def dispatchable_tasks(self, now: int, limit: int) -> list[Task]:
        return [rows.task(r) for r in self._all(_DISPATCHABLE, {"now": now, "limit": limit})]

    def overdue_tasks(self, now: int, limit: int) -> list[Task]:
        query = _OVERDUE if self.write else _OVERDUE.removesuffix(" FOR UPDATE SKIP LOCKED")
        return [rows.task(r) for r in self._all(query, {"now": now, "limit": limit})]

    def next_task_time(self) -> int | None:
        row = self._one(_NEXT_TASK_TIME, ())
        return row[0] if row else None

    def ready_tasks_for(self, recv_key: str, now: int) -> int:
        n = self._run(
            "UPDATE tasks SET ready_at = %s WHERE state = 'INIT' AND recv_key = %s"
            " AND ready_at > %s",
            (now, recv_key, now),
        )
        if n:
            self.events.tasks = True
        return n

    def heartbeat_tasks(self, process_id: str, now: int) -> int:
        return self._run(
            "UPDATE tasks SET expires_at = %s + coalesce(ttl, 0)"
            " WHERE state = 'CLAIMED' AND process_id = %s AND expires_at > %s",
            (now, process_id, now),
        )

    # -- operator queries (metrics, dashboard) ----------------------------------------------

    def count_pending_promises(self) -> int:
        row = self._one("SELECT count(*) FROM promises WHERE state = 'PENDING'", ())
        return int(row[0]) if row else 0

    def count_tasks_by_state(self) -> dict[str, int]:
        found = self._all(
            "SELECT state, count(*) FROM tasks WHERE state NOT IN ('COMPLETED', 'TIMEDOUT')"
            " GROUP BY state",
            (),
        )
        return {state: int(n) for state, n in found}

    def active_tasks(self, limit: int) -> list[Task]:
        found = self._all(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state NOT IN ('COMPLETED', 'TIMEDOUT')"
            " ORDER BY timeout, id LIMIT %s",
            (limit,),
        )
        return [rows.task(r) for r in found]

    def callbacks_of(self, promise_id: str) -> list[Callback]:
        found = self._all(
            f"SELECT {_CB_COLUMNS} FROM callbacks WHERE promise_id = %s ORDER BY created_on, id",
            (promise_id,),
        )
        return [rows.callback(r) for r in found]

    # -- locks ------------------------------------------------------------------------------

    def get_lock(self, resource_id: str) -> Lock | None:
        if self.write:
            self._lock("lock:" + resource_id)
        row = self._one(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE resource_id = %s", (resource_id,))
        return rows.lock(row) if row else None

    def put_lock(self, lock: Lock) -> None:
        self._run(
            f"INSERT INTO locks ({_LOCK_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (resource_id) DO UPDATE SET execution_id = excluded.execution_id,"
            " process_id = excluded.process_id, ttl = excluded.ttl,"
            " expires_at = excluded.expires_at",
            (lock.resource_id, lock.execution_id, lock.process_id, lock.ttl, lock.expires_at),
        )

    def delete_lock(self, resource_id: str) -> None:
        self._run("DELETE FROM locks WHERE resource_id = %s", (resource_id,))

    def heartbeat_locks(self, process_id: str, now: int) -> int:
        return self._run(
            "UPDATE locks SET expires_at = %s + ttl WHERE process_id = %s", (now, process_id)
        )

    # -- schedules --------------------------------------------------------------------------

    def insert_schedule(self, schedule: Schedule) -> bool:
        n = self._run(
            f"INSERT INTO schedules ({rows.SCHEDULE_INSERT_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            rows.schedule_params(schedule),
        )
        if n != 1:
            return False
        self.events.schedules = True
        return True

    def get_schedule(self, id: str) -> Schedule | None:
        query = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE id = %s"
        row = self._one(query + " FOR UPDATE" if self.write else query, (id,))
        return rows.schedule(row) if row else None

    def update_schedule(self, schedule: Schedule) -> None:
        self._run(
            "UPDATE schedules SET last_run_time = %s, next_run_time = %s WHERE id = %s",
            (schedule.last_run_time, schedule.next_run_time, schedule.id),
        )
        self.events.schedules = True

    def delete_schedule(self, id: str) -> bool:
        n = self._run("DELETE FROM schedules WHERE id = %s", (id,))
        if n:
            self.events.schedules = True
        return n == 1

    def search_schedules(
        self, pattern: str, tags: dict[str, str], limit: int, before: int | None
    ) -> list[tuple[int, Schedule]]:
        where: list[str] = []
        args: dict[str, Any] = {"limit": limit}
        if pattern != "*":
            where.append("id LIKE %(pattern)s")
            args["pattern"] = like_pattern(pattern)
        if tags:
            where.append("tags_index @> %(tags)s::jsonb")
            args["tags"] = _encode(tags).decode()
        if before is not None:
            where.append("seq < %(before)s")
            args["before"] = before
        text = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += " ORDER BY seq DESC LIMIT %(limit)s"
        return [(row[0], rows.schedule(row)) for row in self._all(text, args)]

    def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        found = self._all(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE next_run_time <= %s"
            " ORDER BY next_run_time, id LIMIT %s"
            + (" FOR UPDATE SKIP LOCKED" if self.write else ""),
            (now, limit),
        )
        return [rows.schedule(r) for r in found]

    def next_schedule_time(self) -> int | None:
        row = self._one("SELECT min(next_run_time) FROM schedules", ())
        return row[0] if row else None


# -- the store ---------------------------------------------------------------------------------

_Item = tuple[Callable[[PostgresTx], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", bool, Any]
Listener = Callable[[dict[str, Any] | None], None]
"""Receives each event another process published; ``None`` means "events may have been
missed" (the listening connection was re-established): re-check everything."""


class _OpRaised(Exception):
    """An operation raised in a batch run without savepoints: re-run the batch isolated."""


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"PostgreSQL: {exc}; the request may not have been applied")


def _refused(exc: psycopg.Error) -> bool:
    """A value the database will not store (not a conflict, not an outage): only the
    operation that sent it fails."""
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError) and not isinstance(
        exc, _TRANSIENT
    )


def _refusal(exc: psycopg.Error) -> ValidationError:
    message = exc.diag.message_primary or str(exc)
    return ValidationError(f"PostgreSQL cannot store this request: {message}")


def _deliver(items: list[_Outcome]) -> None:
    for fut, ok, value in items:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class PostgresStore:
    """The ``Store`` on PostgreSQL; ``postgresql://`` (or ``postgres://``) in a store URL."""

    #: Several processes may write this database: waiters must re-check now and then.
    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))

        def take_int(name: str, default: int, low: int = 1) -> int:
            raw = options.pop(name, None)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ValidationError(f"store URL: {name} must be an integer") from None
            if value < low:
                raise ValidationError(f"store URL: {name} must be at least {low}")
            return value

        self.schema = options.pop("schema", None)
        #: Notifications are per database; the channel is per schema, so that deployments
        #: in different schemas of one database do not wake each other.
        self.channel = f"{CHANNEL}.{self.schema}"[:63] if self.schema else CHANNEL
        migrate = options.pop("migrate", "true").lower()
        if migrate not in ("true", "false"):
            raise ValidationError("store URL: migrate must be true or false")
        #: Apply pending migrations on open (``?migrate=false``: only check, and refuse to
        #: start on an outdated schema; run ``troth migrate`` during the deploy instead).
        self.auto_migrate = migrate == "true"
        self.writers = take_int("writers", 4)
        self.batch = take_int("batch", 256)
        self.readers = take_int("readers", 8)
        self.recheck_s = take_int("recheck_ms", 1000) / 1000
        self.statement_timeout_ms = take_int("statement_timeout_ms", 30_000)
        #: The longest a request waits for the store before it is answered 503 (the
        #: operation may still commit later: clients retry with an idempotency key).
        self.timeout_s = take_int("timeout_ms", 15_000) / 1000
        options.setdefault("connect_timeout", "5")
        # Notice a dead server or network within seconds, not the kernel's hours.
        options.setdefault("keepalives", "1")
        options.setdefault("keepalives_idle", "5")
        options.setdefault("keepalives_interval", "2")
        options.setdefault("keepalives_count", "3")
        options.setdefault("tcp_user_timeout", "10000")
        scheme = "postgresql"
        self.dsn = urlunsplit((scheme, parts.netloc, parts.path, urlencode(options), ""))
        #: Identifies this process's notifications (it ignores its own).
        self.origin = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._writers: list[threading.Thread] = []
        self._read_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[psycopg.Connection[Any]] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._listeners: list[tuple[asyncio.AbstractEventLoop, Listener]] = []
        self._listen_thread: threading.Thread | None = None
        self._listen_conn: psycopg.Connection[Any] | None = None
        self._outbox: queue.SimpleQueue[tuple[str, Future[None]]] = queue.SimpleQueue()
        #: Observer (metrics): called on a writer thread after each commit with the number
        #: of operations and the seconds the transaction took.
        self.on_commit: Callable[[int, float], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- connections ---------------------------------------------------------------------

    def _connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.dsn, autocommit=True)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            if self.schema:
                # IF NOT EXISTS still races with another connection creating it at once.
                with contextlib.suppress(pg_errors.UniqueViolation, pg_errors.DuplicateSchema):
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms)}")
            # Deadlocks between two batches are retried; find them sooner than the 1 s default
            # (a superuser-only setting: keep the server's value when not allowed).
            with contextlib.suppress(psycopg.Error):
                conn.execute("SET deadlock_timeout = '100ms'")
            conn.autocommit = autocommit
        except BaseException:
            conn.close()
            raise
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _drop(self, conn: psycopg.Connection[Any] | None) -> None:
        if conn is None:
            return
        with self._conns_lock, contextlib.suppress(ValueError):
            self._conns.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    # -- life cycle ----------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.migrate if self.auto_migrate else self.check_schema)
        self._read_pool = ThreadPoolExecutor(
            max_workers=self.readers, thread_name_prefix="troth-pg-read"
        )
        for i in range(self.writers):
            t = threading.Thread(target=self._writer_main, name=f"troth-pg-writer-{i}", daemon=True)
            t.start()
            self._writers.append(t)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._writers:
            self._queue.put(None)
        loop = asyncio.get_running_loop()
        for t in self._writers:
            await loop.run_in_executor(None, t.join)
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=True)
        if self._listen_thread is not None:
            await loop.run_in_executor(None, self._listen_thread.join, 5.0)
        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()

    # -- migrations ----------------------------------------------------------------------

    @staticmethod
    def migrations() -> list[tuple[int, str, str]]:
        """Every migration shipped with troth: (version, name, SQL), in order."""
        return migrations("postgres")

    def check_schema(self) -> None:
        """Raise ``StoreUnavailable`` unless every shipped migration has been applied."""
        conn = self._connect(autocommit=True)
        try:
            applied = conn.execute(
                "SELECT version FROM schema_migrations WHERE version IS NOT NULL"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            applied = []
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        finally:
            self._drop(conn)
        missing = sorted({v for v, _n, _s in self.migrations()} - {r[0] for r in applied})
        if missing:
            raise StoreUnavailable(
                f"the database lacks migrations {missing}: run `troth migrate --store ...`"
                " (or start without ?migrate=false)"
            )

    def migrate(self) -> list[int]:
        """Apply every migration not applied yet; return the versions applied now.

        Several processes starting at once are serialized by an advisory lock, so each
        migration runs exactly once.
        """
        conn = self._connect(autocommit=False)
        applied_now: list[int] = []
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('troth:migrate', 0))")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_on BIGINT NOT NULL)"
                )
                applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
                for version, name, text in self.migrations():
                    if version in applied:
                        continue
                    conn.execute(text.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                        (version, name, int(time.time() * 1000)),
                    )
                    applied_now.append(version)
                    log.info("applied migration %04d_%s", version, name)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL migration failed: {exc}") from exc
        finally:
            self._drop(conn)
        return applied_now

    # -- the writer threads ----------------------------------------------------------------

    def _writer_main(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            stop = False
            while len(batch) < self.batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            if conn is None or conn.closed:
                try:
                    conn = self._connect(autocommit=False)
                except StoreUnavailable as exc:
                    self._answer(batch, [(fut, False, exc) for _op, _loop, fut in batch])
                    conn = None
                    if stop:
                        break
                    continue
            try:
                outcomes = self._run_batch(conn, batch)
            except psycopg.Error as exc:
                log.error("write transaction of %d operations failed: %s", len(batch), exc)
                self._drop(conn)
                conn = None
                err = _unavailable(exc)
                outcomes = [(fut, False, err) for _op, _loop, fut in batch]
            self._answer(batch, outcomes)
            if stop:
                break
        self._drop(conn)

    @staticmethod
    def _answer(batch: list[_Item], outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for (_op, loop, _fut), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append(outcome)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_deliver, items)

    def _run_batch(self, conn: psycopg.Connection[Any], batch: list[_Item]) -> list[_Outcome]:
        """Run a batch in one transaction; after a transient conflict (another process's
        transaction), run one operation per transaction, each retried with backoff."""
        try:
            try:
                return self._apply(conn, batch, isolate=False)
            except _OpRaised:
                return self._apply(conn, batch, isolate=True)
        except _TRANSIENT as exc:
            log.debug("batch of %d conflicted (%s); one operation at a time", len(batch), exc)
        out: list[_Outcome] = []
        for item in batch:
            for attempt in range(_RETRIES * 2):
                try:
                    out.extend(self._apply(conn, [item], isolate=True))
                    break
                except _TRANSIENT as exc:
                    if attempt == _RETRIES * 2 - 1:
                        out.append((item[2], False, _unavailable(exc)))
                    else:
                        time.sleep(0.001 * 2**attempt)
        return out

    def _apply(
        self, conn: psycopg.Connection[Any], batch: list[_Item], *, isolate: bool
    ) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        events = Events()
        started = time.perf_counter()
        with conn.cursor() as cur:
            tx = PostgresTx(cur, write=True)
            try:
                for op, _loop, fut in batch:
                    tx.reset()
                    if not isolate:
                        try:
                            outcomes.append((fut, True, op(tx)))
                        except psycopg.Error as exc:
                            if not _refused(exc):
                                raise
                            conn.rollback()
                            raise _OpRaised() from None
                        except Exception:
                            conn.rollback()
                            raise _OpRaised() from None
                        events.merge(tx.events)
                        continue
                    cur.execute("SAVEPOINT op")
                    try:
                        result = op(tx)
                    except psycopg.Error as exc:
                        if not _refused(exc):
                            raise
                        cur.execute("ROLLBACK TO SAVEPOINT op")
                        outcomes.append((fut, False, _refusal(exc)))
                    except Exception as exc:
                        cur.execute("ROLLBACK TO SAVEPOINT op")
                        outcomes.append((fut, False, exc))
                    else:
                        cur.execute("RELEASE SAVEPOINT op")
                        outcomes.append((fut, True, result))
                        events.merge(tx.events)
                if events:
                    for payload in events.payloads(self.origin):
                        cur.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
                conn.commit()
                if self.on_commit is not None:
                    try:
                        self.on_commit(len(batch), time.perf_counter() - started)
                    except Exception:
                        log.exception("on_commit observer failed")
            except psycopg.Error:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                raise
        return outcomes

    # -- the public interface ------------------------------------------------------------

    async def write(self, op: Callable[[Any], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the store is closed (server shutting down)")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((op, loop, fut))
        try:
            return await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            raise StoreUnavailable(
                f"PostgreSQL did not answer within {self.timeout_s:g} s; the request may"
                " still be applied (retry with the same Idempotency-Key)"
            ) from None

    def _read(self, op: Callable[[PostgresTx], T]) -> T:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        for attempt in range(2):
            try:
                if conn is None or conn.closed:
                    conn = self._local.conn = self._connect(autocommit=False)
                    # One snapshot per read operation, and no writes by mistake.
                    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                    conn.read_only = True
                with conn.cursor() as cur:
                    try:
                        return op(PostgresTx(cur, write=False))
                    finally:
                        conn.rollback()  # read only: end the snapshot
            except psycopg.OperationalError as exc:
                self._drop(conn)
                conn = self._local.conn = None
                if attempt == 1:
                    raise _unavailable(exc) from exc
            except psycopg.Error as exc:
                raise _unavailable(exc) from exc
        raise AssertionError("unreachable")

    async def read(self, op: Callable[[Any], T]) -> T:
        if self._closed or self._read_pool is None:
            raise StoreUnavailable("the store is closed (server shutting down)")
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._read_pool, self._read, op), self.timeout_s
            )
        except TimeoutError:
            raise StoreUnavailable(
                f"PostgreSQL did not answer within {self.timeout_s:g} s"
            ) from None

    async def check(self) -> None:
        await self.read(lambda tx: tx.get_meta("ping"))

    # -- notifications between processes ---------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` (on the caller's event loop) with every event other processes
        publish; starts the listening connection on first use."""
        self._listeners.append((asyncio.get_running_loop(), listener))
        if self._listen_thread is None:
            self._listen_thread = threading.Thread(
                target=self._listen_main, name="troth-pg-listen", daemon=True
            )
            self._listen_thread.start()

    def publish(self, event: dict[str, Any]) -> Future[None]:
        """Send an event to the other processes (best effort, not transactional); the
        future completes once it was sent (or fails with ``StoreUnavailable``)."""
        payload = _encode({**event, "o": self.origin}).decode()
        if len(payload) > _MAX_PAYLOAD:
            raise ValidationError("event too large for NOTIFY")
        sent: Future[None] = Future()
        if self._listen_thread is None or self._closed:
            sent.set_exception(StoreUnavailable("not listening for notifications"))
        else:
            self._outbox.put((payload, sent))
        return sent

    def _dispatch_event(self, event: dict[str, Any] | None) -> None:
        for loop, listener in self._listeners:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(listener, event)

    def _listen_main(self) -> None:
        backoff = 0.1
        first = True
        while not self._closed:
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self._connect(autocommit=True)
                self._listen_conn = conn
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                if not first:
                    self._dispatch_event(None)  # events may have been missed meanwhile
                first = False
                backoff = 0.1
                while not self._closed:
                    self._flush_outbox(conn)
                    for note in conn.notifies(timeout=0.05, stop_after=256):
                        try:
                            event = _event_decode(note.payload)
                        except msgspec.DecodeError:
                            log.warning("ignoring a malformed notification: %.200r", note.payload)
                            continue
                        if event.get("o") != self.origin:
                            self._dispatch_event(event)
            except (psycopg.Error, StoreUnavailable) as exc:
                if self.closed:
                    break
                log.warning("listening for notifications: %s; reconnecting in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._listen_conn = None
                self._drop(conn)

    def _flush_outbox(self, conn: psycopg.Connection[Any]) -> None:
        while True:
            try:
                payload, sent = self._outbox.get_nowait()
            except queue.Empty:
                return
            try:
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            except psycopg.Error as exc:
                sent.set_exception(_unavailable(exc))
                raise
            sent.set_result(None)
