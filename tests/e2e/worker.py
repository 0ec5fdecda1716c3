"""A small standalone troth worker, for end-to-end tests.

    python tests/e2e/worker.py --url URL --group G --id W --mode {complete,hold} --out FILE

Connects to ``GET /poll/G/W``, reads the SSE stream and, for each invoke/resume message,
claims the task (``processId = W``, lease ``--ttl`` ms). In ``complete`` mode it then
resolves the root promise with the fencing headers ``Task-Id``/``Task-Counter`` and completes
the task; in ``hold`` mode it keeps the lease (a heartbeat every ttl/3) until killed.

Every event is appended to ``--out`` as one JSON line (flushed at once, so the file is
readable while the worker runs and survives a SIGKILL): ``connected``, ``received``,
``claimed``, ``resolved``, ``completed``, ``heartbeat``, ``stream_closed``. Needs only httpx.
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx


class Recorder:
    def __init__(self, path: Path, worker: str) -> None:
        self.path = path
        self.worker = worker
        self.lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "worker": self.worker, "at": time.time(), **fields})
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()


def sse_messages(response: httpx.Response, record: Recorder) -> Any:
    """Yield each ``data:`` event of an SSE response as parsed JSON."""
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith(":"):
            if line.strip() == ": connected":
                record("connected")
            continue
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []


def heartbeats(url: str, process_id: str, every_s: float, record: Recorder) -> None:
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while True:
            time.sleep(every_s)
            try:
                r = client.post("/tasks/heartbeat", json={"processId": process_id})
                record("heartbeat", status=r.status_code, body=r.json())
            except httpx.HTTPError as exc:
                record("heartbeat", error=str(exc))


def handle(client: httpx.Client, args: argparse.Namespace, msg: dict[str, Any], record: Recorder):
    if msg.get("type") == "notify":
        promise = msg.get("promise") or {}
        record("received", type="notify", promiseId=promise.get("id"), state=promise.get("state"))
        return
    task = msg["task"]
    id, counter = task["id"], task["counter"]
    root = task["rootPromiseId"]
    record("received", type=msg["type"], task=id, counter=counter, root=root)
    claim = {"id": id, "counter": counter, "processId": args.id, "ttl": args.ttl}
    r = client.post("/tasks/claim", json=claim)
    record("claimed", task=id, counter=counter, status=r.status_code, body=r.json())
    if r.status_code != 201 or args.mode != "complete":
        return
    fence = {"Task-Id": id, "Task-Counter": str(counter)}
    value = {"data": base64.b64encode(f"done by {args.id}".encode()).decode()}
    r = client.patch(
        f"/promises/{quote(root, safe='/')}",
        json={"state": "RESOLVED", "value": value},
        headers=fence,
    )
    record("resolved", task=id, counter=counter, status=r.status_code, body=r.json())
    r = client.post("/tasks/complete", json={"id": id, "counter": counter})
    record("completed", task=id, counter=counter, status=r.status_code, body=r.json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--mode", choices=["complete", "hold"], default="complete")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--ttl", type=int, default=30_000, help="lease of a claim, ms")
    args = parser.parse_args()
    record = Recorder(args.out, args.id)
    if args.mode == "hold":
        threading.Thread(
            target=heartbeats,
            args=(args.url, args.id, args.ttl / 3000, record),
            daemon=True,
        ).start()
    timeout = httpx.Timeout(10.0, read=None)  # the stream is idle between messages
    with httpx.Client(base_url=args.url, timeout=timeout) as client:
        path = f"/poll/{quote(args.group, safe='')}/{quote(args.id, safe='/')}"
        with client.stream("GET", path) as response:
            response.raise_for_status()
            for msg in sse_messages(response, record):
                handle(client, args, msg, record)
        record("stream_closed")


if __name__ == "__main__":
    main()
