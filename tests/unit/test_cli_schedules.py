"""``troth schedules`` via CliRunner: first against an ``httpx.MockTransport`` (what each
command sends and prints), then against a real ``troth serve``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.server_process import ServerProcess, free_port, running_server
from troth import cli
from troth.client import Client

Handler = Callable[[httpx.Request], httpx.Response]

SCHEDULE_JSON: dict[str, Any] = {
    "id": "news",
    "description": "morning news digest",
    "cron": "0 6 * * *",
    "tags": {"team": "news"},
    "promiseId": "news_feed_{{.date}}",
    "promiseTimeout": 3_600_000,
    "promiseParam": {"data": "eyJyZWdpb24iOiAiZXUifQ=="},
    "promiseTags": {"resonate:invoke": "poll://any@feeds"},
    "nextRunTime": 1735797600000,
    "idempotencyKey": "news-v1",
    "createdOn": 1735732800000,
}
CLEAN_ENV: dict[str, str | None] = {
    "COLUMNS": "240",
    "TROTH_URL": None,
    "TROTH_JSON": None,
    "TROTH_TOKEN": None,
    "TROTH_HTTP_TIMEOUT": None,
}


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), env={**CLEAN_ENV, **(env or {})})


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


class Mock:
    """Route requests of the CLI's client to ``reply``; record them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[httpx.Request] = []
        self.reply: Handler = lambda request: httpx.Response(500)

        def handler(request: httpx.Request) -> httpx.Response:
            self.seen.append(request)
            return self.reply(request)

        def client(settings: Any) -> Client:
            return Client(settings.url, transport=httpx.MockTransport(handler))

        monkeypatch.setattr(cli, "_client", client)

    def answer(self, status: int, body: object = None) -> None:
        self.reply = lambda request: (
            httpx.Response(status) if body is None else httpx.Response(status, json=body)
        )

    @property
    def last(self) -> httpx.Request:
        return self.seen[-1]

    def body(self) -> Any:
        return json.loads(self.last.content)


@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch) -> Mock:
    return Mock(monkeypatch)


# -- what each command sends and prints ----------------------------------------------------


def test_create_sends_every_option_and_shows_the_schedule(mock: Mock) -> None:
    mock.answer(201, SCHEDULE_JSON)
    out = ok(
        invoke(
            "schedules", "create", "news", "--cron", "0 6 * * *",
            "--promise-id", "news_feed_{{.date}}", "--promise-timeout", "1h",
            "--description", "morning news digest", "--tag", "team=news",
            "--promise-param-json", '{"region": "eu"}',
            "--promise-tag", "resonate:invoke=poll://any@feeds", "--ikey", "news-v1",
        )
    )  # fmt: skip
    assert (mock.last.method, mock.last.url.raw_path) == ("POST", b"/schedules")
    assert mock.last.headers["Idempotency-Key"] == "news-v1"
    assert mock.body() == {
        "id": "news",
        "description": "morning news digest",
        "cron": "0 6 * * *",
        "tags": {"team": "news"},
        "promiseId": "news_feed_{{.date}}",
        "promiseTimeout": 3_600_000,
        "promiseParam": {"data": "eyJyZWdpb24iOiAiZXUifQ=="},
        "promiseTags": {"resonate:invoke": "poll://any@feeds"},
    }
    for text in (
        "schedule",
        "news_feed_{{.date}}",
        "0 6 * * *",
        "1h (3600000 ms)",
        '{"region": "eu"}',
        "team=news",
        "resonate:invoke=poll://any@feeds",
        "nextRunTime",
        "2025-01-02T06:00:00.000Z (1735797600000)",  # next run as ISO UTC
        "2025-01-01T12:00:00.000Z",
        "news-v1",
    ):
        assert text in out, text


def test_create_minimal_json(mock: Mock) -> None:
    mock.answer(201, SCHEDULE_JSON)
    out = ok(
        invoke(
            "schedules", "--json", "create", "s", "--cron", "@hourly",
            "--promise-id", "{{.id}}/{{.timestamp}}", "--promise-timeout", "1500",
            "--promise-param", "plain text",
        )
    )  # fmt: skip
    assert mock.body() == {
        "id": "s",
        "cron": "@hourly",
        "promiseId": "{{.id}}/{{.timestamp}}",
        "promiseTimeout": 1500,
        "promiseParam": {"data": "cGxhaW4gdGV4dA=="},
    }
    assert "Idempotency-Key" not in mock.last.headers
    assert json.loads(out) == SCHEDULE_JSON


