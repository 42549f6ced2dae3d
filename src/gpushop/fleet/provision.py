"""``gpushop up``: rent the best offer and hand back a machine whose SSH answers.

Money first: the rental row exists before the create call (write-ahead), the instance carries our
label, and every failure path releases what was created or leaves it labelled for reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpushop import offer_ids
from gpushop.config import cache_dir
from gpushop.errors import (
    GpushopError,
    MoneyLimitError,
    NoMatchError,
    OfferUnavailable,
    ProviderError,
    ProviderUnavailable,
)
from gpushop.fleet import choice, lease, money, rebid, verify
from gpushop.fleet.connect import connect_rental
from gpushop.fleet.owners import Owner
from gpushop.fleet.reconcile_plan import outbid
from gpushop.fleet.release import ReleaseFailed, release_rental
from gpushop.fleet.wait import NotReady, Readiness, wait_ready
from gpushop.gpus import parse_gpu_list
from gpushop.market.service import Market
from gpushop.models import (
    CreateRequest,
    Instance,
    InstanceStatus,
    Offer,
    OfferQuery,
    RentalState,
    SortKey,
)
from gpushop.providers.base import Provider
from gpushop.ssh import client as ssh
from gpushop.ssh.keys import KeyPair
from gpushop.store import CLAIMING_STATES, OfferClaimed, Rental, SpendingLimits, Store, User

log = logging.getLogger("gpushop.fleet")
HOST_BLOCK_SECONDS = 7 * 24 * 3600
MAX_RACES = 10  # offers taken by someone else between our search and our create


class ProvisioningFailed(GpushopError):
    exit_code = 1


@dataclass
class UpOptions:
    query: OfferQuery
    sort: SortKey = SortKey.VALUE
    offer_id: str | None = None  # "vastai:123": exactly this offer
    image: str | None = "vastai/base-image:@vastai-automatic-tag"
    template_hash: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    onstart: str | None = None
    max_duration_s: float = 4 * 3600.0
    max_attempts: int = 3
    ready_timeout_s: float = 15 * 60.0
    wait: bool = True
    bid_price: float | None = None
    keep_interrupted: bool = False
    rebid: bool = False  # outbid: bid what wins now, up to price_cap and the budget (rebid.py)
    budget_usd: float | None = None
    price_cap: float | None = None
    verify_host: bool = True
    # the on-instance watchdog stops the instance at max duration + this grace, even when no
    # gpushop process is left to do it (a closed laptop); None disables it
    watchdog_grace_s: float | None = 600.0
    # the team service's user it is for, with their quotas (None: the CLI's own rental)
    user: User | None = None


Progress = Callable[[str], None]


def _narrowed(query: OfferQuery, offer: Offer) -> OfferQuery:
    """``query`` limited to ``offer``'s GPU model and count where it left them open (a filter
    the user gave stays: the offer must still fit it)."""
    gpus = query.gpus
    if not gpus:
        try:
            gpus = parse_gpu_list([offer.gpu_name])
        except GpushopError:
            gpus = []
    return dataclasses.replace(query, gpus=gpus, num_gpus=query.num_gpus or offer.num_gpus)


class Provisioner:
    def __init__(
        self,
        store: Store,
        providers: dict[str, Provider],
        market: Market,
        keypair: KeyPair,
        *,
        owner: Owner | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.market = market
        self.keypair = keypair
        self.owner = owner or Owner.me()
        self.rng = rng or random.Random()
        self._search_s = 0.0  # the last search, recorded per rental as "offer_chosen"

    async def candidates(self, opts: UpOptions) -> list[Offer]:
        if opts.offer_id is not None:
            # a short id a table of this machine showed is exactly that offer; otherwise a
            # prefix must name one current offer (offer_ids.py)
            shown = offer_ids.recall(cache_dir(), opts.offer_id)
            found = await self.market.search(opts.query, SortKey.PRICE, 200)
            wanted = shown or offer_ids.resolve(opts.offer_id, found.known_ids)
            exact = [o for o in found.offers if o.id == wanted]
            seen = found.known.get(wanted)
            if not exact and seen is not None:
                # on the market but past the 200 cheapest that fit: look among its own model
                with contextlib.suppress(NoMatchError):
                    query = _narrowed(opts.query, seen)
                    narrowed = await self.market.search(query, SortKey.PRICE, 200)
                    exact = [o for o in narrowed.offers if o.id == wanted]
            if not exact:
                raise NoMatchError(f"offer {wanted} is not available or does not fit")
            return exact
        blocked = {
            m for name in self.providers for m in self.store.blocked_hosts(name, datetime.now(UTC))
        }
        query = opts.query
        query.exclude_machines = frozenset(blocked)
        result = await self.market.search(query, opts.sort, 20)
        return choice.order_of_attempts(result.offers, self.rng)

    async def up(
        self,
        opts: UpOptions,
        progress: Progress = lambda _: None,
        claimed: Callable[[Rental], None] | None = None,
    ) -> Rental:
        """Rent and wait. A host that fails (stuck, lying, created stopped) costs one of
        ``max_attempts``; an offer someone else took first costs a fresh search instead (taken
        offers drop out of it), up to ``MAX_RACES``, so concurrent ``up``s do not give up.
        ``claimed`` hears of each write-ahead rental as it is written (before its create)."""
        hours = opts.max_duration_s / 3600.0
        errors: list[str] = []
        tried: set[str] = set()
        failures = races = 0
        searched = time.monotonic()
        offers = await self.candidates(opts)
        self._search_s = time.monotonic() - searched
        while failures < max(1, opts.max_attempts):
            taken = self._claimed_offers()
            pending = [o for o in offers if o.id not in tried and o.id not in taken]
            if not pending:
                if races >= MAX_RACES or not [o for o in offers if o.id not in tried]:
                    break
                races += 1  # everything left is being rented by another up: look again
                offers = await self.candidates(opts)
                continue
            offer = pending[0]
            tried.add(offer.id)
            money.check_price_cap(offer.price_per_hour, opts.price_cap)
            now = datetime.now(UTC)
            start, end = money.month_window(now)
            money.check_budget(
                budget=opts.budget_usd,
                spent=self.store.spent_between(start, end, now),
                committed=self.store.committed(now),
                price_per_hour=offer.price_per_hour,
                hours=hours,
            )
            progress(
                f"renting {offer.id}: {offer.num_gpus}x {offer.gpu_variant} "
                f"at ${offer.price_per_hour:.3f}/h ({offer.location})"
            )
            try:
                return await self._attempt(offer, opts, progress, claimed)
            except OfferUnavailable as exc:
                races += 1
                errors.append(f"{offer.id}: {exc}")
                if races >= MAX_RACES or opts.offer_id:
                    break
                progress(f"{offer.id} was taken meanwhile; searching again")
                try:
                    offers = await self.candidates(opts)
                except NoMatchError:
                    break
            except (NotReady, HostLied, ProviderUnavailable) as exc:
                failures += 1
                errors.append(f"{offer.id}: {exc}")
                progress(f"{offer.id} failed: {exc}; trying the next offer")
        raise ProvisioningFailed("no offer became ready: " + "; ".join(errors))

    async def _attempt(
        self,
        offer: Offer,
        opts: UpOptions,
        progress: Progress,
        claimed: Callable[[Rental], None] | None = None,
    ) -> Rental:
        provider = self.providers[offer.provider]
        bid = choose_bid(offer, opts) if opts.query.interruptible else None
        await provider.ensure_ssh_key(self.keypair.public_key)
        try:
            rental = self._claim(offer, opts, bid)
        except OfferClaimed as exc:
            # Another `up` (this machine or another, through the shared store) claimed this
            # offer first: yield before any create call, so neither pays a failed one.
            raise OfferUnavailable(f"offer {offer.id} is being rented by {exc.rival}") from None
        self.store.record_timing(rental.id, "offer_chosen", self._search_s)
        if claimed is not None:
            claimed(rental)
        lost: list[str] = []
        beat = asyncio.create_task(
            lease.hold(self.store, rental.id, self.owner, asyncio.current_task(), lost)
        )
        try:
            return await self._create_and_wait(rental, offer, provider, opts, progress)
        except BaseException as exc:
            if lost:  # another process took it over: it is theirs to finish or release
                raise lease.lease_lost(rental.id) from None
            current = self.store.get(rental.id)
            if (
                isinstance(exc, GpushopError)
                and current is not None
                and current.state
                in (
                    RentalState.RELEASING,
                    RentalState.RELEASED,
                )
            ):
                # someone released it (`gpushop down`, the API) while it was provisioning: its
                # instance going away is no host failure, and nobody wants another in its place
                await asyncio.shield(self._cleanup(rental.id, provider, exc, progress))
                raise ReleasedMeanwhile(
                    f"{rental.id} was released while it was being provisioned; not renting"
                    " another in its place"
                ) from None
            # Whatever happened (an error, a timeout, Ctrl-C), nothing may keep billing.
            await asyncio.shield(self._cleanup(rental.id, provider, exc, progress))
            raise
        finally:
            beat.cancel()

    def _claim(self, offer: Offer, opts: UpOptions, bid: float | None) -> Rental:
        """The write-ahead rental, which claims the offer: of two racing `up`s, one wins."""
        user = opts.user
        limits = SpendingLimits(
            hours=opts.max_duration_s / 3600.0,
            account_budget_usd=opts.budget_usd,
            user_id=user.id if user else None,
            user_name=user.name if user else "",
            max_rentals=user.max_rentals if user else None,
            max_usd_per_hour=user.max_usd_per_hour if user else None,
            monthly_budget_usd=user.monthly_budget_usd if user else None,
        )
        return self.store.new_rental(
            exclusive=True,
            limits=limits,
            user_id=user.id if user else None,
            provider=offer.provider,
            max_duration_s=opts.max_duration_s,
            owner_host=self.owner.host,
            owner_pid=self.owner.pid,
            lease_until=self.owner.lease_from(self.store.clock()),
            offer_id=offer.offer_id,
            gpu_name=offer.gpu_name,
            num_gpus=offer.num_gpus,
            # an interruptible rental pays its bid (plus storage), not the offer's minimum
            price_per_hour=(bid + offer.storage_price_per_hour) if bid else offer.price_per_hour,
            disk_gb=opts.query.disk_gb,
            image=opts.image,
            template_hash=opts.template_hash,
            interruptible=opts.query.interruptible,
            bid_price=bid,
            keep_interrupted=opts.keep_interrupted,
            machine_id=offer.machine_id,
            details={
                "storage_per_hour": offer.storage_price_per_hour,
                "offer": offer.id,
                **(
                    {rebid.REBID_KEY: rebid.settings_for(opts.price_cap, opts.budget_usd)}
                    if opts.rebid and opts.query.interruptible
                    else {}
                ),
            },
        )

    def _claimed_offers(self) -> set[str]:
        """Offers other live rentals of this store hold or are about to create."""
        held = self.store.list(states=CLAIMING_STATES)
        return {f"{r.provider}:{r.offer_id}" for r in held if r.offer_id}

    async def _create_and_wait(
        self, rental: Rental, offer: Offer, provider: Provider, opts: UpOptions, progress: Progress
    ) -> Rental:
        bid = rental.bid_price
        rental = self.store.transition(rental.id, RentalState.CREATING, "create sent")
        onstart, deadline = with_watchdog(provider, opts, rental)
        if deadline is not None:  # so that `gpushop extend` can move it
            rental = self.store.update(
                rental.id, details={**rental.details, "watchdog_deadline": deadline}
            )
        request = CreateRequest(
            offer_id=offer.offer_id,
            label=rental.label,
            disk_gb=opts.query.disk_gb,
            image=opts.image,
            template_hash=opts.template_hash,
            env=opts.env,
            ports=opts.ports,
            onstart=onstart,
            bid_price=bid,
        )
        created_at = time.monotonic()
        try:
            result = await provider.create_instance(request)
            instance_id, started = result.instance_id, result.started
        except ProviderUnavailable:
            # Unclear: the create may have acted. Look for our label before anything else.
            found = await provider.list_instances(label_prefix=rental.label)
            if not found:
                raise
            instance_id, started = found[0].instance_id, True
            self.store.note(rental.id, "create answer lost; found the instance by its label")
        rental = self.store.update(rental.id, instance_id=instance_id)
        if not started:
            raise NotReady(f"{offer.id} was created stopped (bid too low or host busy)")
        rental = self.store.transition(
            rental.id, RentalState.PROVISIONING, "created", instance_id=instance_id
        )
        self.store.record_timing(rental.id, "created", time.monotonic() - created_at)
        if not opts.wait:
            # Handed over: nobody owns it now, and reconcile must not take it for abandoned.
            return self.store.update(
                rental.id,
                owner_host=None,
                owner_pid=None,
                details={**rental.details, "detached": True},
            )

        last = [""]
        running_seen = [False]

        def show(inst: Instance) -> None:
            if inst.status is InstanceStatus.RUNNING and not running_seen[0]:
                running_seen[0] = True  # the provider says running; SSH may still be starting
                self.store.record_timing(rental.id, "running", time.monotonic() - created_at)
            line = f"{inst.raw_status or 'provisioning'}: {inst.status_msg or ''}".strip()
            if line != last[0]:  # say it when it changes, not every poll
                last[0] = line
                progress(line)

        ready = await self._wait_ready(rental, provider, opts, show, progress)
        now = time.monotonic() - created_at
        if not running_seen[0]:
            # SSH answered before a poll said "running": it was running by then at the latest
            self.store.record_timing(rental.id, "running", now)
        self.store.record_timing(rental.id, "ssh_ready", now)
        rental = self.store.update(
            rental.id, ssh_host=ready.host, ssh_port=ready.port, ssh_user=provider.ssh_user
        )
        if opts.verify_host:
            await self._verify(rental, offer, opts)
        return self.store.transition(rental.id, RentalState.READY, "SSH answers")

    async def _wait_ready(
        self,
        rental: Rental,
        provider: Provider,
        opts: UpOptions,
        show: Callable[[Instance], None],
        progress: Progress,
    ) -> Readiness:
        """Until SSH answers. With ``--rebid``, an instance outbid while it starts bids what
        wins now (up to the cap) and is waited for again; above the cap it fails as without."""
        instance_id = rental.instance_id or ""
        for _ in range(10):  # a market that outbids us ten times over is not worth chasing
            try:
                return await wait_ready(
                    provider, instance_id, timeout_s=opts.ready_timeout_s, on_status=show
                )
            except NotReady:
                current = self.store.get(rental.id) or rental
                if not rebid.wanted(current):
                    raise
                inst = await provider.get_instance(instance_id)
                if inst is None or not outbid(inst):
                    raise
                current = self.store.transition(
                    rental.id, RentalState.INTERRUPTED, "outbid while starting"
                )
                try:
                    await rebid.place(self.store, provider, current, inst, progress)
                    await rebid.until_starting(provider, instance_id)
                except MoneyLimitError as exc:
                    progress(f"{rental.id} was outbid and not re-bid: {exc}")
                    raise NotReady(f"outbid; not re-bid: {exc}", host_fault=False) from None
        raise NotReady(f"instance {instance_id} was outbid again and again", host_fault=False)

    async def _verify(self, rental: Rental, offer: Offer, opts: UpOptions) -> None:
        try:
            conn = await connect_rental(self.store, rental, self.keypair)
        except ssh.HostKeyChanged:
            raise
        except ssh.SshError as exc:
            raise NotReady(f"SSH never accepted our key: {exc}") from None
        async with conn:
            _, out, _ = await ssh.run(conn, verify.PROBE_COMMAND)
        facts = verify.parse_probe(out)
        found = verify.problems(
            facts, offer, min_cuda=opts.query.min_cuda, disk_gb=opts.query.disk_gb
        )
        if found:
            until = datetime.fromtimestamp(time.time() + HOST_BLOCK_SECONDS, UTC)
            if offer.machine_id:
                self.store.block_host(offer.provider, offer.machine_id, "; ".join(found), until)
            raise HostLied(f"host {offer.machine_id} lied: " + "; ".join(found))
        self.store.note(
            rental.id,
            "host checked",
            kind="host",
            gpus=facts.gpu_names,
            cuda=facts.cuda,
            driver=facts.driver,
        )

    async def _cleanup(
        self, rental_id: str, provider: Provider, exc: BaseException, progress: Progress
    ) -> None:
        rental = self.store.get(rental_id)
        if rental is None or rental.state.terminal:
            return
        reason = (
            "interrupted"
            if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
            else str(exc)
        )
        try:
            await release_rental(
                self.store,
                provider,
                rental,
                f"failed before ready: {reason}",
                final=RentalState.FAILED,
            )
            if rental.instance_id:
                progress(f"released {rental.id} (instance {rental.instance_id}): {reason}")
        except (ProviderError, ReleaseFailed, OSError) as err:
            # Left labelled and in the store: reconcile will finish the job.
            progress(
                f"could not release {rental_id} ({err}): it stays labelled {rental.label};"
                " `gpushop reconcile` will destroy it"
            )


class HostLied(GpushopError):
    pass


class ReleasedMeanwhile(GpushopError):
    """The rental being provisioned was released by someone else: stop, rent nothing more."""


def with_watchdog(
    provider: Provider, opts: UpOptions, rental: Rental
) -> tuple[str | None, float | None]:
    """The instance's start script: the watchdog first (so a failing user script cannot skip
    it), then the user's own; and the watchdog's deadline (None: no watchdog): the rental's
    max duration plus the grace, from the rental's creation."""
    guard = deadline = None
    if opts.watchdog_grace_s is not None:
        deadline = math.ceil(
            rental.created_at.timestamp() + opts.max_duration_s + opts.watchdog_grace_s
        )
        guard = provider.watchdog_script(deadline)
        if guard is None:
            deadline = None
    parts = [p for p in (guard, opts.onstart) if p]
    return "\n".join(parts) or None, deadline


