"""Waiting for an event in a test: poll a condition until it holds, never sleep a guess of time.

The deadline is a safety net for a machine under load (the suite runs in parallel, maybe beside
other work), not an expected duration: a condition that holds returns at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
DEADLINE_S = 60.0
POLL_S = 0.05


def until(condition: Callable[[], T], what: str, timeout: float = DEADLINE_S) -> T:
    """The first truthy value of ``condition()``; fails the test naming ``what`` at the
    deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(POLL_S)


async def until_async(
    condition: Callable[[], Awaitable[T]], what: str, timeout: float = DEADLINE_S
) -> T:
    """`until` for a condition that must be awaited (a status read over SSH)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        await asyncio.sleep(POLL_S)
