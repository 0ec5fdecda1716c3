"""The runnable examples in ``examples/``, each run as a real process on a temporary store."""

from __future__ import annotations

import itertools
import os
import py_compile
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 30.0


def env_for(tmp_path: Path, name: str) -> dict[str, str]:
    return {
        **os.environ,
        "TROTH_STORE": f"sqlite:///{tmp_path}/{name}.db",
        "PYTHONUNBUFFERED": "1",
    }


def run(tmp_path: Path, name: str, *args: str, store: str | None = None) -> str:
    """Run ``examples/<name>.py`` to completion; its stdout (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        cwd=tmp_path,
        env=env_for(tmp_path, store or name),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


class Running:
    """An example running in the background, its stdout read line by line."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
            cwd=tmp_path,
            env=env_for(tmp_path, name),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str) -> None:
        give_up = time.monotonic() + TIMEOUT
        while time.monotonic() < give_up:
            try:
                line = self.lines.get(timeout=give_up - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return
        self.kill()
        pytest.fail(f"never printed {text!r}; output:\n{''.join(self.seen)}")

    def kill(self) -> str:
        """SIGKILL: no clean-up of any kind. Returns everything it printed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)
        while (line := self.lines.get(timeout=TIMEOUT)) is not None:
            self.seen.append(line)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return "".join(self.seen)


def ticks(out: str) -> list[str]:
    """The lines a countdown's steps printed (without their time stamps)."""
    return [
        line.split(" (")[0] for line in out.splitlines() if line.startswith(("T-minus", "Lift"))
    ]


def test_countdown_resumes_after_kill_9(tmp_path: Path) -> None:
    first = Running(tmp_path, "countdown", "4", "--interval", "0.6")
    first.wait_for("T-minus 3")
    time.sleep(0.3)  # into the durable sleep after tick 3 (its step is recorded by now)
    before = first.kill()
    assert ticks(before) == ["T-minus 4", "T-minus 3"]

    after = run(tmp_path, "countdown", "4", "--interval", "0.6")
    assert "interrupted; resuming" in after
    assert ticks(after) == ["T-minus 2", "T-minus 1", "Liftoff!"]  # nothing said twice
    assert "result: ['T-minus 4', 'T-minus 3', 'T-minus 2', 'T-minus 1', 'liftoff']" in after

    again = run(tmp_path, "countdown", "4", "--interval", "0.6")
    assert "already finished" in again
    assert ticks(again) == []


def test_purchase_runs_once_per_user_and_song(tmp_path: Path) -> None:
    first = run(tmp_path, "purchase", "--user", "alice", "--song", "42")
    assert "new purchase purchase/user/alice/song/42" in first
    for step in ("charging alice's card 1.29", "granting alice access", "emailing alice"):
        assert step in first
    result = first.splitlines()[-1]
    assert result.startswith("done: {'charge': 'ch_alice_42'")

    again = run(tmp_path, "purchase", "--user", "alice", "--song", "42", "--price", "9")
    assert "exists: no new charge" in again
    assert "charging" not in again and "emailing" not in again
    assert again.splitlines()[-1] == result  # the stored result, price 1.29

    other = run(tmp_path, "purchase", "--user", "bob", "--song", "42")
    assert "charging bob's card" in other


def test_fanout_runs_the_steps_concurrently(tmp_path: Path) -> None:
    suppliers = ["acme", "globex", "initech", "umbrella"]
    out = run(tmp_path, "fanout", "--latency", "0.6", "--suppliers", *suppliers)
    for i, s in enumerate(suppliers, 1):
        assert f"asking {s:<10} (step quotes/widget.{i})" in out
        assert f"{s:<10} quotes" in out
    # every request went out before the first answer came back
    lines = out.splitlines()
    first_answer = next(i for i, line in enumerate(lines) if " quotes " in line)
    assert sum("asking" in line for line in lines[:first_answer]) == len(suppliers)
    assert "best price for widget: 5.53 from initech" in out
    elapsed = float(out.split("quotes in ")[1].split("s")[0])
    assert elapsed < 1.5  # the slowest (0.6 s), not the sum


def test_approval_in_the_same_process(tmp_path: Path) -> None:
    out = run(tmp_path, "approval", "--order", "42", "--approve-after", "0.5")
    assert "troth promises resolve approval/42 --value approved" in out
    assert "curl -X PATCH localhost:8001/promises/approval/42" in out
    assert "[approver] resolving approval/42 with 'approved'" in out
    assert "shipped order 42" in out
    assert out.splitlines()[-1] == "orders/42: approved -> shipped"
    assert out.index("asking for approval") < out.index("[approver]") < out.index("shipped")


def test_approval_resolved_by_another_process(tmp_path: Path) -> None:
    waiting = Running(tmp_path, "approval", "--order", "7")
    waiting.wait_for("--resolve approval/7")
    waiting.kill()
    store = f"sqlite:///{tmp_path}/approval.db"
    out = run(tmp_path, "approval", "--store", store, "--resolve", "approval/7", "--value", "no")
    assert "approval/7 is now RESOLVED" in out
    out = run(tmp_path, "approval", "--order", "7")
    assert "approval/7 was completed meanwhile" in out
    assert "reserved stock" not in out  # a recorded step
    assert out.splitlines()[-1] == "orders/7: no -> released"


def test_saga_compensates_in_reverse_order(tmp_path: Path) -> None:
    out = run(tmp_path, "saga", "--trip", "rome")
    lines = [line.strip() for line in out.splitlines()]
    assert lines[:5] == [
        "booked flight for rome",
        "booked hotel for rome",
        "car rental for rome: no cars available",
        "cancelled hotel HT-rome",
        "cancelled flight FL-rome",
    ]
    assert "trip rome: rolled back" in out
    assert "compensated: cancelled HT-rome, cancelled FL-rome" in out

    out = run(tmp_path, "saga", "--trip", "oslo", "--cars")
    assert "bookings: FL-oslo, HT-oslo, CR-oslo" in out
    assert "cancelled" not in out


def test_retries_back_off_and_respect_non_retryable(tmp_path: Path) -> None:
    args = ("--failures", "3", "--initial", "0.1", "--max-attempts", "5")
    out = run(tmp_path, "retries", *args)
    assert out.count("connection refused") == 3
    assert "attempt 4 at" in out and ": ok" in out
    times = [
        float(line.split(" at ")[1].split("s:")[0]) for line in out.splitlines() if " at " in line
    ]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[2] > gaps[0]  # backing off: waits of 0.05-0.1 s, then 0.2-0.4 s
    assert out.count("card declined") == 2  # one attempt (printed), then the report
    assert "not charged: card declined for 108.00" in out
    assert "after 4 call(s)" in out

    out = run(tmp_path, "retries", *args)  # the same id: the stored result
    assert "connection refused" not in out and "charging" not in out
    assert "had already run" in out

    out = run(
        tmp_path,
        "retries",
        "--failures",
        "9",
        "--max-attempts",
        "2",
        "--initial",
        "0.01",
        "--id",
        "p2",
    )
    assert out.count("connection refused") == 2
    assert "p2 failed for good: rate service unavailable (attempt 2)" in out


def test_schedule_runs_on_cron(tmp_path: Path) -> None:
    out = run(tmp_path, "schedule", "--cron", "* * * * * *", "--runs", "2")
    runs = [line for line in out.splitlines() if line.startswith("run digest/")]
    assert len(runs) == 2
    assert len({line.split()[1] for line in runs}) == 2  # two distinct executions
    assert out.rstrip().endswith("done")


@pytest.mark.parametrize("name", ["worker.py", "client.py"])
def test_remote_examples_compile(name: str, tmp_path: Path) -> None:
    py_compile.compile(
        str(EXAMPLES / "remote" / name), cfile=str(tmp_path / f"{name}c"), doraise=True
    )
