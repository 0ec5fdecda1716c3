"""Hypothesis on the wire decoders, the HTTP edge of a real server, and the CLI arguments.

- Decoders (``server/wire.py``, ``server/wire_tasks.py``, the fast path's header reader):
  any bytes, any JSON, any header text either decode or raise troth's ``ValidationError``
  (a 400) — never another exception (a 500).
- A real server (SQLite): bodies shaped like each route's, with hostile values in every
  field (integers at and past 2^63, negative, floats, wrong types, long and odd strings),
  odd ``Strict`` / ``Task-Counter`` / ``Idempotency-Key`` headers and query parameters:
  every answer is < 500 with a JSON body, and 4xx bodies carry the error code.
- The CLI through click's ``CliRunner``: random arguments for every client command exit with
  0, 1 or 2 and never with an unhandled exception.

``TROTH_FUZZ_EXAMPLES`` scales the example counts (``make reliability``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tools.serverproc import Server

from troth.cli import main as cli
from troth.durations import parse_duration_ms as parse_duration_text
from troth.errors import ValidationError
from troth.server import wire, wire_tasks
from troth.server.fastpath import _headers

SCALE = max(1, int(os.environ.get("TROTH_FUZZ_EXAMPLES", "6")) // 6)
FUZZ = settings(
    max_examples=150 * SCALE,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)

INTS = st.one_of(
    st.sampled_from([0, 1, -1, 2**31, 2**53, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30]),
    st.integers(),
)
STRINGS = st.one_of(
    st.sampled_from(["", " ", "*", "a/b", "é", "\x00", "9" * 400 + "h", "1e400", "nan"]),
    st.text(max_size=40),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(), STRINGS)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=4),
    max_leaves=12,
)
VALUE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "data": st.one_of(st.sampled_from(["aGk=", "!!", ""]), JSON),
            "headers": st.one_of(st.dictionaries(STRINGS, STRINGS, max_size=3), JSON),
        },
    ),
    JSON,
)


def _field(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right type with hostile values, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, JSON)


def _body(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    shaped = st.fixed_dictionaries(
        {k: _field(v) for k, v in required.items()},
        optional={k: _field(v) for k, v in optional.items()},
    )
    return st.one_of(shaped, shaped, shaped, JSON)


PROMISE = {"id": STRINGS, "timeout": INTS}
PROMISE_OPT = {"param": VALUE, "tags": st.dictionaries(STRINGS, STRINGS, max_size=3)}
ROUTES: list[tuple[str, str, st.SearchStrategy[Any]]] = [
    ("POST", "/promises", _body(PROMISE, PROMISE_OPT)),
    (
        "PATCH",
        "/promises/fz",
        _body(
            {"state": st.sampled_from(["RESOLVED", "rejected", "PENDING", "x"])}, {"value": VALUE}
        ),
    ),
    (
        "POST",
        "/promises/task",
        _body(
            {
                "promise": _body(PROMISE, PROMISE_OPT),
                "task": _body({"processId": STRINGS, "ttl": INTS}, {}),
            },
            {},
        ),
    ),
    (
        "POST",
        "/promises/callback/fz",
        _body({"rootPromiseId": STRINGS, "timeout": INTS}, {"recv": JSON}),
    ),
    ("POST", "/promises/subscribe/fz", _body({"id": STRINGS, "timeout": INTS}, {"recv": JSON})),
    (
        "POST",
        "/tasks/claim",
        _body({"id": STRINGS, "counter": INTS, "processId": STRINGS, "ttl": INTS}, {}),
    ),
    ("POST", "/tasks/complete", _body({"id": STRINGS, "counter": INTS}, {})),
    ("POST", "/tasks/drop", _body({"id": STRINGS, "counter": INTS}, {})),
    ("POST", "/tasks/heartbeat", _body({"processId": STRINGS}, {})),
    (
        "POST",
        "/locks/acquire",
        _body(
            {"resourceId": STRINGS, "executionId": STRINGS, "processId": STRINGS, "ttl": INTS}, {}
        ),
    ),
    ("POST", "/locks/release", _body({"resourceId": STRINGS, "executionId": STRINGS}, {})),
    (
        "POST",
        "/schedules",
        _body(
            {
                "id": STRINGS,
                "cron": st.sampled_from(["* * * * *", "@hourly", "61 * * * *"]) | STRINGS,
                "promiseId": STRINGS,
                "promiseTimeout": INTS,
            },
            {"promiseParam": VALUE, "tags": JSON, "promiseTags": JSON, "description": JSON},
        ),
    ),
]
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Strict": STRINGS,
        "Idempotency-Key": STRINGS,
        "Task-Id": STRINGS,
        "Task-Counter": st.one_of(STRINGS, INTS.map(str)),
    },
)


def _printable(headers: dict[str, str]) -> dict[str, bytes]:
    """Header values as an HTTP client can send them (latin-1, no control characters)."""
    out = {}
    for k, v in headers.items():
        v = "".join(c for c in v if 32 <= ord(c) < 256 and c != "\x7f").strip()
        out[k] = v.encode("latin-1")
    return out


# -- decoders --------------------------------------------------------------------------

DECODERS = [
    wire.decode_create,
    wire.decode_complete,
    *(
        (lambda body, cls=cls: wire_tasks.decode(cls, body))
        for cls in (
            wire_tasks.CreatePromiseAndTask,
            wire_tasks.CallbackBody,
            wire_tasks.SubscribeBody,
            wire_tasks.LegacyCallbackBody,
            wire_tasks.LegacySubscriptionBody,
            wire_tasks.ClaimBody,
            wire_tasks.TaskRefBody,
            wire_tasks.ProcessBody,
            wire_tasks.AcquireLockBody,
            wire_tasks.ReleaseLockBody,
        )
    ),
]


def _only_validation_errors(fn: Any, *args: Any) -> None:
    with contextlib.suppress(ValidationError):
        fn(*args)


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), JSON.map(msgspec.json.encode)))
def test_decoders_accept_or_refuse_with_400(body: bytes) -> None:
    for decode in DECODERS:
        _only_validation_errors(decode, body)


@FUZZ
@given(route=st.sampled_from(ROUTES), data=st.data())
def test_decoders_on_route_shaped_bodies(route: tuple[str, str, Any], data: st.DataObject) -> None:
    body = msgspec.json.encode(data.draw(route[2]))
    for decode in DECODERS:
        _only_validation_errors(decode, body)


@FUZZ
@given(text=STRINGS, other=st.none() | STRINGS)
def test_header_and_query_parsers_refuse_with_400(text: str, other: str | None) -> None:
    _only_validation_errors(wire.parse_strict, text)
    _only_validation_errors(wire.parse_duration_ms, text)
    _only_validation_errors(wire.parse_int, text, "limit")
    _only_validation_errors(wire.parse_tag_filters, [(text, "v"), ("tags[" + text + "]", "v")])
    _only_validation_errors(wire_tasks.parse_fence, text, other)
    _only_validation_errors(wire_tasks.parse_fence, other, text)


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=8))
def test_fast_path_header_reader_takes_any_bytes(raw: list[tuple[bytes, bytes]]) -> None:
    found = _headers(raw)
    assert set(found) <= {"idempotency-key", "strict", "content-length", "task-id", "task-counter"}


def test_huge_durations_are_refused_not_crashed() -> None:
    """Regression: ``wait=<400 nines>h`` overflowed float->int and answered 500."""
    with pytest.raises(ValueError):
        parse_duration_text("9" * 400 + "h")
    with pytest.raises(ValidationError):
        wire.parse_duration_ms("9" * 400 + "h")


# -- a real server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("edge")
    with Server(f"sqlite:///{tmp / 'edge.db'}", log=tmp / "server.log") as server:
        httpx.post(f"{server.url}/promises", json={"id": "fz", "timeout": 2**62})
        httpx.post(f"{server.url}/promises", json={"id": "done", "timeout": 0})
        yield server


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.request.method, r.request.url, r.request.content, r.text)
    if r.status_code == 204:  # DELETE /schedules, POST /locks/release
        assert r.content == b""
        return
    body = r.json()
    if r.status_code >= 400:
        assert isinstance(body["error"]["code"], int)
        assert body["error"]["code"] // 100 == r.status_code


@pytest.fixture(scope="module")
def http(edge_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge_server.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
@FUZZ
@given(headers=HEADERS, data=st.data())
def test_every_write_route_answers_below_500(
    http: httpx.Client, route: tuple[str, str, Any], headers: dict[str, str], data: st.DataObject
) -> None:
    method, path, strategy = route
    content = json.dumps(data.draw(strategy)).encode()
    _check(http.request(method, path, content=content, headers=_printable(headers)))


@FUZZ
@given(
    wait=STRINGS | INTS.map(str),
    limit=STRINGS | INTS.map(str),
    state=STRINGS,
    pattern=STRINGS,
    tag=STRINGS,
)
def test_reads_with_hostile_query_parameters_answer_below_500(
    http: httpx.Client, wait: str, limit: str, state: str, pattern: str, tag: str
) -> None:
    # wait on a completed promise answers at once whatever the wait
    _check(http.get("/promises/done", params={"wait": wait}))
    params = {"id": pattern, "limit": limit, "state": state, f"tags[{tag}]": tag}
    _check(http.get("/promises", params=params))
    _check(http.get("/promises", params={"cursor": pattern}))
    _check(http.get("/schedules", params={"id": pattern, "limit": limit}))


def test_regressions_found_by_this_fuzzer(edge_server: Server) -> None:
    """Each of these answered 500 before it was fixed (docs/reliability.md)."""
    url = edge_server.url
    r = httpx.get(f"{url}/promises/done", params={"wait": "9" * 400 + "h"})
    assert r.status_code == 400
    big = 2**63 - 1
    task = {"promise": {"id": "fz-task", "timeout": big}, "task": {"processId": "p", "ttl": big}}
    r = httpx.post(f"{url}/promises/task", json=task)
    assert r.status_code in (201, 400), r.text
    lock = {"resourceId": "r", "executionId": "e", "processId": "p", "ttl": big}
    r = httpx.post(f"{url}/locks/acquire", json=lock)
    assert r.status_code in (201, 400), r.text
    claim = {"id": "__invoke:none", "counter": 1, "processId": "p", "ttl": big}
    assert httpx.post(f"{url}/tasks/claim", json=claim).status_code == 400
    assert httpx.post(f"{url}/locks/heartbeat", json={"processId": "p"}).status_code == 200
    assert httpx.post(f"{url}/tasks/heartbeat", json={"processId": "p"}).status_code == 200


def test_server_logged_no_traceback(edge_server: Server) -> None:
    assert edge_server.log is not None
    assert "Traceback" not in Path(edge_server.log).read_text()


# -- the CLI ---------------------------------------------------------------------------

#: Client commands with their positional arguments and options. Left out: ``serve`` and
#: ``migrate`` (they start or write a store), ``config show``, ``promises wait``, ``tasks
#: listen`` and ``invoke`` (they block for as long as they are told to).
COMMANDS: dict[str, tuple[int, list[str]]] = {
    "promises create": (
        1,
        [
            "--timeout",
            "--timeout-at",
            "--param",
            "--param-json",
            "--tag",
            "--ikey",
            "--strict",
            "--task-process-id",
            "--task-ttl",
            "--fence",
        ],
    ),
    "promises get": (1, []),
    "promises search": (1, ["--state", "--tag", "--limit", "--cursor"]),
    "promises resolve": (1, ["--value", "--value-json", "--ikey", "--strict", "--fence"]),
    "promises reject": (1, ["--value", "--value-json", "--ikey", "--strict", "--fence"]),
    "promises cancel": (1, ["--value", "--value-json", "--ikey", "--strict", "--fence"]),
    "promises callback": (1, ["--root", "--recv", "--timeout", "--timeout-at", "--fence"]),
    "promises subscribe": (1, ["--subscription-id", "--recv", "--timeout", "--timeout-at"]),
    "tasks claim": (2, ["--process-id", "--ttl"]),
    "tasks complete": (2, []),
    "tasks drop": (2, []),
    "tasks heartbeat": (0, ["--process-id"]),
    "tree": (1, []),
    "locks acquire": (2, ["--process-id", "--ttl"]),
    "locks release": (2, []),
    "locks heartbeat": (0, ["--process-id"]),
    "schedules create": (
        1,
        [
            "--cron",
            "--promise-id",
            "--promise-timeout",
            "--description",
            "--tag",
            "--promise-tag",
            "--promise-param",
            "--promise-param-json",
            "--ikey",
        ],
    ),
    "schedules get": (1, []),
    "schedules search": (1, ["--tag", "--limit", "--cursor"]),
    "schedules delete": (1, []),
}
FLAGS = {"--strict", "--json", "--all"}
ARG_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "x",
            "fz",
            "0",
            "-1",
            "1h",
            "9" * 400 + "h",
            "99999999999999999999",
            "k=v",
            "=",
            "k=",
            "{}",
            "[",
            "null",
            '{"a": 1}',
            "resolved",
            "* * * * *",
            "__invoke:fz:1",
            "fz:1",
            "poll://any@g",
            "1e400",
            "nan",
            "é",
        ]
    ),
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        max_size=20,
    ),
)


@st.composite
def cli_args(draw: st.DrawFn) -> list[str]:
    name = draw(st.sampled_from(sorted(COMMANDS)))
    positional, options = COMMANDS[name]
    args = name.split()
    args += [draw(ARG_VALUES) for _ in range(draw(st.sampled_from([positional, positional, 0, 3])))]
    for opt in draw(st.lists(st.sampled_from([*options, "--json"]), max_size=4)):
        args.append(opt)
        if opt not in FLAGS:
            args.append(draw(ARG_VALUES))
    return args


@settings(
    max_examples=120 * SCALE, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
@given(args=cli_args())
def test_cli_exits_0_1_or_2_on_any_arguments(edge_server: Server, args: list[str]) -> None:
    env = {"TROTH_URL": edge_server.url, "TROTH_HTTP_TIMEOUT": "30"}
    result = CliRunner().invoke(cli, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"troth {args!r} raised") from result.exception
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)


def test_cli_non_ascii_idempotency_key_is_a_clear_error(edge_server: Server) -> None:
    """Regression (found by the CLI fuzzer): ``--ikey é`` crashed the CLI (and the Python
    client) with a UnicodeEncodeError traceback from httpx."""
    env = {"TROTH_URL": edge_server.url}
    result = CliRunner().invoke(cli, ["promises", "resolve", "fz", "--ikey", "\x80"], env=env)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (1, 2)
    assert "Idempotency-Key must be printable ASCII" in result.output
