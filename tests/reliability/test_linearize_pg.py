"""The history checker against three ``troth serve`` processes on one PostgreSQL database.

Clients are spread over the processes, so a create on one and a complete or read on another
race through the database; the history must still be linearizable per id, and searches on
any process must agree with the states.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tools.linearize.checker import check_history
from tools.linearize.runner import RunConfig, record
from tools.serverproc import Server

from tests.pg import drop_schema, fresh_schema, pg_url


def test_three_processes_on_postgresql_are_linearizable(tmp_path: Path) -> None:
    schema = fresh_schema()
    url = pg_url(schema)
    servers = [Server(url, log=tmp_path / f"s{i}.log") for i in range(3)]
    try:
        for s in servers:  # one at a time: the first migrates the schema
            s.start()
        cfg = RunConfig(urls=[s.url for s in servers], clients=9, ops=900, ids=4, seed=21)
        ops = asyncio.run(record(cfg))
    finally:
        for s in servers:
            s.kill9()
        with contextlib.suppress(Exception):
            drop_schema(schema)
    assert all(op.known for op in ops)
    assert {op.status for op in ops} >= {200, 201, 403, 404, 409}
    report = check_history(ops)
    assert report.ok, report.summary()
