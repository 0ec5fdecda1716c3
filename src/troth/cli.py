"""The ``troth`` command line: run the server, and inspect and complete promises.

    troth serve --store sqlite:///troth.db
    troth promises create orders/42 --timeout 1h --param hello --tag team=billing
    troth promises get orders/42
    troth promises search 'orders/*' --state pending
    troth promises resolve orders/42 --value done
    troth promises wait orders/42 --timeout 30s

Exit codes: 0 success, 1 the server refused the request or could not be reached (the
server's message on stderr as ``error <code>: <message>``), 2 bad usage. ``--json`` prints
the server's JSON instead of a table. See docs/cli.md.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn, ParamSpec, TypeVar

import click
import msgspec
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from troth.client import DEFAULT_URL, Client
from troth.durations import parse_duration_ms
from troth.errors import TrothError
from troth.model import MAX_TIMEOUT, Promise, SearchPage, State, Value

_P = ParamSpec("_P")
_R = TypeVar("_R")

_STATE_STYLE: Final = {
    State.PENDING: "yellow",
    State.RESOLVED: "green",
    State.REJECTED: "red",
    State.REJECTED_CANCELED: "magenta",
    State.REJECTED_TIMEDOUT: "red",
}
_LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug", "trace")


# -- parameter types ---------------------------------------------------------------------


class Duration(click.ParamType[int]):
    """A duration, converted to integer milliseconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration_ms(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class KeyValue(click.ParamType[tuple[str, str]]):
    """``key=value`` (the value may contain ``=``)."""

    name = "KEY=VALUE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not key=value", param, ctx)
        return key, val


DURATION: Final = Duration()
KEY_VALUE: Final = KeyValue()


# -- rendering ---------------------------------------------------------------------------


def format_time(ms: int | None) -> str:
    """ISO-8601 UTC with milliseconds, followed by the raw epoch ms."""
    if ms is None:
        return "-"
    if ms >= MAX_TIMEOUT:
        return f"never ({ms})"
    try:
        when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return f"{when.isoformat(timespec='milliseconds').replace('+00:00', 'Z')} ({ms})"


def format_data(data: bytes | None) -> str:
    """Data as text when it is valid UTF-8, else as ``base64:...``."""
    if not data:
        return ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode("ascii")
    printable = all(c.isprintable() or c in "\n\t" for c in text)
    return text if printable else repr(text)


def format_value(value: Value) -> str:
    parts = []
    if value.headers:
        parts.append(", ".join(f"{k}: {v}" for k, v in sorted(value.headers.items())))
    if value.data:
        parts.append(format_data(value.data))
    return "\n".join(parts)


