"""The core benchmark on PostgreSQL: 1 and 2 ``troth serve`` processes on one database.

    .venv/bin/python benchmarks/postgres.py [--duration 10] [--processes 1,2]
        [--connections 64] [--dsn postgresql://postgres@127.0.0.1:5432/test]
        [--out benchmarks/results/postgres.md]

Each configuration gets a fresh schema. Scenarios, with wrk (scripts of ``benchmarks/lua``):
``ping`` (no storage work), ``create`` (a new id per request), ``complete`` (distinct
PENDING ids created beforehand). With 2 processes the connections are split over them, one
wrk per process, run at the same time; requests/s are summed and the latency columns give
the worse of the two.

"Share of time in the database": the CPU time of PostgreSQL's processes against the troth
server processes' over each run (everything runs on this machine, and CPU is what its 2
cores are short of). Every write must be answered 201, and every 201 must be in the
database afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("core_bench", HERE / "run.py")
assert _spec is not None and _spec.loader is not None
core = importlib.util.module_from_spec(_spec)
sys.modules["core_bench"] = core  # dataclasses look their module up
_spec.loader.exec_module(core)

LUA = HERE / "lua"
MARK = "TROTH_BENCH_JSON "


@dataclass
class Result:
    processes: int
    scenario: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    troth_cpu: float
    pg_cpu: float
    wrk_cpu: float
    machine_cpu: float


def pg_cpu_s() -> float:
    return sum(cpu for comm, cpu in core.all_procs_cpu_s().values() if comm.startswith("postgres"))


class Cluster:
    def __init__(self, dsn: str, n: int, workdir: Path) -> None:
        self.dsn = dsn
        self.schema = f"troth_bench_{secrets.token_hex(4)}"
        self.store = f"{dsn}?schema={self.schema}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.workdir = workdir
        self.n = n

    def start(self) -> None:
        exe = Path(sys.executable).parent / "troth"
        for i in range(self.n):
            port = core.free_port()
            url = f"http://127.0.0.1:{port}"
            log = open(self.workdir / f"server{self.n}-{i}.log", "wb")  # noqa: SIM115
            cmd = [str(exe), "serve", "--port", str(port), "--store", self.store]
            cmd += ["--no-access-log"]  # as a production deployment at this rate would
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            self.urls.append(url)
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"server {url} did not start") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait(30)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    def query(self, text: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            return conn.execute(text).fetchall()  # type: ignore[arg-type]


def wrk(
    cluster: Cluster, scenario: str, connections: int, duration: float, env: dict[str, str]
) -> Result:
    per = max(1, connections // len(cluster.urls))
    procs = []
    nonce = secrets.token_hex(4)
    before = core.all_procs_cpu_s()
    pg0 = pg_cpu_s()
    busy0, total0 = core.machine_ticks()
    t0 = time.monotonic()
    outs = []
    for i, url in enumerate(cluster.urls):
        threads = 1 if per < 16 else 2
        cmd = ["wrk", "-t", str(threads), "-c", str(per), "-d", f"{duration:g}s", "--timeout", "5s"]
        cmd += ["--latency", "-s", str(LUA / f"{scenario}.lua"), url]
        out = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
        outs.append(out)
        e = {
            **os.environ,
            **env,
            "TROTH_BENCH_NONCE": f"{nonce}{i}",
            "TROTH_BENCH_THREADS": str(threads),
        }
        if "TROTH_BENCH_IDS" in env:
            e["TROTH_BENCH_IDS"] = f"{env['TROTH_BENCH_IDS']}.{i}"
        procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=e))
    wrk_cpu = 0.0
    for p in procs:
        _, _status, rusage = os.wait4(p.pid, 0)
        wrk_cpu += rusage.ru_utime + rusage.ru_stime
    wall = time.monotonic() - t0
    after = core.all_procs_cpu_s()
    busy1, total1 = core.machine_ticks()
    pg1 = pg_cpu_s()
    troth = sum(
        after[p.pid][1] - before.get(p.pid, ("", 0.0))[1] for p in cluster.procs if p.pid in after
    )
    datas = []
    for out in outs:
        out.seek(0)
        text = out.read().decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.startswith(MARK)]
        if not lines:
            raise RuntimeError(f"wrk failed:\n{text}")
        datas.append(json.loads(lines[-1][len(MARK) :]))
        out.close()
    statuses: dict[int, int] = {}
    for d in datas:
        for k, v in d["statuses"].items():
            statuses[int(k)] = statuses.get(int(k), 0) + int(v)
    return Result(
        processes=len(cluster.urls),
        scenario=scenario,
        connections=per * len(cluster.urls),
        rps=sum(int(d["requests"]) / (float(d["duration_us"]) / 1e6) for d in datas),
        p50_ms=max(float(d["latency_us"]["p50"]) for d in datas) / 1000,
        p99_ms=max(float(d["latency_us"]["p99"]) for d in datas) / 1000,
        statuses=statuses,
        troth_cpu=100 * troth / wall,
        pg_cpu=100 * (pg1 - pg0) / wall,
        wrk_cpu=100 * wrk_cpu / wall,
        machine_cpu=100 * core.NCPU * (busy1 - busy0) / max(1, total1 - total0),
    )


def bench(args: argparse.Namespace, n: int, workdir: Path) -> tuple[list[Result], list[str]]:
    cluster = Cluster(args.dsn, n, workdir)
    cluster.start()
    results: list[Result] = []
    checks: list[str] = []
    try:
        for c in args.connections:
            results.append(wrk(cluster, "ping", c, args.duration, {}))
            prefix = f"c{n}x{c}"
            created = wrk(cluster, "create", c, args.duration, {"TROTH_BENCH_PREFIX": prefix})
            results.append(created)
            rows = cluster.query(f"SELECT count(*) FROM promises WHERE id LIKE '{prefix}-%'")[0][0]
            checks.append(
                f"{'OK' if rows >= created.statuses.get(201, 0) else 'LOST'}: {n} process(es),"
                f" c={c}: {created.statuses.get(201, 0)} creates answered 201, {rows} rows"
            )
            ids = [
                r[0]
                for r in cluster.query(
                    f"SELECT id FROM promises WHERE id LIKE '{prefix}-%' AND state = 'PENDING'"
                )
            ]
            idfile = workdir / f"ids-{n}-{c}"
            for i in range(n):
                Path(f"{idfile}.{i}").write_text("\n".join(ids[i::n]) + "\n")
            done = wrk(cluster, "complete", c, args.duration, {"TROTH_BENCH_IDS": str(idfile)})
            results.append(done)
            ok = cluster.query(
                f"SELECT count(*) FROM promises WHERE id LIKE '{prefix}-%' AND state = 'RESOLVED'"
            )[0][0]
            checks.append(
                f"{'OK' if ok >= done.statuses.get(201, 0) else 'LOST'}: {n} process(es),"
                f" c={c}: {done.statuses.get(201, 0)} completes answered 201, {ok} rows RESOLVED"
            )
    finally:
        cluster.stop()
    return results, checks


def wakeups(args: argparse.Namespace, workdir: Path) -> list[float]:
    """Cross-process wakeup latency: a long-poll waiter on process A, the resolve on process
    B; milliseconds from sending the resolve to the waiter's answer, ``--wakeups`` times."""
    n = args.wakeups
    import asyncio

    import httpx

    cluster = Cluster(args.dsn, 2, workdir)
    cluster.start()
    a, b = cluster.urls

    async def run() -> list[float]:
        out: list[float] = []
        async with httpx.AsyncClient(timeout=30) as http:
            for i in range(n):
                id = f"wake/{i}"
                await http.post(f"{a}/promises", json={"id": id, "timeout": 2**62})
                waiter = asyncio.create_task(http.get(f"{a}/promises/{id}?wait=20s"))
                await asyncio.sleep(0.02)
                sent = time.perf_counter()
                await http.patch(f"{b}/promises/{id}", json={"state": "RESOLVED"})
                answer = await waiter
                out.append((time.perf_counter() - sent) * 1000)
                assert answer.json()["state"] == "RESOLVED"
        return out

    try:
        return asyncio.run(run())
    finally:
        cluster.stop()


