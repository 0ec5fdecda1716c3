"""Core throughput benchmark: one ``troth serve`` process, a fresh SQLite file, wrk.

    .venv/bin/python benchmarks/run.py [--duration 10] [--connections 1,16,64]
                                       [--out benchmarks/results/core.md]

Scenarios (each at every connection count; see benchmarks/README.md):

- ``ping``: ``GET /ping`` (no storage work: the HTTP stack's ceiling);
- ``create``: ``POST /promises`` with a new id per request (one durable insert);
- ``complete``: ``PATCH /promises/{id}`` ``{"state":"RESOLVED"}`` on distinct PENDING ids that a
  preload phase (wrk, 64 connections, not timed) created beforehand (one durable update);
- ``mixed`` (``--scenarios ...,mixed``): alternating creates and completes.

The server runs with the default ``synchronous=FULL`` (every acknowledged write fsynced). Every
run must answer only 2xx (201 for writes), with no socket error, or the benchmark fails (exit
1). Afterwards, with the server stopped, the SQLite file is checked against what wrk saw: every
201 has its row, and no write happened that wrk did not send.

CPU: server and wrk share the machine's cores (nothing is pinned); the CPU time each used
during each run (``/proc/<pid>/stat`` for the server, ``wait4`` rusage for wrk) is reported as
a percentage of one core, next to the whole machine's busy share, so a wrk bottleneck shows.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
MARK = "TROTH_BENCH_JSON "
WRK_TIMEOUT = "5s"
PRELOAD_CONNECTIONS = 64
SETTLE_S = 1.0  # after each run, so requests wrk abandoned at its deadline are done

TARGET_WRITES_PER_S = 6000.0
TARGET_RATIO = 0.6
TARGET_P99_MS = 50.0

SCENARIOS = ("ping", "create", "complete", "mixed")
WRITE_SCENARIOS = ("create", "complete", "mixed")


class BenchError(RuntimeError):
    """The run is invalid (errors, missing data, a process died): fail loudly."""


# -- CPU accounting --------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def all_procs_cpu_s() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds so far) of every process."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        comm = text[text.index("(") + 1 : text.rindex(")")]
        out[int(entry.name)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def busiest_others(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    exclude: set[int],
    wall: float,
) -> list[tuple[str, float]]:
    """Other processes that used CPU during a run: (name[pid], % of one core), busiest first."""
    used = []
    for pid, (comm, cpu) in after.items():
        if pid in exclude:
            continue
        pct = 100 * (cpu - before.get(pid, (comm, 0.0))[1]) / wall
        if pct >= 1:
            used.append((f"{comm}[{pid}]", pct))
    return sorted(used, key=lambda x: -x[1])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, workdir: Path, access_log: bool = False) -> None:
        self.access_log = access_log
        self.db = workdir / "troth.db"
        self.log = workdir / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.db}"  # db is absolute: sqlite:////tmp/...

    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "troth"
        base = [str(exe)] if exe.exists() else [sys.executable, "-m", "troth"]
        host = ["--host", "127.0.0.1", "--port", str(self.port)]
        # The access log (one line per request to the server's stderr) is off unless asked
        # for: it costs every request the same (ping included), so it would only dilute the
        # write/ping comparison and measure the log file instead.
        log = [] if self.access_log else ["--no-access-log"]
        return [*base, "serve", *host, *log, "--store", self.store_url]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"server did not answer /ping within 30 s; log: {self.log}")

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise BenchError(f"server exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError("server did not stop within 30 s of SIGTERM (killed)") from None


# -- one wrk run -----------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    connections: int
    threads: int
    nonce: str
    data: dict[str, Any]
    wall_s: float
    server_cpu_pct: float
    wrk_cpu_pct: float
    machine_cpu_pct: float
    recorded: bool = True  # False: preload / profiling runs, not in the table
    rows: int | None = None  # DB rows this run wrote (inserted + completed), see verify()
    others: list[tuple[str, float]] | None = None  # other busy processes during the run

    @property
    def requests(self) -> int:
        return int(self.data["requests"])

    @property
    def rps(self) -> float:
        return self.requests / (float(self.data["duration_us"]) / 1e6)

    def latency_ms(self, key: str) -> float:
        return float(self.data["latency_us"][key]) / 1000

    @property
    def statuses(self) -> Counter[int]:
        return Counter({int(k): int(v) for k, v in self.data["statuses"].items()})

    @property
    def socket_errors(self) -> int:
        e = self.data["errors"]
        return int(e["connect"] + e["read"] + e["write"] + e["timeout"])

    @property
    def non_2xx(self) -> int:
        if self.scenario == "ping":  # no response() in ping.lua: wrk counts >= 400 itself
            return int(self.data["errors"]["status"])
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300)

    @property
    def created(self) -> int:
        return self.statuses[201]

    def generated(self, kind: str) -> int:
        """Write requests of ``kind`` sent to the server (wrk's script probe excluded)."""
        n = int(self.data[f"sent_{kind}"])
        probe = "complete" if self.scenario == "complete" else "create"
        return n - 1 if kind == probe and n > 0 else n

    def problems(self) -> list[str]:
        out = []
        if self.non_2xx:
            out.append(f"{self.non_2xx} non-2xx responses {dict(self.statuses)}")
        if self.socket_errors:
            out.append(f"socket errors/timeouts {self.data['errors']}")
        if self.data["exhausted"]:
            out.append(
                f"{self.data['exhausted']} requests found no preloaded id left"
                " (raise --preload-factor)"
            )
        if self.scenario in WRITE_SCENARIOS:
            wrong = {s: n for s, n in self.statuses.items() if s != 201}
            if wrong:
                out.append(f"writes answered other than 201: {wrong}")
        if self.requests == 0:
            out.append("no requests completed")
        return out

    def label(self) -> str:
        return f"{self.scenario:>8} c={self.connections:<3} t={self.threads}"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.server = Server(workdir, access_log=args.access_log)
        self.run_nonce = os.urandom(3).hex()
        self.seq = 0
        self.runs: list[Run] = []
        self.checks: list[str] = []
        self.profile_summary = ""

    def threads_for(self, connections: int) -> int:
        if self.args.threads != "auto":
            return min(int(self.args.threads), connections)
        return 1 if connections < 16 else 2

    def wrk(
        self,
        scenario: str,
        connections: int,
        duration: float,
        *,
        script: str | None = None,
        env: dict[str, str] | None = None,
        recorded: bool = True,
    ) -> Run:
        self.server.check_alive()
        if recorded:
            self.wait_quiet()
        self.seq += 1
        nonce = f"{self.run_nonce}{self.seq:02d}"
        threads = self.threads_for(connections)
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s"]
        cmd += ["--timeout", WRK_TIMEOUT, "--latency", "-s", str(LUA / f"{script or scenario}.lua")]
        cmd += [self.server.url]
        full_env = {
            **os.environ,
            "TROTH_BENCH_NONCE": nonce,
            "TROTH_BENCH_THREADS": str(threads),
            **(env or {}),
        }
        procs0 = all_procs_cpu_s()
        srv0, (busy0, total0), t0 = proc_cpu_s(self.server.pid), machine_ticks(), time.monotonic()
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
            _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.monotonic() - t0
            srv1, (busy1, total1) = proc_cpu_s(self.server.pid), machine_ticks()
            others = busiest_others(procs0, all_procs_cpu_s(), {self.server.pid, proc.pid}, wall)
            out.seek(0)
            text = out.read().decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.startswith(MARK)]
        if proc.returncode != 0 or not lines:
            raise BenchError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{text}")
        run = Run(
            scenario=scenario,
            connections=connections,
            threads=threads,
            nonce=nonce,
            data=json.loads(lines[-1][len(MARK) :]),
            wall_s=wall,
            server_cpu_pct=100 * (srv1 - srv0) / wall,
            wrk_cpu_pct=100 * (rusage.ru_utime + rusage.ru_stime) / wall,
            # in the same unit as the others: % of one core, all processes and the kernel
            machine_cpu_pct=100 * NCPU * (busy1 - busy0) / max(1, total1 - total0),
            recorded=recorded,
            others=others,
        )
        self.runs.append(run)
        print(
            f"{run.label()}  {run.rps:9.0f} req/s  p50 {run.latency_ms('p50'):7.2f} ms"
            f"  p99 {run.latency_ms('p99'):7.2f} ms  non-2xx {run.non_2xx}"
            f"  cpu server {run.server_cpu_pct:3.0f}% wrk {run.wrk_cpu_pct:3.0f}%"
            f" all {run.machine_cpu_pct:3.0f}%"
            + ("" if recorded else "  (not recorded)")
            + "".join(f"\n      also busy: {n} {p:.0f}%" for n, p in (others or [])[:3] if p >= 5),
            flush=True,
        )
        problems = run.problems()
        if problems:
            raise BenchError(f"{run.label()}: " + "; ".join(problems) + f"\n{text}")
        time.sleep(SETTLE_S)
        return run

    def wait_quiet(self) -> None:
        """Wait (up to --quiet-wait s) until no other process uses >= 15% of a core."""
        deadline = time.monotonic() + self.args.quiet_wait
        exclude = {self.server.pid, os.getpid()}
        while True:
            before = all_procs_cpu_s()
            time.sleep(0.5)
            busy = busiest_others(before, all_procs_cpu_s(), exclude, 0.5)
            if not busy or sum(p for _, p in busy) < 15 or time.monotonic() > deadline:
                return
            print(f"      waiting for a quiet machine: {busy[:3]}", flush=True)

    # -- preloaded ids for completes ------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        # Read-only, alongside the running server (WAL: does not block its writer).
        return sqlite3.connect(f"file:{self.server.db}?mode=ro", uri=True)

    def pending_preloaded(self) -> list[str]:
        with contextlib.closing(self.db()) as conn:
            rows = conn.execute(
                "SELECT id FROM promises WHERE id GLOB ? AND state = 'PENDING' ORDER BY seq",
                (f"p-{self.run_nonce}*",),
            ).fetchall()
        return [r[0] for r in rows]

    def preload(self, need: int) -> None:
        """Create PENDING promises (wrk, not timed) until ``need`` are available."""
        measured = [r.rps for r in self.runs if r.scenario == "create"]
        rate = max(measured) if measured else 2000.0
        for _ in range(6):
            have = len(self.pending_preloaded())
            if have >= need:
                print(f"preload: {have} PENDING promises ready", flush=True)
                return
            seconds = min(120.0, max(2.0, math.ceil(1.1 * (need - have) / rate) + 1))
            run = self.wrk(
                "create",
                PRELOAD_CONNECTIONS,
                seconds,
                env={"TROTH_BENCH_PREFIX": "p"},
                recorded=False,
            )
            run.scenario = "preload"
            rate = run.rps
        raise BenchError(f"preload could not create {need} promises")

    def ids_file(self) -> tuple[Path, int]:
        ids = self.pending_preloaded()
        path = self.workdir / f"ids-{self.seq + 1:02d}.txt"
        path.write_text("".join(i + "\n" for i in ids))
        return path, len(ids)

    def run_completing(self, scenario: str, connections: int) -> Run:
        path, before = self.ids_file()
        run = self.wrk(
            scenario, connections, self.args.duration, env={"TROTH_BENCH_IDS": str(path)}
        )
        after = len(self.pending_preloaded())
        run.data["completed_rows"] = before - after  # promises this run resolved
        return run

    # -- the whole benchmark --------------------------------------------------------------

    def ping_again(self, connections: int) -> None:
        """Before a write run at the highest concurrency: a ping run right before it (unless
        the previous run was one), so that the write/ping ratio compares runs seconds apart
        rather than minutes (the machine's load drifts)."""
        if connections != max(self.args.connections) or "ping" not in self.args.scenarios:
            return
        last = self.recorded()[-1] if self.recorded() else None
        if last is None or last.scenario != "ping" or last.connections != connections:
            self.wrk("ping", connections, self.args.duration)

    def execute(self) -> None:
        args = self.args
        conns = args.connections
        self.server.start()
        print(f"server pid {self.server.pid} on {self.server.url}, store {self.server.store_url}")
        self.wrk("ping", max(conns), 2, recorded=False)  # warm-up
        if "ping" in args.scenarios:
            for c in conns:
                self.wrk("ping", c, args.duration)
        if "create" in args.scenarios:
            for c in conns:
                self.ping_again(c)
                self.wrk("create", c, args.duration)
        if args.profile:  # here, so that the database is as large as in the create runs
            self.profile(Path(args.profile))
        completing = [s for s in ("complete", "mixed") if s in args.scenarios]
        if completing:
            per_s = {r.connections: r.rps for r in self.runs if r.scenario == "create"}
            fallback = max(per_s.values(), default=3000.0)
            share = {"complete": 1.0, "mixed": 0.5}
            need = sum(
                args.preload_factor * args.duration * per_s.get(c, fallback) * share[s]
                for s in completing
                for c in conns
            )
            self.preload(int(need) + 1000)
            for s in completing:
                for c in conns:
                    self.ping_again(c)
                    self.run_completing(s, c)
        self.server.stop()
        self.verify()

    def profile(self, out: Path) -> None:
        """An extra (unrecorded) create run at the highest concurrency under py-spy."""
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if spy is None:
            raise BenchError("py-spy not found: .venv/bin/pip install py-spy")
        out.parent.mkdir(parents=True, exist_ok=True)
        duration = max(3, int(self.args.duration))
        cmd = [spy, "record", "--pid", str(self.server.pid), "--rate", "100", "--nonblocking"]
        cmd += ["--format", "speedscope", "--output", str(out), "--duration", str(duration + 2)]
        spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1)
        run = self.wrk("create", max(self.args.connections), duration, recorded=False)
        run.scenario = "create (profiled)"
        _, err = spy_proc.communicate(timeout=60)
        if spy_proc.returncode != 0:
            raise BenchError(f"py-spy failed: {err.decode(errors='replace')}")
        self.profile_summary = (
            f"py-spy record --rate 100 --nonblocking, {duration} s create run at"
            f" {run.connections} connections ({run.rps:,.0f} req/s under the profiler);"
            f" speedscope file: {out}\n" + summarize_profile(out, top=self.args.profile_top)
        )
        out.with_suffix(".txt").write_text(self.profile_summary + "\n")
        print(self.profile_summary)

    # -- verification ---------------------------------------------------------------------

    def verify(self) -> None:
        """With the server stopped: the SQLite file holds exactly what wrk sent.

        Every 201 must have its row; a row without a 201 can only be a request that wrk sent
        and then stopped waiting for at its deadline (at most one per connection per run),
        which the server still committed. So per run: 201s <= rows <= sent, and in total
        rows == 201s + those unanswered requests.
        """
        self.checks = []
        with contextlib.closing(sqlite3.connect(self.server.db)) as conn:

            def one(sql: str, *args: str) -> int:
                return int(conn.execute(sql, args).fetchone()[0])

            total = one("SELECT count(*) FROM promises")
            resolved = one("SELECT count(*) FROM promises WHERE state = 'RESOLVED'")
            others = one("SELECT count(*) FROM promises WHERE state NOT IN ('PENDING','RESOLVED')")
            for run in self.runs:
                if run.scenario == "ping":
                    continue
                prefix = {"mixed": "m", "preload": "p"}.get(run.scenario, "c")
                glob = f"{prefix}-{run.nonce}-*"
                run.data["created_rows"] = one(
                    "SELECT count(*) FROM promises WHERE id GLOB ?", glob
                )
                run.rows = run.data["created_rows"] + int(run.data.get("completed_rows", 0))
        failures = []
        writes = [r for r in self.runs if r.rows is not None]
        for run in writes:
            sent = run.generated("create") + run.generated("complete")
            if not run.created <= (run.rows or 0) <= sent or sent - run.created > run.connections:
                failures.append(f"{run.label()}: 201s {run.created}, rows {run.rows}, sent {sent}")
        created = sum(int(r.data["created_rows"]) for r in writes)
        completed = sum(int(r.data.get("completed_rows", 0)) for r in writes)
        ok_201 = sum(r.created for r in writes)
        sent_all = sum(r.generated("create") + r.generated("complete") for r in writes)
        if total != created:
            failures.append(f"{total} promises in the file, the runs account for {created}")
        if resolved != completed:
            failures.append(f"{resolved} RESOLVED in the file, the runs account for {completed}")
        if others:
            failures.append(f"{others} promises in a state other than PENDING/RESOLVED")
        pure = [r for r in writes if r.scenario != "mixed"]
        c201 = sum(r.created for r in pure if r.scenario != "complete")
        k201 = sum(r.created for r in pure if r.scenario == "complete")
        self.checks = [
            f"promises in the SQLite file: {total:,}; 201 responses to creates:"
            f" {c201:,} (timed create runs, preload, profiling run)"
            + (" + mixed runs' creates" if len(pure) < len(writes) else ""),
            f"RESOLVED promises in the file: {resolved:,}; 201 responses to completes: {k201:,}"
            + (" + mixed runs' completes" if len(pure) < len(writes) else ""),
            f"all write runs: {ok_201:,} 201s, {created + completed:,} rows"
            f" written, {sent_all:,} requests sent; rows - 201s = {created + completed - ok_201}"
            " = requests wrk stopped waiting for at its deadline, which the server still"
            " committed (at most one per connection per run)",
            "every 201 has its row and no row exists that wrk did not send:"
            + (" OK" if not failures and created + completed == sent_all else " FAILED"),
        ]
        for line in self.checks:
            print("verify:", line)
        if failures or created + completed != sent_all:
            failures.append(f"rows written {created + completed} != requests sent {sent_all}")
            raise BenchError("data verification failed:\n  " + "\n  ".join(failures))

    def recorded(self) -> list[Run]:
        return [r for r in self.runs if r.recorded]


