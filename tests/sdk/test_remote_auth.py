"""The SDK against a server with authentication on: ``Troth(url=..., token=...)`` and
credentials in the URL (basic) run durable functions; without credentials it is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server_process import running_server
from troth import Context, Troth
from troth.errors import TrothError


def double(x: int) -> int:
    return 2 * x


def build(t: Troth) -> None:
    @t.register
    async def doubled_sum(ctx: Context, a: int, b: int) -> int:
        return await ctx.run(double, a) + await ctx.run(double, b)


async def test_sdk_with_a_bearer_token(tmp_path: Path) -> None:
    args = ("--auth", "token", "--auth-token", "sdk-token")
    with running_server(f"sqlite:///{tmp_path}/t.db", extra_args=args) as server:
        t = Troth(url=server.url, token="sdk-token", group="auth-test")
        build(t)
        async with t:
            handle = await t.run("auth/sum/1", "doubled_sum", 2, 3)
            assert await handle.result(timeout=30) == 10


async def test_sdk_with_basic_credentials_in_the_url(tmp_path: Path) -> None:
    args = ("--auth", "basic", "--auth-user", "worker:pa55")
    with running_server(f"sqlite:///{tmp_path}/t.db", extra_args=args) as server:
        url = server.url.replace("http://", "http://worker:pa55@")
        t = Troth(url=url, group="auth-test")
        build(t)
        async with t:
            handle = await t.run("auth/sum/2", "doubled_sum", 1, 1)
            assert await handle.result(timeout=30) == 4


async def test_sdk_without_credentials_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TROTH_TOKEN", raising=False)
    monkeypatch.delenv("TROTH_USER", raising=False)
    args = ("--auth", "token", "--auth-token", "sdk-token")
    with running_server(f"sqlite:///{tmp_path}/t.db", extra_args=args) as server:
        t = Troth(url=server.url, group="auth-test", worker=False)
        build(t)
        async with t:
            with pytest.raises(TrothError) as info:
                await t.run("auth/sum/3", "doubled_sum", 1, 1)
    assert info.value.code == 40100
