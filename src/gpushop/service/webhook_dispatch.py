"""The webhook dispatcher: sends the outbox's due deliveries (store/webhooks.py), signed per
Standard Webhooks, and records every attempt.

Every replica runs one. It claims due deliveries (a short lease: replicas never send the same
attempt at once), posts each to its endpoint's checked address (net_guard: no redirect followed,
no private address unless allowed), and records the outcome: delivered on a 2xx; otherwise a
retry on Standard Webhooks' schedule (Retry-After honoured), failed after the tenth attempt
(and the endpoint disabled if nothing reached it meanwhile), or the endpoint disabled at once on
410 Gone. It wakes when a transaction of this process makes deliveries due, on PostgreSQL when
any replica's does (LISTEN/NOTIFY), at the next retry's time, and every
GPUSHOP_WEBHOOK_POLL seconds whatever happens. Delivery is at least once: receivers deduplicate
on ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx

import gpushop
from gpushop import metrics
from gpushop.config import Settings
from gpushop.errors import ConfigError, UsageError
from gpushop.net_guard import AddressRefused, Unresolvable, post_pinned
from gpushop.service.webhook_listen import listen
from gpushop.service.webhook_policy import (
    ATTEMPTS,
    next_delay,
    one_line,
    retry_after,
    transport_error,
)
from gpushop.service.webhooks import sign, signing_secrets
from gpushop.store import Store, outbox
from gpushop.store.secret_box import SecretUnreadable
from gpushop.store.webhooks import DELIVERED, FAILED, PENDING, Delivery, Endpoint, iso

log = logging.getLogger("gpushop.webhooks")
T = TypeVar("T")

# At most this many deliveries claimed at a time, each sent as soon as it is claimed: a claim
# (timeout + 30 s) always outlasts its send, so no other replica takes it meanwhile
BATCH = 32
REFILL = 8  # claim again once this many slots are free (or none is in flight)
USER_AGENT = f"gpushop-webhooks/{gpushop.__version__}"
GONE = "the receiver answered 410 Gone"


@dataclass(frozen=True)
class Result:
    """One attempt's outcome, before it is recorded."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asks us to wait

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def _in_thread(call: Callable[..., T], *args: Any) -> T:
    """``call`` in a worker thread (the store is sync). Cancelled meanwhile, it still waits for
    the call to end: a transaction is never left running after its dispatcher stopped (the
    store may be closed next)."""
    running = asyncio.ensure_future(asyncio.to_thread(call, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await running
        raise


class Dispatcher:
    def __init__(self, cfg: Settings, store: Store, replica: str) -> None:
        self.cfg, self.store, self.replica = cfg, store, replica
        self.timeout = cfg.gpushop_webhook_timeout
        self.listening = asyncio.Event()  # set while a LISTEN connection is up (PostgreSQL)
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send due deliveries until cancelled."""
        self._loop = asyncio.get_running_loop()
        stop_waking = outbox.on_due(self.wake)
        url = self.store.webhooks.listen_url()
        if url is not None:
            self._listener = asyncio.create_task(listen(url, self.wake, self.listening))
        late = False  # the last look found a delivery due that no claim could take
        try:
            while True:
                self._wakeup.clear()
                sleep = self.cfg.gpushop_webhook_poll
                try:
                    free = BATCH - len(self._in_flight)
                    # claim in batches: a claim per finished send would double the writes
                    claim = free >= REFILL or not self._in_flight
                    started = await self._start(free) if claim else 0
                    if not claim:
                        free = 0
                    if free > 0 and started < free:  # nothing more due now: until the next one
                        due = await _in_thread(self.store.webhooks.due_at)
                        wait = (due - self.store.clock()).total_seconds() if due else sleep
                        if wait > 0 or not late:  # due already: it came due since the claim
                            sleep = min(sleep, max(wait, 0.0))
                        late = wait <= 0 and started == 0
                except Exception as exc:  # the store is down: keep trying, quietly
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    log.warning("webhook dispatch: %s", one_line(first))
                # asyncio.timeout, not wait_for: 3.11's wait_for may swallow a cancellation
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(sleep, 0.0)):
                        await self._wakeup.wait()
        finally:
            stop_waking()
            await self._stop_tasks()

    async def drain(self) -> int:
        """Attempt every due delivery, and again those that come due meanwhile, until none is
        due and none is on its way (tests, benchmarks). How many attempts were made."""
        made = 0
        while True:
            free = BATCH - len(self._in_flight)
            if free > 0:
                made += await self._start(free)
            if not self._in_flight:
                return made
            await asyncio.wait(set(self._in_flight), return_when=asyncio.FIRST_COMPLETED)

    def wake(self) -> None:
        """Look for due deliveries now (from any thread)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
            loop.call_soon_threadsafe(self._wakeup.set)

    async def aclose(self) -> None:
        await self._stop_tasks()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _stop_tasks(self) -> None:
        tasks = [*self._in_flight, *([self._listener] if self._listener else [])]
        self._listener = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=BATCH, max_keepalive_connections=BATCH)
            self._client = httpx.AsyncClient(trust_env=False, limits=limits)
        return self._client

    # -- one batch -----------------------------------------------------------------------------

    def _claim(self, limit: int) -> list[tuple[Delivery, Endpoint | None]]:
        hooks = self.store.webhooks
        batch = hooks.claim(self.replica, limit=limit, lock_s=self.timeout + 30)
        endpoints = {eid: hooks.endpoint(eid) for eid in {d.endpoint_id for d in batch}}
        return [(d, endpoints[d.endpoint_id]) for d in batch]

    async def _start(self, limit: int) -> int:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        batch = await _in_thread(self._claim, limit)
        for delivery, endpoint in batch:
            task = asyncio.create_task(self._attempt(delivery, endpoint))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(batch)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wakeup.set()  # a free slot: claim more
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("webhook delivery not recorded: %s", one_line(str(exc)))

    async def _attempt(self, delivery: Delivery, endpoint: Endpoint | None) -> None:
        began = time.monotonic()
        if endpoint is None:  # deleted since the claim
            result = Result(None, "endpoint deleted")
        else:
            result = await self._send(delivery, endpoint)
        duration_ms = (time.monotonic() - began) * 1000
        await _in_thread(self._record, delivery, endpoint, result, duration_ms)

    # -- one attempt ---------------------------------------------------------------------------

    async def _send(self, delivery: Delivery, endpoint: Endpoint) -> Result:
        now = self.store.clock()
        try:
            keys = signing_secrets(self.cfg, endpoint, now)
        except (SecretUnreadable, ConfigError) as exc:
            log.warning(
                "webhook %s: delivery %s cannot be signed: %s", endpoint.id, delivery.id, exc
            )
            return Result(None, one_line(f"cannot sign: {exc}"))
        body = delivery.body.encode()
        stamp = int(now.timestamp())
        headers = {
            "webhook-id": delivery.msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": " ".join(sign(k, delivery.msg_id, stamp, body) for k in keys),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        try:
            async with asyncio.timeout(self.timeout):  # the whole attempt, not per read
                response = await post_pinned(
                    self._http(),
                    endpoint.url,
                    body,
                    headers,
                    allow_private=self.cfg.gpushop_webhook_allow_private,
                    timeout=self.timeout,
                )
        except (TimeoutError, httpx.TimeoutException):
            return Result(None, f"timed out after {self.timeout:g} s")
        except (AddressRefused, Unresolvable, UsageError) as exc:
            return Result(None, one_line(str(exc)))
        except httpx.HTTPError as exc:
            return Result(None, transport_error(exc))
        code = response.status_code
        if 200 <= code < 300:
            return Result(code)
        if 300 <= code < 400:
            where = one_line(response.headers.get("location", "nowhere"), 200)
            error = f"redirect not followed (HTTP {code} to {where})"
        else:
            error = one_line(f"HTTP {code} {response.reason_phrase}")
        return Result(code, error, retry_after(response.headers.get("retry-after"), now))

    def _record(
        self, delivery: Delivery, endpoint: Endpoint | None, result: Result, duration_ms: float
    ) -> None:
        hooks = self.store.webhooks

        def record(outcome: str, at: datetime | None = None) -> None:
            hooks.record(
                delivery.id,
                replica=self.replica,
                status_code=result.status_code,
                error=result.error,
                duration_ms=duration_ms,
                outcome=outcome,
                next_attempt_at=at,
            )

        metrics.WEBHOOK_ATTEMPTS.labels(
            "delivered"
            if result.ok
            else "disabled"
            if result.status_code == 410
            else "failed"
            if endpoint is None or delivery.attempts + 1 >= ATTEMPTS
            else "retry"
        ).inc()
        if result.ok:
            record(DELIVERED)
        elif endpoint is None:
            record(FAILED)
        elif result.status_code == 410:
            record(PENDING, self.store.clock())  # held by disable(), until enabled again
            if hooks.disable(endpoint.id, GONE):
                log.warning("webhook %s disabled: %s", endpoint.id, GONE)
        elif delivery.attempts + 1 >= ATTEMPTS:
            record(FAILED)
            if not hooks.delivered_since(endpoint.id, delivery.created_at):
                reason = one_line(
                    f"consistent failure: nothing delivered since {iso(delivery.created_at)},"
                    f" {ATTEMPTS} attempts of delivery {delivery.id} failed; the last:"
                    f" {result.error}",
                    1000,
                )
                if hooks.disable(endpoint.id, reason):
                    log.warning("webhook %s disabled after consistent failure", endpoint.id)
        else:
            delay = next_delay(
                delivery.attempts + 1, self.cfg.gpushop_webhook_retry_scale, result.retry_after
            )
            record(PENDING, self.store.clock() + timedelta(seconds=delay))
