"""``troth invoke`` and ``troth tree``: durable-function executions from the command line,
driven by click's CliRunner against a real server (and, at the end, a real SDK worker)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.server_process import ServerProcess, free_port, running_server
from troth import cli
from troth.client import Client, encode_id
from troth.model import MAX_TIMEOUT, Promise, State
from troth.sdk.codec import JsonCodec
from troth.sdk.runtime import _Spec

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "sdk" / "remote_worker.py"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("cli-sdk") / "t.db"
    with running_server("sqlite:///" + str(path)) as srv:
        yield srv


def run(server: ServerProcess | None, command: str, *args: str) -> Result:
    """``troth COMMAND [--url URL] ARGS`` with a wide terminal and no stray TROTH_* env."""
    env = {"COLUMNS": "240", "TROTH_URL": None, "TROTH_JSON": None, "TROTH_TOKEN": None}
    if server is None:
        env["TROTH_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    url = [] if server is None else ["--url", server.url]
    return CliRunner().invoke(cli.main, [command, *url, *args], env=env)


def run_json(server: ServerProcess, command: str, *args: str) -> Any:
    result = run(server, command, *args, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def stored(server: ServerProcess, id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/promises/{encode_id(id)}", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def param_of(promise: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(promise["param"]["data"]))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def later(server: ServerProcess, act: Callable[[Client], object]) -> threading.Thread:
    """Run ``act`` on a client in the background after a moment; join the thread after."""

    def go() -> None:
        time.sleep(0.3)
        with Client(server.url) as client:
            act(client)

    thread = threading.Thread(target=go)
    thread.start()
    return thread


# -- invoke: the root promise ------------------------------------------------------------


def test_invoke_creates_root_promise_like_rpc(server: ServerProcess) -> None:
    result = run(
        server, "invoke", "inv/1", "--func", "pipeline", "--arg", "3", "--arg", '"x"',
        "--arg", '{"a": [1, null]}', "--kwarg", "slow_s=0.5", "--kwarg", "note=\"a=b\"",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "inv/1" in result.stdout
    assert "PENDING" in result.stdout
    p = stored(server, "inv/1")
    assert p["tags"] == {
        "troth:root": "true",
        "troth:func": "pipeline",
        "resonate:invoke": "poll://any@default",
    }
    assert param_of(p) == {
        "func": "pipeline",
        "args": [3, "x", {"a": [1, None]}],
        "kwargs": {"slow_s": 0.5, "note": "a=b"},
    }
    assert p["idempotencyKeyForCreate"] == "inv/1"
    assert p["timeout"] == MAX_TIMEOUT
    # the SDK reads it as the spec of an execution
    data = base64.b64decode(p["param"]["data"])
    spec = JsonCodec().decode(data, _Spec)
    assert (spec.func, spec.args, spec.kwargs) == ("pipeline", [3, "x", {"a": [1, None]}], {
        "slow_s": 0.5, "note": "a=b"})  # fmt: skip


def test_invoke_without_arguments(server: ServerProcess) -> None:
    p = run_json(server, "invoke", "inv/bare", "--func", "tick")
    assert p == stored(server, "inv/bare")
    assert param_of(p) == {"func": "tick", "args": [], "kwargs": {}}


@pytest.mark.parametrize(
    ("target", "recv"),
    [
        ("mailers", "poll://any@mailers"),
        ("poll://uni@mailers/m1", "poll://uni@mailers/m1"),
        ("https://example.com/in", "https://example.com/in"),
    ],
)
def test_invoke_target(server: ServerProcess, target: str, recv: str) -> None:
    id = f"inv/target/{target}"
    p = run_json(server, "invoke", id, "--func", "f", "--target", target)
    assert p["tags"]["resonate:invoke"] == recv
    assert stored(server, id)["tags"]["resonate:invoke"] == recv


def test_invoke_timeout_sets_deadline(server: ServerProcess) -> None:
    before = now_ms()
    p = run_json(server, "invoke", "inv/timeout", "--func", "f", "--timeout", "1h")
    assert before + 3_600_000 <= p["timeout"] <= now_ms() + 3_600_000


def test_invoke_again_is_the_same_execution(server: ServerProcess) -> None:
    first = run_json(server, "invoke", "inv/again", "--func", "f", "--arg", "1")
    again = run_json(server, "invoke", "inv/again", "--func", "f", "--arg", "1")
    assert again == first
    # an id is an identity: other arguments start nothing either
    other = run_json(server, "invoke", "inv/again", "--func", "f", "--arg", "2")
    assert param_of(other) == {"func": "f", "args": [1], "kwargs": {}}


def test_invoke_over_a_plain_promise_exits_1(server: ServerProcess) -> None:
    with Client(server.url) as client:
        client.create_promise("inv/taken", MAX_TIMEOUT)
    result = run(server, "invoke", "inv/taken", "--func", "f")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 40900: ")
    assert result.stdout == ""


# -- invoke --wait -----------------------------------------------------------------------


def test_wait_prints_the_result(server: ServerProcess) -> None:
    id = "inv/wait/ok"
    thread = later(server, lambda c: c.resolve_promise(id, value=b'{"total": 3, "s": "\xc3\xa9"}'))
    started = time.monotonic()
    try:
        result = run(server, "invoke", id, "--func", "f", "--wait")
    finally:
        thread.join()
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"total": 3, "s": "é"}
    assert "PENDING" not in result.stdout
    assert 0.2 <= time.monotonic() - started < 10


def test_wait_with_duration_and_json(server: ServerProcess) -> None:
    id = "inv/wait/json"
    thread = later(server, lambda c: c.resolve_promise(id, value=b"[1, 2]"))
    try:
        out = run_json(server, "invoke", id, "--func", "f", "--wait", "20s")
    finally:
        thread.join()
    assert out == {"id": id, "state": "RESOLVED", "result": [1, 2]}


def test_wait_on_a_completed_execution_returns_at_once(server: ServerProcess) -> None:
    run_json(server, "invoke", "inv/wait/done", "--func", "f")
    with Client(server.url) as client:
        client.resolve_promise("inv/wait/done")  # no value: null
    result = run(server, "invoke", "inv/wait/done", "--func", "f", "--wait", "1s")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "null"


def test_wait_plain_text_value(server: ServerProcess) -> None:
    run_json(server, "invoke", "inv/wait/text", "--func", "f")
    with Client(server.url) as client:
        client.resolve_promise("inv/wait/text", value="approved by hand")
    out = run_json(server, "invoke", "inv/wait/text", "--func", "f", "--wait")
    assert out["result"] == "approved by hand"


def test_wait_rejected_prints_type_and_message(server: ServerProcess) -> None:
    id = "inv/wait/failed"
    error = JsonCodec().encode_error(ValueError("no such order"))
    thread = later(server, lambda c: c.reject_promise(id, value=error))
    try:
        result = run(server, "invoke", id, "--func", "f", "--wait", "20s")
    finally:
        thread.join()
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "REJECTED builtins.ValueError: no such order"
    assert "Traceback" not in result.stderr
    out = run(server, "invoke", id, "--func", "f", "--wait", "--json")
    assert out.exit_code == 1
    assert json.loads(out.stdout) == {
        "id": id,
        "state": "REJECTED",
        "error": {"type": "builtins.ValueError", "message": "no such order"},
    }


@pytest.mark.parametrize(
    ("complete", "state", "shown"),
    [
        (lambda c, id: c.cancel_promise(id), "REJECTED_CANCELED", "canceled: execution"),
        (lambda c, id: c.reject_promise(id, value="nope"), "REJECTED", "rejected: nope"),
    ],
    ids=["canceled", "rejected-by-hand"],
)
def test_wait_other_failures(
    server: ServerProcess, complete: Callable[[Client, str], Promise], state: str, shown: str
) -> None:
    id = f"inv/wait/{state}/{shown[:4]}"
    run_json(server, "invoke", id, "--func", "f")
    with Client(server.url) as client:
        complete(client, id)
    result = run(server, "invoke", id, "--func", "f", "--wait")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{state} {shown}")


def test_wait_timed_out_execution(server: ServerProcess) -> None:
    result = run(server, "invoke", "inv/wait/deadline", "--func", "f", "--timeout", "200ms",
                 "--wait", "20s")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("REJECTED_TIMEDOUT timed out: execution 'inv/wait/deadline'")


def test_wait_elapses_exits_1(server: ServerProcess) -> None:
    started = time.monotonic()
    result = run(server, "invoke", "inv/wait/slow", "--func", "f", "--wait", "300ms")
    assert result.exit_code == 1
    assert time.monotonic() - started >= 0.25
    assert "PENDING" in result.stdout  # the promise, as without --wait
    assert "still pending after 300 ms" in result.stderr
    assert stored(server, "inv/wait/slow")["state"] == "PENDING"


# -- tree --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hierarchy(server: ServerProcess) -> dict[str, Promise]:
    """x (root, pending) > 1 (resolved), 2 (pending) > 2.1 (rejected), 10 (timer), and a
    promise x9.1 that is not part of it."""
    root = "tree/x"
    made: dict[str, Promise] = {}
    with Client(server.url) as client:
        made[root] = client.create_promise(
            root, MAX_TIMEOUT, tags={"troth:root": "true", "troth:func": "checkout"}
        )
        for suffix, func in [("1", "charge"), ("2", "ship"), ("2.1", "label"), ("10", "sleep")]:
            tags = {"troth:func": func}
            deadline = MAX_TIMEOUT
            if func == "sleep":
                tags["resonate:timeout"] = "true"
                deadline = 4_102_444_800_000  # 2100-01-01
            made[suffix] = client.create_promise(f"{root}.{suffix}", deadline, tags=tags)
        made["1"] = client.resolve_promise(f"{root}.1", value="42")
        made["2.1"] = client.reject_promise(f"{root}.2.1")
        client.create_promise("tree/x9.1", MAX_TIMEOUT, tags={"troth:func": "stranger"})
    return made


def node(p: Promise, func: str, children: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": p.id,
        "func": func,
        "state": p.state.value,
        "createdOn": p.created_on,
        "completedOn": p.completed_on,
        "children": children,
    }


def test_tree_json_is_the_nested_structure(
    server: ServerProcess, hierarchy: dict[str, Promise]
) -> None:
    h = hierarchy
    assert run_json(server, "tree", "tree/x") == node(
        h["tree/x"],
        "checkout",
        [
            node(h["1"], "charge", []),
            node(h["2"], "ship", [node(h["2.1"], "label", [])]),
            node(h["10"], "sleep", []),
        ],
    )
    assert h["1"].completed_on is not None and h["2"].completed_on is None


def test_tree_prints_the_nesting(server: ServerProcess, hierarchy: dict[str, Promise]) -> None:
    result = run(server, "tree", "tree/x")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    assert lines[0].startswith("tree/x  checkout  PENDING  ")
    assert "pending for " in lines[0]
    assert lines[1].startswith("├── 1  charge  RESOLVED  ")
    assert " → " in lines[1] and " ms)" in lines[1]
    assert lines[2].startswith("├── 2  ship  PENDING  ")
    assert lines[3].startswith("│   └── 1  label  REJECTED  ")
    assert lines[4].startswith("└── 10  sleep  PENDING  until 2100-01-01T00:00:00.000Z  ")
    assert "stranger" not in result.stdout
    created = hierarchy["1"]
    assert cli._clock(created.created_on) in lines[1]
    assert created.completed_on is not None
    assert f"({created.completed_on - created.created_on} ms)" in lines[1]


def test_tree_of_a_lone_promise(server: ServerProcess) -> None:
    with Client(server.url) as client:
        p = client.create_promise("tree/lone", MAX_TIMEOUT)
    assert run_json(server, "tree", "tree/lone") == {
        "id": "tree/lone",
        "func": None,
        "state": "PENDING",
        "createdOn": p.created_on,
        "completedOn": None,
        "children": [],
    }


def test_tree_follows_cursors_and_orphans(server: ServerProcess) -> None:
    """More than a page of calls; a call whose parent is missing hangs on the nearest
    ancestor; the root's func comes from its param when it has no tag."""
    with Client(server.url) as client:
        client.create_promise("tree/big", MAX_TIMEOUT, param=b'{"func": "batch", "args": []}')
        for n in range(1, 1006):
            client.create_promise(f"tree/big.{n}", MAX_TIMEOUT, tags={"troth:func": "item"})
        client.create_promise("tree/big.5000.1", MAX_TIMEOUT, tags={"troth:func": "orphan"})
    graph = run_json(server, "tree", "tree/big")
    assert graph["func"] == "batch"
    ids = [c["id"] for c in graph["children"]]
    assert ids == [f"tree/big.{n}" for n in range(1, 1006)] + ["tree/big.5000.1"]
    assert graph["children"][-1]["func"] == "orphan"


