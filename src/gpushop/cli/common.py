"""Helpers shared by commands: settings, asyncio, JSON output."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

if TYPE_CHECKING:
    from gpushop.client.http import ApiClient
    from gpushop.client.session import Remote

T = TypeVar("T")


def settings(**overrides: Any) -> Any:
    from gpushop.config import load_settings

    return load_settings(**overrides)


def team_service(cfg: Any) -> Remote | None:
    """The team service this command talks to (GPUSHOP_SERVER and GPUSHOP_TOKEN, or what
    `gpushop login` saved); None: the command works locally."""
    from gpushop.client.session import remote

    return remote(cfg)


def call_service(service: Remote, call: Callable[[ApiClient], Coroutine[Any, Any, T]]) -> T:
    """Run ``call`` with a client of ``service`` (one connection pool, closed after)."""
    from gpushop.client.http import ApiClient

    async def go() -> T:
        async with ApiClient(service) as client:
            return await call(client)

    return run_async(go())


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGTERM is handled like Ctrl-C (the task is cancelled, so its cleanup runs
    and whatever was rented is released or left labelled for reconcile), then exit 130."""
    import signal

    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            # not possible off the main thread or on some platforms: then SIGTERM just kills
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def print_json(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    print(f"gpushop: warning: {message}", file=sys.stderr)
