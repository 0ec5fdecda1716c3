"""Storage faults on a real server: disk full and a read-only database (SQLite on tmpfs).

A small tmpfs is mounted for the database (the tests run as root here and in CI); the disk
is filled with a filler file, or the file system is remounted read-only. The server must
answer 503 with a JSON body (code 50300) for writes it cannot make, keep serving reads,
recover by itself once space is back, and leave a database that passes
``PRAGMA integrity_check`` with every acknowledged write in it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tools.crash import integrity
from tools.serverproc import Server

FAR = 2**62


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:  # not root / no CAP_SYS_ADMIN: cannot make a small disk
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


def _unavailable(r: httpx.Response, hint: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == 50300
    assert hint in err["message"]


def _eventually_created(url: str, id: str) -> httpx.Response:
    for _ in range(200):
        r = httpx.post(f"{url}/promises", json={"id": id, "timeout": FAR})
        if r.status_code == 201:
            return r
        time.sleep(0.05)
    raise AssertionError(f"writes did not recover: {r.status_code} {r.text}")


def test_disk_full_answers_503_and_recovers(tmpfs: Path) -> None:
    db = tmpfs / "t.db"
    server = Server(f"sqlite:///{db}")
    server.start()
    try:
        acked = []
        for i in range(10):
            r = httpx.post(f"{server.url}/promises", json={"id": f"p{i}", "timeout": FAR})
            assert r.status_code == 201
            acked.append(f"p{i}")
        _fill(tmpfs / "filler")
        assert os.statvfs(tmpfs).f_bavail == 0
        big = base64.b64encode(os.urandom(50_000)).decode()
        for i in range(20):  # a write that needs new pages fails; nothing is acknowledged
            r = httpx.post(
                f"{server.url}/promises",
                json={"id": f"full{i}", "timeout": FAR, "param": {"data": big}},
            )
            if r.status_code != 201:
                break
            acked.append(f"full{i}")
        _unavailable(r, "full")
        r = httpx.patch(f"{server.url}/promises/p1", json={"state": "RESOLVED"})
        if r.status_code == 201:  # fits in pages already there: acknowledged, must survive
            acked.append("p1")
        else:
            _unavailable(r, "full")
        assert httpx.get(f"{server.url}/promises/p0").status_code == 200  # reads go on
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        (tmpfs / "filler").unlink()
        _eventually_created(server.url, "after")  # no restart needed
        acked.append("after")
        server.kill9()
        assert integrity(db) == "ok"
        server.start()
        for id in acked:
            assert httpx.get(f"{server.url}/promises/{id}").status_code == 200, id
    finally:
        server.kill9()


def test_read_only_database_serves_reads_and_refuses_writes_with_503(tmpfs: Path) -> None:
    db = tmpfs / "t.db"
    server = Server(f"sqlite:///{db}")
    server.start()
    try:
        for i in range(5):
            r = httpx.post(f"{server.url}/promises", json={"id": f"p{i}", "timeout": FAR})
            assert r.status_code == 201
        server.kill9()
        # a file system cannot go read-only under open files, so the server is restarted
        # on the remounted (read-only) file system
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
        server.start()
        _unavailable(
            httpx.post(f"{server.url}/promises", json={"id": "q", "timeout": FAR}), "readonly"
        )
        _unavailable(
            httpx.patch(f"{server.url}/promises/p1", json={"state": "RESOLVED"}), "readonly"
        )
        r = httpx.get(f"{server.url}/promises/p0")
        assert r.status_code == 200
        assert r.json()["state"] == "PENDING"
        assert httpx.get(f"{server.url}/promises", params={"id": "p*"}).status_code == 200
        server.kill9()
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
        assert integrity(db) == "ok"
        server.start()
        _eventually_created(server.url, "after")
        r = httpx.get(f"{server.url}/promises/p1")
        assert r.json()["state"] == "PENDING"  # the refused complete was not applied
    finally:
        server.kill9()