def test_call_tree_order() -> None:
    def p(id: str) -> Promise:
        return Promise(id=id, state=State.PENDING, timeout=MAX_TIMEOUT, created_on=1)

    root = cli.call_tree(p("r"), [p(i) for i in ["r.b", "r.10", "r.2", "r.2.1", "r.a.x", "rx"]])
    assert [c.id for c in root.children] == ["r.2", "r.10", "r.a.x", "r.b"]
    assert [c.id for c in root.children[0].children] == ["r.2.1"]


def test_tree_missing_exits_1(server: ServerProcess) -> None:
    result = run(server, "tree", "tree/missing")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 40400: ")
    assert result.stdout == ""


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["invoke", "x"],  # no --func
        ["invoke", "x", "--func", "f", "--arg", "{not json"],
        ["invoke", "x", "--func", "f", "--arg", "plain text"],
        ["invoke", "x", "--func", "f", "--kwarg", "novalue"],
        ["invoke", "x", "--func", "f", "--kwarg", "k=nope"],
        ["invoke", "x", "--func", "f", "--kwarg", "k=1", "--kwarg", "k=2"],
        ["invoke", "x", "--func", "f", "--timeout", "soon"],
        ["invoke", "x", "--func", "f", "--wait", "forever"],
        ["invoke", "--func", "f"],
        ["tree"],
        ["tree", "x", "--bogus"],
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    # no server needed: usage is checked before any request is sent
    result = run(None, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Error" in result.stderr


@pytest.mark.parametrize("command", [["invoke", "x", "--func", "f"], ["tree", "x"]])
def test_unreachable_server_exits_1(command: list[str]) -> None:
    result = run(None, *command)
    assert result.exit_code == 1
    assert result.stderr.startswith("error 50300: ")


# -- with a real SDK worker --------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tests/sdk/remote_worker.py`` serving group ``cli-workers``; yields the group."""
    tmp = tmp_path_factory.mktemp("cli-worker")
    log, steps = tmp / "worker.log", tmp / "steps.log"
    group = "cli-workers"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--url", server.url, "--group", group,
             "--process-id", "cw1", "--log", str(steps)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while not (steps.exists() and "ready cw1" in steps.read_text()):
                assert proc.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.05)
            time.sleep(0.3)  # its stream connects right after start()
            yield group
        finally:
            proc.kill()
            proc.wait(10)


