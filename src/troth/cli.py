"""The ``troth`` command line: run the server, and inspect and complete promises.

    troth serve --store sqlite:///troth.db
    troth promises create orders/42 --timeout 1h --param hello --tag team=billing
    troth promises get orders/42
    troth promises search 'orders/*' --state pending
    troth promises resolve orders/42 --value done
    troth promises wait orders/42 --timeout 30s
    troth tasks listen workers w1 --count 1
    troth tasks claim __invoke:orders/42 1 --process-id w1
    troth promises resolve orders/42 --value done --fence __invoke:orders/42:1
    troth tasks complete __invoke:orders/42 1
    troth locks acquire orders execution-1 --process-id w1 --ttl 30s
    troth invoke orders/43 --func checkout --arg '{"sku": "A-1"}' --target shop --wait 5m
    troth tree orders/43
    troth schedules create news --cron '0 6 * * *' --promise-id 'news_feed_{{.date}}' \
        --promise-timeout 1h
    troth schedules search 'news*'

Exit codes: 0 success, 1 the server refused the request or could not be reached (the
server's message on stderr as ``error <code>: <message>``), 2 bad usage. ``--json`` prints
the server's JSON instead of a table. See docs/cli.md.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import sys
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any, Final, NoReturn, ParamSpec, TypeVar

import click
import msgspec
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from troth import config
from troth.client import (
    DEFAULT_URL,
    CallbackResult,
    ClaimedTask,
    Client,
    Fence,
    Message,
    PromiseAndTask,
    SchedulePage,
    TaskInfo,
    callback_to_wire,
)
from troth.durations import parse_duration_ms
from troth.errors import TrothError, ValidationError
from troth.model import (
    MAX_TIMEOUT,
    Callback,
    Lock,
    Promise,
    Recv,
    Schedule,
    SearchPage,
    State,
    Value,
)
from troth.sdk.backend import ROOT_TAG
from troth.sdk.context import FUNC_TAG, TIMER_TAG
from troth.sdk.runtime import INVOKE_TAG

_P = ParamSpec("_P")
_R = TypeVar("_R")

_STATE_STYLE: Final = {
    State.PENDING: "yellow",
    State.RESOLVED: "green",
    State.REJECTED: "red",
    State.REJECTED_CANCELED: "magenta",
    State.REJECTED_TIMEDOUT: "red",
}


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


class FenceParam(click.ParamType[Fence]):
    """``TASK_ID:COUNTER``; the task id may itself contain ``:`` (the counter is after the
    last one)."""

    name = "TASK_ID:COUNTER"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Fence:
        if isinstance(value, tuple):
            return value
        task_id, sep, counter = str(value).rpartition(":")
        if not sep or not task_id or not counter.isdigit():
            self.fail(f"{value!r} is not TASK_ID:COUNTER (e.g. __invoke:orders/42:1)", param, ctx)
        return task_id, int(counter)


DURATION: Final = Duration()
KEY_VALUE: Final = KeyValue()
FENCE: Final = FenceParam()


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


def render_promise(p: Promise, title: str = "promise") -> Panel:
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
    return Panel(grid, title=title, title_align="left", expand=False)


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


def format_recv(recv: Recv) -> str:
    """A receiver in its string form: ``poll://any@group/id``, the URL, or its type."""
    if recv.type == "poll":
        return f"poll://{recv.mode}@{recv.group or ''}" + (f"/{recv.id}" if recv.id else "")
    if recv.type == "http":
        return recv.url or "http"
    return recv.type


def format_ms(ms: int | None) -> str:
    return "-" if ms is None else f"{ms} ms"


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    return grid


def _panel(grid: Table, title: str) -> Panel:
    return Panel(grid, title=title, title_align="left", expand=False)


def render_task(t: TaskInfo) -> Panel:
    grid = _grid()
    grid.add_row("id", Text(t.id))
    grid.add_row("type", Text(t.type or "-"))
    grid.add_row("state", Text(t.state or "-"))
    grid.add_row("counter", str(t.counter))
    grid.add_row("rootPromiseId", Text(t.root_promise_id or "-"))
    grid.add_row("leafPromiseId", Text(t.leaf_promise_id or "-"))
    grid.add_row("processId", Text(t.process_id or "-"))
    grid.add_row("ttl", format_ms(t.ttl))
    grid.add_row("timeout", format_time(t.timeout))
    grid.add_row("expiresAt", format_time(t.expires_at))
    grid.add_row("createdOn", format_time(t.created_on))
    grid.add_row("completedOn", format_time(t.completed_on))
    return _panel(grid, "task")


def render_callback(c: Callback) -> Panel:
    grid = _grid()
    grid.add_row("id", Text(c.id))
    grid.add_row("promiseId", Text(c.promise_id))
    grid.add_row("rootPromiseId", Text(c.root_promise_id or "-"))
    grid.add_row("recv", Text(format_recv(c.recv)))
    grid.add_row("timeout", format_time(c.timeout))
    grid.add_row("createdOn", format_time(c.created_on))
    return _panel(grid, "subscription" if c.id.startswith("__notify:") else "callback")


def render_lock(lock: Lock) -> Panel:
    grid = _grid()
    grid.add_row("resourceId", Text(lock.resource_id))
    grid.add_row("executionId", Text(lock.execution_id))
    grid.add_row("processId", Text(lock.process_id))
    grid.add_row("ttl", format_ms(lock.ttl))
    grid.add_row("expiresAt", format_time(lock.expires_at))
    return _panel(grid, "lock")


