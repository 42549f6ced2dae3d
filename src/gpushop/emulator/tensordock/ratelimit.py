"""TensorDock's documented limit: 100 requests per minute per organization (reference 2.1).

A sliding window: a call is refused when 100 calls of the same identity (the token, else the
client address) were let through in the last 60 seconds. The docs say rate-limit headers come
with every answer but do not name them; the emulator sends the common `X-RateLimit-Limit`,
`X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds when a call is allowed again),
and `Retry-After` on a 429, as the reference suggests.
"""

from __future__ import annotations

import math
from collections import deque

LIMIT = 100
WINDOW_S = 60.0


class WindowLimiter:
    def __init__(self, limit: int = LIMIT, window_s: float = WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._calls: dict[str, deque[float]] = {}

    def reset(self) -> None:
        self._calls.clear()

    def check(self, identity: str, now: float, wall: float) -> tuple[bool, dict[str, str]]:
        """(allowed, headers); `now` is monotonic, `wall` the epoch time for the reset header."""
        calls = self._calls.setdefault(identity, deque())
        while calls and calls[0] <= now - self.window_s:
            calls.popleft()
        allowed = len(calls) < self.limit
        if allowed:
            calls.append(now)
        wait = 0.0 if len(calls) < self.limit else calls[0] + self.window_s - now
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - len(calls))),
            "X-RateLimit-Reset": str(math.ceil(wall + wait)),
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return allowed, headers
