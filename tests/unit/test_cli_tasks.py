"""The ``troth`` task-framework commands (tasks, locks, callbacks, fencing) via CliRunner.

First against an ``httpx.MockTransport`` (what each command sends and prints), then a worker
driven by hand against a real ``troth serve``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result

from tests.server_process import ServerProcess, free_port, running_server
from troth import cli
from troth.client import Client

Handler = Callable[[httpx.Request], httpx.Response]

PROMISE_JSON: dict[str, Any] = {
    "id": "p",
    "state": "PENDING",
    "param": {},
    "value": {},
    "timeout": 4102444800000,
    "createdOn": 1735732800000,
}
TASK_JSON: dict[str, Any] = {
    "id": "__invoke:p",
    "type": "invoke",
    "state": "CLAIMED",
    "counter": 1,
    "timeout": 4102444800000,
    "rootPromiseId": "p",
    "createdOn": 1735732800000,
    "processId": "w1",
    "ttl": 30000,
    "expiresAt": 1735732830000,
}
CALLBACK_JSON: dict[str, Any] = {
    "id": "__resume:root:p",
    "promiseId": "p",
    "rootPromiseId": "root",
    "recv": {"type": "poll", "data": {"group": "g", "id": "w1"}},
    "timeout": 4102444800000,
    "createdOn": 1735732800000,
}
LOCK_JSON: dict[str, Any] = {
    "resourceId": "res",
    "executionId": "e1",
    "processId": "w1",
    "ttl": 30000,
    "expiresAt": 1735732830000,
}
CLEAN_ENV: dict[str, str | None] = {
    "COLUMNS": "240",
    "TROTH_POLL_PORT": None,
    "TROTH_PUBLIC_URL": None,
    "TROTH_STORE": None,
    "TROTH_URL": None,
    "TROTH_JSON": None,
    "TROTH_TOKEN": None,
}


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), env={**CLEAN_ENV, **(env or {})})


class Mock:
    """Route requests of the CLI's client to ``handler``; record them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[httpx.Request] = []
        self.reply: Handler = lambda request: httpx.Response(500)

        def handler(request: httpx.Request) -> httpx.Response:
            self.seen.append(request)
            return self.reply(request)

        def client(settings: Any) -> Client:
            return Client(settings.url, transport=httpx.MockTransport(handler))

        monkeypatch.setattr(cli, "_client", client)

    def answer(self, status: int, body: object = None, **kwargs: Any) -> None:
        def reply(request: httpx.Request) -> httpx.Response:
            if body is None:
                return httpx.Response(status, **kwargs)
            return httpx.Response(status, json=body)

        self.reply = reply

    @property
    def last(self) -> httpx.Request:
        return self.seen[-1]

    def body(self) -> Any:
        return json.loads(self.last.content)


@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch) -> Mock:
    return Mock(monkeypatch)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


# -- the command set ---------------------------------------------------------------------


def command_names() -> set[str]:
    found: set[str] = set()

    def walk(prefix: list[str], group: click.Group) -> None:
        for name, command in group.commands.items():
            found.add(" ".join([*prefix, name]))
            if isinstance(command, click.Group):
                walk([*prefix, name], command)

    walk([], cli.main)
    return found


def test_serve_poll_port_and_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("troth.server.main.serve", lambda **kw: calls.append(kw))
    ok(invoke("serve", "--store", "memory://", "--poll-port", "8002",
              "--public-url", "https://troth.example"))  # fmt: skip
    ok(invoke("serve", env={"TROTH_POLL_PORT": "9002"}))
    assert calls[0]["poll_port"] == 8002
    assert calls[0]["public_url"] == "https://troth.example"
    assert calls[1]["poll_port"] == 9002
    assert "public_url" not in calls[1]
    assert invoke("serve", "--poll-port", "x").exit_code == 2


@pytest.mark.parametrize("group", ["tasks", "locks"])
def test_groups_take_the_connection_options(group: str) -> None:
    out = ok(invoke(group, "--help", env={"COLUMNS": "200"}))
    for option in ("--url", "--json", "--token", "--http-timeout", "TROTH_URL", "TROTH_TOKEN"):
        assert option in out


