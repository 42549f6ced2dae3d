"""TensorDock error answers to typed errors (reference 2.10).

Errors come two ways: real HTTP codes (401, 404, 429, 400, 5xx) and, on ``POST /instances``
among others, **HTTP 200** bodies such as ``{"status": 400, "error": "No available nodes..."}``.
Both go through ``classify``: the status says the family, the message refines it (no capacity ->
``OfferUnavailable``, "need at least" / balance -> ``InsufficientCredit``). Bodies beyond the
fixtures' ``{"status", "error"}`` are accepted: ``message``, ``detail``, ``errors[]``.
"""

from __future__ import annotations

import json
import re
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
    RateLimited,
)
from gpushop.providers.http import parse_retry_after

NAME = "tensordock"

# Message fragments, matched in lower case. Only "No available nodes" and "need at least" are
# confirmed by real clients; the others are the wording seen for the same failures elsewhere.
NO_CAPACITY = (
    "no available node",
    "no capacity",
    "not enough",
    "insufficient gpu",
    "insufficient resources",
    "not available",
    "unavailable",
    "slot expired",
    "sold out",
)
NO_CREDIT = ("need at least", "balance", "insufficient funds", "insufficient credit")
NOT_FOUND = ("not found", "does not exist", "no such")
AUTH = ("unauthorized", "unauthorised", "invalid token", "invalid api", "forbidden")
# start/stop of a VM already in the wanted state (clients tolerate these, reference 2.7)
ALREADY = (
    "already",
    "must be stopped",
    "must be running",
    "not running",
    "not stopped",
    "cannot be stopped",
    "cannot be started",
)


def message_of(data: Any) -> str:
    """The human message of an error body (empty when there is none)."""
    if isinstance(data, str):
        return data.strip()[:300]
    if not isinstance(data, dict):
        return ""
    for key in ("error", "message", "detail", "msg"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:300]
        if isinstance(value, dict):
            inner = message_of(value)
            if inner:
                return inner
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        first = errors[0]
        text = message_of(first) if isinstance(first, dict) else str(first)
        return text or ""
    return ""


def _status_of(data: dict[str, Any]) -> int | None:
    value = data.get("status")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _has(message: str, fragments: tuple[str, ...]) -> bool:
    low = message.lower()
    return any(f in low for f in fragments)


def classify(
    status: int, message: str, endpoint: str, *, retry_after: float | None = None
) -> ProviderError:
    """The typed error for an HTTP (or in-body) status and message."""
    kw: dict[str, Any] = {"provider": NAME, "status": status, "endpoint": endpoint}
    shown = message or f"HTTP {status}"
    if status == 429:
        return RateLimited(
            f"TensorDock rate limit on {endpoint}: {message or 'too many requests'}",
            retry_after=retry_after,
            **kw,
        )
    if status in (401, 403) or (status == 400 and _has(message, AUTH)):
        if status == 403:
            return AuthFailed(f"TensorDock refused {endpoint}: {shown}", **kw)
        return AuthFailed("invalid API token: TensorDock rejected TENSORDOCK_API_TOKEN", **kw)
    if status >= 500:
        return ProviderUnavailable(f"TensorDock answered {status} on {endpoint}", **kw)
    if _has(message, NO_CREDIT):
        return InsufficientCredit(f"TensorDock: {shown}", **kw)
    if status == 404 or (status == 400 and _has(message, NOT_FOUND)):
        if endpoint in ("GET /hostnodes/{id}", "POST /instances"):
            # the offer's hostnode is gone (or its GPU model): the offer is, not the call
            return OfferUnavailable(f"TensorDock hostnode is gone: {shown}", **kw)
        return NotFound(message or f"not found ({endpoint})", **kw)
    if status == 410 or _has(message, NO_CAPACITY):
        return OfferUnavailable(f"TensorDock has no capacity for it: {shown}", **kw)
    return BadRequest(f"TensorDock rejected {endpoint}: {shown}", **kw)


def map_error(response: httpx.Response, endpoint: str) -> ProviderError:
    """An HTTP error answer (status >= 400) as a typed error: the shared HTTP layer's mapper."""
    try:
        data: Any = response.json()
    except (ValueError, json.JSONDecodeError):
        data = response.text
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return classify(response.status_code, message_of(data), endpoint, retry_after=retry_after)


def error_in_body(data: Any, endpoint: str) -> ProviderError | None:
    """The error an HTTP 2xx body carries, if any: ``{"status": >= 400, "error": ...}``, or a
    non-empty ``error`` with no ``data`` (the CLI's rule: error text and status >= 400)."""
    if not isinstance(data, dict) or isinstance(data.get("data"), dict | list):
        return None
    status = _status_of(data)
    error = data.get("error")
    if status is not None and status >= 400:
        return classify(status, message_of(data), endpoint)
    if (isinstance(error, str) and error.strip()) or isinstance(error, dict):
        return classify(400, message_of(data), endpoint)
    if data.get("success") is False:
        return classify(400, message_of(data), endpoint)
    return None


def already_in_state(error: ProviderError) -> bool:
    """Whether a refused start/stop only says the VM is already there (409, "already...")."""
    if error.status == 409:
        return True
    return isinstance(error, BadRequest) and _has(str(error), ALREADY)


_UUIDISH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def check_id(value: str, what: str = "instance") -> str:
    """An id safe to put in a URL path (TensorDock ids are UUIDs)."""
    if not _UUIDISH.match(value or ""):
        raise BadRequest(f"not a TensorDock {what} id: {value!r}", provider=NAME)
    return value
