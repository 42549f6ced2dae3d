"""The background work every replica of `gpushop serve` does, so that none of it depends on one
process staying alive:

- the **sync job** (reconcile, then the month's charges against the providers' own), once per
  tick of GPUSHOP_SYNC_INTERVAL across replicas: the replica whose tick row goes in runs it;
- **takeovers**: provisioning (and releasing) a dead replica left half-done, found by its
  expired lease, claimed by exactly one replica and finished (fleet/takeover.py); the jobs it
  drove, followed on to their end (service/job_supervisor.py);
- the **webhook dispatcher** (service/webhook_dispatch.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gpushop import metrics
from gpushop.config import Settings
from gpushop.errors import GpushopError
from gpushop.fleet import takeover
from gpushop.fleet.owners import Owner, owner_alive
from gpushop.fleet.reconcile import reconcile
from gpushop.fleet.reconcile_plan import RentalView
from gpushop.fleet.release import release_rental
from gpushop.models import RentalState
from gpushop.service.job_supervisor import Supervisor
from gpushop.shop import Shop
from gpushop.store import Rental, Store

log = logging.getLogger("gpushop.replica")
SYNC = "sync"
READY_TIMEOUT_S = 15 * 60.0  # as `up` waits by default, counted from the rental's creation
MIN_READY_WAIT_S = 120.0
TAKEOVER_PASS_S = 2.0


class Replica:
    def __init__(self, cfg: Settings, store: Callable[[], Store]) -> None:
        self.cfg = cfg
        self._store = store
        self.owner = Owner.me(cfg.gpushop_lease_seconds)
        self.name = self.owner.name
        self._tasks: list[asyncio.Task[None]] = []
        self._finishing: dict[str, asyncio.Task[None]] = {}
        self._shop: Shop | None = None
        self.dispatcher: Any = None
        self.jobs = Supervisor(cfg, self.owner, store)

    @property
    def store(self) -> Store:
        return self._store()

    @property
    def shop(self) -> Shop:
        if self._shop is None:
            self._shop = Shop(self.cfg)
        return self._shop

    def start(self) -> None:
        """Start the background work; none of it needs the store to answer yet (a service
        whose store is down still starts, and says so on /readyz)."""
        for work in (self._sync_loop(), self._takeover_loop(), self._deliveries(), _lag_probe()):
            self._tasks.append(asyncio.create_task(work))

    async def _deliveries(self) -> None:
        from gpushop.service.webhook_dispatch import Dispatcher

        pause = 0.5
        while self.dispatcher is None:
            try:
                store = await asyncio.to_thread(self._store)
                self.dispatcher = Dispatcher(self.cfg, store, self.name)
            except (GpushopError, OSError) as exc:
                log.warning("webhook deliveries wait for the store: %s", exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
        await self.dispatcher.run()

    async def aclose(self) -> None:
        """Stop: the jobs this replica drives are handed off (they go on running, another
        replica follows them); what it was finishing is released (its cancel handlers do
        that)."""
        await self.jobs.aclose()
        tasks = [*self._tasks, *self._finishing.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self.dispatcher is not None:
            await self.dispatcher.aclose()
        if self._shop is not None:
            await self._shop.aclose()

    # -- the sync job --------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        """At each tick's start, take the tick if no other replica has: an idle replica runs
        the job; one still running an earlier tick's takes it a little later, only if nobody
        idle did, and records it as covered by that run. A replica whose loop was held up past
        a tick takes the ticks it missed too (one run covers them): runs never overlap, and no
        tick passes unrun while a replica is up."""
        interval = self.cfg.gpushop_sync_interval
        running: asyncio.Task[None] | None = None
        running_tick = 0
        # from the next tick on: the current one is another replica's, or comes soon enough
        seen = int(time.time() // interval)
        await asyncio.sleep((seen + 1) * interval - time.time())
        while True:
            now_tick = int(time.time() // interval)
            busy = running is not None and not running.done()
            if busy:
                await asyncio.sleep(interval * 0.2)
            try:
                store = await asyncio.to_thread(self._store)
                ticks = range(max(seen + 1, now_tick - 100), now_tick + 1)
                taken = [t for t in ticks if await asyncio.to_thread(self._take, store, t)]
                seen = now_tick
                if taken and not busy:
                    running_tick = taken[-1]
                    running = asyncio.create_task(self._run(store, running_tick))
                    self._tasks.append(running)
                for tick in taken:
                    if tick != running_tick or busy:
                        covered = {"replica": self.name, "covered_by": running_tick}
                        await asyncio.to_thread(store.ticks.finish, SYNC, tick, covered)
            except (GpushopError, OSError) as exc:  # the store is down: try the next tick
                log.warning("sync tick %s: %s", now_tick, exc)
            self._tasks = [t for t in self._tasks if not t.done()]
            # the next tick's start, plus a little so that replicas do not all wake at once
            wait = (now_tick + 1) * interval - time.time()
            await asyncio.sleep(max(0.0, wait) + random.uniform(0, min(0.05, interval / 20)))

    def _take(self, store: Store, tick: int) -> bool:
        return store.ticks.take(SYNC, tick, self.name)

    async def _run(self, store: Store, tick: int) -> None:
        late = time.time() - tick * self.cfg.gpushop_sync_interval
        metrics.LOOP_LAG.labels("sync").set(max(0.0, late))
        try:
            outcome = await self.sync_once()
        except (GpushopError, OSError) as exc:
            outcome = {"replica": self.name, "error": str(exc)}
        await asyncio.to_thread(store.ticks.finish, SYNC, tick, outcome)

    async def sync_once(self) -> dict[str, Any]:
        """Reconcile every provider, then compare the month's charges; the tick's outcome."""
        outcome: dict[str, Any] = {"replica": self.name}
        # takeovers first: a half-provisioned rental a dead replica left is finished, where
        # reconcile alone would only release it
        outcome["taken_over"] = await self.take_over_abandoned()
        try:
            report = await reconcile(
                self.store,
                self.shop.provider_map(),
                record=True,
                owner=self.owner,
                tell_idle=False,
                taken_care_of=ours_to_take_over,
            )
            outcome["reconcile"] = {
                "actions": len(report.actions),
                "errors": report.errors[:10],
                "skipped": report.skipped,
            }
        except GpushopError as exc:
            outcome["reconcile"] = {"error": str(exc)}
        outcome["charges"] = await self._charges()
        return outcome

    async def _charges(self) -> dict[str, Any]:
        from gpushop.service.rentals import cost_report

        warnings: list[str] = []
        try:
            report = await cost_report(
                self.cfg, days=None, now=datetime.now(UTC), warn=warnings.append, shop=self.shop
            )
        except GpushopError as exc:
            return {"error": str(exc)}
        return {
            "ours_usd": report.get("by_provider"),
            "billed_usd": report.get("billed_by_provider"),
            "warnings": warnings,
        }

    # -- takeovers -----------------------------------------------------------------------------

    async def _takeover_loop(self) -> None:
        # often, whatever the lease: a job handed off by a replica shutting down (its lease
        # given up) is followed again within this
        while True:
            await asyncio.sleep(min(self.owner.lease_s / 2, TAKEOVER_PASS_S))
            try:
                await self.take_over_abandoned()
                await self.jobs.take_over_abandoned()
            except (GpushopError, OSError) as exc:
                log.warning("takeover pass: %s", exc)

    async def take_over_abandoned(self) -> list[str]:
        """Claim the service's in-flight rentals whose owner's lease lapsed; finish each in a
        task of this replica. The rentals claimed."""
        states = [*takeover.IN_FLIGHT, RentalState.RELEASING]
        store = await asyncio.to_thread(self._store)
        rentals = await asyncio.to_thread(store.list, states=states)
        now = datetime.now(UTC)
        claimed: list[str] = []
        for rental in rentals:
            if not ours_to_take_over(rental):
                continue  # a CLI's rental: reconcile's to judge
            if rental.id in self._finishing or owner_alive(
                rental.owner_host,
                rental.owner_pid,
                rental.heartbeat_at,
                now,
                lease_until=rental.lease_until,
            ):
                continue
            won = await asyncio.to_thread(
                store.take_over,
                rental,
                self.owner.host,
                self.owner.pid,
                lease_s=self.owner.lease_s,
            )
            if won is None:
                continue  # another replica was first
            log.warning("took over %s rental %s from %s", won.state, won.id, rental.owner_host)
            metrics.TAKEOVERS.inc()
            self._finishing[won.id] = asyncio.create_task(self._finish(won))
            claimed.append(won.id)
        return claimed

    async def _finish(self, rental: Rental) -> None:
        try:
            await self._finish_one(rental)
        finally:
            self._finishing.pop(rental.id, None)

    async def _finish_one(self, rental: Rental) -> None:
        provider = self.shop.provider(rental.provider)
        try:
            if rental.state is RentalState.RELEASING:
                await release_rental(self.store, provider, rental, "release taken over")
                return
            waited = (datetime.now(UTC) - rental.created_at).total_seconds()
            done = await takeover.finish(
                self.store,
                provider,
                rental,
                self.owner,
                ready_timeout_s=max(MIN_READY_WAIT_S, READY_TIMEOUT_S - waited),
            )
            if done.ready and rental.user_id is not None:
                from gpushop.service.team_rentals import install_ssh_keys

                keys = await asyncio.to_thread(self.store.users.identities, rental.user_id)
                if keys:
                    await install_ssh_keys(self.cfg, rental.id, [line for _, line, _ in keys])
        except GpushopError as exc:
            log.warning("finishing %s after a takeover: %s", rental.id, exc)


async def _lag_probe(every_s: float = 1.0) -> None:
    """How late this process's event loop runs what is due: a sleep's oversleep. Blocking
    calls on the loop (a sync store call) show here before they show in latencies."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(every_s)
        metrics.LOOP_LAG.labels("event_loop").set(time.perf_counter() - started - every_s)


def ours_to_take_over(rental: RentalView) -> bool:
    """The service's rentals (made through the API) are finished by a takeover when their
    owner dies; a CLI's are reconcile's to judge (abandoned: released)."""
    return rental.user_id is not None and not rental.details.get("detached")