def render_message(m: Message) -> Text:
    """One line per stream message."""
    line = Text()
    line.append(m.type, style="bold cyan")
    if m.task is not None:
        line.append(" task ")
        line.append(m.task.id, style="bold")
        line.append(f" counter {m.task.counter}")
        if m.task.root_promise_id is not None:
            line.append(f" root {m.task.root_promise_id}")
        if m.task.leaf_promise_id is not None:
            line.append(f" leaf {m.task.leaf_promise_id}")
        if m.task.timeout is not None:
            line.append(f" timeout {format_time(m.task.timeout)}")
    elif m.promise is not None:
        line.append(" promise ")
        line.append(m.promise.id, style="bold")
        line.append(" ")
        line.append_text(_state_text(m.promise.state))
    else:
        line.append(" " + msgspec.json.encode(m).decode())
    return line


def _print_json(obj: object) -> None:
    click.echo(msgspec.json.encode(obj).decode())


# -- plumbing ----------------------------------------------------------------------------


class _Settings(msgspec.Struct):
    url: str
    json: bool
    timeout: float
    token: str | None
    user: str | None = None


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
    assert settings is not None, "the command group did not run"
    user = ctx.meta.get(_USER_KEY)
    if user is not None:
        settings.user = user
    if as_json:
        settings.json = True
    return settings


def _client(settings: _Settings) -> Client:
    try:
        return Client(
            settings.url, timeout=settings.timeout, token=settings.token, user=settings.user
        )
    except ValidationError as exc:
        raise click.UsageError(exc.message) from None


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
_fence_option = click.option(
    "--fence",
    type=FENCE,
    help="Write only while task TASK_ID is claimed with COUNTER (headers Task-Id and "
    "Task-Counter), else error 41200.",
)
_process_id_option = click.option(
    "--process-id", required=True, metavar="ID", help="The worker process that acts."
)


