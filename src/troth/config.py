"""Server configuration: one table of options, read from flags, ``TROTH_*`` variables and a
TOML file.

Every option of ``troth serve`` is declared once in ``OPTIONS``; the CLI turns each into a
flag with an environment variable, and a config file (``--config troth.toml`` or
``TROTH_CONFIG``) gives the same options by name. Precedence, highest first: flag, environment
variable, config file, default — which is exactly click's ``COMMANDLINE > ENVIRONMENT >
DEFAULT_MAP > DEFAULT``: the file is loaded into the context's ``default_map`` by an eager
``--config`` option before any other option is resolved.

A config file is flat TOML whose keys are the option names with underscores::

    host = "0.0.0.0"
    port = 8001
    store = "sqlite:////var/lib/troth/troth.db"
    log_format = "json"
    auth = "token"
    auth_tokens = ["s3cret-ops", "s3cret-a:tenant-a/"]

Unknown keys are refused (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug", "trace")


class ConfigError(Exception):
    """A config file that cannot be read or names an unknown option."""


@dataclass(frozen=True, slots=True)
class Option:
    """One server option: its name (config key), flag, type and help."""

    name: str
    default: Any
    help: str
    kind: str = "str"  # str | int | bool | list | choice
    choices: tuple[str, ...] = ()
    secret: bool = False
    metavar: str | None = None
    #: Another spelling of the flag (the singular of a repeatable option).
    alias: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def envvar(self) -> str:
        return "TROTH_" + self.name.upper()


OPTIONS: Final[tuple[Option, ...]] = (
    Option("host", "127.0.0.1", "Interface to listen on."),
    Option("port", 8001, "HTTP port.", kind="int"),
    Option("store", "sqlite:///troth.db", "Storage URL: sqlite:///PATH or memory://."),
    Option(
        "poll_port",
        None,
        "Also serve worker streams at GET /{group}/{id} on this port (older clients).",
        kind="int",
    ),
    Option(
        "public_url",
        None,
        "Base URL workers reach this server at, for the links in task messages "
        "[default: http://HOST:PORT].",
        metavar="URL",
    ),
    Option(
        "receivers",
        (),
        "A logical receiver name usable as recv, e.g. mailers=poll://any@mailers or "
        "hooks=https://example.com/in (repeatable; the env var takes a space-separated list). "
        "'default' is poll://any@default unless given.",
        kind="list",
        metavar="NAME=RECV",
        alias="--receiver",
    ),
    Option("log_level", "info", "Logging level.", kind="choice", choices=LOG_LEVELS),
    Option(
        "log_format",
        "text",
        "Log line format: text, or json (one JSON object per line).",
        kind="choice",
        choices=("text", "json"),
    ),
    Option(
        "access_log",
        True,
        "Log one line per request (method, route, status, latency, request id) at info.",
        kind="bool",
    ),
    Option(
        "auth",
        "none",
        "Authentication: none, basic (--auth-user) or token (--auth-token).",
        kind="choice",
        choices=("none", "basic", "token"),
    ),
    Option(
        "auth_users",
        (),
        "A user for --auth basic, as USER:PASSWORD (repeatable; env: space-separated).",
        kind="list",
        secret=True,
        metavar="USER:PASSWORD",
        alias="--auth-user",
    ),
    Option(
        "auth_tokens",
        (),
        "A bearer token for --auth token, as TOKEN or TOKEN:PREFIX to allow only ids that "
        "start with PREFIX (repeatable; env: space-separated).",
        kind="list",
        secret=True,
        metavar="TOKEN[:PREFIX]",
        alias="--auth-token",
    ),
    Option(
        "metrics_public",
        True,
        "Serve GET /metrics without credentials when auth is on (scrapers on a private "
        "network); --no-metrics-public makes it require credentials like the API.",
        kind="bool",
    ),
    Option(
        "max_body",
        10 * 1024 * 1024,
        "Largest request body in bytes (larger: 413).",
        kind="int",
    ),
)

BY_NAME: Final = {o.name: o for o in OPTIONS}


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into ``{option name: value}``, refusing unknown keys."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(BY_NAME))
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(BY_NAME)}"
        )
    out: dict[str, Any] = {}
    for key, value in data.items():
        option = BY_NAME[key]
        if option.kind == "list":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"config file {str(path)!r}: {key} must be a list of strings")
        elif option.kind == "bool" and not isinstance(value, bool):
            raise ConfigError(f"config file {str(path)!r}: {key} must be true or false")
        elif option.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"config file {str(path)!r}: {key} must be an integer")
        elif option.kind in ("str", "choice") and not isinstance(value, str):
            raise ConfigError(f"config file {str(path)!r}: {key} must be a string")
        out[key] = value
    return out


def mask_url(url: str) -> str:
    """A store URL with its password (``postgresql://user:secret@host/db``) replaced."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def mask(name: str, value: Any) -> Any:
    """``value`` with secrets replaced: passwords and tokens become ``***`` (a token's prefix
    scope and a user's name stay visible)."""
    if name == "store" and isinstance(value, str):
        return mask_url(value)
    option = BY_NAME.get(name)
    if option is None or not option.secret:
        return value
    masked = []
    for item in value:
        head, sep, tail = str(item).partition(":")
        if name == "auth_users":
            masked.append(f"{head}:***" if sep else "***")
        else:
            masked.append(f"***:{tail}" if sep else "***")
    return masked


__all__ = [
    "BY_NAME",
    "LOG_LEVELS",
    "OPTIONS",
    "ConfigError",
    "Option",
    "load_file",
    "mask",
    "mask_url",
]
