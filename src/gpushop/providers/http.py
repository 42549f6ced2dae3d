"""The one HTTP layer every provider adapter uses.

Timeouts, Bearer auth, per-endpoint rate limiting, retries with jittered exponential backoff
(honouring ``Retry-After``) and the mapping of failures to typed errors. A call that may have
acted on the provider's side (create) is never retried after an unclear failure: only failures
that prove nothing was done (connection refused, 429) are retried for it.

The API key lives only in the ``Authorization`` header; it never reaches logs, exceptions or URLs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from gpushop import metrics
from gpushop.errors import ProviderError, ProviderUnavailable, QuotaExceeded, RateLimited
from gpushop.providers.ratelimit import REDIS_PREFIX, EndpointLimit, RateLimiter

log = logging.getLogger("gpushop.http")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0

ErrorMapper = Callable[[httpx.Response, str], ProviderError]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5  # total tries, the first included
    connect_attempts: int = 3  # a refused connection usually means down: fail sooner
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    # A 429 proves nothing was done, and several processes sharing one key queue behind each
    # other's limits: keep retrying 429s for this long rather than a fixed number of times.
    rate_limit_budget_s: float = 180.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter (half to full), so concurrent clients spread out."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpClient:
    """An async JSON client bound to one provider."""

    def __init__(
        self,
        *,
        provider: str,
        display_name: str,
        base_url: str,
        public_url: str | None = None,
        token: str | None,
        error_mapper: ErrorMapper,
        limits: dict[str, EndpointLimit] | None = None,
        default_limit: EndpointLimit | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "gpushop",
        shared_limits_dir: Path | None = None,
        redis_url: str | None = None,
        redis_prefix: str = REDIS_PREFIX,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self.display_name = display_name
        self.base_url = base_url.rstrip("/")
        self.public_url = (public_url or base_url).rstrip("/")
        self._token = token
        self._map_error = error_mapper
        # with redis_url the limits are shared by every host (keys under redis_prefix)
        self.limiter = RateLimiter(
            limits or {},
            default_limit,
            shared_limits_dir,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
        )
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            # Loading the CA bundle costs ~35 ms a start; a plain-http URL (the emulator) never
            # uses it. https keeps full verification.
            verify=not self.base_url.startswith("http://"),
            timeout=timeout or httpx.Timeout(30.0, connect=5.0),
            transport=transport,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
        )

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    async def aclose(self) -> None:
        await self._client.aclose()
        await self.limiter.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: dict[str, str] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        auth: bool = True,
    ) -> Any:
        """Send one call and return its decoded JSON body (``None`` when empty).

        ``endpoint`` is the template ("PUT /asks/{id}/") used for rate limits and messages.
        ``idempotent`` defaults to True for GET/HEAD/PUT/DELETE and False for POST; create calls
        pass False explicitly.
        """
        if idempotent is None:
            idempotent = method.upper() in {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
        headers = {}
        if auth and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        attempt = 0
        first_try = time.monotonic()
        while True:
            await self.limiter.acquire(endpoint)
            started = time.perf_counter()
            try:
                response = await self._client.request(
                    method, path, params=params, json=json, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                metrics.PROVIDER_CALLS.labels(self.provider, endpoint, "unreachable").inc()
                # Nothing reached the server: safe to retry whatever the call.
                error: ProviderError = ProviderUnavailable(
                    f"cannot reach {self.display_name} at {self.public_url}",
                    provider=self.provider,
                    endpoint=endpoint,
                )
                if attempt + 1 < self.retry.connect_attempts and await self._should_retry(
                    attempt, error, endpoint, None
                ):
                    attempt += 1
                    continue
                raise error from exc
            except httpx.TransportError as exc:
                metrics.PROVIDER_CALLS.labels(self.provider, endpoint, "connection_lost").inc()
                # The request may have been acted on (read timeout, connection dropped).
                error = ProviderUnavailable(
                    f"lost the connection to {self.display_name} during {endpoint}"
                    f" ({type(exc).__name__})",
                    provider=self.provider,
                    endpoint=endpoint,
                )
                if idempotent and await self._should_retry(attempt, error, endpoint, None):
                    attempt += 1
                    continue
                raise error from exc
            elapsed = time.perf_counter() - started
            log.debug("%s %s -> %s in %.3fs", method, endpoint, response.status_code, elapsed)
            outcome = metrics.provider_outcome(response.status_code)
            metrics.PROVIDER_CALLS.labels(self.provider, endpoint, outcome).inc()
            metrics.PROVIDER_SECONDS.labels(self.provider, endpoint).observe(elapsed)
            if response.status_code == 429:
                metrics.RATE_LIMITED.labels(self.provider).inc()
            if response.status_code < 400:
                if not response.content:
                    return None
                try:
                    return response.json()
                except ValueError as exc:
                    raise ProviderUnavailable(
                        f"{self.display_name} answered {endpoint} with a body that is not JSON",
                        provider=self.provider,
                        status=response.status_code,
                        endpoint=endpoint,
                    ) from exc
            error = self._map_error(response, endpoint)
            if isinstance(error, RateLimited):
                await self.limiter.drain(endpoint)
            # 429 means the server did not act; a 5xx might have, so only idempotent calls.
            retry_ok = response.status_code == 429 or (
                idempotent and response.status_code in RETRY_STATUSES
            )
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if (
                isinstance(error, RateLimited)
                and not isinstance(error, QuotaExceeded)
                and time.monotonic() - first_try < self.retry.rate_limit_budget_s
                and (retry_after is None or retry_after <= MAX_RETRY_AFTER_S)
            ):
                # within the budget a 429 does not use up an attempt
                await self._sleep(
                    retry_after if retry_after is not None else self.retry.backoff(min(attempt, 4))
                )
                attempt = min(attempt + 1, 4)
                continue
            if retry_ok and await self._should_retry(attempt, error, endpoint, retry_after):
                attempt += 1
                continue
            raise error

    async def _should_retry(
        self, attempt: int, error: ProviderError, endpoint: str, retry_after: float | None
    ) -> bool:
        if isinstance(error, QuotaExceeded) or not error.retryable:
            return False
        if attempt + 1 >= self.retry.attempts:
            return False
        if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
            return False
        # After a 429 the endpoint's bucket was drained, so the limiter adds its own interval.
        delay = retry_after if retry_after is not None else self.retry.backoff(attempt)
        log.info("%s: %s; retrying in %.2fs", endpoint, error, delay)
        await self._sleep(delay)
        return True
