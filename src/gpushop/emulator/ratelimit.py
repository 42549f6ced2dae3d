"""Per-endpoint, per-identity token buckets with the real API's thresholds.

The reference (section 12) gives each endpoint a "threshold": read as the minimum interval in
seconds between calls, i.e. one token refills every `threshold` seconds; buckets hold 2 tokens
(a short burst) unless the endpoint says otherwise (GET /bundles/: max_tokens 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    threshold: float  # seconds per token
    max_tokens: float = 2.0
    json_error: bool = False  # 429 body in the success/error/msg form (destroy) vs {"detail"}


LIMITS: dict[str, Limit] = {
    "POST /api/v0/bundles/": Limit(2.0),
    "GET /api/v0/bundles/": Limit(0.8, max_tokens=1.0),
    "PUT /api/v0/search/asks/": Limit(2.0),
    "PUT /api/v0/asks/{id}/": Limit(4.5),
    "GET /api/v1/instances/": Limit(1.0),
    "GET /api/v0/instances/": Limit(20.0),
    "GET /api/v0/instances/filters/": Limit(1.0),
    "GET /api/v0/instances/{id}/": Limit(2.0),
    "PUT /api/v0/instances/{id}/": Limit(1.0),
    "DELETE /api/v0/instances/{id}/": Limit(3.0, json_error=True),
    "GET /api/v0/users/current/": Limit(1.0),
    "GET /api/v0/ssh/": Limit(1.0),
    "POST /api/v0/ssh/": Limit(1.0),
    "PUT /api/v0/ssh/{id}/": Limit(1.0),
    "DELETE /api/v0/ssh/{id}/": Limit(1.0),
    "POST /api/v0/instances/{id}/ssh/": Limit(2.0),
    "GET /api/v0/instances/{id}/ssh/": Limit(2.0),
    "DELETE /api/v0/instances/{id}/ssh/{key_id}/": Limit(2.0),
    "GET /api/v0/template/": Limit(1.9),  # profile low_volume_burst; the writes list none
    "PUT /api/v0/instances/reboot/{id}/": Limit(1.0),
    "PUT /api/v0/instances/recycle/{id}/": Limit(1.0),
    "PUT /api/v0/instances/command/{id}/": Limit(1.5),
    "PUT /api/v0/instances/bid_price/{id}/": Limit(5.5),
    # GET /api/v0/gpu_names/unique/ has no limit: the CLI fetches it on every start.
}


def limit_body(endpoint: str) -> dict[str, object]:
    """The 429 body the real API sends for this endpoint."""
    limit = LIMITS.get(endpoint, Limit(2.0))
    text = f"API requests too frequent endpoint threshold={limit.threshold!r}"
    if limit.json_error:
        return {"success": False, "error": "rate_limit_exceeded", "msg": text}
    return {"detail": text}


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, at)

    def reset(self) -> None:
        self._buckets.clear()

    def check(self, endpoint: str, identity: str, now: float) -> float | None:
        """Take a token; None if allowed, else the seconds until one is available."""
        limit = LIMITS.get(endpoint)
        if limit is None:
            return None
        key = (endpoint, identity)
        tokens, at = self._buckets.get(key, (limit.max_tokens, now))
        tokens = min(limit.max_tokens, tokens + (now - at) / limit.threshold)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) * limit.threshold


def retry_after_value(wait_s: float) -> str:
    """Retry-After wants whole seconds; round up so a client that obeys it is let through."""
    return str(max(1, math.ceil(wait_s)))
