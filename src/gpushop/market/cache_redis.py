"""The market cache shared by every replica and host through Redis (``GPUSHOP_REDIS_URL``):
the same snapshots as the on-disk cache, one key per provider endpoint under
``GPUSHOP_REDIS_PREFIX`` (``gpushop:`` + ``market:``), expiring with the TTL. A Redis that does
not answer is only slower: the host's file cache serves meanwhile, with one warning (the URL
without its password), and Redis is tried again after a while."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import redis
from redis.exceptions import RedisError

from gpushop.config import mask_url
from gpushop.market.cache import MarketCache
from gpushop.models import Offer

log = logging.getLogger("gpushop.cache")
TIMEOUT_S = 0.5  # a cache slower than this is worse than a search
RETRY_S = 15.0


class RedisMarketCache(MarketCache):
    def __init__(self, url: str, prefix: str, directory: Path, ttl_s: float) -> None:
        super().__init__(directory, ttl_s)
        self.prefix = prefix + "market:"
        self.shown_url = mask_url(url)
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S
        )
        self._down_until = 0.0

    def _key(self, key: str) -> str:
        return self.prefix + hashlib.sha256(key.encode()).hexdigest()[:24]

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        if self._usable():
            log.warning(
                "Redis at %s does not answer (%s): the market cache is this host's meanwhile",
                self.shown_url,
                type(exc).__name__,
            )
        self._down_until = time.monotonic() + RETRY_S

    def get(self, key: str) -> tuple[float, list[Offer]] | None:
        if self.ttl_s <= 0:
            return None
        if not self._usable():
            return super().get(key)
        try:
            data = self.client.get(self._key(key))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return super().get(key)
        if not isinstance(data, bytes):
            return None
        return self.decode(key, data, f"redis key {self._key(key)}")

    def put(self, key: str, offers: list[Offer]) -> None:
        if self.ttl_s <= 0:
            return
        if not self._usable():
            super().put(key, offers)
            return
        try:
            self.client.set(self._key(key), self.encode(key, offers), px=int(self.ttl_s * 1000))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            super().put(key, offers)

    def clear(self) -> None:
        super().clear()
        try:
            keys = list(self.client.scan_iter(match=self.prefix + "*", count=500))
            if keys:
                self.client.delete(*keys)
        except (RedisError, OSError) as exc:
            self._failed(exc)
