"""A thin HTTP client of the team service: Bearer auth, timeouts, a retry where it is safe, and
the service's error bodies (``{"code", "message"}``) mapped back to gpushop's typed errors, so
that a command fails with the exit code it would have locally.

    GpushopError
    ├── ServiceUnreachable        the service does not answer (exit 1), the URL named
    └── (the service's answer)    its code mapped: bad_request -> UsageError (2),
                                  not_found -> NotFound, money_limit -> MoneyLimitError (5)...
                                  bad_dataset -> BadDataset (2), with every bad file

The token is never part of a message: it travels only in the Authorization header, and any text
shown is scrubbed of it all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx

from gpushop import __version__, errors
from gpushop.client.session import Remote

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
# a request that could not even connect sent nothing: tried this many times in all
ATTEMPTS = 3
RETRY_DELAYS_S = (0.3, 1.0)


class ServiceUnreachable(errors.GpushopError):
    """The team service did not answer (connection refused, timed out, cut)."""


class BadDataset(errors.UsageError):
    """The service refused a training's dataset; ``problems``: one line per bad file (the
    command shows them as its local dataset check does)."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


# the service's error codes (api/errors.py) -> what the local command raises for that kind
_BY_CODE: dict[str, type[errors.GpushopError]] = {
    "unauthorized": errors.AuthFailed,
    "forbidden": errors.AuthFailed,
    "rate_limited": errors.RateLimited,
    "quota_exceeded": errors.MoneyLimitError,
    "money_limit": errors.MoneyLimitError,
    "insufficient_credit": errors.InsufficientCredit,
    "provider_quota_exceeded": errors.QuotaExceeded,
    "provider_rate_limited": errors.RateLimited,
    "provider_unavailable": errors.ProviderUnavailable,
    "provider_auth_failed": errors.AuthFailed,
    "offer_unavailable": errors.OfferUnavailable,
    "not_found": errors.NotFound,
    "provider_bad_request": errors.BadRequest,
    "unsupported": errors.Unsupported,
    "store_unavailable": errors.StoreUnavailable,
    "no_match": errors.NoMatchError,
    "bad_request": errors.UsageError,
    "invalid_request": errors.UsageError,
    "webhook_url_refused": errors.UsageError,
    "bad_dataset": errors.UsageError,
    "bad_archive": errors.UsageError,
    "too_large": errors.UsageError,
}
# a code this client does not know (a newer service): by the HTTP status
_BY_STATUS: dict[int, type[errors.GpushopError]] = {
    400: errors.UsageError,
    401: errors.AuthFailed,
    403: errors.AuthFailed,
    404: errors.NotFound,
    422: errors.UsageError,
    429: errors.RateLimited,
}


