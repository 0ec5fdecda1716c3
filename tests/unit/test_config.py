"""Server configuration: flags, TROTH_* variables and a TOML file, with flag > env > file >
default; ``troth config show`` prints the result with secrets masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from troth import cli, config
from troth.server.auth import Authenticator

#: Every TROTH_* variable a server option reads, cleared so the host's environment
#: cannot leak into these tests.
CLEAN: dict[str, str | None] = {o.envvar: None for o in config.OPTIONS} | {"TROTH_CONFIG": None}


def show(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.main, ["config", "show", *args], env={**CLEAN, **(env or {})})


def show_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = show("--json", *args, env=env)
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "troth.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_when_nothing_is_given() -> None:
    out = show_json()
    assert out["config"] == {o.name: (list(o.default) if o.kind == "list" else o.default)
                             for o in config.OPTIONS}  # fmt: skip
    assert set(out["source"].values()) == {"default"}
    assert out["file"] is None


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'port = 7001\nhost = "0.0.0.0"\nlog_format = "json"\nstore = "memory://"\n',
    )
    out = show_json(
        "--config", path, "--port", "7003",
        env={"TROTH_PORT": "7002", "TROTH_HOST": "10.0.0.1", "TROTH_LOG_LEVEL": "debug"},
    )  # fmt: skip
    cfg, src = out["config"], out["source"]
    assert (cfg["port"], src["port"]) == (7003, "flag")  # flag beats env and file
    assert (cfg["host"], src["host"]) == ("10.0.0.1", "env")  # env beats file
    assert (cfg["log_format"], src["log_format"]) == ("json", "file")  # file beats default
    assert (cfg["log_level"], src["log_level"]) == ("debug", "env")
    assert (cfg["access_log"], src["access_log"]) == (True, "default")
    assert out["file"] == path


def test_config_file_from_env_and_lists_and_bools(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'receivers = ["mailers=poll://any@mailers"]\naccess_log = false\n'
        'auth = "token"\nauth_tokens = ["tok-1", "tok-2:tenant-a/"]\n',
    )
    out = show_json(env={"TROTH_CONFIG": path})
    cfg = out["config"]
    assert cfg["receivers"] == ["mailers=poll://any@mailers"]
    assert cfg["access_log"] is False
    assert cfg["auth"] == "token"
    # secrets masked, scope kept
    assert cfg["auth_tokens"] == ["***", "***:tenant-a/"]
    # env lists are space-separated and beat the file
    out = show_json(env={"TROTH_CONFIG": path, "TROTH_AUTH_TOKENS": "a b:x/ c"})
    assert out["config"]["auth_tokens"] == ["***", "***:x/", "***"]
    assert out["source"]["auth_tokens"] == "env"
    # a flag beats the file for booleans too
    assert show_json("--config", path, "--access-log")["config"]["access_log"] is True


def test_text_output_masks_secrets() -> None:
    result = show(
        "--auth", "basic", "--auth-user", "alice:pa55word", "--auth-user", "bob:x:y",
        env={"TROTH_PORT": "9001"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pa55word" not in result.stdout
    assert "x:y" not in result.stdout
    assert 'auth_users = ["alice:***", "bob:***"]' in result.stdout
    assert "port = 9001" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("port"))
    assert line.endswith("# env")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 1\n", "unknown option(s) prot"),
        ("port = 'x'\n", "port must be an integer"),
        ("access_log = 'yes'\n", "access_log must be true or false"),
        ("auth_tokens = [1]\n", "auth_tokens must be a list of strings"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_bad_config_file_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    result = show("--config", write(tmp_path, text))
    assert result.exit_code == 2
    assert message in result.output


def test_missing_config_file() -> None:
    result = show("--config", "/nonexistent/troth.toml")
    assert result.exit_code == 2
    assert "cannot read config file" in result.output


def test_auth_without_credentials_is_refused() -> None:
    result = show("--auth", "token")
    assert result.exit_code == 2
    assert "--auth token needs at least one --auth-token" in result.output
    result = show("--auth", "basic", "--auth-user", "nopassword")
    assert result.exit_code == 2
    assert "USER:PASSWORD" in result.output


def test_serve_help_lists_every_option_and_variable() -> None:
    result = CliRunner().invoke(cli.main, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in config.OPTIONS:
        assert option.flag in result.stdout, option.flag
        assert option.envvar in result.stdout, option.envvar
    assert "--config" in result.stdout and "TROTH_CONFIG" in result.stdout


def test_serve_gets_the_file_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("troth.server.main.serve", lambda **kw: calls.append(kw))
    path = write(
        tmp_path,
        'port = 7100\nlog_format = "json"\nauth = "basic"\nauth_users = ["ops:s3cret"]\n'
        "access_log = false\nmetrics_public = false\nmax_body = 1024\n"
        'receivers = ["mailers=poll://any@mailers"]\n',
    )
    result = CliRunner().invoke(
        cli.main, ["serve", "--config", path, "--store", "memory://"], env=CLEAN
    )
    assert result.exit_code == 0, result.output
    [kw] = calls
    assert kw["port"] == 7100 and kw["store_url"] == "memory://"
    assert kw["log_format"] == "json" and kw["access_log"] is False
    assert kw["metrics_public"] is False and kw["max_body"] == 1024
    assert kw["receivers"] == {"mailers": "poll://any@mailers"}
    auth = kw["auth"]
    assert isinstance(auth, Authenticator) and auth.mode == "basic"
    assert auth.authenticate(b"Basic b3BzOnMzY3JldA==").name == "ops"  # ops:s3cret


def test_every_option_is_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text("utf-8")
    for option in config.OPTIONS:
        assert f"`{option.name}`" in text, option.name
        assert option.envvar in text, option.envvar