BID_MARGIN = rebid.BID_MARGIN  # just above the minimum, so a small move does not outbid us


def choose_bid(offer: Offer, opts: UpOptions) -> float:
    """The bid for an interruptible rental: ``--bid``, else just above the offer's minimum bid,
    never above the max bid (``VASTAI_MAX_BID_PER_HOUR`` / ``--max-price``). Never None: a bid
    search followed by a create without a price would silently rent on demand (anchors, 13)."""
    if opts.bid_price is not None:
        bid = opts.bid_price
    elif offer.min_bid is not None:
        bid = round(offer.min_bid * BID_MARGIN + 0.0005, 4)
    else:
        raise OfferUnavailable(f"{offer.id} has no minimum bid: not interruptible")
    if opts.price_cap is not None:
        cap = opts.price_cap - offer.storage_price_per_hour
        if offer.min_bid is not None and cap < offer.min_bid:
            raise OfferUnavailable(f"{offer.id}: its minimum bid is above the max bid")
        bid = min(bid, cap)
    return bid


def summary(rental: Rental) -> dict[str, Any]:
    return {
        "rental_id": rental.id,
        "provider": rental.provider,
        "instance_id": rental.instance_id,
        "state": str(rental.state),
        "gpu_name": rental.gpu_name,
        "num_gpus": rental.num_gpus,
        "price_per_hour": rental.price_per_hour,
        "ssh_host": rental.ssh_host,
        "ssh_port": rental.ssh_port,
        "ssh_user": rental.ssh_user,
        "label": rental.label,
        "deadline": rental.deadline.isoformat(),
    }
