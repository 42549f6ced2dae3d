"""Token buckets shared by every host through Redis (``GPUSHOP_REDIS_URL``).

The same bucket as ``SharedTokenBucket`` (reservations: tokens may go below zero and a caller
sleeps until its reserved slot), kept in one Redis string ``"<tokens> <time>"`` and updated by a
Lua script, so a reservation is atomic whichever replica makes it. The time is the Redis server's
(``TIME``): hosts whose clocks disagree still agree on the bucket. A key expires once its bucket
would be full again, so idle accounts leave nothing behind.

A Redis that does not answer must not stop a rental: the call uses the local bucket (the host's
file, or memory) instead, and the process logs one warning line (the URL without its password),
then tries Redis again after ``RETRY_REDIS_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gpushop.providers.ratelimit import (
    EndpointLimit,
    SharedTokenBucket,
    TokenBucket,
    deepest_queue,
)

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

log = logging.getLogger("gpushop.ratelimit")

# A Redis slower than this is down for this call. A loaded machine can stall a reply for a second;
# a Redis that is down mostly refuses at once, and after one failure it is skipped for a while.
TIMEOUT_S = 2.0
RETRY_REDIS_S = 15.0  # after a failure, calls use the local bucket this long before trying again

# KEYS[1]: the bucket. ARGV: interval_s, burst, min_tokens, op ("take" | "drain").
# Returns the tokens left after the operation, as a string (a Lua number would be truncated).
BUCKET_LUA = """
local function finite(x)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local min_tokens = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local kind = redis.call('TYPE', KEYS[1])
if type(kind) == 'table' then kind = kind['ok'] end
local raw = false
if kind == 'string' then
  raw = redis.call('GET', KEYS[1])
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])  -- not ours to read: a bucket starts afresh
end
local tokens, updated = burst, now
if raw then
  local a, b = string.match(raw, '^%s*(%S+)%s+(%S+)')
  local t, u = tonumber(a), tonumber(b)
  if finite(t) and finite(u) then
    -- clamped to what can be true, so that a bad state costs at most a short wait: a time in
    -- the future (a clock stepped back) refills nothing, a queue deeper than any real one is cut
    tokens = math.max(min_tokens, math.min(t, burst))
    updated = math.min(u, now)
  end
end
if interval > 0 then
  tokens = math.min(burst, tokens + (now - updated) / interval)
else
  tokens = burst
end
if ARGV[4] == 'drain' then
  tokens = math.min(tokens, 0)
else
  tokens = tokens - 1
end
redis.call('SET', KEYS[1], string.format('%.6f %.6f', tokens, now))
-- idle, the bucket is full again after this long: then it is as good as absent
local ttl_ms = math.ceil((math.max(0, burst - tokens) * math.max(interval, 0) + 1) * 1000)
redis.call('PEXPIRE', KEYS[1], ttl_ms)
return string.format('%.6f', tokens)
"""


def redact(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``: fit for a log line."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "the configured Redis"


class RedisLink:
    """One Redis client for a limiter's buckets, and whether Redis answers.

    ``url`` may carry a password: it is only given to redis-py, never logged or put in text.
    A ready ``client`` may be given instead (tests, an application's own pool).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("RedisLink takes a URL or a client")
        self._url = url
        self.shown_url = redact(url) if url is not None else "the given Redis client"
        self._timeout_s = timeout_s
        self._fixed = client is not None
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._script: AsyncScript | None = None
        self._down_until = 0.0
        self._warned = False

    def script(self) -> AsyncScript:
        """The bucket script on the running event loop's client (a pool cannot change loops)."""
        loop = asyncio.get_running_loop()
        if self._client is None or (not self._fixed and self._loop is not loop):
            assert self._url is not None
            self._client = aioredis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                retry=Retry(NoBackoff(), 0),  # our fallback is the retry: no waiting here
            )
            self._loop = loop
            self._script = None
        if self._script is None:
            self._script = self._client.register_script(BUCKET_LUA)  # EVALSHA, loaded on demand
        return self._script

    @property
    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_REDIS_S
        if not self._warned:
            self._warned = True
            detail = str(exc)  # redis-py names the host and port, never the password; scrub anyway
            if self._url is not None:
                detail = detail.replace(self._url, self.shown_url)
            log.warning(
                "Redis at %s does not answer (%s%s): provider rate limits are this host's"
                " alone until it does",
                self.shown_url,
                type(exc).__name__,
                f": {detail}" if detail else "",
            )

    def answered(self) -> None:
        if self._warned:
            self._warned = False
            log.info("Redis at %s answers again: rate limits are shared again", self.shown_url)

    async def aclose(self) -> None:
        """Close the client this link made (a given one belongs to its owner)."""
        client, self._client, self._script = self._client, None, None
        if client is not None and not self._fixed:
            with contextlib.suppress(RedisError, OSError, RuntimeError):  # a dead socket, loop
                await client.aclose()


class RedisTokenBucket:
    """A token bucket shared through Redis by every process, on any host, using ``key``.

    ``client``: a ``redis.asyncio.Redis`` or a ``RedisLink`` (shared by a limiter's buckets, so
    that a Redis that is down costs one warning, not one per endpoint). ``fallback`` serves a
    call when Redis does not answer (default: a bucket in this process's memory).
    """

    def __init__(
        self,
        limit: EndpointLimit,
        client: aioredis.Redis | RedisLink,
        key: str,
        *,
        fallback: TokenBucket | SharedTokenBucket | None = None,
    ) -> None:
        self.limit = limit
        self.key = key
        self._link = client if isinstance(client, RedisLink) else RedisLink(client=client)
        self.fallback = fallback if fallback is not None else TokenBucket(limit)

    async def _call(self, op: str) -> float:
        """Run the script (``take`` or ``drain``): the tokens left after it."""
        args: list[Any] = [self.limit.interval_s, self.limit.burst, deepest_queue(self.limit), op]
        raw = await self._link.script()(keys=[self.key], args=args)
        tokens = float(raw.decode() if isinstance(raw, bytes) else raw)
        if not math.isfinite(tokens):
            raise ValueError("the bucket script returned no number")
        return tokens

    async def _reserve(self) -> float:
        """Take a token (possibly a future one) in Redis: how long to wait for it."""
        tokens = await self._call("take")
        return max(0.0, -tokens * self.limit.interval_s)

    async def _shared(self, op: str) -> float | None:
        """``_call(op)``, or None when Redis does not answer (the link then warns once)."""
        if not self._link.usable:
            return None
        try:
            tokens = await self._call(op)
        except (RedisError, OSError, ValueError) as exc:  # OSError: timeouts too
            self._link.failed(exc)
            return None
        self._link.answered()
        return tokens

    async def acquire(self) -> None:
        tokens = await self._shared("take")
        if tokens is None:
            await self.fallback.acquire()
            return
        wait = max(0.0, -tokens * self.limit.interval_s)
        if wait > 0:
            await asyncio.sleep(wait)  # one sleep reaches the reserved slot

    async def drain(self) -> None:
        """After a 429 the provider's bucket is empty: make the shared one agree."""
        if await self._shared("drain") is None:
            self.fallback.drain()