def format_tags(tags: dict[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((tags or {}).items()))


def _state_text(state: State) -> Text:
    return Text(state.value, style=_STATE_STYLE.get(state, ""))


def _console() -> Console:
    # Created per command so that it writes to the current sys.stdout (CliRunner swaps it).
    return Console(highlight=False, soft_wrap=False)


def render_promise(p: Promise) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("id", Text(p.id))
    grid.add_row("state", _state_text(p.state))
    grid.add_row("param", Text(format_value(p.param)))
    grid.add_row("value", Text(format_value(p.value)))
    grid.add_row("tags", Text(format_tags(p.tags)))
    grid.add_row("timeout", format_time(p.timeout))
    grid.add_row("createdOn", format_time(p.created_on))
    grid.add_row("completedOn", format_time(p.completed_on))
    grid.add_row("idempotencyKeyForCreate", Text(p.idempotency_key_for_create or ""))
    grid.add_row("idempotencyKeyForComplete", Text(p.idempotency_key_for_complete or ""))
    return Panel(grid, title="promise", title_align="left", expand=False)


def render_page(promises: Iterable[Promise], cursor: str | None) -> Table:
    table = Table(title=None, show_lines=False, expand=False)
    table.add_column("id", overflow="fold")
    table.add_column("state")
    table.add_column("timeout", overflow="fold")
    table.add_column("createdOn", overflow="fold")
    table.add_column("tags", overflow="fold")
    table.add_column("value", overflow="fold")
    count = 0
    for p in promises:
        count += 1
        table.add_row(
            Text(p.id),
            _state_text(p.state),
            format_time(p.timeout),
            format_time(p.created_on),
            Text(format_tags(p.tags)),
            Text(format_value(p.value)),
        )
    table.caption = f"{count} promise{'s' if count != 1 else ''}" + (
        f"; next page: --cursor {cursor}" if cursor else ""
    )
    return table


def _print_json(obj: object) -> None:
    click.echo(msgspec.json.encode(obj).decode())


# -- plumbing ----------------------------------------------------------------------------


class _Settings(msgspec.Struct):
    url: str
    json: bool
    timeout: float
    token: str | None


def _fail(exc: TrothError) -> NoReturn:
    click.echo(f"error {exc.code}: {exc.message}", err=True)
    sys.exit(1)


def _client_command(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn ``TrothError`` into exit code 1 with the server's message on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except TrothError as exc:
            _fail(exc)

    return wrapper


def _settings(ctx: click.Context, as_json: bool = False) -> _Settings:
    settings = ctx.find_object(_Settings)
    assert settings is not None, "promises group did not run"
    if as_json:
        settings.json = True
    return settings


def _client(settings: _Settings) -> Client:
    return Client(settings.url, timeout=settings.timeout, token=settings.token)


def _show(settings: _Settings, p: Promise) -> None:
    if settings.json:
        _print_json(p)
    else:
        _console().print(render_promise(p))


def _value_option(name: str, what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        fn = click.option(
            f"--{name}-json",
            f"{name}_json",
            metavar="JSON",
            help=f"{what} as a JSON document (validated, sent as its UTF-8 bytes).",
        )(fn)
        fn = click.option(
            f"--{name}",
            f"{name}_text",
            metavar="TEXT",
            help=f"{what} as text (sent as its UTF-8 bytes).",
        )(fn)
        return fn

    return decorate


def _data(text: str | None, json_text: str | None, name: str) -> bytes | None:
    if text is not None and json_text is not None:
        raise click.UsageError(f"give either --{name} or --{name}-json, not both")
    if json_text is not None:
        try:
            json.loads(json_text)
        except ValueError as exc:
            raise click.BadParameter(
                f"not valid JSON: {exc}", param_hint=f"--{name}-json"
            ) from None
        return json_text.encode()
    return text.encode() if text is not None else None


_json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the server's JSON instead of a table (same as the group's --json).",
)
_ikey_option = click.option(
    "--ikey", "ikey", metavar="KEY", help="Idempotency key (header Idempotency-Key)."
)
_strict_option = click.option(
    "--strict", is_flag=True, help="Strict mode: deduplicate only while the state allows it."
)


# -- commands ----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="troth")
def main() -> None:
    """troth: durable promises (a Resonate-compatible server and its client)."""


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    envvar="TROTH_HOST",
    show_envvar=True,
    show_default=True,
    help="Interface to listen on.",
)
@click.option(
    "--port",
    default=8001,
    type=click.IntRange(0, 65535),
    envvar="TROTH_PORT",
    show_envvar=True,
    show_default=True,
    help="HTTP port.",
)
@click.option(
    "--store",
    default="sqlite:///troth.db",
    envvar="TROTH_STORE",
    show_envvar=True,
    show_default=True,
    help="Storage URL: sqlite:///PATH or memory://.",
)
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
    envvar="TROTH_LOG_LEVEL",
    show_envvar=True,
    show_default=True,
    help="Logging level.",
)
def serve(host: str, port: int, store: str, log_level: str) -> None:
    """Run the server until SIGTERM or Ctrl-C."""
    from troth.server.main import serve as run_server

    run_server(host=host, port=port, store_url=store, log_level=log_level.lower())


@main.group()
@click.option(
    "--url",
    default=DEFAULT_URL,
    envvar="TROTH_URL",
    show_envvar=True,
    show_default=True,
    help="Base URL of the troth server.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="TROTH_JSON",
    show_envvar=True,
    help="Print the server's JSON instead of tables.",
)
@click.option(
    "--token",
    envvar="TROTH_TOKEN",
    show_envvar=True,
    help="Bearer token (when the server has authentication on).",
)
@click.option(
    "--http-timeout",
    default=30.0,
    type=click.FloatRange(min=0.1),
    envvar="TROTH_HTTP_TIMEOUT",
    show_envvar=True,
    show_default=True,
    help="Seconds to wait for the server to answer.",
)
@click.pass_context
def promises(
    ctx: click.Context, url: str, as_json: bool, token: str | None, http_timeout: float
) -> None:
    """Create, read, search, complete and wait for promises on a server."""
    ctx.obj = _Settings(url=url, json=as_json, timeout=http_timeout, token=token)


