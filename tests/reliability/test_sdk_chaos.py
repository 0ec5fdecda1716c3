"""SDK workers killed with -9 again and again while executions run (extends the single kill
of tests/sdk/test_remote.py to many executions and repeated kills).

Three workers run ``chain`` executions (steps in sequence, a durable sleep in the middle);
every ~0.5 s a random worker is SIGKILLed (four times) and a fresh one started. Checked at
the end, from the workers' timestamped step log and the server's step promises:

- every execution finishes, with the right result;
- a step whose result was recorded (its child promise completed) never starts again;
- every step ran to its end at least once, and only an interrupted step (started, then its
  worker killed before the result was recorded) ran more than once.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
from tools.serverproc import Server

from troth import Troth

WORKER = Path(__file__).with_name("chaos_worker.py")
ROOT = Path(__file__).resolve().parents[2]
EXECUTIONS = 12
STEPS = 6


def _spawn(url: str, name: str, log: Path, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "ab") as f:
        return subprocess.Popen(
            [sys.executable, str(WORKER), "--url", url, "--process-id", name, "--log", str(log)],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def _lines(log: Path) -> list[tuple[str, str, int, int, int]]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        parts = line.split(" ")
        if len(parts) == 5 and parts[4].isdigit():  # a SIGKILL may cut the last line
            out.append((parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4])))
    return out


async def _ready(log: Path, name: str) -> None:
    deadline = time.monotonic() + 30
    while not any(e[0] == "ready" and e[1] == name for e in _lines(log)):
        assert time.monotonic() < deadline, f"worker {name} did not start"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # its stream connects right after start()


async def test_repeated_worker_kills_lose_no_execution_and_rerun_no_completed_step(
    tmp_path: Path,
) -> None:
    log = tmp_path / "steps.log"
    rng = random.Random(3)
    with Server(f"sqlite:///{tmp_path / 't.db'}", log=tmp_path / "server.log") as server:
        workers: dict[str, subprocess.Popen[bytes]] = {}
        n = 0

        async def start_worker() -> None:
            nonlocal n
            n += 1
            name = f"w{n}"
            workers[name] = _spawn(server.url, name, log, tmp_path / f"{name}.out")
            await _ready(log, name)

        try:
            for _ in range(3):
                await start_worker()
            client = Troth(url=server.url, group="client", process_id="chaos-client")
            async with client:
                handles = [
                    await client.rpc(f"chain/{i}", "chain", i * 1000, STEPS, 0.5, target="chaos")
                    for i in range(EXECUTIONS)
                ]
                kills = 0
                results = asyncio.gather(*(h.result(timeout=120) for h in handles))
                # an execution takes at least STEPS * 0.5 s = 3 s: all four kills land while
                # every execution is still running
                while kills < 4:
                    await asyncio.sleep(rng.uniform(0.4, 0.7))
                    victim = rng.choice(sorted(w for w, p in workers.items() if p.poll() is None))
                    workers[victim].kill()
                    workers[victim].wait(10)
                    kills += 1
                    await start_worker()
                values = await results
        finally:
            for p in workers.values():
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
        expected = [i * 1000 + STEPS * (STEPS + 1) // 2 for i in range(EXECUTIONS)]
        assert values == expected
        assert kills == 4

        # when was each step's result recorded? (its child promise, <execution id>.<k>)
        recorded: dict[tuple[str, int], int] = {}
        async with httpx.AsyncClient(base_url=server.url) as http:
            for i in range(EXECUTIONS):
                params = {"id": f"chain/{i}.*", "limit": 100}
                page = (await http.get("/promises", params=params)).json()
                steps = sorted(
                    (p for p in page["promises"] if p["id"].rsplit(".", 1)[-1].isdigit()),
                    key=lambda p: int(p["id"].rsplit(".", 1)[-1]),
                )
                # children in creation order: the steps, with the durable sleep among them
                step_promises = [
                    p for p in steps if "resonate:timeout" not in (p.get("tags") or {})
                ]
                assert len(step_promises) == STEPS, [p["id"] for p in steps]
                for k, p in enumerate(step_promises, start=1):
                    assert p["state"] == "RESOLVED"
                    recorded[(f"chain/{i}", k)] = p["completedOn"]

    starts: dict[tuple[str, int], list[int]] = defaultdict(list)
    ends: dict[tuple[str, int], int] = defaultdict(int)
    for what, id, k, _pid, at in _lines(log):
        if what == "start":
            starts[(id, k)].append(at)
        elif what == "end":
            ends[(id, k)] += 1
    reruns = 0
    for key, done_at in recorded.items():
        assert ends[key] >= 1, key
        late = [t for t in starts[key] if t > done_at]
        assert not late, f"step {key} recorded at {done_at} started again at {late}"
        reruns += len(starts[key]) - 1
    # kills hit steps in flight, which ran again; but nothing like a replay of everything
    print(f"{kills} kills, {reruns} interrupted steps ran again")
    assert reruns <= 4 * EXECUTIONS, reruns