def _ttl_option(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    return click.option(
        "--ttl",
        type=DURATION,
        default="60s",
        show_default=True,
        help=f"{what}: 1500 (ms), 250ms, 30s, 5m, 1h.",
    )


def _deadline_options(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        fn = click.option(
            "--timeout-at",
            "timeout_at",
            type=click.IntRange(0, MAX_TIMEOUT),
            metavar="EPOCH_MS",
            help=f"{what}, absolute, in Unix epoch ms ({MAX_TIMEOUT} means never).",
        )(fn)
        fn = click.option(
            "--timeout",
            "timeout",
            type=DURATION,
            help=f"{what}, relative to now: 1500 (ms), 250ms, 30s, 5m, 1h, 1m30s.",
        )(fn)
        return fn

    return decorate


def _deadline(timeout: int | None, timeout_at: int | None) -> int:
    """The absolute deadline of exactly one of --timeout and --timeout-at."""
    if timeout_at is not None and timeout is None:
        return timeout_at
    if timeout is not None and timeout_at is None:
        return min(time.time_ns() // 1_000_000 + timeout, MAX_TIMEOUT)
    raise click.UsageError("give exactly one of --timeout and --timeout-at")


_USER_KEY: Final = "troth.user"


def _remember_user(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[_USER_KEY] = value


def _connection_options(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """The options of every client command group (before the command name)."""
    fn = click.option(
        "--http-timeout",
        default=30.0,
        type=click.FloatRange(min=0.1),
        envvar="TROTH_HTTP_TIMEOUT",
        show_envvar=True,
        show_default=True,
        help="Seconds to wait for the server to answer.",
    )(fn)
    fn = click.option(
        "--user",
        envvar="TROTH_USER",
        show_envvar=True,
        metavar="NAME:PASSWORD",
        expose_value=False,
        callback=_remember_user,
        help="Basic-auth credentials (when the server runs with --auth basic).",
    )(fn)
    fn = click.option(
        "--token",
        envvar="TROTH_TOKEN",
        show_envvar=True,
        help="Bearer token (when the server runs with --auth token).",
    )(fn)
    fn = click.option(
        "--json",
        "as_json",
        is_flag=True,
        envvar="TROTH_JSON",
        show_envvar=True,
        help="Print the server's JSON instead of tables.",
    )(fn)
    fn = click.option(
        "--url",
        default=DEFAULT_URL,
        envvar="TROTH_URL",
        show_envvar=True,
        show_default=True,
        help="Base URL of the troth server.",
    )(fn)
    return fn


def _set_settings(
    ctx: click.Context, url: str, as_json: bool, token: str | None, http_timeout: float
) -> None:
    ctx.obj = _Settings(url=url, json=as_json, timeout=http_timeout, token=token)


# -- commands ----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="troth")
def main() -> None:
    """troth: durable promises (a Resonate-compatible server and its client)."""


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager ``--config``: put the file's options into ``default_map`` (flag > env > file)."""
    if value is None:
        return None
    try:
        loaded = config.load_file(value)
    except config.ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    ctx.default_map = {**(ctx.default_map or {}), **loaded}
    return value


def _server_options(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Every option of ``config.OPTIONS`` as a flag with its ``TROTH_*`` variable, plus
    ``--config``."""
    for option in reversed(config.OPTIONS):
        kwargs: dict[str, Any] = {
            "envvar": option.envvar,
            "show_envvar": True,
            "help": option.help,
        }
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.kind == "bool":
            decls = [f"{option.flag}/--no-{option.flag[2:]}"]
            kwargs.update(default=option.default, show_default=True)
        elif option.kind == "list":
            decls = [option.alias, option.flag] if option.alias else [option.flag]
            kwargs.update(multiple=True)
        elif option.kind == "choice":
            decls = [option.flag]
            kwargs.update(
                default=option.default,
                show_default=True,
                type=click.Choice(option.choices, case_sensitive=False),
            )
        elif option.kind == "int":
            decls = [option.flag]
            lo = 1 if option.name == "max_body" else 0
            hi = None if option.name == "max_body" else 65535
            kwargs.update(default=option.default, type=click.IntRange(lo, hi))
            kwargs["show_default"] = option.default is not None
        else:
            decls = [option.flag]
            kwargs.update(default=option.default, show_default=option.default is not None)
        fn = click.option(*decls, option.name, **kwargs)(fn)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        envvar="TROTH_CONFIG",
        show_envvar=True,
        is_eager=True,
        expose_value=True,
        callback=_load_config_file,
        help="TOML file of these options by name (host = ..., auth_tokens = [...]); "
        "flags and TROTH_* variables override it.",
    )(fn)


def _effective(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options' values, lists as lists, in ``config.OPTIONS`` order."""
    out: dict[str, Any] = {}
    for option in config.OPTIONS:
        value = values[option.name]
        if option.kind == "list":
            value = list(value)
        elif option.kind == "choice" and isinstance(value, str):
            value = value.lower()
        out[option.name] = value
    return out


def _sources(ctx: click.Context) -> dict[str, str]:
    names = {
        click.core.ParameterSource.COMMANDLINE: "flag",
        click.core.ParameterSource.ENVIRONMENT: "env",
        click.core.ParameterSource.DEFAULT_MAP: "file",
        click.core.ParameterSource.DEFAULT: "default",
    }
    out: dict[str, str] = {}
    for option in config.OPTIONS:
        source = ctx.get_parameter_source(option.name)
        out[option.name] = names.get(source, "default") if source is not None else "default"
    return out


def _authenticator(values: dict[str, Any]) -> Any:
    from troth.server.auth import Authenticator

    if values["auth"] == "none":
        return None
    try:
        return Authenticator(values["auth"], values["auth_users"], values["auth_tokens"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _receivers(items: Iterable[str]) -> dict[str, str]:
    from troth.errors import ValidationError
    from troth.recv import parse_recv

    named: dict[str, str] = {}
    for item in items:
        name, sep, target = item.partition("=")
        try:
            if not sep or not name:
                raise ValidationError("expected NAME=RECV")
            parse_recv(target, "--receiver", {})
        except ValidationError as exc:
            raise click.BadParameter(f"{item!r}: {exc.message}", param_hint="--receivers") from None
        named[name] = target
    return named


@main.command()
@_server_options
@click.pass_context
def serve(ctx: click.Context, /, config_file: str | None, **values: Any) -> None:
    """Run the server until SIGTERM or Ctrl-C.

    Every option can also be set by its TROTH_* environment variable or, by name, in the
    --config TOML file; a flag beats the variable, which beats the file. `troth config show`
    prints what is in effect.
    """
    from troth.server.main import serve as run_server

    values = _effective(ctx, values)
    auth = _authenticator(values)
    extra: dict[str, Any] = {}
    named = _receivers(values["receivers"])
    if named:
        extra["receivers"] = named
    if values["poll_port"] is not None:
        extra["poll_port"] = values["poll_port"]
    if values["public_url"] is not None:
        extra["public_url"] = values["public_url"]
    run_server(
        host=values["host"],
        port=values["port"],
        store_url=values["store"],
        log_level=values["log_level"],
        log_format=values["log_format"],
        access_log=values["access_log"],
        auth=auth,
        metrics_public=values["metrics_public"],
        max_body=values["max_body"],
        **extra,
    )


@main.command()
@click.option(
    "--store",
    envvar="TROTH_STORE",
    show_envvar=True,
    default="sqlite:///troth.db",
    show_default=True,
    help="The database to migrate.",
)
def migrate(store: str) -> None:
    """Apply pending database migrations, then exit.

    Servers migrate on start unless their PostgreSQL URL says ?migrate=false; with several
    processes, run this once per deploy instead. Safe while servers run: migrators wait for
    each other and every migration runs exactly once.
    """
    import asyncio

    from troth.store import migrate_store

    try:
        applied = asyncio.run(migrate_store(store))
    except TrothError as exc:
        _fail(exc)
    if applied:
        click.echo("applied migrations " + ", ".join(f"{v:04d}" for v in applied))
    else:
        click.echo("the database is up to date")


@main.group(name="config")
def config_group() -> None:
    """Inspect the server configuration."""


@config_group.command(name="show")
@_server_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@click.pass_context
def config_show(
    ctx: click.Context, /, config_file: str | None, as_json: bool, **values: Any
) -> None:
    """Print the configuration `troth serve` would run with (same flags, variables and
    --config file), secrets masked, each option with where its value came from."""
    values = _effective(ctx, values)
    _authenticator(values)  # refuse an unusable auth setup here too
    _receivers(values["receivers"])
    sources = _sources(ctx)
    masked = {name: config.mask(name, value) for name, value in values.items()}
    if as_json:
        _print_json({"config": masked, "source": sources, "file": config_file})
        return
    if config_file:
        click.echo(f"# config file: {config_file}")
    for name, value in masked.items():
        line = f"# {name} is not set" if value is None else f"{name} = {json.dumps(value)}"
        click.echo(f"{line:<60} # {sources[name]}")


@main.group()
@_connection_options
@click.pass_context
def promises(
    ctx: click.Context, url: str, as_json: bool, token: str | None, http_timeout: float
) -> None:
    """Create, read, search, complete and wait for promises on a server; register callbacks
    and subscriptions."""
    _set_settings(ctx, url, as_json, token, http_timeout)


@promises.command()
@click.argument("id")
@_deadline_options("Deadline")
@_value_option("param", "Parameter")
@click.option("--tag", "tags", type=KEY_VALUE, multiple=True, help="Tag key=value (repeatable).")
@_ikey_option
@_strict_option
@click.option(
    "--task-process-id",
    metavar="ID",
    help="Also create a task, already claimed by this process (POST /promises/task).",
)
@click.option(
    "--task-ttl",
    type=DURATION,
    help="Lease of that task (default 60s): 1500 (ms), 250ms, 30s, 5m, 1h.",
)
@_fence_option
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
    task_process_id: str | None,
    task_ttl: int | None,
    fence: Fence | None,
    as_json: bool,
) -> None:
    """Create promise ID, pending until completed or until its deadline.

    Exactly one of --timeout and --timeout-at is required. Creating an existing id with
    the same --ikey returns the stored promise; otherwise it fails with error 40900.
    With --task-process-id the promise is created with a task claimed by that process
    (shown with it; no task when the create was deduplicated).
    """
    deadline = _deadline(timeout, timeout_at)
    if task_process_id is None and task_ttl is not None:
        raise click.UsageError("--task-ttl needs --task-process-id")
    if task_process_id is not None and fence is not None:
        raise click.UsageError("--fence cannot be combined with --task-process-id")
    param = _data(param_text, param_json, "param")
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        if task_process_id is None:
            p = client.create_promise(
                id,
                deadline,
                param=param,
                tags=dict(tags) or None,
                idempotency_key=ikey,
                strict=strict,
                fence=fence,
            )
            _show(settings, p)
            return
        result = client.create_promise_and_task(
            id,
            deadline,
            process_id=task_process_id,
            ttl=60_000 if task_ttl is None else task_ttl,
            param=param,
            tags=dict(tags) or None,
            idempotency_key=ikey,
            strict=strict,
        )
    _show_promise_and_task(settings, result)


def _show_promise_and_task(settings: _Settings, result: PromiseAndTask) -> None:
    if settings.json:
        _print_json({"promise": result.promise, "task": result.task})
        return
    console = _console()
    console.print(render_promise(result.promise))
    if result.task is None:
        console.print("no task: the create was deduplicated")
    else:
        console.print(render_task(result.task))


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
    @_fence_option
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
        fence: Fence | None,
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
            p = complete(id, value=data, idempotency_key=ikey, strict=strict, fence=fence)
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


def _show_callback(settings: _Settings, result: CallbackResult) -> None:
    callback, p = result
    if settings.json:
        wire = None if callback is None else callback_to_wire(callback)
        _print_json({"callback": wire, "promise": p})
        return
    console = _console()
    if callback is not None:
        console.print(render_callback(callback))
    elif p.state.completed:
        console.print("nothing registered: the promise is already completed")
    else:
        console.print("nothing registered: it already exists")
    console.print(render_promise(p))


_recv_option = click.option(
    "--recv",
    required=True,
    metavar="RECV",
    help="Receiver: poll://any@GROUP[/ID], poll://uni@GROUP/ID, http(s)://URL, or a logical "
    "name such as default.",
)


@promises.command()
@click.argument("id")
@click.option(
    "--root", "root", required=True, metavar="ROOT_ID", help="The root promise to resume."
)
@_recv_option
@_deadline_options("Deadline of the callback")
@_fence_option
@_json_option
@click.pass_context
@_client_command
def callback(
    ctx: click.Context,
    id: str,
    root: str,
    recv: str,
    timeout: int | None,
    timeout_at: int | None,
    fence: Fence | None,
    as_json: bool,
) -> None:
    """Register a callback: when promise ID completes, a resume task for ROOT_ID is sent to
    RECV.

    Exactly one of --timeout and --timeout-at is required. If promise ID is already
    completed (or the callback exists) nothing is registered and the promise is shown.
    """
    deadline = _deadline(timeout, timeout_at)
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        result = client.register_callback(
            id, root_promise_id=root, timeout=deadline, recv=recv, fence=fence
        )
    _show_callback(settings, result)


@promises.command()
@click.argument("id")
@click.option(
    "--subscription-id",
    "subscription_id",
    required=True,
    metavar="SID",
    help="Name of the subscription (one per SID and promise).",
)
@_recv_option
@_deadline_options("Deadline of the subscription")
@_json_option
@click.pass_context
@_client_command
def subscribe(
    ctx: click.Context,
    id: str,
    subscription_id: str,
    recv: str,
    timeout: int | None,
    timeout_at: int | None,
    as_json: bool,
) -> None:
    """Subscribe RECV to promise ID: a notify message is sent there when it completes.

    Exactly one of --timeout and --timeout-at is required. If promise ID is already
    completed (or the subscription exists) nothing is registered and the promise is shown.
    """
    deadline = _deadline(timeout, timeout_at)
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        result = client.subscribe(id, id=subscription_id, timeout=deadline, recv=recv)
    _show_callback(settings, result)


# -- tasks -------------------------------------------------------------------------------


@main.group()
@_connection_options
@click.pass_context
def tasks(
    ctx: click.Context, url: str, as_json: bool, token: str | None, http_timeout: float
) -> None:
    """Drive a worker by hand: listen for tasks, claim, complete, drop, heartbeat."""
    _set_settings(ctx, url, as_json, token, http_timeout)


@tasks.command()
@click.argument("id")
@click.argument("counter", type=click.IntRange(min=0))
@_process_id_option
@_ttl_option("Lease of the claim; renew it with `troth tasks heartbeat`")
@_json_option
@click.pass_context
@_client_command
def claim(
    ctx: click.Context, id: str, counter: int, process_id: str, ttl: int, as_json: bool
) -> None:
    """Claim task ID at COUNTER (from the message) and show its promises.

    An invoke task shows its root promise (run it); a resume task also the leaf promise
    that completed. Fails with 4030x when the task is claimed, completed, or at another
    counter, 40403 when there is no such task.
    """
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        claimed = client.claim_task(id, counter, process_id=process_id, ttl=ttl)
    _show_claim(settings, id, counter, claimed)


def _show_claim(settings: _Settings, id: str, counter: int, claimed: ClaimedTask) -> None:
    if settings.json:
        _print_json(claimed)
        return
    console = _console()
    line = Text("claimed ")
    line.append(claimed.type.value, style="bold cyan")
    line.append(" task ")
    line.append(id, style="bold")
    line.append(f" counter {counter}")
    console.print(line)
    console.print(render_promise(claimed.root, "root promise"))
    if claimed.leaf is not None:
        console.print(render_promise(claimed.leaf, "leaf promise"))


def _task_ref_command(name: str, summary: str) -> None:
    @tasks.command(name=name, help=summary)
    @click.argument("id")
    @click.argument("counter", type=click.IntRange(min=0))
    @_json_option
    @click.pass_context
    @_client_command
    def command(ctx: click.Context, id: str, counter: int, as_json: bool) -> None:
        settings = _settings(ctx, as_json)
        with _client(settings) as client:
            act = client.complete_task if name == "complete" else client.drop_task
            task = act(id, counter)
        if settings.json:
            _print_json(task)
        else:
            _console().print(render_task(task))


_task_ref_command(
    "complete",
    "Complete claimed task ID at COUNTER (after resolving its promise).\n\n"
    "A task already completed or timed out is shown as it is (exit 0).",
)
_task_ref_command(
    "drop",
    "Give claimed task ID at COUNTER back: it goes back to the queue with counter + 1 and "
    "is dispatched again.",
)


@tasks.command(name="heartbeat")
@_process_id_option
@_json_option
@click.pass_context
@_client_command
def tasks_heartbeat(ctx: click.Context, process_id: str, as_json: bool) -> None:
    """Renew the lease of every task claimed by --process-id; show how many."""
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        n = client.heartbeat_tasks(process_id)
    if settings.json:
        _print_json({"tasksAffected": n})
    else:
        click.echo(f"{n} task{'s' if n != 1 else ''} renewed")


@tasks.command()
@click.argument("group")
@click.argument("id")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N messages (exit 1 if the stream ends before).",
)
@click.option(
    "--idle-timeout",
    "idle_timeout",
    type=DURATION,
    help="Fail (exit 1) when the server sends nothing, not even a keep-alive, for this long.",
)
@_json_option
@click.pass_context
@_client_command
def listen(
    ctx: click.Context,
    group: str,
    id: str,
    count: int | None,
    idle_timeout: int | None,
    as_json: bool,
) -> None:
    """Connect as worker ID of GROUP (GET /poll/GROUP/ID) and print each message.

    One line per message: invoke and resume messages name the task and counter to claim,
    notify messages the completed promise. With --json each message is printed as its JSON
    document, one per line. Runs until Ctrl-C (exit 0), --count messages, or the server
    closes the stream (a newer stream for the same ID replaces this one).
    """
    settings = _settings(ctx, as_json)
    seen = 0
    read_timeout = None if idle_timeout is None else idle_timeout / 1000
    try:
        with _client(settings) as client:
            source: Generator[str, None, None] | Generator[Message, None, None] = (
                client.listen_raw(group, id, read_timeout=read_timeout)
                if settings.json
                else client.listen(group, id, read_timeout=read_timeout)
            )
            with contextlib.closing(source):
                for item in source:
                    seen += 1
                    if isinstance(item, str):
                        # the server's JSON as sent; a newline in JSON is whitespace
                        click.echo(item.replace("\n", " "))
                    else:
                        _console().print(render_message(item), soft_wrap=True)
                        sys.stdout.flush()
                    if count is not None and seen >= count:
                        return
    except KeyboardInterrupt:
        return
    if count is not None:
        raise TrothError(
            f"the server closed the stream /poll/{group}/{id} after {seen} of {count} messages",
            code=50300,
        )


# -- durable functions -------------------------------------------------------------------

_FOREVER: Final = -1  # --wait without a duration


class _Invocation(msgspec.Struct):
    """The param of an execution's root promise, as the SDK's remote ``Troth.rpc`` writes
    it (the SDK reads the version from the registry when it is absent)."""

    func: str
    args: list[Any]
    kwargs: dict[str, Any]


def _parse_json(text: str, hint: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not valid JSON: {exc}", param_hint=hint) from None


def _invoke_recv(target: str) -> str:
    """``poll://any@GROUP`` for a group name; a receiver with a scheme is used as is."""
    return target if "://" in target else f"poll://any@{target}"


class _Failure(msgspec.Struct, forbid_unknown_fields=False):
    """The SDK's record of a failure (the value of a rejected execution)."""

    type: str
    message: str = ""
    traceback: str = ""


def _decode_result(data: bytes | None) -> Any:
    """The JSON value of a resolved promise; data that is not JSON is given as text."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return format_data(data)


def _failure(p: Promise) -> _Failure:
    """What a completed, unsuccessful execution records, as type and message."""
    if p.state is State.REJECTED_CANCELED:
        return _Failure("canceled", f"execution {p.id!r} was canceled")
    if p.state is State.REJECTED_TIMEDOUT:
        return _Failure("timed out", f"execution {p.id!r} timed out at {format_time(p.timeout)}")
    data = p.value.data or b""
    try:
        return msgspec.json.decode(data, type=_Failure)
    except msgspec.DecodeError:  # rejected by hand with something else: show it as it is
        return _Failure("rejected", format_data(data))


def _wait_for(client: Client, id: str, wait: int) -> Promise:
    if wait != _FOREVER:
        return client.wait_promise(id, wait / 1000)
    while True:
        p = client.wait_promise(id, 300.0)
        if p.state.completed:
            return p


def _show_outcome(settings: _Settings, p: Promise) -> None:
    """Print the result of completed execution ``p``; exit 1 unless it resolved."""
    if p.state is State.RESOLVED:
        result = _decode_result(p.value.data)
        if settings.json:
            _print_json({"id": p.id, "state": p.state, "result": result})
        else:
            click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    failure = _failure(p)
    if settings.json:
        error = {"type": failure.type, "message": failure.message}
        _print_json({"id": p.id, "state": p.state, "error": error})
    else:
        click.echo(f"{p.state.value} {failure.type}: {failure.message}", err=True)
    sys.exit(1)


@main.command()
@click.argument("id")
@click.option(
    "--func", "func", required=True, metavar="NAME", help="Name of the registered function."
)
@click.option(
    "--arg",
    "args",
    multiple=True,
    metavar="JSON",
    help="A positional argument as JSON (repeatable, in order): 42, '\"text\"', '{\"a\": 1}'.",
)
@click.option(
    "--kwarg",
    "kwargs",
    type=KEY_VALUE,
    multiple=True,
    metavar="KEY=JSON",
    help="A keyword argument, its value as JSON (repeatable).",
)
@click.option(
    "--target",
    default="default",
    show_default=True,
    metavar="GROUP|RECV",
    help="Worker group to run it (poll://any@GROUP), or a receiver such as "
    "poll://uni@GROUP/ID or https://URL.",
)
@click.option(
    "--timeout",
    type=DURATION,
    help="Deadline of the execution, relative to now [default: none].",
)
@click.option(
    "--wait",
    "wait",
    type=DURATION,
    is_flag=False,
    flag_value=_FOREVER,
    metavar="[DURATION]",
    help="Wait for the result and print it (exit 1 if the execution failed); with a "
    "duration, wait at most that long.",
)
@_connection_options
@click.pass_context
@_client_command
def invoke(
    ctx: click.Context,
    id: str,
    func: str,
    args: tuple[str, ...],
    kwargs: tuple[tuple[str, str], ...],
    target: str,
    timeout: int | None,
    wait: int | None,
    url: str,
    as_json: bool,
    token: str | None,
    http_timeout: float,
) -> None:
    """Start execution ID of durable function --func on a worker group of the server.

    Creates the execution's root promise as the SDK's `Troth.rpc` does (idempotency key ID:
    invoking an existing ID again starts nothing and shows it). Without --wait the promise is
    shown; with --wait the result as JSON, or the failure's type and message (exit 1).
    """
    _set_settings(ctx, url, as_json, token, http_timeout)
    settings = _settings(ctx)
    keywords: dict[str, Any] = {}
    for key, text in kwargs:
        if key in keywords:
            raise click.BadParameter(f"{key!r} given twice", param_hint="--kwarg")
        keywords[key] = _parse_json(text, "--kwarg")
    spec = _Invocation(func, [_parse_json(a, "--arg") for a in args], keywords)
    deadline = MAX_TIMEOUT if timeout is None else min(_now_ms() + timeout, MAX_TIMEOUT)
    tags = {ROOT_TAG: "true", FUNC_TAG: func, INVOKE_TAG: _invoke_recv(target)}
    with _client(settings) as client:
        p = client.create_promise(
            id, deadline, param=msgspec.json.encode(spec), tags=tags, idempotency_key=id
        )
        if wait is None:
            _show(settings, p)
            return
        if not p.state.completed:
            p = _wait_for(client, id, wait)
    if not p.state.completed:
        _show(settings, p)
        click.echo(f"execution {id!r} is still pending after {wait} ms", err=True)
        sys.exit(1)
    _show_outcome(settings, p)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass
class CallNode:
    """One promise of an execution's call graph, with the calls it made."""

    id: str
    func: str | None
    state: State
    created_on: int
    completed_on: int | None
    timer: bool = False
    timeout: int = MAX_TIMEOUT
    children: list[CallNode] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "func": self.func,
            "state": self.state.value,
            "createdOn": self.created_on,
            "completedOn": self.completed_on,
            "children": [c.to_json() for c in self.children],
        }


def _root_func(p: Promise) -> str | None:
    func = (p.tags or {}).get(FUNC_TAG)
    if func is not None or not p.param.data:
        return func
    try:  # a root created without the tag: its param names the function
        named = msgspec.json.decode(p.param.data, type=dict[str, Any]).get("func")
    except msgspec.DecodeError:
        return None
    return named if isinstance(named, str) else None


def _node(p: Promise, func: str | None) -> CallNode:
    return CallNode(
        id=p.id,
        func=func,
        state=p.state,
        created_on=p.created_on,
        completed_on=p.completed_on,
        timer=(p.tags or {}).get(TIMER_TAG) == "true",
        timeout=p.timeout,
    )


def _segment_key(segment: str) -> tuple[int, int, str]:
    return (0, int(segment), "") if segment.isdigit() else (1, 0, segment)


def call_tree(root: Promise, descendants: Iterable[Promise]) -> CallNode:
    """Nest the promises ``<root>.…`` by id: ``a.1.2`` under ``a.1``, each under its
    nearest present ancestor; children in call order (numeric ids numerically)."""
    prefix = root.id + "."
    by_path: dict[tuple[str, ...], CallNode] = {(): _node(root, _root_func(root))}
    for p in descendants:
        if p.id.startswith(prefix) and len(p.id) > len(prefix):
            path = tuple(p.id[len(prefix) :].split("."))
            by_path[path] = _node(p, (p.tags or {}).get(FUNC_TAG))
    for path in sorted(by_path, key=lambda path: [_segment_key(s) for s in path]):
        if not path:
            continue
        parent = path[:-1]
        while parent not in by_path:
            parent = parent[:-1]
        by_path[parent].children.append(by_path[path])
    return by_path[()]


def _clock(ms: int) -> str:
    try:
        when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.1f}s"


def _node_label(node: CallNode, label: str, now: int) -> Text:
    text = Text()
    text.append(label, style="bold")
    text.append("  ")
    text.append(node.func or "-", style="cyan")
    text.append("  ")
    text.append_text(_state_text(node.state))
    text.append("  ")
    if node.timer:
        until = "never" if node.timeout >= MAX_TIMEOUT else _clock(node.timeout)
        text.append(f"until {until}  ", style="dim")
    text.append(_clock(node.created_on))
    if node.completed_on is None:
        text.append(f"  pending for {_seconds(max(0, now - node.created_on))}")
    else:
        duration = node.completed_on - node.created_on
        text.append(f" → {_clock(node.completed_on)} ({duration} ms)")
    return text


def render_tree(root: CallNode, now: int | None = None) -> Tree:
    """The call graph as a rich Tree: the root by its id, every call by its id suffix."""
    now = _now_ms() if now is None else now
    tree = Tree(_node_label(root, root.id, now))

    def add(branch: Tree, node: CallNode) -> None:
        for child in node.children:
            # a child's id is its nearest ancestor's id, ".", and the rest
            add(branch.add(_node_label(child, child.id[len(node.id) + 1 :], now)), child)

    add(tree, root)
    return tree


@main.command()
@click.argument("id")
@_connection_options
@click.pass_context
@_client_command
def tree(
    ctx: click.Context, id: str, url: str, as_json: bool, token: str | None, http_timeout: float
) -> None:
    """Show the call graph of execution ID: its root promise and every promise ID.… nested by
    id (ID.1.2 under ID.1), with function, state and timings.

    --json prints {id, func, state, createdOn, completedOn, children: [...]} nested alike.
    """
    _set_settings(ctx, url, as_json, token, http_timeout)
    settings = _settings(ctx)
    with _client(settings) as client:
        root = client.get_promise(id)
        descendants = list(client.iter_promises(f"{id}.*", limit=1000))
    graph = call_tree(root, descendants)
    if settings.json:
        _print_json(graph.to_json())
    else:
        _console().print(render_tree(graph))


# -- locks -------------------------------------------------------------------------------


@main.group()
@_connection_options
@click.pass_context
def locks(
    ctx: click.Context, url: str, as_json: bool, token: str | None, http_timeout: float
) -> None:
    """Acquire, release and renew distributed locks."""
    _set_settings(ctx, url, as_json, token, http_timeout)


@locks.command()
@click.argument("resource_id")
@click.argument("execution_id")
@_process_id_option
@_ttl_option("How long the lock is held unless renewed with `troth locks heartbeat`")
@_json_option
@click.pass_context
@_client_command
def acquire(
    ctx: click.Context,
    resource_id: str,
    execution_id: str,
    process_id: str,
    ttl: int,
    as_json: bool,
) -> None:
    """Take the lock on RESOURCE_ID for EXECUTION_ID and show it.

    Taking it again for the same EXECUTION_ID renews it; while another execution holds it
    this fails with error 40305.
    """
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        lock = client.acquire_lock(resource_id, execution_id, process_id, ttl)
    if settings.json:
        _print_json(lock)
    else:
        _console().print(render_lock(lock))


@locks.command()
@click.argument("resource_id")
@click.argument("execution_id")
@_json_option
@click.pass_context
@_client_command
def release(ctx: click.Context, resource_id: str, execution_id: str, as_json: bool) -> None:
    """Release the lock on RESOURCE_ID held by EXECUTION_ID (error 40402 if it is not)."""
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        client.release_lock(resource_id, execution_id)
    if settings.json:
        _print_json({"resourceId": resource_id, "executionId": execution_id})
    else:
        click.echo(f"released {resource_id} (execution {execution_id})")


@locks.command(name="heartbeat")
@_process_id_option
@_json_option
@click.pass_context
@_client_command
def locks_heartbeat(ctx: click.Context, process_id: str, as_json: bool) -> None:
    """Renew every lock held by --process-id; show how many."""
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        n = client.heartbeat_locks(process_id)
    if settings.json:
        _print_json({"locksAffected": n})
    else:
        click.echo(f"{n} lock{'s' if n != 1 else ''} renewed")


# -- schedules ---------------------------------------------------------------------------

_DURATION_UNITS: Final = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000))


def format_duration(ms: int) -> str:
    """Milliseconds in the form ``--timeout`` options take: ``1d2h``, ``1m30s``, ``1500ms``."""
    if ms <= 0:
        return f"{ms}ms"
    parts = []
    rest = ms
    for unit, size in _DURATION_UNITS:
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    if rest:
        parts.append(f"{rest}ms")
    return "".join(parts)


def render_schedule(s: Schedule) -> Panel:
    grid = _grid()
    grid.add_row("id", Text(s.id))
    grid.add_row("description", Text(s.description or ""))
    grid.add_row("cron", Text(s.cron))
    grid.add_row("tags", Text(format_tags(s.tags)))
    grid.add_row("promiseId", Text(s.promise_id))
    grid.add_row("promiseTimeout", f"{format_duration(s.promise_timeout)} ({s.promise_timeout} ms)")
    grid.add_row("promiseParam", Text(format_value(s.promise_param)))
    grid.add_row("promiseTags", Text(format_tags(s.promise_tags)))
    grid.add_row("nextRunTime", format_time(s.next_run_time))
    grid.add_row("lastRunTime", format_time(s.last_run_time))
    grid.add_row("createdOn", format_time(s.created_on))
    grid.add_row("idempotencyKey", Text(s.idempotency_key or ""))
    return _panel(grid, "schedule")


def render_schedules(schedules: Iterable[Schedule], cursor: str | None) -> Table:
    table = Table(expand=False)
    table.add_column("id", overflow="fold")
    table.add_column("cron", overflow="fold")
    table.add_column("promiseId", overflow="fold")
    table.add_column("promiseTimeout")
    table.add_column("nextRunTime", overflow="fold")
    table.add_column("lastRunTime", overflow="fold")
    table.add_column("tags", overflow="fold")
    count = 0
    for s in schedules:
        count += 1
        table.add_row(
            Text(s.id),
            Text(s.cron),
            Text(s.promise_id),
            format_duration(s.promise_timeout),
            format_time(s.next_run_time),
            format_time(s.last_run_time),
            Text(format_tags(s.tags)),
        )
    table.caption = f"{count} schedule{'s' if count != 1 else ''}" + (
        f"; next page: --cursor {cursor}" if cursor else ""
    )
    return table


def _show_schedule(settings: _Settings, s: Schedule) -> None:
    if settings.json:
        _print_json(s)
    else:
        _console().print(render_schedule(s))


@main.group()
@_connection_options
@click.pass_context
def schedules(
    ctx: click.Context, url: str, as_json: bool, token: str | None, http_timeout: float
) -> None:
    """Create, read, search and delete schedules: cron timetables that create promises."""
    _set_settings(ctx, url, as_json, token, http_timeout)


@schedules.command(name="create")
@click.argument("id")
@click.option(
    "--cron",
    required=True,
    metavar="EXPR",
    help="When to run, in UTC: 5 fields (minute hour day month weekday), an optional 6th "
    "(last) for seconds, or @hourly, @daily, @weekly, @monthly, @yearly.",
)
@click.option(
    "--promise-id",
    "promise_id",
    required=True,
    metavar="TEMPLATE",
    help="Id of each promise created; {{.id}} is the schedule id, {{.timestamp}} the run "
    "time (epoch ms), {{.date}} its date (YYYY-MM-DD, UTC).",
)
@click.option(
    "--promise-timeout",
    "promise_timeout",
    required=True,
    type=DURATION,
    help="Deadline of each promise, relative to its run: 1500 (ms), 30s, 5m, 1h, 1d.",
)
@click.option("--description", metavar="TEXT", help="What the schedule is for.")
@click.option(
    "--tag", "tags", type=KEY_VALUE, multiple=True, help="Tag of the schedule (repeatable)."
)
@click.option(
    "--promise-tag",
    "promise_tags",
    type=KEY_VALUE,
    multiple=True,
    help="Tag of each promise created (repeatable).",
)
@click.option(
    "--promise-param",
    "promise_param_text",
    metavar="TEXT",
    help="Parameter of each promise, as text (sent as its UTF-8 bytes).",
)
@click.option(
    "--promise-param-json",
    "promise_param_json",
    metavar="JSON",
    help="Parameter of each promise, as a JSON document (validated, sent as its UTF-8 bytes).",
)
@_ikey_option
@_json_option
@click.pass_context
@_client_command
def schedules_create(
    ctx: click.Context,
    id: str,
    cron: str,
    promise_id: str,
    promise_timeout: int,
    description: str | None,
    tags: tuple[tuple[str, str], ...],
    promise_tags: tuple[tuple[str, str], ...],
    promise_param_text: str | None,
    promise_param_json: str | None,
    ikey: str | None,
    as_json: bool,
) -> None:
    """Create schedule ID: at every --cron time the server creates promise --promise-id.

    Creating an existing id with the same --ikey shows the stored schedule; otherwise it
    fails with error 40901. A bad cron expression fails with error 40000 and the server's
    explanation.
    """
    param = _data(promise_param_text, promise_param_json, "promise-param")
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        s = client.create_schedule(
            id,
            cron,
            promise_id,
            promise_timeout,
            description=description,
            tags=dict(tags) or None,
            promise_param=param,
            promise_tags=dict(promise_tags) or None,
            idempotency_key=ikey,
        )
    _show_schedule(settings, s)


@schedules.command(name="get")
@click.argument("id")
@_json_option
@click.pass_context
@_client_command
def schedules_get(ctx: click.Context, id: str, as_json: bool) -> None:
    """Show schedule ID, with its next run time."""
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        s = client.get_schedule(id)
    _show_schedule(settings, s)


@schedules.command(name="search")
@click.argument("pattern", default="*", required=False)
@click.option(
    "--tag",
    "tags",
    type=KEY_VALUE,
    multiple=True,
    help="Only schedules with this tag key=value (repeatable; all must match).",
)
@click.option(
    "--limit",
    default=100,
    type=click.IntRange(1, 1000),
    show_default=True,
    help="Schedules per page.",
)
@click.option("--cursor", help="Continue from the cursor printed with the previous page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow cursors and show every page.")
@_json_option
@click.pass_context
@_client_command
def schedules_search(
    ctx: click.Context,
    pattern: str,
    tags: tuple[tuple[str, str], ...],
    limit: int,
    cursor: str | None,
    all_pages: bool,
    as_json: bool,
) -> None:
    """Search schedules whose id matches PATTERN (`*` matches anything)."""
    settings = _settings(ctx, as_json)
    tag_map = dict(tags) or None
    with _client(settings) as client:
        if all_pages:
            found = list(client.iter_schedules(pattern, tags=tag_map, limit=limit, cursor=cursor))
            page = SchedulePage(schedules=found, cursor=None)
        else:
            page = client.search_schedules(pattern, tags=tag_map, limit=limit, cursor=cursor)
    if settings.json:
        _print_json(page)
    else:
        _console().print(render_schedules(page.schedules, page.cursor))


@schedules.command(name="delete")
@click.argument("id")
@_json_option
@click.pass_context
@_client_command
def schedules_delete(ctx: click.Context, id: str, as_json: bool) -> None:
    """Delete schedule ID (error 40401 if there is none). Promises it created stay."""
    settings = _settings(ctx, as_json)
    with _client(settings) as client:
        client.delete_schedule(id)
    if settings.json:
        _print_json({"id": id, "deleted": True})
    else:
        click.echo(f"deleted schedule {id}")


if __name__ == "__main__":  # pragma: no cover
    main()
