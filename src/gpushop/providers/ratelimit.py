"""Client-side token buckets, one per endpoint, so we stay under a provider's limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EndpointLimit:
    """At most ``burst`` calls at once, refilled one every ``interval_s`` seconds."""

    interval_s: float
    burst: int = 2


class TokenBucket:
    def __init__(self, limit: EndpointLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        if self.limit.interval_s > 0:
            gained = (now - self._updated) / self.limit.interval_s
            self._tokens = min(float(self.limit.burst), self._tokens + gained)
        else:
            self._tokens = float(self.limit.burst)
        self._updated = now

    def delay(self) -> float:
        """Seconds to wait before a token is free (0 when one is)."""
        self._refill()
        if self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) * self.limit.interval_s

    async def acquire(self) -> None:
        async with self._lock:
            wait = self.delay()
            if wait > 0:
                await asyncio.sleep(wait)  # one sleep reaches the next token: no polling loop
                self._refill()
                self._tokens = max(self._tokens, 1.0)
            self._tokens -= 1

    def drain(self) -> None:
        """After a 429 the server's bucket is empty: make ours agree."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)


class RateLimiter:
    """Buckets keyed by endpoint template ("POST /bundles/"), not by id."""

    def __init__(self, limits: dict[str, EndpointLimit], default: EndpointLimit | None) -> None:
        self._limits = limits
        self._default = default
        self._buckets: dict[str, TokenBucket] = {}
        self.enabled = True

    def bucket(self, endpoint: str) -> TokenBucket | None:
        if not self.enabled:
            return None
        if endpoint not in self._buckets:
            limit = self._limits.get(endpoint, self._default)
            if limit is None:
                return None
            self._buckets[endpoint] = TokenBucket(limit)
        return self._buckets[endpoint]

    async def acquire(self, endpoint: str) -> None:
        bucket = self.bucket(endpoint)
        if bucket is not None:
            await bucket.acquire()