@promises.command()
@click.argument("id")
@click.option(
    "--timeout",
    "timeout",
    type=DURATION,
    help="Deadline relative to now: 1500 (ms), 250ms, 30s, 5m, 1h, 1m30s.",
)
@click.option(
    "--timeout-at",
    "timeout_at",
    type=click.IntRange(0, MAX_TIMEOUT),
    metavar="EPOCH_MS",
    help=f"Absolute deadline in Unix epoch ms ({MAX_TIMEOUT} means never).",
)
@_value_option("param", "Parameter")
@click.option("--tag", "tags", type=KEY_VALUE, multiple=True, help="Tag key=value (repeatable).")
@_ikey_option
@_strict_option
@_json_option
@click.pass_context
@_client_command
def create(
    ctx: click.Context,
    id: str,
    timeout: int | None,
    timeout_at: int | None,
    param_text: str | None,
    param_json: str | None,
    tags: tuple[tuple[str, str], ...],
    ikey: str | None,
    strict: bool,
    as_json: bool,
) -> None:
    """Create promise ID, pending until completed or until its deadline.

    Exactly one of --timeout and --timeout-at is required. Creating an existing id with
    the same --ikey returns the stored promise; otherwise it fails with error 40900.
    """
    if timeout_at is not None and timeout is None:
        deadline = timeout_at
    elif timeout is not None and timeout_at is None:
        deadline = min(time.time_ns() // 1_000_000 + timeout, MAX_TIMEOUT)
    else:
        raise click.UsageError("give exactly one of --timeout and --timeout-at")
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        p = client.create_promise(
            id,
            deadline,
            param=_data(param_text, param_json, "param"),
            tags=dict(tags) or None,
            idempotency_key=ikey,
            strict=strict,
        )
    _show(settings, p)


@promises.command()
@click.argument("id")
@_json_option
@click.pass_context
@_client_command
def get(ctx: click.Context, id: str, as_json: bool) -> None:
    """Show promise ID."""
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        p = client.get_promise(id)
    _show(settings, p)


@promises.command()
@click.argument("pattern", default="*", required=False)
@click.option(
    "--state",
    type=click.Choice(["pending", "resolved", "rejected"], case_sensitive=False),
    help="Only promises in this state (rejected includes canceled and timed out).",
)
@click.option(
    "--tag",
    "tags",
    type=KEY_VALUE,
    multiple=True,
    help="Only promises with this tag key=value (repeatable; all must match).",
)
@click.option(
    "--limit",
    default=100,
    type=click.IntRange(1, 1000),
    show_default=True,
    help="Promises per page.",
)
@click.option("--cursor", help="Continue from the cursor printed with the previous page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow cursors and show every page.")
@_json_option
@click.pass_context
@_client_command
def search(
    ctx: click.Context,
    pattern: str,
    state: str | None,
    tags: tuple[tuple[str, str], ...],
    limit: int,
    cursor: str | None,
    all_pages: bool,
    as_json: bool,
) -> None:
    """Search promises whose id matches PATTERN (`*` matches anything), newest first."""
    settings = _settings(ctx, as_json)
    tag_map = dict(tags) or None
    with _client(settings) as client:
        if all_pages:
            found = list(
                client.iter_promises(
                    pattern,
                    state=state and state.lower(),
                    tags=tag_map,
                    limit=limit,
                    cursor=cursor,
                )
            )
            page = SearchPage(promises=found, cursor=None)
        else:
            page = client.search_promises(
                pattern, state=state and state.lower(), tags=tag_map, limit=limit, cursor=cursor
            )
    if settings.json:
        _print_json(page)
    else:
        _console().print(render_page(page.promises, page.cursor))


def _complete_command(name: str, target: State, summary: str) -> None:
    @promises.command(name=name, help=summary)
    @click.argument("id")
    @_value_option("value", "Value")
    @_ikey_option
    @_strict_option
    @_json_option
    @click.pass_context
    @_client_command
    def command(
        ctx: click.Context,
        id: str,
        value_text: str | None,
        value_json: str | None,
        ikey: str | None,
        strict: bool,
        as_json: bool,
    ) -> None:
        settings = _settings(ctx, as_json)
        data = _data(value_text, value_json, "value")
        with _client(settings) as client:
            complete = {
                State.RESOLVED: client.resolve_promise,
                State.REJECTED: client.reject_promise,
                State.REJECTED_CANCELED: client.cancel_promise,
            }[target]
            p = complete(id, value=data, idempotency_key=ikey, strict=strict)
        _show(settings, p)


_complete_command(
    "resolve",
    State.RESOLVED,
    "Resolve pending promise ID.\n\nCompleting an already completed promise fails with "
    "error 4030x unless --ikey matches the key of that completion.",
)
_complete_command(
    "reject",
    State.REJECTED,
    "Reject pending promise ID.\n\nCompleting an already completed promise fails with "
    "error 4030x unless --ikey matches the key of that completion.",
)
_complete_command(
    "cancel",
    State.REJECTED_CANCELED,
    "Cancel pending promise ID (state REJECTED_CANCELED).\n\nCompleting an already "
    "completed promise fails with error 4030x unless --ikey matches.",
)


@promises.command()
@click.argument("id")
@click.option(
    "--timeout",
    "wait",
    type=DURATION,
    default="30s",
    show_default=True,
    help="How long to wait: 1500 (ms), 250ms, 30s, 5m, 1h.",
)
@_json_option
@click.pass_context
@_client_command
def wait(ctx: click.Context, id: str, wait: int, as_json: bool) -> None:
    """Wait until promise ID is completed (or times out), then show it.

    If the wait elapses first the promise is shown still PENDING (exit code 0).
    """
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        p = client.wait_promise(id, wait / 1000)
    _show(settings, p)


if __name__ == "__main__":  # pragma: no cover
    main()