def test_invoke_runs_on_a_worker_and_tree_shows_it(server: ServerProcess, worker: str) -> None:
    result = run(server, "invoke", "e2e/flow", "--func", "flow", "--arg", "4",
                 "--target", worker, "--wait", "60s")  # fmt: skip
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert json.loads(result.stdout) == {"one": 5, "square": 25}

    graph = run_json(server, "tree", "e2e/flow")
    assert graph["func"] == "flow"
    assert graph["state"] == "RESOLVED"
    calls = [(c["id"], c["func"], c["state"]) for c in graph["children"]]
    assert calls == [
        ("e2e/flow.1", "__main__.one", "RESOLVED"),
        ("e2e/flow.2", "sleep", "RESOLVED"),
        ("e2e/flow.3", "square", "RESOLVED"),
    ]
    (square_step,) = graph["children"][2]["children"]
    assert (square_step["id"], square_step["func"]) == ("e2e/flow.3.1", "__main__.square_step")

    text = run(server, "tree", "e2e/flow")
    assert text.exit_code == 0, text.stderr
    assert "sleep  RESOLVED  until " in text.stdout
    assert "└── 1  __main__.square_step  RESOLVED" in text.stdout


def test_invoke_failing_function_on_a_worker(server: ServerProcess, worker: str) -> None:
    result = run(server, "invoke", "e2e/fails", "--func", "fails", "--kwarg",
                 'message="card declined"', "--target", worker, "--wait", "60s")  # fmt: skip
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.strip() == "REJECTED builtins.ValueError: card declined"