# -- promises: create with a task, fencing, callbacks ------------------------------------


def test_create_with_task(mock: Mock) -> None:
    mock.answer(201, {"promise": PROMISE_JSON, "task": TASK_JSON})
    out = ok(
        invoke(
            "promises", "create", "p", "--timeout-at", "4102444800000", "--param", "x",
            "--task-process-id", "w1", "--task-ttl", "30s", "--ikey", "k",
        )
    )  # fmt: skip
    assert mock.last.url.raw_path == b"/promises/task"
    assert mock.body() == {
        "promise": {"id": "p", "timeout": 4102444800000, "param": {"data": "eA=="}},
        "task": {"processId": "w1", "ttl": 30000},
    }
    assert mock.last.headers["Idempotency-Key"] == "k"
    assert "promise" in out
    assert "__invoke:p" in out
    assert "CLAIMED" in out
    assert "30000 ms" in out


def test_create_with_task_json_and_default_ttl(mock: Mock) -> None:
    mock.answer(200, {"promise": PROMISE_JSON, "task": None})
    out = ok(
        invoke("promises", "--json", "create", "p", "--timeout", "1m", "--task-process-id", "w")
    )
    assert mock.body()["task"] == {"processId": "w", "ttl": 60000}
    assert json.loads(out) == {"promise": PROMISE_JSON, "task": None}
    mock.answer(200, {"promise": PROMISE_JSON, "task": None})
    out = ok(invoke("promises", "create", "p", "--timeout", "1m", "--task-process-id", "w"))
    assert "no task: the create was deduplicated" in out


@pytest.mark.parametrize(
    "command",
    [
        ["create", "p", "--timeout", "1m"],
        ["resolve", "p"],
        ["reject", "p"],
        ["cancel", "p", "--value", "v"],
    ],
)
def test_fence_headers(mock: Mock, command: list[str]) -> None:
    mock.answer(201, PROMISE_JSON)
    ok(invoke("promises", *command, "--fence", "__resume:a:b/c:12"))
    assert mock.last.headers["Task-Id"] == "__resume:a:b/c"
    assert mock.last.headers["Task-Counter"] == "12"


def test_fencing_failed_exits_1(mock: Mock) -> None:
    mock.answer(412, {"error": {"code": 41200, "message": "task t is not claimed at 3"}})
    result = invoke("promises", "resolve", "p", "--fence", "t:3")
    assert result.exit_code == 1
    assert result.stderr == "error 41200: task t is not claimed at 3\n"


def test_callback(mock: Mock) -> None:
    mock.answer(201, {"callback": CALLBACK_JSON, "promise": PROMISE_JSON})
    out = ok(
        invoke(
            "promises", "callback", "a b/p", "--root", "root", "--recv", "poll://any@g/w1",
            "--timeout-at", "4102444800000", "--fence", "t:2",
        )
    )  # fmt: skip
    assert mock.last.url.raw_path == b"/promises/callback/a%20b/p"
    assert mock.body() == {
        "rootPromiseId": "root",
        "timeout": 4102444800000,
        "recv": "poll://any@g/w1",
    }
    assert (mock.last.headers["Task-Id"], mock.last.headers["Task-Counter"]) == ("t", "2")
    assert "callback" in out
    assert "__resume:root:p" in out
    assert "poll://any@g/w1" in out
    mock.answer(201, {"callback": CALLBACK_JSON, "promise": PROMISE_JSON})
    raw = ok(invoke("promises", "--json", "callback", "p", "--root", "r", "--recv", "d",
                    "--timeout", "1h"))  # fmt: skip
    assert json.loads(raw) == {"callback": CALLBACK_JSON, "promise": PROMISE_JSON}