def test_get_shows_runs(mock: Mock) -> None:
    mock.answer(200, {**SCHEDULE_JSON, "lastRunTime": 1735711200000})
    out = ok(invoke("schedules", "get", "a b/c"))
    assert (mock.last.method, mock.last.url.raw_path) == ("GET", b"/schedules/a%20b/c")
    assert "lastRunTime" in out
    assert "2025-01-01T06:00:00.000Z (1735711200000)" in out
    out = ok(invoke("schedules", "get", "news", "--json"))
    assert json.loads(out)["lastRunTime"] == 1735711200000


def test_search_table_and_query(mock: Mock) -> None:
    mock.answer(200, {"schedules": [SCHEDULE_JSON], "cursor": "next-1"})
    out = ok(invoke("schedules", "search", "news*", "--tag", "team=news", "--limit", "5"))
    assert mock.last.url.path == "/schedules"
    assert mock.last.url.params.multi_items() == [
        ("id", "news*"),
        ("tags[team]", "news"),
        ("limit", "5"),
    ]
    assert "news_feed_{{.date}}" in out
    assert "2025-01-02T06:00:00.000Z" in out
    assert "1 schedule; next page: --cursor next-1" in out
    out = ok(invoke("schedules", "--json", "search", "--cursor", "next-1"))
    assert mock.last.url.params.multi_items() == [
        ("id", "*"),
        ("limit", "100"),
        ("cursor", "next-1"),
    ]
    assert json.loads(out) == {"schedules": [SCHEDULE_JSON], "cursor": "next-1"}


def test_search_all_follows_cursors(mock: Mock) -> None:
    pages = {
        None: {"schedules": [SCHEDULE_JSON], "cursor": "c1"},
        "c1": {"schedules": [{**SCHEDULE_JSON, "id": "sports"}], "cursor": None},
    }
    mock.reply = lambda request: httpx.Response(200, json=pages[request.url.params.get("cursor")])
    out = ok(invoke("schedules", "--json", "search", "--all", "--limit", "1"))
    assert [s["id"] for s in json.loads(out)["schedules"]] == ["news", "sports"]
    assert json.loads(out)["cursor"] is None
    out = ok(invoke("schedules", "search", "--all"))
    assert "2 schedules" in out
    assert "--cursor" not in out


def test_delete(mock: Mock) -> None:
    mock.answer(204)
    assert ok(invoke("schedules", "delete", "news")) == "deleted schedule news\n"
    assert (mock.last.method, mock.last.url.raw_path) == ("DELETE", b"/schedules/news")
    out = ok(invoke("schedules", "delete", "news", "--json"))
    assert json.loads(out) == {"id": "news", "deleted": True}


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (409, 40901, "schedule 'news' already exists"),
        (400, 40000, "invalid cron '0 6 * *': expected 5 fields - at $.cron"),
    ],
)
def test_create_refused_exits_1(mock: Mock, status: int, code: int, message: str) -> None:
    mock.answer(status, {"error": {"code": code, "message": message}})
    result = invoke(
        "schedules", "create", "news", "--cron", "0 6 * *", "--promise-id", "p",
        "--promise-timeout", "1h",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == f"error {code}: {message}\n"
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["get", "x"], ["delete", "x"]])
def test_missing_exits_1(mock: Mock, command: list[str]) -> None:
    mock.answer(404, {"error": {"code": 40401, "message": "schedule 'x' not found"}})
    result = invoke("schedules", *command)
    assert result.exit_code == 1
    assert result.stderr == "error 40401: schedule 'x' not found\n"