def error_for(status: int, body: Any, remote: Remote, what: str) -> errors.GpushopError:
    """The typed error for the service's answer ``status`` with ``body`` (its JSON, if any)."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return errors.GpushopError(
            _scrub(
                f"{remote.server} answered {what} with HTTP {status}, not a gpushop error "
                "(is it a gpushop service?)",
                remote,
            )
        )
    code = str(body.get("code") or "")
    message = body["message"]
    if code == "unauthorized":
        message += f"; run `gpushop login {remote.server}` or set GPUSHOP_TOKEN"
    elif status in (404, 405) and message in ("Not Found", "Method Not Allowed"):
        # no such route (a route's own 404 names what it did not find): not a gpushop
        # service at this URL, or not its root, or an older one
        return errors.GpushopError(
            _scrub(
                f"{remote.server} has no {what}: is GPUSHOP_SERVER the service's root URL?", remote
            )
        )
    problems = body.get("problems")
    if code == "bad_dataset" and isinstance(problems, list):
        return BadDataset(_scrub(message, remote), [_scrub(str(p), remote) for p in problems])
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, errors.GpushopError)
    return cls(_scrub(message, remote))


def _scrub(text: str, remote: Remote) -> str:
    """One line, and never the token (a server that echoes headers back, a proxy's page)."""
    token = remote.token.get_secret_value()
    if token:
        text = text.replace(token, "****")
    return " ".join(text.split())


def _unreachable(exc: httpx.TransportError, remote: Remote) -> ServiceUnreachable:
    if isinstance(exc, httpx.ConnectTimeout):
        why = f"cannot connect within {CONNECT_TIMEOUT_S:g} s"
    elif isinstance(exc, httpx.TimeoutException):
        why = "no answer in time"
    elif isinstance(exc, httpx.ConnectError):
        why = f"cannot connect ({exc or 'refused'})"
    else:
        why = f"the connection failed ({type(exc).__name__})"
    return ServiceUnreachable(
        _scrub(f"the gpushop service at {remote.server} does not answer: {why}", remote)
    )


class ApiClient:
    """One connection pool to the service for a command; use it as an async context manager.
    ``transport``: httpx's seam (a test's MockTransport)."""

    def __init__(
        self, remote: Remote, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.remote = remote
        self._http = httpx.AsyncClient(
            base_url=remote.server,
            headers={
                "Authorization": f"Bearer {remote.token.get_secret_value()}",
                "Accept": "application/json",
                "User-Agent": f"gpushop/{__version__}",
            },
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            transport=transport,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self.call("GET", path, params=params, unclear_retry=True)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = READ_TIMEOUT_S,
        unclear_retry: bool = False,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, Any, str]] | None = None,
    ) -> Any:
        """The answer's JSON; the service's error as a typed error. A request that could not
        connect is tried again (nothing was sent); one that failed after it was sent only when
        ``unclear_retry`` says repeating it is harmless (a read, or an Idempotency-Key).
        ``data`` and ``files``: a multipart form (each file an open binary file, streamed from
        disk and rewound for a retry)."""
        response = await self.send(
            method,
            path,
            params=params,
            json=json,
            headers=headers,
            read_timeout=read_timeout,
            unclear_retry=unclear_retry,
            data=data,
            files=files,
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if body is None:
            raise errors.GpushopError(
                _scrub(f"{self.remote.server} answered {method} {path} with no JSON", self.remote)
            )
        return body

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = READ_TIMEOUT_S,
        unclear_retry: bool = False,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, Any, str]] | None = None,
    ) -> httpx.Response:
        """As :meth:`call`, the successful answer itself (read whole): for text and headers."""
        what = f"{method} {path}"
        timeout = httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT_S)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(ATTEMPTS):
            try:
                response = await self._http.request(
                    method,
                    path,
                    params=query,
                    json=json,
                    headers=headers,
                    timeout=timeout,
                    data=data,
                    files=files,
                )
                break
            except httpx.TransportError as exc:
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt + 1 == ATTEMPTS or (sent and not unclear_retry):
                    raise _unreachable(exc, self.remote) from None
                await asyncio.sleep(RETRY_DELAYS_S[attempt])
        if not response.is_success:
            raise self._refusal(response, what)
        return response

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = READ_TIMEOUT_S,
    ) -> AsyncIterator[httpx.Response]:
        """GET ``path`` and give its answer unread, to read as it comes (a live stream, a big
        file). Not answering, or answering with an error: as :meth:`call`. A connection cut
        while the body streams is the caller's: httpx's TransportError (it may resume)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._http.build_request(
            "GET",
            path,
            params=query,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT_S),
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _unreachable(exc, self.remote) from None
        try:
            if not response.is_success:
                try:
                    await response.aread()
                except httpx.TransportError as exc:
                    raise _unreachable(exc, self.remote) from None
                raise self._refusal(response, f"GET {path}")
            yield response
        finally:
            await response.aclose()

    def _refusal(self, response: httpx.Response, what: str) -> errors.GpushopError:
        try:
            body = response.json()
        except ValueError:
            body = None
        return error_for(response.status_code, body, self.remote, what)