def render(
    results: list[Result], checks: list[str], args: argparse.Namespace, wake: list[float]
) -> str:
    m = core.machine()
    lines = [
        "# troth core benchmark on PostgreSQL",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- commit: `{core.git_commit()}`",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {m.get('cpu', platform.processor())}, {m.get('memory', '')}",
        "- server: `troth serve --store postgresql://...?schema=<fresh>` (defaults: 4 writer"
        " threads with group commit, 8 readers); PostgreSQL 15 on the same machine, defaults"
        " (`synchronous_commit=on`, fsync on)",
        "- load: wrk, connections split evenly over the processes (one wrk per process)",
        "",
        "| processes | scenario | conns | req/s | p50 ms | p99 ms | troth CPU % | PostgreSQL CPU %"
        " | DB share of server CPU | wrk CPU % | machine CPU % |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        share = r.pg_cpu / max(1e-9, r.pg_cpu + r.troth_cpu)
        lines.append(
            f"| {r.processes} | {r.scenario} | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.2f}"
            f" | {r.p99_ms:.2f} | {r.troth_cpu:.0f} | {r.pg_cpu:.0f} | {share:.0%}"
            f" | {r.wrk_cpu:.0f} | {r.machine_cpu:.0f} |"
        )
    lines += ["", "CPU columns are % of one core (the machine has 2)."]
    if wake:
        w = sorted(wake)
        lines += [
            "",
            "## Cross-process wakeup",
            "",
            f"A long-poll waiter on process A, the resolve sent to process B, {len(w)} times:"
            f" from sending the resolve to the waiter's answer p50 {w[len(w) // 2]:.1f} ms,"
            f" p99 {w[min(len(w) - 1, int(len(w) * 0.99))]:.1f} ms, max {w[-1]:.1f} ms"
            " (target: within 100 ms).",
        ]
    lines += ["", "## Data check", ""]
    lines += [f"- {c}" for c in checks]
    bad = [r for r in results if any(s >= 300 for s in r.statuses)]
    for r in bad:
        lines.append(f"- NON-2xx: {r.processes} proc {r.scenario} c={r.connections}: {r.statuses}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--connections", default="64")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", default=str(HERE / "results" / "postgres.md"))
    parser.add_argument("--wakeups", type=int, default=200, help="0 to skip")
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    results: list[Result] = []
    checks: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(p) for p in args.processes.split(",")):
            r, c = bench(args, n, Path(tmp))
            results += r
            checks += c
            for x in r:
                print(
                    f"{x.processes}p {x.scenario:>8} c={x.connections}: {x.rps:,.0f} req/s"
                    f" p50 {x.p50_ms:.2f} p99 {x.p99_ms:.2f} troth {x.troth_cpu:.0f}%"
                    f" pg {x.pg_cpu:.0f}% {x.statuses}",
                    flush=True,
                )
    with tempfile.TemporaryDirectory() as tmp:
        wake = wakeups(args, Path(tmp)) if args.wakeups else []
    text = render(results, checks, args, wake)
    Path(args.out).write_text(text)
    print(text)
    return 1 if any(c.startswith("LOST") for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
