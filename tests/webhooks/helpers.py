"""Waiting without blocking the event loop the dispatcher runs on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from standardwebhooks import Webhook

from waiting import until_async

from .receiver import Received

T = TypeVar("T")


async def eventually(condition: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    async def check() -> T:
        return condition()

    return await until_async(check, what, timeout)


def verify(secret: str, request: Received) -> object:
    """The reference library's verdict on a received delivery (raises if it does not verify)."""
    return Webhook(secret).verify(request.body, request.headers)
