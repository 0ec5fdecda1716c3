"""The ``troth`` command line, driven by click's CliRunner against a real server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result

from tests.server_process import ServerProcess, free_port, running_server
from troth import cli
from troth.client import Client
from troth.model import MAX_TIMEOUT

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("cli") / "t.db"
    with running_server("sqlite:///" + str(path)) as srv:
        yield srv


def run(server: ServerProcess | None, *args: str, env: dict[str, str] | None = None) -> Result:
    """``troth promises [--url URL] ARGS`` with a wide terminal and no stray TROTH_* env."""
    base = {
        "COLUMNS": "240",
        "TROTH_URL": None,
        "TROTH_JSON": None,
        "TROTH_TOKEN": None,
        "TROTH_USER": None,
    }
    full: list[str] = ["promises"]
    if server is not None:
        full += ["--url", server.url]
    return CliRunner().invoke(cli.main, [*full, *args], env={**base, **(env or {})})


def run_json(server: ServerProcess, *args: str) -> Any:
    result = run(server, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def server_json(server: ServerProcess, path: str, **params: str) -> Any:
    response = httpx.get(server.url + path, params=params, timeout=10)
    assert response.status_code == 200
    return response.json()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def all_commands() -> list[tuple[str, click.Command]]:
    """Every command as ("promises create", command), groups included."""
    found: list[tuple[str, click.Command]] = []

    def walk(prefix: Sequence[str], group: click.Group) -> None:
        for name, command in sorted(group.commands.items()):
            path = [*prefix, name]
            found.append((" ".join(path), command))
            if isinstance(command, click.Group):
                walk(path, command)

    walk([], cli.main)
    return found


# -- help and docs -----------------------------------------------------------------------


def test_commands_are_the_documented_set() -> None:
    names = {name for name, _ in all_commands()}
    assert names == {
        "serve",
        "migrate",
        "config",
        "config show",
        "invoke",
        "tree",
        "promises",
        "promises create",
        "promises get",
        "promises search",
        "promises resolve",
        "promises reject",
        "promises cancel",
        "promises wait",
        "promises callback",
        "promises subscribe",
        "tasks",
        "tasks claim",
        "tasks complete",
        "tasks drop",
        "tasks heartbeat",
        "tasks listen",
        "locks",
        "locks acquire",
        "locks release",
        "locks heartbeat",
        "schedules",
        "schedules create",
        "schedules get",
        "schedules search",
        "schedules delete",
    }


@pytest.mark.parametrize(("name", "command"), all_commands(), ids=lambda v: str(v))
def test_every_command_has_help(name: str, command: click.Command) -> None:
    assert command.help and command.help.strip(), name
    result = CliRunner().invoke(cli.main, [*name.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage:")
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help"
            envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            for envvar in envvars:
                assert param.show_envvar
                assert envvar in result.stdout, f"{name}: {envvar} not shown"


@pytest.mark.parametrize(("name", "command"), all_commands(), ids=lambda v: str(v))
def test_every_command_is_documented(name: str, command: click.Command) -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert f"troth {name}" in text
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in text, f"{name} {opt} missing from docs/cli.md"


def test_python_dash_m_entry_point_exists() -> None:
    main_py = Path(cli.__file__).with_name("__main__.py").read_text(encoding="utf-8")
    assert "from troth.cli import main" in main_py


# -- serve -------------------------------------------------------------------------------


def test_serve_passes_options(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("troth.server.main.serve", lambda **kw: calls.append(kw))
    result = CliRunner().invoke(
        cli.main,
        ["serve", "--port", "9999", "--store", "memory://", "--log-level", "DEBUG"],
        env={"TROTH_HOST": "0.0.0.0"},
    )
    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "host": "0.0.0.0",
            "port": 9999,
            "store_url": "memory://",
            "log_level": "debug",
            "log_format": "text",
            "access_log": True,
            "auth": None,
            "metrics_public": True,
            "max_body": 10 * 1024 * 1024,
        }
    ]


def test_serve_rejects_bad_port() -> None:
    result = CliRunner().invoke(cli.main, ["serve", "--port", "http"])
    assert result.exit_code == 2


# -- create / get ------------------------------------------------------------------------


def test_create_shows_promise(server: ServerProcess) -> None:
    before = now_ms()
    result = run(
        server, "create", "cli/create/1", "--timeout", "1h", "--param", "hello wörld",
        "--tag", "team=billing", "--tag", "eq=a=b", "--ikey", "ik-1",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "cli/create/1" in out
    assert "PENDING" in out
    assert "hello wörld" in out
    assert "team=billing" in out
    assert "eq=a=b" in out
    assert "ik-1" in out
    stored = server_json(server, "/promises/cli/create/1")
    assert before + 3_600_000 <= stored["timeout"] <= now_ms() + 3_600_000
    assert str(stored["timeout"]) in out
    assert stored["tags"] == {"team": "billing", "eq": "a=b"}


def test_create_json_matches_server(server: ServerProcess) -> None:
    created = run_json(
        server, "create", "cli/create/json", "--timeout-at", "4102444800000",
        "--param-json", '{"n": 1}',
    )  # fmt: skip
    assert created == server_json(server, "/promises/cli/create/json")
    assert created["timeout"] == 4102444800000
    assert created["param"] == {"data": "eyJuIjogMX0="}  # b'{"n": 1}'
    assert run_json(server, "get", "cli/create/json") == created
    result = run(server, "get", "cli/create/json", "--json")  # per-command --json too
    assert json.loads(result.stdout) == created


def test_create_never_times_out(server: ServerProcess) -> None:
    result = run(server, "create", "cli/create/never", "--timeout-at", str(MAX_TIMEOUT))
    assert result.exit_code == 0, result.stderr
    assert f"never ({MAX_TIMEOUT})" in result.stdout


def test_create_conflict_and_dedupe(server: ServerProcess) -> None:
    args = ("create", "cli/create/dup", "--timeout", "1m", "--ikey", "k")
    first = run_json(server, *args)
    assert run_json(server, *args) == first
    result = run(server, "create", "cli/create/dup", "--timeout", "1m", "--ikey", "other")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 40900: ")
    assert "cli/create/dup" in result.stderr
    assert result.stdout == ""


def test_get_missing_exits_1(server: ServerProcess) -> None:
    result = run(server, "get", "cli/missing")
    assert result.exit_code == 1
    assert re.match(r"error 40400: .*cli/missing", result.stderr)


def test_get_shows_times_and_binary_data(server: ServerProcess) -> None:
    with Client(server.url) as client:
        client.create_promise("cli/get/bin", 1_700_000_000_123, param=b"\xff\x00\x01")
    result = run(server, "get", "cli/get/bin")
    assert result.exit_code == 0, result.stderr
    assert "base64:/wAB" in result.stdout
    # the deadline has passed: the promise shows as timed out, completedOn == timeout
    assert "REJECTED_TIMEDOUT" in result.stdout
    assert result.stdout.count("2023-11-14T22:13:20.123Z (1700000000123)") == 2


def test_odd_ids(server: ServerProcess) -> None:
    for id in ["cli/odd/a b?c#d%e", "cli/odd/日本/..", "cli/odd//x"]:
        created = run_json(server, "create", id, "--timeout", "1m")
        assert created["id"] == id
        assert run_json(server, "get", id)["id"] == id
        assert run_json(server, "resolve", id)["state"] == "RESOLVED"


# -- complete ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "state", "code"),
    [
        ("resolve", "RESOLVED", 40301),
        ("reject", "REJECTED", 40302),
        ("cancel", "REJECTED_CANCELED", 40303),
    ],
)
def test_complete(server: ServerProcess, command: str, state: str, code: int) -> None:
    id = f"cli/complete/{command}"
    run_json(server, "create", id, "--timeout", "1m")
    result = run(server, command, id, "--value", "the answer", "--ikey", "u1")
    assert result.exit_code == 0, result.stderr
    assert state in result.stdout
    assert "the answer" in result.stdout
    stored = server_json(server, f"/promises/{id}")
    assert stored["state"] == state
    assert stored["idempotencyKeyForComplete"] == "u1"
    # same key: deduplicated, exit 0
    assert run_json(server, command, id, "--ikey", "u1") == stored
    # no key: forbidden, exit 1 with the code of the stored state
    again = run(server, command, id)
    assert again.exit_code == 1
    assert again.stderr.startswith(f"error {code}: ")


def test_complete_strict_other_state_forbidden(server: ServerProcess) -> None:
    run_json(server, "create", "cli/complete/strict", "--timeout", "1m")
    run_json(server, "resolve", "cli/complete/strict", "--ikey", "k")
    assert run_json(server, "reject", "cli/complete/strict", "--ikey", "k")["state"] == "RESOLVED"
    result = run(server, "reject", "cli/complete/strict", "--ikey", "k", "--strict")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 40301: ")


def test_complete_value_json(server: ServerProcess) -> None:
    run_json(server, "create", "cli/complete/json", "--timeout", "1m")
    done = run_json(server, "resolve", "cli/complete/json", "--value-json", "[1, 2]")
    assert done["value"] == {"data": "WzEsIDJd"}  # b"[1, 2]"


def test_complete_missing_exits_1(server: ServerProcess) -> None:
    result = run(server, "resolve", "cli/complete/missing")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 40400: ")


# -- search ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searchable(server: ServerProcess) -> list[str]:
    ids = [f"cli/search/{i}" for i in range(5)]
    with Client(server.url) as client:
        for i, id in enumerate(ids):
            client.create_promise(id, now_ms() + 600_000, tags={"parity": str(i % 2)})
        client.resolve_promise(ids[0])
    return ids


def test_search_table(server: ServerProcess, searchable: list[str]) -> None:
    result = run(server, "search", "cli/search/*")
    assert result.exit_code == 0, result.stderr
    for id in searchable:
        assert id in result.stdout
    assert "5 promises" in result.stdout
    assert "RESOLVED" in result.stdout


def test_search_json_matches_server(server: ServerProcess, searchable: list[str]) -> None:
    page = run_json(server, "search", "cli/search/*", "--limit", "2")
    assert page == server_json(server, "/promises", id="cli/search/*", limit="2")
    assert [p["id"] for p in page["promises"]] == searchable[::-1][:2]
    assert page["cursor"]
    nxt = run_json(server, "search", "--cursor", page["cursor"], "--limit", "2")
    assert [p["id"] for p in nxt["promises"]] == searchable[::-1][2:4]


def test_search_all_follows_cursors(server: ServerProcess, searchable: list[str]) -> None:
    page = run_json(server, "search", "cli/search/*", "--limit", "2", "--all")
    assert [p["id"] for p in page["promises"]] == searchable[::-1]
    assert page["cursor"] is None
    table = run(server, "search", "cli/search/*", "--limit", "2", "--all")
    assert "5 promises" in table.stdout
    assert "next page" not in table.stdout


def test_search_table_mentions_next_cursor(server: ServerProcess, searchable: list[str]) -> None:
    result = run(server, "search", "cli/search/*", "--limit", "2")
    assert "2 promises" in result.stdout
    assert "next page: --cursor " in result.stdout


def test_search_filters(server: ServerProcess, searchable: list[str]) -> None:
    odd = run_json(server, "search", "cli/search/*", "--tag", "parity=1")
    assert [p["id"] for p in odd["promises"]] == [searchable[3], searchable[1]]
    resolved = run_json(server, "search", "cli/search/*", "--state", "RESOLVED")
    assert [p["id"] for p in resolved["promises"]] == [searchable[0]]
    pending = run_json(server, "search", "cli/search/*", "--state", "pending")
    assert len(pending["promises"]) == 4


def test_search_default_pattern_is_everything(server: ServerProcess, searchable: list[str]) -> None:
    page = run_json(server, "search", "--limit", "1000")
    ids = {p["id"] for p in page["promises"]}
    assert set(searchable) <= ids


# -- wait --------------------------------------------------------------------------------


def test_wait_returns_on_completion(server: ServerProcess) -> None:
    id = "cli/wait/1"
    run_json(server, "create", id, "--timeout", "1m")

    def resolve_later() -> None:
        time.sleep(0.3)
        with Client(server.url) as client:
            client.resolve_promise(id, value="finally")

    thread = threading.Thread(target=resolve_later)
    started = time.monotonic()
    thread.start()
    try:
        done = run_json(server, "wait", id, "--timeout", "20s")
    finally:
        thread.join()
    assert done["state"] == "RESOLVED"
    assert 0.2 <= time.monotonic() - started < 10


def test_wait_elapses_still_pending(server: ServerProcess) -> None:
    run_json(server, "create", "cli/wait/2", "--timeout", "1m")
    started = time.monotonic()
    result = run(server, "wait", "cli/wait/2", "--timeout", "300ms")
    assert result.exit_code == 0, result.stderr
    assert "PENDING" in result.stdout
    assert time.monotonic() - started >= 0.25


def test_wait_missing_exits_1(server: ServerProcess) -> None:
    result = run(server, "wait", "cli/wait/missing", "--timeout", "1s")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 40400: ")


# -- connection and usage errors ---------------------------------------------------------


def test_url_from_env(server: ServerProcess) -> None:
    run_json(server, "create", "cli/env", "--timeout", "1m")
    result = run(None, "--json", "get", "cli/env", env={"TROTH_URL": server.url})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["id"] == "cli/env"


def test_unreachable_server_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli.main, ["promises", "--url", url, "get", "x"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error 50300: ")
    assert url in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["create", "x"],  # no deadline
        ["create", "x", "--timeout", "1h", "--timeout-at", "5"],
        ["create", "x", "--timeout", "soon"],
        ["create", "x", "--timeout", "1h", "--tag", "novalue"],
        ["create", "x", "--timeout", "1h", "--param", "a", "--param-json", "1"],
        ["create", "x", "--timeout", "1h", "--param-json", "{not json"],
        ["create", "x", "--timeout-at", "-1"],
        ["search", "--state", "sleeping"],
        ["search", "--limit", "0"],
        ["wait", "x", "--timeout", "forever"],
        ["get"],
        ["frobnicate"],
        ["resolve", "x", "--bogus"],
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    # no server needed: usage is checked before any request is sent
    result = run(None, *args, env={"TROTH_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Error" in result.stderr


# -- helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1500", 1500), ("250ms", 250), ("30s", 30_000), ("1m30s", 90_000), ("1h", 3_600_000),
     ("2d", 172_800_000), ("1.5s", 1500)],
)  # fmt: skip
def test_parse_duration(text: str, ms: int) -> None:
    assert cli.parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "s", "1x", "1h 2m", "-5s", "1s1"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        cli.parse_duration_ms(text)


def test_format_helpers() -> None:
    assert cli.format_time(0) == "1970-01-01T00:00:00.000Z (0)"
    assert cli.format_time(None) == "-"
    assert cli.format_time(MAX_TIMEOUT) == f"never ({MAX_TIMEOUT})"
    assert cli.format_data(b"text") == "text"
    assert cli.format_data(b"\xff") == "base64:/w=="
    assert cli.format_data(b"\x1b[31m") == repr("\x1b[31m")
    assert cli.format_data(None) == ""


@pytest.mark.parametrize("receiver", ["bogus", "=poll://any@g", "x=ftp://a", "x=poll://uni@g"])
def test_serve_rejects_bad_receivers(receiver: str) -> None:
    result = CliRunner().invoke(cli.main, ["serve", "--receiver", receiver])
    assert result.exit_code == 2
    assert "--receiver" in result.output
