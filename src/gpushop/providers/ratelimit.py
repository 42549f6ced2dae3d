"""Client-side token buckets, one per endpoint, so we stay under a provider's limits."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from gpushop.providers.ratelimit_redis import RedisLink, RedisTokenBucket

# Redis keys of the shared buckets: <prefix><provider>:<account>:<endpoint> (ratelimit_redis)
REDIS_PREFIX = "gpushop:ratelimit:"


@dataclass(frozen=True, slots=True)
class EndpointLimit:
    """At most ``burst`` calls at once, refilled one every ``interval_s`` seconds."""

    interval_s: float
    burst: int = 2


Bucket: TypeAlias = "TokenBucket | SharedTokenBucket | RedisTokenBucket"


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
    """Buckets keyed by endpoint template ("POST /bundles/"), not by id. With ``shared_dir``
    the buckets are shared by every process using the same directory (see SharedTokenBucket);
    with ``redis_url`` by every process on any host using the same Redis and ``redis_prefix``
    (see ratelimit_redis: a key per endpoint under the prefix; the local bucket, file or memory,
    serves while Redis does not answer)."""

    def __init__(
        self,
        limits: dict[str, EndpointLimit],
        default: EndpointLimit | None,
        shared_dir: Path | None = None,
        *,
        redis_url: str | None = None,
        redis_prefix: str = REDIS_PREFIX,
    ) -> None:
        self._limits = limits
        self._default = default
        self._shared_dir = shared_dir
        self._redis_url = redis_url
        self._redis_prefix = redis_prefix
        self._redis: RedisLink | None = None
        self._buckets: dict[str, Bucket] = {}
        self.enabled = True

    def bucket(self, endpoint: str) -> Bucket | None:
        if not self.enabled:
            return None
        if endpoint not in self._buckets:
            limit = self._limits.get(endpoint, self._default)
            if limit is None:
                return None
            name = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
            local: TokenBucket | SharedTokenBucket
            if self._shared_dir is not None:
                local = SharedTokenBucket(limit, self._shared_dir / name)
            else:
                local = TokenBucket(limit)
            self._buckets[endpoint] = local
            if self._redis_url:
                # imported on first use: redis costs ~120 ms, and most runs have no Redis
                from gpushop.providers.ratelimit_redis import RedisLink, RedisTokenBucket

                if self._redis is None:
                    self._redis = RedisLink(self._redis_url)
                key = f"{self._redis_prefix}{name}"
                self._buckets[endpoint] = RedisTokenBucket(limit, self._redis, key, fallback=local)
        return self._buckets[endpoint]

    async def acquire(self, endpoint: str) -> None:
        bucket = self.bucket(endpoint)
        if bucket is not None:
            await bucket.acquire()

    async def drain(self, endpoint: str) -> None:
        """After a 429 from ``endpoint``: its bucket (and every process sharing it) is empty."""
        bucket = self.bucket(endpoint)
        if isinstance(bucket, TokenBucket | SharedTokenBucket):
            bucket.drain()
        elif bucket is not None:
            await bucket.drain()

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


# The longest queue a shared bucket (file or Redis) is believed to hold. Real queues are a few calls
# deep (each waiting process reserves one slot); anything deeper was written by a bug or a wrong
# clock.
MAX_QUEUE_WAIT_S = 120.0


def deepest_queue(limit: EndpointLimit) -> float:
    """The lowest token count a shared bucket believes: at most MAX_QUEUE_WAIT_S of reserved
    slots."""
    if limit.interval_s <= 0:
        return 0.0
    return -max(1.0, MAX_QUEUE_WAIT_S / limit.interval_s)


class SharedTokenBucket:
    """A token bucket shared by every gpushop process on this machine using the same key.

    The state (tokens, time) lives in a small file updated under ``flock``. Tokens may go below
    zero: a caller that finds none reserves the next slot and sleeps until it, so concurrent
    processes queue for the provider's limit instead of colliding at it (no 429s).
    """

    def __init__(self, limit: EndpointLimit, path: Path) -> None:
        self.limit = limit
        self.path = path

    def _update(self, change: Callable[[float], float]) -> float:
        """Under the file lock: refill the stored tokens, apply ``change``, store the result."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 256).decode(errors="replace")
            now = time.time()
            tokens, updated = self._read_state(raw, now)
            if self.limit.interval_s > 0:
                refill = (now - updated) / self.limit.interval_s
                tokens = min(float(self.limit.burst), tokens + refill)
            else:
                tokens = float(self.limit.burst)
            tokens = change(tokens)
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{tokens:.6f} {now:.6f}".encode())
        finally:
            os.close(fd)  # closing releases the lock
        return tokens

    def _read_state(self, raw: str, now: float) -> tuple[float, float]:
        """The stored (tokens, time), clamped to what can be true, so that a bad file costs at
        most a short wait: any process may have written it, the clock may have stepped back, a
        crash may have left half of it."""
        fresh = (float(self.limit.burst), now)
        try:
            text_tokens, text_updated = raw.split()[:2]
            tokens, updated = float(text_tokens), float(text_updated)
        except ValueError:  # empty, one field, or not numbers
            return fresh
        if not (math.isfinite(tokens) and math.isfinite(updated)):
            return fresh  # `-inf` would be an endless wait, `nan` poisons every refill
        # A time in the future means the clock stepped back since it was written: count no
        # refill rather than a negative one (which would queue every process for that long).
        updated = min(updated, now)
        return max(deepest_queue(self.limit), min(tokens, float(self.limit.burst))), updated

    def _reserve(self) -> float:
        """Take a token (possibly a future one); returns how long to wait for it."""
        tokens = self._update(lambda t: t - 1.0)
        return max(0.0, -tokens * self.limit.interval_s)

    async def acquire(self) -> None:
        wait = await asyncio.to_thread(self._reserve)
        if wait > 0:
            await asyncio.sleep(wait)

    def drain(self) -> None:
        """After a 429 the server's bucket is empty: make the shared one agree."""
        with contextlib.suppress(OSError):
            self._update(lambda t: min(t, 0.0))
