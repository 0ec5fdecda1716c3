"""Registered durable functions: name, version, retry policy, timeout, how to call them."""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from troth.sdk.errors import NotRegistered
from troth.sdk.retry import Retry

_CACHE_MAX = 4096
_takes_ctx: dict[Any, bool] = {}
_return_types: dict[Any, Any] = {}


def _cached(cache: dict[Any, Any], fn: Callable[..., Any], compute: Callable[[], Any]) -> Any:
    """``compute()`` memoized per callable (inspecting a signature costs ~20 µs, and a
    step looks at its function every time it runs or replays)."""
    try:
        return cache[fn]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable
        return compute()
    value = compute()
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[fn] = value
    return value


def takes_ctx(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s first parameter is the durable context (named ``ctx`` or annotated
    ``Context``): such functions may make durable calls of their own."""
    return bool(_cached(_takes_ctx, fn, lambda: _takes_ctx_uncached(fn)))


def _takes_ctx_uncached(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    first = params[0]
    annotation = first.annotation
    return first.name == "ctx" or (isinstance(annotation, str) and annotation.endswith("Context"))


def return_type(fn: Callable[..., Any]) -> Any:
    """The annotated return type (for decoding memoized results), or ``Any``."""
    return _cached(_return_types, fn, lambda: _return_type_uncached(fn))


def _return_type_uncached(fn: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return Any
    rt = hints.get("return", Any)
    return Any if rt is None or rt is type(None) else rt


async def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call sync or async ``fn``; sync functions run in a thread so the loop stays free."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


@dataclass(frozen=True)
class Function:
    name: str
    version: int
    fn: Callable[..., Any]
    retry: Retry
    timeout: timedelta | None
    with_ctx: bool


class Registry:
    def __init__(self) -> None:
        self._by_name: dict[str, dict[int, Function]] = {}
        self._by_fn: dict[Callable[..., Any], Function] = {}

    def add(self, f: Function) -> None:
        versions = self._by_name.setdefault(f.name, {})
        if f.version in versions and versions[f.version].fn is not f.fn:
            raise ValueError(f"{f.name!r} version {f.version} is already registered")
        versions[f.version] = f
        self._by_fn[f.fn] = f

    def get(self, name: str, version: int | None = None) -> Function:
        versions = self._by_name.get(name)
        if not versions:
            raise NotRegistered(f"no function {name!r} is registered in this process")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise NotRegistered(
                f"{name!r} version {version} is not registered (have {sorted(versions)}); an "
                "execution keeps the version it started with: keep registering it until its "
                "executions finish"
            )
        return versions[version]

    def of(self, fn: Callable[..., Any] | str) -> Function:
        if isinstance(fn, str):
            return self.get(fn)
        f = self._by_fn.get(fn)
        if f is None:
            name = getattr(fn, "__qualname__", repr(fn))
            raise NotRegistered(f"{name} is not registered: decorate it with @troth.register")
        return f

    def names(self) -> list[str]:
        return sorted(self._by_name)
