"""Command line: ``python -m tools.linearize run|check`` (exit 1 when not linearizable)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tools.linearize.checker import check_history
from tools.linearize.runner import RunConfig, load, record, save
from tools.serverproc import Server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.linearize", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="record a history against running servers, then check it")
    run.add_argument("--url", action="append", help="a running server (repeatable)")
    run.add_argument("--store", help="start servers on this store URL instead of --url")
    run.add_argument("--processes", type=int, default=1, help="servers to start (--store)")
    run.add_argument("--clients", type=int, default=8)
    run.add_argument("--ops", type=int, default=1000)
    run.add_argument("--ids", type=int, default=4, help="ids in the sliding window")
    run.add_argument("--seed", type=int, default=int(time.time()))
    run.add_argument("--out", type=Path, help="save the history (JSON) here")
    run.add_argument("--slack", type=float, default=1.0, help="clock slack, ms")
    chk = sub.add_parser("check", help="check a saved history")
    chk.add_argument("history", type=Path)
    chk.add_argument("--slack", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        if bool(args.url) == bool(args.store):
            parser.error("give either --url (running servers) or --store (start them)")
        servers = [Server(args.store) for _ in range(args.processes if args.store else 0)]
        try:
            for s in servers:
                s.start()
            urls = args.url or [s.url for s in servers]
            cfg = RunConfig(
                urls=urls, clients=args.clients, ops=args.ops, ids=args.ids, seed=args.seed
            )
            started = time.monotonic()
            ops = asyncio.run(record(cfg))
            took = time.monotonic() - started
        finally:
            for s in servers:
                s.kill9()
        unknown = sum(1 for o in ops if not o.known)
        print(
            f"recorded {len(ops)} operations from {args.clients} clients on "
            f"{len(urls)} server(s) in {took:.1f} s (seed {args.seed}, {unknown} unknown)"
        )
        if args.out:
            save(ops, args.out)
    else:
        ops = load(args.history)
    report = check_history(ops, slack=args.slack)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
