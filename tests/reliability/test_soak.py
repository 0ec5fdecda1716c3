"""A short soak (tools/soak.py): mixed traffic for ~20 s; nothing fails, memory stays flat.

Latency is recorded, not asserted (the machine is shared); the long run is ``make
reliability`` (results in benchmarks/results/soak.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tools.soak import soak


def test_short_soak_mixed_traffic(tmp_path: Path) -> None:
    s = asyncio.run(soak(f"sqlite:///{tmp_path / 'soak.db'}", 20, 4, log=tmp_path / "log"))
    assert not s.problems, s.problems
    assert len(s.windows) >= 4
    assert all(w.errors == 0 for w in s.windows)
    assert sum(len(w.write_ms) for w in s.windows) > 500
    assert sum(w.waits for w in s.windows) > 20
    assert len(s.tasks_done) > 20
    assert s.fired >= 10
    v = s.verdict()
    # generous: a leak of a few KiB per request would show as tens of MiB here
    assert v["rss_last_mib"] - v["rss_first_mib"] < 48, s.report()
    assert "Traceback" not in (tmp_path / "log").read_text()
