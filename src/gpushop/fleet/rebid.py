"""``--rebid``: an outbid interruptible rental bids again instead of being released.

The winning bid is the offer's current minimum bid (as the provider reports it on the instance)
plus the margin the create path uses (``provision.BID_MARGIN``). It is placed only if that bid
plus storage is at most the rental's cap (``--max-price`` / ``VASTAI_MAX_BID_PER_HOUR``) and the
monthly budget still holds with the new price; otherwise ``MoneyLimitError`` and nothing is sent:
the bid never passes the cap. What ``up`` decided (wanted, cap, budget) travels with the rental
in ``details["rebid"]``, so ``reconcile`` can re-bid a rental long after ``up`` returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gpushop.errors import MoneyLimitError, NotFound, OfferUnavailable
from gpushop.fleet import money
from gpushop.fleet.wait import NotReady, wait_ready
from gpushop.models import Instance, InstanceStatus, RentalState
from gpushop.providers.base import Provider
from gpushop.store import Rental, Store

BID_MARGIN = 1.05  # as provision.BID_MARGIN (kept here: provision imports this module)
REBID_KEY = "rebid"
RESTART_GRACE_S = 60.0  # after the bid took, how long the provider may still say "exited"
RESTART_POLL_S = 2.5


def settings_for(cap: float | None, budget_usd: float | None) -> dict[str, Any]:
    """What ``up --rebid`` writes into the rental's details."""
    return {"cap": cap, "budget_usd": budget_usd}


def wanted(rental: Rental) -> bool:
    return bool(rental.interruptible and isinstance(rental.details.get(REBID_KEY), dict))


def winning_bid(instance: Instance) -> float:
    """The bid that wins now: the offer's current minimum bid plus the create path's margin."""
    min_bid = instance.provider_data.get("min_bid")
    if not isinstance(min_bid, int | float) or min_bid <= 0:
        raise OfferUnavailable(
            f"instance {instance.instance_id} reports no minimum bid: cannot re-bid"
        )
    return round(float(min_bid) * BID_MARGIN + 0.0005, 4)


def check(store: Store, rental: Rental, bid: float, now: datetime) -> float:
    """The rental's new price per hour (bid + storage), or ``MoneyLimitError`` when the cap or
    the monthly budget refuses it."""
    limits = rental.details.get(REBID_KEY) or {}
    storage = float(rental.details.get("storage_per_hour") or 0.0)
    price = round(bid + storage, 6)
    cap = limits.get("cap")
    if cap is not None and price > float(cap) + 1e-9:
        raise MoneyLimitError(
            f"the winning bid ${price:.3f}/h (storage included) is above the max price "
            f"${float(cap):.3f}/h"
        )
    budget = limits.get("budget_usd")
    if budget is not None:
        start, end = money.month_window(now)
        remaining_h = max((rental.deadline - now).total_seconds(), 0.0) / 3600.0
        # committed() counts this rental at its old price: count it at the new one instead
        mine = (rental.price_per_hour or 0.0) * remaining_h
        money.check_budget(
            budget=float(budget),
            spent=store.spent_between(start, end, now),
            committed=max(store.committed(now) - mine, 0.0),
            price_per_hour=price,
            hours=remaining_h,
        )
    return price


async def place(
    store: Store,
    provider: Provider,
    rental: Rental,
    instance: Instance,
    progress: Callable[[str], None] = lambda _: None,
) -> Rental:
    """Send the winning bid for an INTERRUPTED rental and record its new price (PROVISIONING:
    billed from READY on at the new price). ``MoneyLimitError``, nothing sent, above the cap."""
    bid = winning_bid(instance)
    price = check(store, rental, bid, datetime.now(UTC))
    await provider.change_bid(instance.instance_id, bid)
    old = rental.price_per_hour or 0.0
    rental = store.transition(
        rental.id,
        RentalState.PROVISIONING,
        f"re-bid ${bid:.4f}/h (was ${rental.bid_price or 0:.4f}/h)",
        expect=RentalState.INTERRUPTED,
        price_per_hour=price,
        bid_price=bid,
    )
    progress(
        f"{rental.id} was outbid: bid raised to ${price:.3f}/h (was ${old:.3f}/h); "
        "waiting for it to run again"
    )
    return rental


async def until_starting(
    provider: Provider, instance_id: str, grace_s: float = RESTART_GRACE_S
) -> None:
    """Until the instance no longer shows the stopped state the outbid left (the provider may
    report ``exited`` for a moment after the bid took): ``wait_ready`` fails on a stopped one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while True:
        inst = await provider.get_instance(instance_id)
        if inst is None:
            raise NotReady(f"instance {instance_id} disappeared after the re-bid")
        if inst.status is not InstanceStatus.STOPPED:
            return
        if loop.time() > deadline:
            raise NotReady(f"instance {instance_id} still stopped {grace_s:.0f}s after the re-bid")
        await asyncio.sleep(RESTART_POLL_S)


async def rebid(
    store: Store,
    provider: Provider,
    rental: Rental,
    *,
    progress: Callable[[str], None] = lambda _: None,
    ready_timeout_s: float = 15 * 60.0,
) -> Rental:
    """Bid again on an outbid (INTERRUPTED) rental and wait until SSH answers (READY).

    ``MoneyLimitError`` (nothing sent) when the winning bid passes the cap or the budget: the
    caller releases it as without ``--rebid``. ``NotReady`` when it does not run again.
    """
    if not rental.instance_id:
        raise NotFound(f"rental {rental.id} has no instance", provider=rental.provider)
    inst = await provider.get_instance(rental.instance_id)
    if inst is None:
        raise NotFound(f"instance {rental.instance_id} is gone", provider=rental.provider)
    rental = await place(store, provider, rental, inst, progress)
    await until_starting(provider, inst.instance_id)
    ready = await wait_ready(provider, inst.instance_id, timeout_s=ready_timeout_s)
    rental = store.update(rental.id, ssh_host=ready.host, ssh_port=ready.port)
    return store.transition(rental.id, RentalState.READY, "runs again after the re-bid")
