"""Per-token request limits (the `limits` package: moving windows), 429 with Retry-After.

In memory by default (one replica); with GPUSHOP_REDIS_URL every replica counts in Redis, so a
token's limit holds across them."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many, storage, strategies

from gpushop.config import Settings
from gpushop.errors import ConfigError, GpushopError


class TooManyRequests(GpushopError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many requests with this token: retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class RequestLimits:
    def __init__(self, cfg: Settings) -> None:
        try:
            self.items: list[RateLimitItem] = parse_many(cfg.gpushop_api_rate_limit)
        except ValueError:
            raise ConfigError(
                f"GPUSHOP_API_RATE_LIMIT {cfg.gpushop_api_rate_limit!r}: write rates such as "
                "'20/second;600/minute'"
            ) from None
        redis = cfg.gpushop_redis_url
        if redis:  # under the deployment's prefix, as every key gpushop writes in Redis
            kept = storage.storage_from_string(
                redis.get_secret_value(), key_prefix=f"{cfg.gpushop_redis_prefix}limits"
            )
        else:
            kept = storage.storage_from_string("memory://")
        self.limiter = strategies.MovingWindowRateLimiter(kept)

    def hit(self, who: str) -> None:
        """Count one request of ``who``; TooManyRequests when a window is full."""
        for item in self.items:
            if not self.limiter.hit(item, "gpushop-api", who):
                reset = self.limiter.get_window_stats(item, "gpushop-api", who).reset_time
                raise TooManyRequests(max(1, math.ceil(reset - time.time())))
