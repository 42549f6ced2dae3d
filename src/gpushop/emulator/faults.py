"""Injected faults: the next N calls of an endpoint fail in a chosen way, then it heals.

Kinds:
- `status`: answer HTTP `status` without acting (body: the given one, else what the real API or
  its proxy sends for that status);
- `quota`: shorthand for `status` 429 with the daily search-quota body and `X-RateLimit-Reset`;
- `latency`: wait `latency_s`, then handle the call normally;
- `drop`: handle the call (it takes effect), then break the connection mid-response;
- `barrier`: hold each call until `count` calls have arrived (at most `latency_s`, 30 s by
  default), then handle them all: concurrent clients see the same state at the same moment.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any

from gpushop.emulator.ratelimit import limit_body

KINDS = ("status", "latency", "drop", "quota", "barrier")
BARRIER_TIMEOUT_S = 30.0

QUOTA_BODY = {
    "success": False,
    "error": "search_quota_exceeded",
    "msg": "Daily search quota exceeded",
}

# What nginx in front of the API answers when the backend is away (not JSON: clients must cope).
_PROXY_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


class FaultError(ValueError):
    """A fault specification the control API refuses (400)."""


@dataclass
class Gate:
    """A barrier's state: it opens when `size` calls have arrived."""

    size: int
    arrived: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def arrive(self) -> asyncio.Event:
        self.arrived += 1
        if self.arrived >= self.size:
            self.opened.set()
        return self.opened


@dataclass
class Fault:
    endpoint: str  # "METHOD /template/" or "*"
    kind: str
    status: int | None = None
    count: int = 1
    latency_s: float = 0.0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    gate: Gate | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        if not isinstance(data, dict):
            raise FaultError("fault must be a JSON object")
        endpoint = data.get("endpoint")
        kind = data.get("kind")
        if not isinstance(endpoint, str) or not endpoint:
            raise FaultError("endpoint is required, e.g. 'POST /api/v0/bundles/' or '*'")
        if kind not in KINDS:
            raise FaultError(f"kind must be one of {', '.join(KINDS)}")
        status = data.get("status")
        count = data.get("count", 1)
        latency = data.get("latency_s", 0.0)
        headers = data.get("headers") or {}
        if kind == "quota":
            status = 429 if status is None else status
        if kind in ("status", "quota") and (
            not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599
        ):
            raise FaultError("status must be an HTTP status code for kind 'status'")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise FaultError("count must be an integer >= 1")
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise FaultError("latency_s must be a number >= 0")
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise FaultError("headers must be an object of strings")
        if kind == "barrier":
            gate = Gate(count)
            latency = latency or BARRIER_TIMEOUT_S
            return cls(endpoint, kind, None, count, float(latency), None, headers, gate)
        return cls(endpoint, kind, status, count, float(latency), data.get("body"), headers)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "gate"}

    def answer(self, endpoint: str) -> tuple[int, Any, dict[str, str]]:
        """(status, body, headers) for kinds that answer without acting."""
        status = self.status or 500
        headers = dict(self.headers)
        if self.kind == "quota":
            if "X-RateLimit-Reset" not in headers:
                headers["X-RateLimit-Reset"] = str(next_utc_midnight())
            return status, self.body if self.body is not None else dict(QUOTA_BODY), headers
        if self.body is not None:
            return status, self.body, headers
        return status, default_body(status, endpoint), headers


def default_body(status: int, endpoint: str) -> Any:
    """The body the real service (or its proxy) sends with this status."""
    if status == 429:
        return limit_body(endpoint)
    if status in _REASONS:
        return _PROXY_PAGE.format(status=status, reason=_REASONS[status])
    if status == 401:
        return {"success": False, "error": "auth_error", "msg": "Invalid user key"}
    if status == 403:
        return {"success": False, "error": "auth_error", "msg": "This action requires login."}
    if status >= 500:
        return {"success": False, "error": "server_error", "msg": "Internal Server Error"}
    return {"success": False, "error": "emulated_fault", "msg": f"Emulated HTTP {status}"}


def next_utc_midnight(now: dt.datetime | None = None) -> int:
    now = now or dt.datetime.now(dt.UTC)
    tomorrow = (now + dt.timedelta(days=1)).date()
    return int(dt.datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=dt.UTC).timestamp())


class FaultBook:
    def __init__(self) -> None:
        self.pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.pending.append(fault)

    def clear(self) -> None:
        self.pending.clear()

    def take(self, endpoint: str) -> Fault | None:
        """The fault for this call, if any (an exact endpoint beats '*'); counts it down."""
        chosen = next((f for f in self.pending if f.endpoint == endpoint), None)
        if chosen is None:
            chosen = next((f for f in self.pending if f.endpoint == "*"), None)
        if chosen is None:
            return None
        chosen.count -= 1
        if chosen.count <= 0:
            self.pending.remove(chosen)
        return chosen