def test_subscribe(mock: Mock) -> None:
    done = {**PROMISE_JSON, "state": "RESOLVED", "completedOn": 1735732800001}
    mock.answer(200, {"callback": None, "promise": done})
    out = ok(
        invoke("promises", "subscribe", "p", "--subscription-id", "s1", "--recv", "default",
               "--timeout", "1h")
    )  # fmt: skip
    assert mock.last.url.raw_path == b"/promises/subscribe/p"
    body = mock.body()
    assert (body["id"], body["recv"]) == ("s1", "default")
    assert "Task-Id" not in mock.last.headers
    assert "already completed" in out
    assert "RESOLVED" in out
    mock.answer(200, {"callback": None, "promise": PROMISE_JSON})
    out = ok(invoke("promises", "subscribe", "p", "--subscription-id", "s1", "--recv", "default",
                    "--timeout", "1h"))  # fmt: skip
    assert "already exists" in out


def test_callback_missing_promise_exits_1(mock: Mock) -> None:
    mock.answer(404, {"error": {"code": 40400, "message": "promise 'p' not found"}})
    result = invoke("promises", "callback", "p", "--root", "r", "--recv", "d", "--timeout", "1m")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 40400: ")


# -- tasks -------------------------------------------------------------------------------


def test_claim(mock: Mock) -> None:
    leaf = {**PROMISE_JSON, "id": "leaf", "state": "REJECTED", "completedOn": 1735732800002}
    body = {
        "type": "resume",
        "promises": {
            "root": {"id": "p", "href": "http://troth/promises/p", "data": PROMISE_JSON},
            "leaf": {"id": "leaf", "href": "http://troth/promises/leaf", "data": leaf},
        },
    }
    mock.answer(201, body)
    out = ok(invoke("tasks", "claim", "__resume:p:leaf", "3", "--process-id", "w1"))
    assert mock.last.url.raw_path == b"/tasks/claim"
    assert mock.body() == {"id": "__resume:p:leaf", "counter": 3, "processId": "w1", "ttl": 60000}
    assert "claimed resume task __resume:p:leaf counter 3" in out
    assert "root promise" in out
    assert "leaf promise" in out
    assert "REJECTED" in out
    mock.answer(201, body)
    raw = ok(invoke("tasks", "claim", "t", "1", "--process-id", "w1", "--ttl", "5s", "--json"))
    assert json.loads(raw) == body
    assert mock.body()["ttl"] == 5000


@pytest.mark.parametrize("command", ["complete", "drop"])
def test_complete_and_drop(mock: Mock, command: str) -> None:
    mock.answer(201, {**TASK_JSON, "state": "COMPLETED", "completedOn": 1735732800009})
    out = ok(invoke("tasks", command, "__invoke:p", "2"))
    assert mock.last.url.raw_path == f"/tasks/{command}".encode()
    assert mock.body() == {"id": "__invoke:p", "counter": 2}
    assert "COMPLETED" in out
    assert "2025-01-01T12:00:00.009Z (1735732800009)" in out
    raw = ok(invoke("tasks", "--json", command, "__invoke:p", "2"))
    assert json.loads(raw)["state"] == "COMPLETED"


def test_task_refused_exits_1(mock: Mock) -> None:
    mock.answer(403, {"error": {"code": 40308, "message": "counter 1 is stale; the task is at 2"}})
    result = invoke("tasks", "complete", "t", "1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 40308: counter 1 is stale")


def test_tasks_heartbeat(mock: Mock) -> None:
    mock.answer(200, {"tasksAffected": 2})
    assert ok(invoke("tasks", "heartbeat", "--process-id", "w1")) == "2 tasks renewed\n"
    assert mock.last.url.raw_path == b"/tasks/heartbeat"
    assert mock.body() == {"processId": "w1"}
    mock.answer(200, {"tasksAffected": 1})
    assert json.loads(ok(invoke("tasks", "--json", "heartbeat", "--process-id", "w1"))) == {
        "tasksAffected": 1
    }


INVOKE_MESSAGE = {
    "type": "invoke",
    "task": {"id": "__invoke:p", "counter": 1, "timeout": 4102444800000, "rootPromiseId": "p"},
    "href": {"claim": "http://troth/tasks/claim/__invoke:p/1"},
}
NOTIFY_MESSAGE = {"type": "notify", "promise": {**PROMISE_JSON, "state": "RESOLVED"}}


def sse(*messages: object) -> bytes:
    return b": connected\n\n" + b"".join(
        b"data: " + json.dumps(m).encode() + b"\n\n: keep-alive\n\n" for m in messages
    )


