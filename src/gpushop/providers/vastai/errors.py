"""Vast.ai error bodies to typed errors (reference section 13)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx

from gpushop.errors import (
    AuthFailed,
    BadRequest,
    InsufficientCredit,
    NotFound,
    OfferUnavailable,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)

NAME = "vastai"


def _body(response: httpx.Response) -> tuple[str | None, str]:
    """(error code, message) from a JSON, ``{"detail": ...}`` or plain-text body."""
    try:
        data: Any = response.json()
    except (ValueError, json.JSONDecodeError):
        return None, response.text.strip()[:200]
    if not isinstance(data, dict):
        return None, str(data)[:200]
    code = data.get("error")
    msg = data.get("msg") or data.get("message") or data.get("detail") or ""
    return (str(code) if code else None), str(msg)[:300]


def map_error(response: httpx.Response, endpoint: str) -> ProviderError:
    status = response.status_code
    code, msg = _body(response)
    kw: dict[str, Any] = {"provider": NAME, "status": status, "code": code, "endpoint": endpoint}
    if status == 429:
        if code == "search_quota_exceeded":
            reset = response.headers.get("X-RateLimit-Reset")
            when = ""
            if reset:
                try:
                    stamp = dt.datetime.fromtimestamp(float(reset), tz=dt.UTC)
                    when = f"; resets at {stamp:%Y-%m-%d %H:%M} UTC"
                except ValueError:
                    pass
            return QuotaExceeded(f"Vast.ai daily search quota exceeded{when}", **kw)
        return RateLimited(f"Vast.ai rate limit on {endpoint}: {msg or 'too many requests'}", **kw)
    if code == "auth_error" or status in (401, 403):
        if "requires login" in msg:
            return AuthFailed("Vast.ai requires an API key for this: set VASTAI_API_KEY", **kw)
        if "expired" in msg.lower():
            return AuthFailed("Vast.ai session expired: check VASTAI_API_KEY", **kw)
        if code == "auth_error" or status == 401:
            return AuthFailed("invalid API key: Vast.ai rejected VASTAI_API_KEY", **kw)
        return AuthFailed(f"Vast.ai refused {endpoint}: {msg or 'forbidden'}", **kw)
    if code == "no_such_ask" or status == 410:
        return OfferUnavailable(f"offer no longer available: {msg}", **kw)
    if code in ("no_such_instance", "not_found", "instances_not_found") or status == 404:
        return NotFound(msg or f"not found ({endpoint})", **kw)
    if code in ("missing_billing", "insufficient_credit", "insufficient_balance"):
        return InsufficientCredit(f"Vast.ai: {msg or 'insufficient credit'}", **kw)
    if status >= 500:
        return ProviderUnavailable(f"Vast.ai answered {status} on {endpoint}", **kw)
    return BadRequest(f"Vast.ai rejected {endpoint}: {msg or f'HTTP {status}'}", **kw)
