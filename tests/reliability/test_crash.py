"""kill -9 under write load, repeatedly: nothing acknowledged is lost (tools/crash.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from tools.crash import Ledger, run, verify
from tools.serverproc import Server


def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    summary = asyncio.run(run(f"sqlite:///{db}", db, cycles=5, seed=7, log=tmp_path / "log"))
    assert summary.ok, (summary.problems, [c.problems for c in summary.cycles])
    assert len(summary.cycles) == 5
    # the load was real: writes were acknowledged, completions too, tasks were owed and
    # every one of them was finished after the last restart
    assert summary.promises > 50
    assert summary.completions > 20
    assert summary.owed_tasks > 0


def test_verify_reports_lost_and_changed_promises(tmp_path: Path) -> None:
    """The crash checker is not vacuous: a ledger the server contradicts is reported."""
    with Server(f"sqlite:///{tmp_path / 't.db'}") as server:
        httpx.post(f"{server.url}/promises", json={"id": "a", "timeout": 2**62})
        httpx.patch(f"{server.url}/promises/a", json={"state": "REJECTED"})
        ledger = Ledger(created={"a": False, "gone": False}, completed={"a": ("RESOLVED", "")})
        problems = asyncio.run(verify(server.url, ledger))
    assert len(problems) == 2
    assert any("gone lost" in p for p in problems)
    assert any("a changed" in p for p in problems)