# -- the profile summary ---------------------------------------------------------------------


def summarize_profile(path: Path, top: int = 15) -> str:
    """Where the server spent its samples, from py-spy's speedscope file.

    py-spy records only active samples (idle threads, e.g. waiting in epoll or on a queue,
    are left out); a thread running C code with the GIL released (SQLite, fsync) counts as
    active. Weights are seconds.
    """
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]

    def name(i: int) -> str:
        f = frames[i]
        file = f.get("file") or ""
        short = "/".join(Path(file).parts[-2:]) if file else "?"
        return f"{f['name']} ({short}:{f.get('line', '?')})"

    self_all: Counter[str] = Counter()
    incl_all: Counter[str] = Counter()
    per_thread: dict[str, Counter[str]] = {}
    thread_s: Counter[str] = Counter()
    for prof in doc["profiles"]:
        thread = prof.get("name", "?")
        mine = per_thread.setdefault(thread, Counter())
        weights = prof.get("weights") or [1.0] * len(prof["samples"])
        for stack, w in zip(prof["samples"], weights, strict=True):
            thread_s[thread] += w
            if stack:
                self_all[name(stack[-1])] += w
                mine[name(stack[-1])] += w
            for n in {name(i) for i in stack}:
                incl_all[n] += w
    total = sum(thread_s.values())
    if not total:
        return "profile: no samples"

    def pct(w: float) -> str:
        return f"{100 * w / total:5.1f}%"

    lines = [f"profile: {total:.2f} s of active samples over all threads (= 100%)"]
    for thread, w in thread_s.most_common():
        lines.append(f"thread {thread}: {pct(w)}; its top functions by self samples:")
        lines += [f"  {pct(x)}  {n}" for n, x in per_thread[thread].most_common(top // 2 or 1)]
    lines.append(f"top {top} by self samples (all threads):")
    lines += [f"  {pct(w)}  {n}" for n, w in self_all.most_common(top)]
    lines.append(f"top {top} by inclusive samples (all threads):")
    lines += [f"  {pct(w)}  {n}" for n, w in incl_all.most_common(top)]
    return "\n".join(lines)


# -- the report ------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0],
    }


def git_commit() -> str:
    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True)
        return r.stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src", "pyproject.toml")
    return commit + (" (src/ has uncommitted changes)" if dirty else "")