def test_listen_prints_lines(mock: Mock) -> None:
    mock.answer(200, content=sse(INVOKE_MESSAGE, NOTIFY_MESSAGE, {"type": "other"}))
    out = ok(invoke("tasks", "listen", "g", "w/1"))
    assert mock.last.url.raw_path == b"/poll/g/w/1"
    lines = out.splitlines()
    assert lines[0].startswith("invoke task __invoke:p counter 1 root p timeout 2100-01-01")
    assert lines[1] == "notify promise p RESOLVED"
    assert lines[2] == 'other {"type":"other"}'


def test_listen_json_and_count(mock: Mock) -> None:
    mock.answer(200, content=sse(INVOKE_MESSAGE, NOTIFY_MESSAGE, INVOKE_MESSAGE))
    out = ok(invoke("tasks", "--json", "listen", "g", "w1", "--count", "2"))
    assert [json.loads(line) for line in out.splitlines()] == [INVOKE_MESSAGE, NOTIFY_MESSAGE]


def test_listen_json_prints_the_servers_json(mock: Mock) -> None:
    future = {"type": "invoke", "task": {"id": "t", "counter": 1}, "new": [1, 2]}
    body = b"data: " + json.dumps(future).encode() + b'\n\ndata: {"type":\ndata: "x"}\n\n'
    mock.answer(200, content=body)
    out = ok(invoke("tasks", "listen", "g", "w1", "--json"))
    assert out.splitlines() == [json.dumps(future), '{"type": "x"}']


def test_listen_stream_ends_before_count(mock: Mock) -> None:
    mock.answer(200, content=sse(INVOKE_MESSAGE))
    result = invoke("tasks", "listen", "g", "w1", "--count", "3", "--json")
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr.startswith("error 50300: the server closed the stream")
    assert "after 1 of 3 messages" in result.stderr


def test_listen_refused(mock: Mock) -> None:
    mock.answer(400, {"error": {"code": 40000, "message": "expected /poll/<group>/<id>"}})
    result = invoke("tasks", "listen", "g", "w1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 40000: ")


# -- locks -------------------------------------------------------------------------------


def test_locks(mock: Mock) -> None:
    mock.answer(201, LOCK_JSON)
    out = ok(invoke("locks", "acquire", "res", "e1", "--process-id", "w1", "--ttl", "30s"))
    assert mock.last.url.raw_path == b"/locks/acquire"
    assert mock.body() == {
        "resourceId": "res",
        "executionId": "e1",
        "processId": "w1",
        "ttl": 30000,
    }
    assert "lock" in out
    assert "res" in out
    assert "30000 ms" in out
    mock.answer(201, LOCK_JSON)
    assert json.loads(ok(invoke("locks", "--json", "acquire", "res", "e1", "--process-id", "w1")))
    mock.answer(204)
    assert ok(invoke("locks", "release", "res", "e1")) == "released res (execution e1)\n"
    assert mock.last.url.raw_path == b"/locks/release"
    assert mock.body() == {"resourceId": "res", "executionId": "e1"}
    mock.answer(204)
    assert json.loads(ok(invoke("locks", "release", "res", "e1", "--json"))) == {
        "resourceId": "res",
        "executionId": "e1",
    }
    mock.answer(200, {"locksAffected": 1})
    assert ok(invoke("locks", "heartbeat", "--process-id", "w1")) == "1 lock renewed\n"
    assert mock.body() == {"processId": "w1"}


def test_lock_held_exits_1(mock: Mock) -> None:
    mock.answer(403, {"error": {"code": 40305, "message": "lock 'res' is held by e0"}})
    result = invoke("locks", "acquire", "res", "e1", "--process-id", "w1")
    assert result.exit_code == 1
    assert result.stderr == "error 40305: lock 'res' is held by e0\n"


