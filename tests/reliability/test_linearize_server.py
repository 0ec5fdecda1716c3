"""The history checker against real ``troth serve`` processes over HTTP (SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tools.linearize.checker import check_history
from tools.linearize.runner import RunConfig, load, record, save
from tools.serverproc import Server


def _run(url: str, ops: int, seed: int) -> list:
    cfg = RunConfig(urls=[url], clients=8, ops=ops, ids=4, seed=seed)
    return asyncio.run(record(cfg))


def test_sqlite_server_history_is_linearizable(tmp_path: Path) -> None:
    with Server(f"sqlite:///{tmp_path / 't.db'}") as server:
        ops = _run(server.url, 800, seed=11)
    kinds = {(op.kind, op.status) for op in ops}
    # the run exercised every outcome the model distinguishes
    for expected in [
        ("create", 201),
        ("create", 200),
        ("create", 409),
        ("complete", 201),
        ("complete", 200),
        ("complete", 403),
        ("complete", 404),
        ("get", 200),
        ("get", 404),
        ("search", 200),
    ]:
        assert expected in kinds
    assert all(op.known for op in ops)
    save(ops, tmp_path / "h.json")
    report = check_history(load(tmp_path / "h.json"))
    assert report.ok, report.summary()
    assert sum(k.ops for k in report.keys) > len(ops)  # searches were expanded per id


@pytest.mark.parametrize("bug", ["overwrite", "stale-read"])
def test_planted_bug_is_found(tmp_path: Path, bug: str) -> None:
    """A server with a planted bug (tools/linearize/buggy_server.py) fails the check."""
    with Server(f"sqlite:///{tmp_path / 't.db'}", bug=bug) as server:
        ops = _run(server.url, 800, seed=12)
    report = check_history(ops)
    assert not report.ok
    assert "NOT LINEARIZABLE" in report.summary()
    assert any(k.stuck for k in report.keys if not k.ok)