def find(runs: list[Run], scenario: str, c: int) -> Run | None:
    return next((r for r in runs if r.scenario == scenario and r.connections == c), None)


def ping_before(runs: list[Run], w: Run) -> Run | None:
    """The ping run at ``w``'s connection count that ran last before ``w``."""
    before = [r for r in runs[: runs.index(w)] if r.scenario == "ping"]
    return next((r for r in reversed(before) if r.connections == w.connections), None)


def targets(bench: Bench) -> list[tuple[str, bool | None]]:
    runs = bench.recorded()
    top = max(bench.args.connections)
    out: list[tuple[str, bool | None]] = []
    for s in WRITE_SCENARIOS:
        w = find(runs, s, top)
        if w is None:
            continue
        ping = ping_before(runs, w)
        out.append(
            (
                f"{s} at {top} connections: {w.rps:,.0f} writes/s ≥ {TARGET_WRITES_PER_S:,.0f}",
                w.rps >= TARGET_WRITES_PER_S,
            )
        )
        if ping is not None:
            ratio = w.rps / ping.rps
            out.append(
                (
                    f"{s}/ping at {top} connections: {ratio:.2f} ≥ {TARGET_RATIO}"
                    f" ({w.rps:,.0f} / {ping.rps:,.0f}, the ping run just before)",
                    ratio >= TARGET_RATIO,
                )
            )
        p99 = w.latency_ms("p99")
        out.append(
            (f"{s} p99 at {top} connections: {p99:.1f} ms ≤ {TARGET_P99_MS:g} ms", p99 <= 50)
        )
    return out