@pytest.mark.parametrize(
    "args",
    [
        ["create", "s", "--promise-id", "p", "--promise-timeout", "1h"],  # no --cron
        ["create", "s", "--cron", "@daily", "--promise-timeout", "1h"],  # no --promise-id
        ["create", "s", "--cron", "@daily", "--promise-id", "p"],  # no --promise-timeout
        ["create", "s", "--cron", "@daily", "--promise-id", "p", "--promise-timeout", "soon"],
        ["create", "s", "--cron", "@daily", "--promise-id", "p", "--promise-timeout", "1h",
         "--promise-param", "a", "--promise-param-json", "1"],
        ["create", "s", "--cron", "@daily", "--promise-id", "p", "--promise-timeout", "1h",
         "--promise-param-json", "{nope"],
        ["create", "s", "--cron", "@daily", "--promise-id", "p", "--promise-timeout", "1h",
         "--tag", "novalue"],
        ["create", "s", "--cron", "@daily", "--promise-id", "p", "--promise-timeout", "1h",
         "--promise-tag", "=v"],
        ["search", "--limit", "0"],
        ["get"],
        ["delete"],
    ],
    ids=lambda a: " ".join(a),
)  # fmt: skip
def test_usage_errors_exit_2(mock: Mock, args: list[str]) -> None:
    result = invoke("schedules", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Error" in result.stderr
    assert mock.seen == []


def test_unreachable_server_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("schedules", "--url", url, "get", "x")
    assert result.exit_code == 1
    assert result.stderr.startswith("error 50300: ")


def test_format_duration() -> None:
    assert cli.format_duration(3_600_000) == "1h"
    assert cli.format_duration(90_000) == "1m30s"
    assert cli.format_duration(86_400_000 + 1500) == "1d1s500ms"
    assert cli.format_duration(250) == "250ms"
    assert cli.format_duration(0) == "0ms"


# -- against a real server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("cli_schedules") / "t.db"
    with running_server("sqlite:///" + str(path)) as srv:
        yield srv


def real(server: ServerProcess, *args: str) -> Result:
    return invoke("schedules", "--url", server.url, *args)


def test_real_daily_news_feed_lifecycle(server: ServerProcess) -> None:
    create = (
        "create", "news", "--cron", "0 6 * * *", "--promise-id", "news_feed_{{.date}}",
        "--promise-timeout", "1h", "--tag", "team=news", "--ikey", "news-v1",
    )  # fmt: skip
    out = ok(real(server, *create))
    assert "news_feed_{{.date}}" in out
    assert "T06:00:00.000Z" in out  # the next run, ISO UTC

    stored = json.loads(ok(real(server, "--json", "get", "news")))
    direct = httpx.get(f"{server.url}/schedules/news", timeout=10).json()
    assert stored == direct
    assert stored["promiseTimeout"] == 3_600_000
    # same key: the stored schedule, exit 0
    assert json.loads(ok(real(server, "--json", *create))) == stored

    conflict = real(server, *create[:-2])
    assert conflict.exit_code == 1
    assert conflict.stderr.startswith("error 40901: schedule 'news' already exists")

    found = json.loads(ok(real(server, "--json", "search", "n*", "--tag", "team=news")))
    assert found == {"schedules": [stored], "cursor": None}
    assert "1 schedule" in ok(real(server, "search", "news"))

    assert ok(real(server, "delete", "news")) == "deleted schedule news\n"
    for command in (["get", "news"], ["delete", "news"]):
        missing = real(server, *command)
        assert missing.exit_code == 1
        assert missing.stderr.startswith("error 40401: ")


@pytest.mark.parametrize("cron", ["0 6 * *", "61 * * * *", "@fortnightly", "every day"])
def test_real_bad_cron_exits_1_with_the_servers_message(server: ServerProcess, cron: str) -> None:
    result = real(
        server, "create", "bad", "--cron", cron, "--promise-id", "p", "--promise-timeout", "1h"
    )
    assert result.exit_code == 1, result.stdout
    assert result.stderr.startswith("error 40000: ")
    assert "cron" in result.stderr
    assert cron in result.stderr
    assert real(server, "get", "bad").exit_code == 1


def test_real_search_pages(server: ServerProcess) -> None:
    for i in range(3):
        ok(real(server, "create", f"pages/{i}", "--cron", "@daily",
                "--promise-id", "{{.id}}", "--promise-timeout", "1m"))  # fmt: skip
    first = json.loads(ok(real(server, "--json", "search", "pages/*", "--limit", "2")))
    assert len(first["schedules"]) == 2
    assert first["cursor"]
    rest = json.loads(ok(real(server, "--json", "search", "--cursor", first["cursor"])))
    ids = {s["id"] for s in first["schedules"] + rest["schedules"]}
    assert ids == {"pages/0", "pages/1", "pages/2"}
    every = json.loads(ok(real(server, "--json", "search", "pages/*", "--all", "--limit", "1")))
    assert {s["id"] for s in every["schedules"]} == ids
