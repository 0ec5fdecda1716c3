"""SDK benchmark: a two-step durable workflow on troth (embedded and through a server) and
on DBOS, in one run.

    .venv/bin/python benchmarks/sdk.py [--n 2000] [--out benchmarks/results/sdk.md]
                                       [--workers 2,3,4] [--profile DIR]

The workflow (the same on every system)::

    async def wf(x):            # troth: ctx.run(add, ...); DBOS: @DBOS.workflow / @DBOS.step
        y = await step(add, x, 1)
        return await step(add, y, 2)

1. **troth embedded**: ``Troth("sqlite:///<tmp>/troth.db")`` (defaults: WAL,
   ``synchronous=FULL``, ``checkpoints="pipelined"``), ``await troth.run(id, wf, x)`` then
   ``await handle.result()``; and the same with ``checkpoints="strict"`` (every step record
   durable before the workflow goes on, as DBOS checkpoints), rows "troth embedded
   (strict)" (``--checkpoints`` chooses the modes).
2. **DBOS** (``pip install dbos``, not a project dependency): SQLite system database in a temp
   dir, switched to WAL before ``DBOS.launch()`` (DBOS leaves SQLite's journal mode alone;
   ``synchronous`` stays SQLite's default FULL), ``await DBOS.start_workflow_async(wf, x)``
   under ``SetWorkflowID(id)``, then ``await handle.get_result()``.
3. **troth server**: ``troth serve`` on a temp SQLite file, W worker processes
   (``Troth(url=..., group="bench")``, each registering ``wf``), and this process as the
   client, ``await client.rpc(id, "wf", x, target="bench")`` then ``await handle.result()``,
   64 in flight; for each W in ``--workers``.

1 and 2 run in child processes of this script (one each, so neither shares a process or an
event loop with the other); every loop is uvloop. Each measurement is a closed loop of
``--n`` workflows with ``concurrency`` in flight, after ``--warmup`` untimed ones; latency is
from the call that starts a workflow to its result. Results are checked (``x + 3``) and after
each system the database is read: every workflow and step the run started is there and done.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from run import (
    NCPU,
    BenchError,
    Server,
    all_procs_cpu_s,
    busiest_others,
    git_commit,
    machine_ticks,
    proc_cpu_s,
)
from tasks import machine, pct, run_loop, self_cpu_s, summarize_raw

HERE = Path(__file__).resolve().parent
SELF = str(Path(__file__).resolve())
GROUP: Final = "bench"
SERVER_INFLIGHT: Final = 64
TARGET_RATIO: Final = 10.0  # troth embedded steps/s ≥ 10 × DBOS steps/s
TARGET_SERVER_WF_S: Final = 1000.0
STEPS_PER_WF: Final = 2


async def add(a: int, b: int) -> int:
    return a + b


# -- one measurement ---------------------------------------------------------------------------


@dataclass
class Phase:
    system: str  # "troth embedded" | "DBOS" | "troth server"
    concurrency: int
    n: int
    wall: float
    latencies_ms: list[float]
    cpu: dict[str, float]  # process (or role) -> % of one core over the phase
    machine_pct: float  # whole machine, % of one core (max NCPU * 100)
    others: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""

    @property
    def wf_per_s(self) -> float:
        return self.n / self.wall

    @property
    def steps_per_s(self) -> float:
        return STEPS_PER_WF * self.wf_per_s

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Phase:
        d = dict(d)
        d["others"] = [tuple(o) for o in d.get("others", [])]
        return cls(**d)


async def wait_quiet(limit_s: float, exclude: set[int]) -> None:
    """Wait (up to ``limit_s``) until no other process uses >= 15% of a core."""
    deadline = time.monotonic() + limit_s
    while True:
        before = all_procs_cpu_s()
        await asyncio.sleep(0.5)
        busy = busiest_others(before, all_procs_cpu_s(), exclude, 0.5)
        if sum(p for _, p in busy) < 15 or time.monotonic() > deadline:
            return
        print(f"      waiting for a quiet machine: {busy[:3]}", flush=True)


async def closed_loop(
    one: Callable[[str, int], Awaitable[None]], prefix: str, n: int, concurrency: int
) -> list[float]:
    """Run ``one(id, x)`` for x in 0..n-1 with ``concurrency`` in flight; latencies in ms."""
    latencies: list[float] = []
    it = iter(range(n))

    async def lane() -> None:
        for x in it:
            t0 = time.perf_counter()
            await one(f"{prefix}{x}", x)
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    if len(latencies) != n:
        raise BenchError(f"{prefix}: {len(latencies)} of {n} workflows finished")
    return latencies


async def measure(
    system: str,
    one: Callable[[str, int], Awaitable[None]],
    prefix: str,
    args: argparse.Namespace,
    concurrency: int,
    cpu_of: Callable[[], dict[str, float]],
    exclude: set[int],
) -> Phase:
    """Warm up (untimed), wait for a quiet machine, then time ``args.n`` workflows."""
    await closed_loop(one, f"{prefix}warm-", args.warmup, concurrency)
    await wait_quiet(args.quiet_wait, exclude)
    procs0, cpu0, ticks0 = all_procs_cpu_s(), cpu_of(), machine_ticks()
    t0 = time.perf_counter()
    latencies = await closed_loop(one, prefix, args.n, concurrency)
    wall = time.perf_counter() - t0
    procs1, cpu1, ticks1 = all_procs_cpu_s(), cpu_of(), machine_ticks()
    busy = ticks1[0] - ticks0[0]
    total = ticks1[1] - ticks0[1]
    phase = Phase(
        system=system,
        concurrency=concurrency,
        n=args.n,
        wall=wall,
        latencies_ms=latencies,
        cpu={k: 100 * (cpu1[k] - cpu0[k]) / wall for k in cpu1},
        machine_pct=100 * NCPU * busy / max(total, 1),
        others=busiest_others(procs0, procs1, exclude, wall),
    )
    print(
        f"  {system:15} c={concurrency:<3} {phase.wf_per_s:8,.0f} wf/s "
        f"{phase.steps_per_s:8,.0f} steps/s  p50 {pct(latencies, 50):7.2f} ms "
        f"p99 {pct(latencies, 99):7.2f} ms  cpu {phase.cpu}",
        flush=True,
    )
    return phase


# -- 1. troth embedded (child process) ------------------------------------------------------


async def child_troth(args: argparse.Namespace) -> tuple[list[Phase], list[str]]:
    from troth import Context, Troth

    db = Path(args.workdir) / "troth.db"
    troth = Troth(f"sqlite:///{db}", checkpoints=args.mode)
    system = "troth embedded" if args.mode == "pipelined" else f"troth embedded ({args.mode})"

    @troth.register
    async def wf(ctx: Context, x: int) -> int:
        y = await ctx.run(add, x, 1)
        return int(await ctx.run(add, y, 2))

    async def one(id: str, x: int) -> None:
        handle = await troth.run(id, wf, x)
        r = await handle.result()
        if r != x + 3:
            raise BenchError(f"{id}: result {r!r}, expected {x + 3}")

    phases = []
    async with troth:
        for c in args.concurrency:
            p = await measure(
                system,
                one,
                f"e{c}/",
                args,
                c,
                lambda: {"process": self_cpu_s()},
                {os.getpid(), os.getppid()},
            )
            phases.append(p)
    checks = []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for c in args.concurrency:
            expect = (args.n + args.warmup) * (1 + STEPS_PER_WF)
            rows = dict(
                conn.execute(
                    "SELECT state, COUNT(*) FROM promises WHERE id LIKE ? GROUP BY state",
                    (f"e{c}/%",),
                ).fetchall()
            )
            ok = rows == {"RESOLVED": expect}
            checks.append(
                f"{'OK' if ok else 'FAILED'}: {system} c={c}: promises {rows}"
                f" (expected {expect:,} RESOLVED: {args.n + args.warmup:,} workflows + 2 steps"
                " each)"
            )
    return phases, checks


# -- 2. DBOS (child process) ------------------------------------------------------------------


async def child_dbos(args: argparse.Namespace) -> tuple[list[Phase], list[str]]:
    from dbos import DBOS, SetWorkflowID  # type: ignore[import-untyped,unused-ignore]

    db = Path(args.workdir) / "dbos.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as conn:  # WAL persists in the file
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise BenchError(f"could not switch {db} to WAL: {mode}")
    DBOS(
        config={
            "name": "troth-sdk-bench",
            "system_database_url": f"sqlite:///{db}",
            "log_level": "WARNING",
        }
    )

    @DBOS.step()  # type: ignore[misc,unused-ignore]
    async def dbos_add(a: int, b: int) -> int:
        return await add(a, b)

    @DBOS.workflow()  # type: ignore[misc,unused-ignore]
    async def wf(x: int) -> int:
        y = await dbos_add(x, 1)
        return int(await dbos_add(y, 2))

    async def one(id: str, x: int) -> None:
        with SetWorkflowID(id):
            handle = await DBOS.start_workflow_async(wf, x)
        r = await handle.get_result()
        if r != x + 3:
            raise BenchError(f"{id}: result {r!r}, expected {x + 3}")

    DBOS.launch()
    phases = []
    try:
        for c in args.concurrency:
            p = await measure(
                "DBOS",
                one,
                f"d{c}/",
                args,
                c,
                lambda: {"process": self_cpu_s()},
                {os.getpid(), os.getppid()},
            )
            phases.append(p)
    finally:
        DBOS.destroy()
    checks = []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        jm = conn.execute("PRAGMA journal_mode").fetchone()[0]
        checks.append(f"DBOS database: journal_mode={jm}, synchronous={sync} (2 = FULL)")
        for c in args.concurrency:
            expect = args.n + args.warmup
            rows = dict(
                conn.execute(
                    "SELECT status, COUNT(*) FROM workflow_status WHERE workflow_uuid LIKE ?"
                    " GROUP BY status",
                    (f"d{c}/%",),
                ).fetchall()
            )
            steps = conn.execute(
                "SELECT COUNT(*) FROM operation_outputs WHERE workflow_uuid LIKE ?",
                (f"d{c}/%",),
            ).fetchone()[0]
            ok = rows == {"SUCCESS": expect} and steps == STEPS_PER_WF * expect
            checks.append(
                f"{'OK' if ok else 'FAILED'}: DBOS c={c}: workflows {rows}, step outputs"
                f" {steps:,} (expected {expect:,} SUCCESS, {STEPS_PER_WF * expect:,} steps)"
            )
    return phases, checks


def child_main(args: argparse.Namespace) -> int:
    fn = child_troth if args.child == "troth" else child_dbos
    phases, checks = run_loop(fn(args))
    result = {"phases": [p.to_json() for p in phases], "checks": checks}
    Path(args.json).write_text(json.dumps(result))
    return 0


def run_child(kind: str, args: argparse.Namespace, workdir: Path, spy: list[str]) -> Any:
    out = workdir / f"{kind}.json"
    cmd = [sys.executable, SELF, "--child", kind, "--workdir", str(workdir), "--json", str(out)]
    cmd += ["--n", str(args.n), "--warmup", str(args.warmup), "--quiet-wait"]
    cmd += [str(args.quiet_wait), "--concurrency", ",".join(map(str, args.concurrency))]
    cmd += ["--mode", args.mode]
    r = subprocess.run([*spy, *cmd], cwd=HERE.parent)
    if r.returncode != 0:
        raise BenchError(f"{kind} child failed with exit code {r.returncode}")
    return json.loads(out.read_text())


# -- 3. troth server with worker processes ----------------------------------------------------


def worker_main(url: str) -> int:
    from troth import Context, Troth

    async def main() -> None:
        troth = Troth(url=url, group=GROUP)

        @troth.register
        async def wf(ctx: Context, x: int) -> int:
            y = await ctx.run(add, x, 1)
            return int(await ctx.run(add, y, 2))

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with troth:
            await stop.wait()

    run_loop(main())
    return 0


class ServerBench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.server = Server(workdir)
        self.nonce = os.urandom(3).hex()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.phases: list[Phase] = []
        self.checks: list[str] = []
        self.prefixes: dict[str, int] = {}  # root id prefix -> workflows started

    def start_workers(self, count: int) -> None:
        cmd = [sys.executable, SELF, "--worker", self.server.url]
        self.workers = [subprocess.Popen(cmd, cwd=HERE.parent) for _ in range(count)]

    def stop_workers(self) -> None:
        for w in self.workers:
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        self.workers = []

    def cpu(self) -> dict[str, float]:
        return {
            "server": proc_cpu_s(self.server.pid),
            "workers": sum(proc_cpu_s(w.pid) for w in self.workers),
            "client": self_cpu_s(),
        }

    async def run(
        self, workers: int, label: str = "", spy: Callable[[list[int]], None] | None = None
    ) -> Phase:
        from troth import Troth

        args = self.args
        self.start_workers(workers)
        try:
            await asyncio.sleep(1.5)  # let the workers open their streams
            for w in self.workers:
                if w.poll() is not None:
                    raise BenchError(f"worker exited with {w.returncode}")
            client = Troth(url=self.server.url, group=f"{GROUP}-client")

            async def one(id: str, x: int) -> None:
                handle = await client.rpc(id, "wf", x, target=GROUP)
                r = await handle.result()
                if r != x + 3:
                    raise BenchError(f"{id}: result {r!r}, expected {x + 3}")

            prefix = f"s{self.nonce}w{workers}{label}/"
            exclude = {os.getpid(), self.server.pid, *(w.pid for w in self.workers)}
            async with client:
                if spy is not None:
                    spy([os.getpid(), self.server.pid, self.workers[0].pid])
                p = await measure(
                    "troth server", one, prefix, args, SERVER_INFLIGHT, self.cpu, exclude
                )
            p.note = f"{workers} worker processes" + (f" ({label})" if label else "")
            self.prefixes[prefix] = args.n + args.warmup
            self.server.check_alive()
            return p
        finally:
            self.stop_workers()

    def verify(self) -> None:
        with contextlib.closing(sqlite3.connect(self.server.db)) as conn:
            for prefix, n in self.prefixes.items():
                promises = dict(
                    conn.execute(
                        "SELECT state, COUNT(*) FROM promises WHERE id LIKE ? GROUP BY state",
                        (f"{prefix}%",),
                    ).fetchall()
                )
                tasks = dict(
                    conn.execute(
                        "SELECT state, COUNT(*) FROM tasks WHERE root_promise_id LIKE ?"
                        " GROUP BY state",
                        (f"{prefix}%",),
                    ).fetchall()
                )
                expect = n * (1 + STEPS_PER_WF)
                ok = promises == {"RESOLVED": expect} and tasks == {"COMPLETED": n}
                self.checks.append(
                    f"{'OK' if ok else 'FAILED'}: troth server `{prefix}*`: promises {promises},"
                    f" tasks {tasks} (expected {expect:,} RESOLVED, {n:,} COMPLETED)"
                )


async def server_main(bench: ServerBench) -> None:
    for w in bench.args.workers:
        bench.phases.append(await bench.run(w))


# -- profiling --------------------------------------------------------------------------------


def py_spy() -> str:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("py-spy not found: .venv/bin/pip install py-spy")
    return spy


def sdk_frames(path: Path, top: int = 12) -> str:
    """Inclusive samples of frames in troth.sdk / troth.client (the SDK's own code)."""
    from collections import Counter

    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        total += int(n)
        for f in set(stack.split(";")):
            if "troth/sdk/" in f or "troth/client.py" in f:
                incl[f] += int(n)
    if not total:
        return ""
    lines = [f"SDK frames (troth/sdk, troth/client.py) by inclusive samples, top {top}:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(lines)


def profile(args: argparse.Namespace, workdir: Path, best_workers: int) -> str:
    spy = py_spy()
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    # a. embedded, sequential: py-spy runs the child
    raw = out / "sdk-embedded-c1.raw"
    emb = workdir / "profile-embedded"
    emb.mkdir()
    sub = argparse.Namespace(**{**vars(args), "concurrency": [1]})
    res = run_child(
        "troth", sub, emb, [spy, "record", "-r", "200", "-f", "raw", "-o", str(raw), "--"]
    )
    ph = Phase.from_json(res["phases"][0])
    parts.append(
        f"### troth embedded, sequential ({ph.wf_per_s:,.0f} wf/s under py-spy -r 200)\n\n```\n"
        + summarize_raw(raw, 15)
        + "\n"
        + sdk_frames(raw)
        + "\n```"
    )
    # b. server: py-spy attached to the client (this process), the server and worker 1
    names = ["client", "server", "worker 1"]
    raws = [out / f"sdk-server-{n.replace(' ', '')}.raw" for n in names]
    procs: list[subprocess.Popen[bytes]] = []

    def attach(pids: list[int]) -> None:
        for pid, r in zip(pids, raws, strict=True):
            cmd = [spy, "record", "-r", "100", "--nonblocking", "-f", "raw", "-o", str(r)]
            procs.append(
                subprocess.Popen(
                    [*cmd, "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
            )
        time.sleep(0.5)

    srv = ServerBench(args, workdir / "profile-server")
    srv.server.db.parent.mkdir()
    srv.server.start()
    try:
        ph = run_loop(srv.run(best_workers, label="profiled", spy=attach))
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=60)
        srv.server.stop()
    parts.append(
        f"### troth server, {best_workers} workers ({ph.wf_per_s:,.0f} wf/s with py-spy -r 100"
        " --nonblocking on the client, the server and worker 1)"
    )
    for name, r in zip(names, raws, strict=True):
        body = summarize_raw(r, 12) + "\n" + sdk_frames(r) if r.exists() else "not written"
        parts.append(f"{name}:\n\n```\n{body}\n```")
    text = "\n\n".join(parts)
    (out / "sdk-profile.txt").write_text(text + "\n")
    return text


# -- the report -------------------------------------------------------------------------------


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_ms_per_wf(p: Phase) -> float:
    """CPU time of every process of the system (client included) per workflow, ms."""
    return sum(p.cpu.values()) / 100 / p.wf_per_s * 1000


def row(p: Phase) -> str:
    cpu = ", ".join(f"{k} {v:.0f}%" for k, v in p.cpu.items())
    conc = "1 (sequential)" if p.concurrency == 1 else str(p.concurrency)
    return (
        f"| {p.system} | {p.note or '-'} | {conc} | {p.n:,} | {p.wf_per_s:,.0f} |"
        f" {p.steps_per_s:,.0f} | {pct(p.latencies_ms, 50):.2f} | {pct(p.latencies_ms, 99):.2f} |"
        f" {cpu} | {cpu_ms_per_wf(p):.2f} | {p.machine_pct:.0f}% |"
    )


def targets(embedded: list[Phase], dbos: list[Phase], server: list[Phase]) -> list[str]:
    out = []
    by_c = {p.concurrency: p for p in dbos}
    for e in embedded:
        d = by_c.get(e.concurrency)
        if d is None:
            continue
        ratio = e.steps_per_s / d.steps_per_s
        ok = ratio >= TARGET_RATIO
        out.append(
            f"- {'PASS' if ok else 'MISS'}: troth embedded ≥ {TARGET_RATIO:.0f}× DBOS steps/s at"
            f" concurrency {e.concurrency}: {e.steps_per_s:,.0f} vs {d.steps_per_s:,.0f}"
            f" = {ratio:.1f}×"
        )
    if server:
        best = max(server, key=lambda p: p.wf_per_s)
        ok = best.wf_per_s >= TARGET_SERVER_WF_S
        out.append(
            f"- {'PASS' if ok else 'MISS'}: troth server ≥ {TARGET_SERVER_WF_S:,.0f} two-step"
            f" workflows/s end to end: {best.wf_per_s:,.0f} ({best.note}, {SERVER_INFLIGHT} in"
            " flight)"
        )
    return out


def render(
    args: argparse.Namespace,
    command: str,
    started: dt.datetime,
    phases: list[Phase],
    checks: list[str],
    profile_text: str,
    failure: str | None,
) -> str:
    m = machine()
    embedded = [p for p in phases if p.system == "troth embedded"]
    dbos = [p for p in phases if p.system == "DBOS"]
    server = [p for p in phases if p.system == "troth server"]
    out = ["# troth SDK benchmark: two-step durable workflows", ""]
    if failure:
        out += ["> **FAILED** — these numbers are not valid:", ">", f"> {failure}", ""]
    out += [
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: `{git_commit()}`",
        f"- command: `{command}`",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}",
        f"- software: troth {version('troth')}, dbos {version('dbos')} (SQLAlchemy"
        f" {version('sqlalchemy')}), Python {m['python']}, SQLite {m['sqlite']}, uvloop"
        f" {version('uvloop')}",
        "- workflow: `y = step(add, x, 1); return step(add, y, 2)`, `add` an `async def` (no"
        " I/O); troth `ctx.run`, DBOS `@DBOS.step()` in a `@DBOS.workflow()`",
        '- troth embedded: `Troth("sqlite:///<tmp>/troth.db")`, defaults (WAL,'
        ' `synchronous=FULL`, group commit, `checkpoints="pipelined"`: a step\'s record is'
        " durable before the workflow's result, not before the next step — docs/sdk.md,"
        ' Durability); `await troth.run(id, wf, x)` → `await handle.result()`. "troth'
        ' embedded (strict)": `checkpoints="strict"`, every step record durable before the'
        " workflow continues, as DBOS does",
        '- DBOS: `DBOS(config={name, system_database_url: "sqlite:///<tmp>/dbos.sqlite"})`,'
        " the file switched to WAL before launch, `synchronous` left at SQLite's FULL;"
        " `SetWorkflowID(id)` + `await DBOS.start_workflow_async(wf, x)` →"
        " `await handle.get_result()`",
        f"- troth server: `troth serve` (fresh SQLite file, defaults), W worker processes"
        f' `Troth(url=..., group="{GROUP}")`, the client in the benchmark\'s process:'
        f' `await client.rpc(id, "wf", x, target="{GROUP}")` → `await handle.result()`,'
        f" {SERVER_INFLIGHT} in flight",
        f"- each row: {args.warmup} untimed warm-up workflows, then {args.n:,} timed; closed"
        " loop; every loop uvloop; everything on the same machine, nothing pinned",
        "",
        "## Results",
        "",
        "| system | setup | concurrency | workflows | workflows/s | steps/s | p50 ms | p99 ms"
        " | CPU (% of one core) | CPU ms/workflow | machine CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
        *(row(p) for p in phases),
        "",
        "steps/s = 2 × workflows/s. Latency: from the call that starts a workflow to its result."
        " CPU over the timed window: `process` = the child process running that system"
        " (all threads); server rows: the `troth serve` process, all worker processes"
        " together, and the client (this script's process). CPU ms/workflow: the sum of"
        " those over workflows/s — the cost of a workflow, less sensitive than throughput to"
        f" other load on the machine. machine = /proc/stat, max {NCPU * 100}%.",
        "",
    ]
    others = [
        f"- {p.system} c={p.concurrency} {p.note}: "
        + ", ".join(f"{n} {v:.0f}%" for n, v in p.others if v >= 5)
        for p in phases
        if any(v >= 5 for _, v in p.others)
    ]
    if others:
        out += ["Other processes using ≥ 5% of a core during a measurement:", "", *others, ""]
    out += ["## Targets", "", *targets(embedded, dbos, server), ""]
    out += ["## Data check", "", *(f"- {c}" for c in checks), ""]
    if profile_text:
        out += ["## Profiles (extra runs, not in the table)", "", profile_text, ""]
    return "\n".join(out)


# -- main -------------------------------------------------------------------------------------


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="timed workflows per row")
    p.add_argument("--warmup", type=int, default=100, help="untimed workflows before each row")
    p.add_argument("--concurrency", type=ints, default=[1, 16, 64], help="embedded and DBOS")
    p.add_argument("--workers", type=ints, default=[2, 3, 4], help="server: worker processes")
    p.add_argument("--systems", default="troth,dbos,server", help="which parts to run")
    p.add_argument(
        "--checkpoints",
        default="pipelined,strict",
        help="troth embedded: the checkpoint modes to run (pipelined is the default mode)",
    )
    p.add_argument("--mode", default="pipelined", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(HERE / "results" / "sdk.md"))
    p.add_argument("--profile", metavar="DIR", help="extra profiled runs (py-spy), raw in DIR")
    p.add_argument("--quiet-wait", type=float, default=60.0)
    p.add_argument("--check-targets", action="store_true", help="exit 2 when a target is missed")
    p.add_argument("--child", choices=["troth", "dbos"], help=argparse.SUPPRESS)
    p.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    if args.child:
        return child_main(args)
    started = dt.datetime.now(dt.UTC)
    command = ".venv/bin/python benchmarks/sdk.py " + " ".join(sys.argv[1:])
    systems = set(args.systems.split(","))
    phases: list[Phase] = []
    checks: list[str] = []
    profile_text = ""
    failure: str | None = None
    workdir = Path(tempfile.mkdtemp(prefix="troth-sdk-bench-"))
    try:
        runs = [("troth", m) for m in args.checkpoints.split(",") if m] + [("dbos", "-")]
        for kind, mode in runs:
            if kind in systems:
                d = workdir / f"{kind}-{mode}"
                d.mkdir()
                print(f"{kind} {mode}: {args.n} workflows per row", flush=True)
                sub = argparse.Namespace(**{**vars(args), "mode": mode})
                res = run_child(kind, sub, d, [])
                phases += [Phase.from_json(p) for p in res["phases"]]
                checks += res["checks"]
        best = args.workers[0]
        if "server" in systems:
            print("troth server:", flush=True)
            bench = ServerBench(args, workdir / "server")
            bench.server.db.parent.mkdir()
            bench.server.start()
            try:
                run_loop(server_main(bench))
            finally:
                bench.server.stop()
            bench.verify()
            phases += bench.phases
            checks += bench.checks
            best = int(max(bench.phases, key=lambda p: p.wf_per_s).note.split()[0])
        if args.profile:
            profile_text = profile(args, workdir, best)
        bad = [c for c in checks if c.startswith("FAILED")]
        if bad:
            raise BenchError("data check failed: " + "; ".join(bad))
    except (BenchError, OSError) as exc:
        failure = str(exc)
        print("FAILED:", failure, file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = render(args, command, started, phases, checks, profile_text, failure)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    for c in checks:
        print("check:", c)
    embedded = [p for p in phases if p.system == "troth embedded"]
    dbos = [p for p in phases if p.system == "DBOS"]
    server = [p for p in phases if p.system == "troth server"]
    tlines = targets(embedded, dbos, server)
    print("\n".join(tlines))
    print(f"wrote {args.out}")
    if failure:
        return 1
    if args.check_targets and any("MISS" in t for t in tlines):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
