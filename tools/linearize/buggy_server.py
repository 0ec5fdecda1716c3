"""``troth serve`` with a deliberately planted bug, to prove the checker finds bugs.

``python -m tools.linearize.buggy_server BUG serve [troth serve options]`` patches troth in
this process only (nothing in src/ changes), then runs the ordinary CLI. Bugs:

- ``overwrite``: a complete on an already completed promise is applied as if it were
  pending (a completed promise changes again: 201 where the spec says 200/403);
- ``strict-ignored``: create ignores ``Strict`` (a completed promise is deduplicated where
  the spec says 409);
- ``stale-read``: ``GET /promises/{id}`` serves a per-id read cache for 500 ms (every answer
  is a state the promise really had, so only a real-time check catches it);
- ``none``: no bug (a control).

Not a bug, a test knob: ``TROTH_RELIABILITY_TIME_TO_CLAIM_MS`` shortens the time a sent task
has to be claimed before it is dispatched again (default 60 s), so that crash tests do not
wait a minute for tasks that were in flight when the server was killed. Another:
``TROTH_RELIABILITY_SQLITE_CACHE_KIB`` caps SQLite's page cache per connection (default
64 MiB), so that a soak can tell cache growth from a leak.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any

import msgspec

BUGS = ("overwrite", "strict-ignored", "stale-read", "none")


def plant(bug: str) -> None:
    """Patch troth in this process with ``bug``."""
    from troth import rules
    from troth.engine.engine import Engine
    from troth.model import Promise, State

    if bug == "overwrite":
        original_complete = rules.decide_complete

        def decide_complete(stored: Promise | None, *args: Any) -> rules.Decision:
            if stored is not None and stored.state is not State.PENDING:
                stored = msgspec.structs.replace(stored, state=State.PENDING)
            return original_complete(stored, *args)

        rules.decide_complete = decide_complete  # type: ignore[assignment]
    elif bug == "strict-ignored":
        original_create = rules.decide_create

        def decide_create(stored: Promise | None, new: Promise, strict: bool, now: int) -> Any:
            return original_create(stored, new, False, now)

        rules.decide_create = decide_create
    elif bug == "stale-read":
        original_get = Engine.get_promise
        cache: dict[str, tuple[float, Promise]] = {}

        async def get_promise(self: Engine, id: str) -> Promise:
            hit = cache.get(id)
            if hit is not None and time.monotonic() - hit[0] < 0.5:
                return hit[1]
            p = await original_get(self, id)
            cache[id] = (time.monotonic(), p)
            return p

        Engine.get_promise = get_promise  # type: ignore[method-assign]
    elif bug != "none":
        raise SystemExit(f"unknown bug {bug!r}; one of {', '.join(BUGS)}")
    cache_kib = os.environ.get("TROTH_RELIABILITY_SQLITE_CACHE_KIB")
    if cache_kib:
        import sqlite3

        from troth.store.sqlite import SqliteStore

        connect = SqliteStore._connect

        def small_cache(self: SqliteStore, *, readonly: bool) -> sqlite3.Connection:
            conn = connect(self, readonly=readonly)
            conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
            return conn

        SqliteStore._connect = small_cache  # type: ignore[method-assign]
    claim_ms = os.environ.get("TROTH_RELIABILITY_TIME_TO_CLAIM_MS")
    if claim_ms:
        from troth.engine.dispatch import TaskSettings
        from troth.server import main

        tuned = functools.partial(TaskSettings, time_to_claim_ms=int(claim_ms))
        setattr(main, "TaskSettings", tuned)  # noqa: B010 (main does not export the name)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(f"usage: buggy_server BUG serve [options]; BUG in {BUGS}")
    plant(sys.argv[1])
    from troth.cli import main as cli

    cli(sys.argv[2:])


if __name__ == "__main__":
    main()
