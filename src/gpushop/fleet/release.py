"""Release = destroy, then verify it is gone (never just stop: a stopped instance still bills
storage). A destroy that reports success while the instance stays is retried; if it still stays,
the rental says so loudly and reconcile keeps trying (anchors, pain point 3)."""

from __future__ import annotations

import asyncio
import logging

from gpushop.errors import GpushopError
from gpushop.models import RentalState
from gpushop.providers.base import Provider
from gpushop.store import Rental, Store

log = logging.getLogger("gpushop.fleet")
DESTROY_ATTEMPTS = 4
VERIFY_POLLS = 3
VERIFY_INTERVAL_S = 1.0


class ReleaseFailed(GpushopError):
    exit_code = 1


async def destroy_verified(
    provider: Provider,
    instance_id: str,
    *,
    attempts: int = DESTROY_ATTEMPTS,
    interval_s: float = VERIFY_INTERVAL_S,
) -> int:
    """Destroy until the provider no longer shows the instance; returns the destroys it took."""
    for attempt in range(1, attempts + 1):
        await provider.destroy_instance(instance_id)  # False when already gone: fine
        for _ in range(VERIFY_POLLS):
            if await provider.get_instance(instance_id) is None:
                return attempt
            await asyncio.sleep(interval_s)
    raise ReleaseFailed(
        f"instance {instance_id} is still there after {attempts} destroy calls: it may still "
        "bill; `gpushop reconcile` will keep trying"
    )


async def release_rental(
    store: Store,
    provider: Provider,
    rental: Rental,
    reason: str,
    *,
    final: RentalState = RentalState.RELEASED,
    interval_s: float = VERIFY_INTERVAL_S,
) -> Rental:
    """Destroy the rental's instance (found by id, else by label) and record the outcome."""
    if rental.state is RentalState.REQUESTED:
        return store.transition(rental.id, RentalState.FAILED, f"{reason} (nothing created)")
    if rental.state is not RentalState.RELEASING:
        rental = store.transition(rental.id, RentalState.RELEASING, reason)
    instance_id = rental.instance_id
    if instance_id is None:
        found = await provider.list_instances(label_prefix=rental.label)
        instance_id = found[0].instance_id if found else None
    if instance_id is not None:
        try:
            tries = await destroy_verified(provider, instance_id, interval_s=interval_s)
        except ReleaseFailed as exc:
            store.note(rental.id, str(exc), kind="release_failed")
            raise
        if tries > 1:
            store.note(rental.id, f"destroy took {tries} calls", kind="release")
    return store.transition(rental.id, final, reason)