def interference(runs: list[Run]) -> list[str]:
    lines = []
    for r in runs:
        busy = [f"{n} {p:.0f}%" for n, p in (r.others or []) if p >= 5]
        if busy:
            lines.append(f"- {r.scenario} at {r.connections}: {', '.join(busy)}")
    if not lines:
        return ["No other process used 5% of a core or more during any run.", ""]
    return ["Other processes using ≥ 5% of a core during a run:", "", *lines, ""]


def render(bench: Bench, command: str, started: dt.datetime, failure: str | None) -> str:
    m = machine()
    runs = bench.recorded()
    out = ["# troth core benchmark", ""]
    if failure:
        out += ["> **FAILED** — these numbers are not valid:", ">", f"> {failure}", ""]
    out += [
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: `{git_commit()}`",
        f"- command: `{command}`",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}",
        f"- software: Python {m['python']}, SQLite {m['sqlite']}, {m['wrk']}",
        "- server: one `troth serve` process (uvicorn, uvloop, httptools), fresh SQLite file in"
        " a temp dir, WAL, `synchronous=FULL` (the default: every acknowledged write is"
        " fsynced, with group commit)"
        + ("; access log on" if bench.args.access_log else "; `--no-access-log`"),
        f"- load: wrk, {bench.args.duration:g} s per run, `--timeout {WRK_TIMEOUT}`, -t 1 below"
        " 16 connections, else -t 2; server and wrk share the CPUs, nothing pinned",
        "",
        "| scenario | connections | req/s | p50 ms | p99 ms | p99.9 ms | errors"
        " | server CPU | wrk CPU | all CPU | rest |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        errors = r.non_2xx + r.socket_errors + int(r.data["exhausted"])
        out.append(
            f"| {r.scenario} | {r.connections} | {r.rps:,.0f} | {r.latency_ms('p50'):.2f}"
            f" | {r.latency_ms('p99'):.2f} | {r.latency_ms('p999'):.2f} | {errors}"
            f" | {r.server_cpu_pct:.0f}% | {r.wrk_cpu_pct:.0f}% | {r.machine_cpu_pct:.0f}%"
            f" | {max(0.0, r.machine_cpu_pct - r.server_cpu_pct - r.wrk_cpu_pct):.0f}% |"
        )
    out += [
        "",
        "req/s = responses / wrk's measured duration. errors = non-2xx responses + socket"
        " errors + timeouts (writes must all be 201). CPU columns: % of one core during the"
        f" run (this machine has {NCPU}: max {100 * NCPU}%); all CPU ="
        " every process plus the kernel (loopback TCP softirq time belongs to no process),"
        " from /proc/stat; rest = all - server - wrk (kernel network/IO time and any other"
        " process).",
        "",
        *interference(runs),
        "## Targets",
        "",
    ]
    for text, ok in targets(bench):
        out.append(f"- {'PASS' if ok else 'MISS'}: {text}")
    out += ["", "## Data check (after the server stopped)", ""]
    out += [f"- {line}" for line in bench.checks] or ["- not reached"]
    if bench.profile_summary:
        out += ["", "## Profile (extra create run, not in the table)", "", "```"]
        out += [bench.profile_summary, "```"]
    out.append("")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    p.add_argument(
        "--connections",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 16, 64],
        help="comma-separated connection counts (1,16,64)",
    )
    p.add_argument("--out", default=str(HERE / "results" / "core.md"), help="results markdown")
    p.add_argument(
        "--scenarios",
        type=lambda s: s.split(","),
        default=["ping", "create", "complete"],
        help=f"comma-separated, from {','.join(SCENARIOS)} (ping,create,complete)",
    )
    p.add_argument("--threads", default="auto", help="wrk -t (auto: 1 below 16 connections, 2)")
    p.add_argument(
        "--preload-factor",
        type=float,
        default=1.5,
        help="promises preloaded for completes, as a multiple of the expected need (1.5)",
    )
    p.add_argument(
        "--profile",
        metavar="SPEEDSCOPE_JSON",
        help="also run py-spy over an extra create run at the highest concurrency",
    )
    p.add_argument("--profile-top", type=int, default=15, help="functions listed (15)")
    p.add_argument("--check-targets", action="store_true", help="exit 2 when a target is missed")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each run, wait up to this many s for other processes to go idle (10)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (db, log, id files)")
    p.add_argument(
        "--access-log", action="store_true", help="run the server with its access log on"
    )
    args = p.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    command = " ".join([".venv/bin/python", "benchmarks/run.py", *sys.argv[1:]])
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="troth-bench-"))
    bench = Bench(args, workdir)
    failure: str | None = None
    try:
        bench.execute()
    except BenchError as exc:
        failure = str(exc).splitlines()[0]
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        bench.server.stop()
        if args.keep or failure:
            print(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(bench, command, started, failure))
    print(f"\nresults: {out}")
    if failure:
        return 1
    missed = [text for text, ok in targets(bench) if not ok]
    for text in targets(bench):
        print(("PASS " if text[1] else "MISS ") + text[0])
    return 2 if missed and args.check_targets else 0


if __name__ == "__main__":
    sys.exit(main())
