"""Helpers shared by commands: settings, asyncio, JSON output."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


def settings(**overrides: Any) -> Any:
    from gpushop.config import load_settings

    return load_settings(**overrides)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def print_json(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    print(f"gpushop: warning: {message}", file=sys.stderr)