# -- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["promises", "create", "p", "--timeout", "1m", "--task-ttl", "5s"],
        ["promises", "create", "p", "--timeout", "1m", "--task-process-id", "w", "--fence", "t:1"],
        ["promises", "resolve", "p", "--fence", "nocounter"],
        ["promises", "resolve", "p", "--fence", "t:x"],
        ["promises", "resolve", "p", "--fence", ":1"],
        ["promises", "callback", "p", "--recv", "d", "--timeout", "1m"],  # no --root
        ["promises", "callback", "p", "--root", "r", "--timeout", "1m"],  # no --recv
        ["promises", "callback", "p", "--root", "r", "--recv", "d"],  # no deadline
        ["promises", "subscribe", "p", "--recv", "d", "--timeout", "1m"],  # no --subscription-id
        ["tasks", "claim", "t", "1"],  # no --process-id
        ["tasks", "claim", "t", "one", "--process-id", "w"],
        ["tasks", "claim", "t", "1", "--process-id", "w", "--ttl", "soon"],
        ["tasks", "complete", "t"],
        ["tasks", "drop", "t", "-1"],
        ["tasks", "heartbeat"],
        ["tasks", "listen", "g"],
        ["tasks", "listen", "g", "w", "--count", "0"],
        ["tasks", "listen", "g", "w", "--idle-timeout", "never"],
        ["locks", "acquire", "r", "e"],
        ["locks", "release", "r"],
        ["locks", "heartbeat"],
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = invoke(*args, env={"TROTH_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Error" in result.stderr


def test_unreachable_server_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["tasks", "--url", url, "listen", "g", "w"],
                 ["locks", "--url", url, "heartbeat", "--process-id", "w"]):  # fmt: skip
        result = invoke(*args)
        assert result.exit_code == 1
        assert result.stderr.startswith("error 50300: ")


# -- a worker driven by hand against a real server ---------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("cli_tasks") / "t.db"
    with running_server("sqlite:///" + str(path)) as srv:
        yield srv


def at(server: ServerProcess, group: str, *args: str) -> Result:
    """``troth GROUP --url URL ARGS``."""
    return invoke(group, "--url", server.url, *args)


def at_json(server: ServerProcess, group: str, *args: str) -> Any:
    return json.loads(ok(at(server, group, "--json", *args)))


def test_worker_by_hand(server: ServerProcess) -> None:
    id = "cli/worker/1"
    created = at_json(
        server, "promises", "create", id, "--timeout", "1h", "--param", "in",
        "--tag", "resonate:invoke=poll://any@cli-g/w1",
    )  # fmt: skip
    assert created["state"] == "PENDING"

    listened = at(server, "tasks", "--json", "listen", "cli-g", "w1", "--count", "1",
                  "--idle-timeout", "20s")  # fmt: skip
    [line] = ok(listened).splitlines()
    message = json.loads(line)
    assert message["type"] == "invoke"
    task_id, counter = message["task"]["id"], message["task"]["counter"]
    assert task_id == f"__invoke:{id}"

    claimed = at_json(server, "tasks", "claim", task_id, str(counter), "--process-id", "w1")
    assert claimed["type"] == "invoke"
    assert claimed["promises"]["root"]["data"]["param"] == {"data": "aW4="}
    again = at(server, "tasks", "claim", task_id, str(counter), "--process-id", "w2")
    assert again.exit_code == 1
    assert again.stderr.startswith("error 40306: ")
    assert ok(at(server, "tasks", "heartbeat", "--process-id", "w1")) == "1 task renewed\n"

    stale = at(server, "promises", "resolve", id, "--value", "late",
               "--fence", f"{task_id}:{counter + 1}")  # fmt: skip
    assert stale.exit_code == 1
    assert stale.stderr.startswith("error 41200: ")
    assert at_json(server, "promises", "get", id)["state"] == "PENDING"

    out = ok(at(server, "promises", "resolve", id, "--value", "done",
                "--fence", f"{task_id}:{counter}"))  # fmt: skip
    assert "RESOLVED" in out
    assert "done" in out
    completed = at_json(server, "tasks", "complete", task_id, str(counter))
    assert completed["state"] == "COMPLETED"
    assert completed["id"] == task_id


def test_listen_prints_a_line_per_message(server: ServerProcess) -> None:
    at_json(server, "promises", "create", "cli/listen/1", "--timeout", "1h",
            "--tag", "resonate:invoke=poll://uni@cli-l/w9")  # fmt: skip
    out = ok(at(server, "tasks", "listen", "cli-l", "w9", "--count", "1", "--idle-timeout", "20s"))
    assert out.startswith("invoke task __invoke:cli/listen/1 counter 1 root cli/listen/1 ")


def test_listen_idle_timeout_exits_1(server: ServerProcess) -> None:
    result = at(server, "tasks", "listen", "cli-quiet", "w", "--idle-timeout", "300ms")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 50300: ")


def test_create_with_task_then_drop(server: ServerProcess) -> None:
    both = at_json(server, "promises", "create", "cli/pt/1", "--timeout", "1h", "--ikey", "k",
                   "--task-process-id", "w7", "--task-ttl", "30s")  # fmt: skip
    task = both["task"]
    assert both["promise"]["id"] == "cli/pt/1"
    assert (task["state"], task["processId"], task["ttl"]) == ("CLAIMED", "w7", 30_000)
    replay = at_json(server, "promises", "create", "cli/pt/1", "--timeout", "1h", "--ikey", "k",
                     "--task-process-id", "w7")  # fmt: skip
    assert replay["task"] is None
    dropped = at_json(server, "tasks", "drop", task["id"], str(task["counter"]))
    assert (dropped["state"], dropped["counter"]) == ("INIT", task["counter"] + 1)
    result = at(server, "tasks", "complete", task["id"], str(task["counter"]))
    assert result.exit_code == 1
    assert result.stderr.startswith("error 403")


def test_callback_and_subscribe(server: ServerProcess) -> None:
    at_json(server, "promises", "create", "cli/cb/root", "--timeout", "1h")
    at_json(server, "promises", "create", "cli/cb/leaf", "--timeout", "1h")
    args = ("callback", "cli/cb/leaf", "--root", "cli/cb/root", "--recv", "poll://any@g/w",
            "--timeout", "1h")  # fmt: skip
    first = at_json(server, "promises", *args)
    assert first["callback"]["id"] == "__resume:cli/cb/root:cli/cb/leaf"
    assert first["callback"]["recv"] == {"type": "poll", "data": {"group": "g", "id": "w"}}
    assert at_json(server, "promises", *args)["callback"] is None
    missing = at(server, "promises", "callback", "cli/cb/none", "--root", "r", "--recv", "default",
                 "--timeout", "1h")  # fmt: skip
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error 40400: ")

    sub = ("subscribe", "cli/cb/leaf", "--subscription-id", "s1", "--recv", "default",
           "--timeout", "1h")  # fmt: skip
    out = ok(at(server, "promises", *sub))
    assert "subscription" in out
    assert "__notify:cli/cb/leaf:s1" in out
    assert "already exists" in ok(at(server, "promises", *sub))
    at_json(server, "promises", "resolve", "cli/cb/leaf")
    assert "already completed" in ok(at(server, "promises", *args))
    bad = at(server, "promises", "subscribe", "cli/cb/root", "--subscription-id", "s",
             "--recv", "nowhere", "--timeout", "1h")  # fmt: skip
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error 40000: ")


def test_locks_contention(server: ServerProcess) -> None:
    out = ok(at(server, "locks", "acquire", "cli/res", "e1", "--process-id", "p1", "--ttl", "1m"))
    assert "e1" in out
    assert "60000 ms" in out
    held = at(server, "locks", "acquire", "cli/res", "e2", "--process-id", "p2")
    assert held.exit_code == 1
    assert held.stderr.startswith("error 40305: ")
    assert ok(at(server, "locks", "heartbeat", "--process-id", "p1")) == "1 lock renewed\n"
    not_holder = at(server, "locks", "release", "cli/res", "e2")
    assert not_holder.exit_code == 1
    assert not_holder.stderr.startswith("error 404")
    assert ok(at(server, "locks", "release", "cli/res", "e1")).startswith("released cli/res")
    lock = at_json(server, "locks", "acquire", "cli/res", "e2", "--process-id", "p2")
    assert (lock["executionId"], lock["processId"]) == ("e2", "p2")
