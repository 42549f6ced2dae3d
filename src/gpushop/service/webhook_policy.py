"""What the webhook dispatcher does after an attempt failed: Standard Webhooks' retry schedule
(scaled for tests, jittered), the receiver's ``Retry-After``, and short one-line errors for the
attempt log."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

# Standard Webhooks' example schedule: the delay before each attempt, after the previous one
SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
ATTEMPTS = len(SCHEDULE_S)
JITTER = (0.8, 1.2)
RETRY_AFTER_CAP_S = 86400.0


def one_line(text: str, limit: int = 300) -> str:
    """A short single line for the attempt log."""
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            at = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        seconds = (at - now).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def next_delay(attempts: int, scale: float, asked: float | None = None) -> float:
    """Seconds until the next attempt after ``attempts`` attempts: the schedule's step
    (scaled, jittered), and no sooner than the receiver asked (not scaled)."""
    delay = SCHEDULE_S[min(attempts, ATTEMPTS - 1)] * scale * random.uniform(*JITTER)
    return max(delay, asked) if asked is not None else delay


def transport_error(exc: httpx.HTTPError) -> str:
    """A failed request's error, short: what went wrong with the connection."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return one_line(f"cannot connect: {detail}")
    if isinstance(exc, httpx.TransportError):
        return one_line(f"connection error: {detail}")
    return one_line(f"{type(exc).__name__}: {detail}")
