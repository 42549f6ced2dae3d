"""Finishing the provisioning a dead owner left half-done (a service replica killed mid-create).

The rental was taken over (``Store.take_over``: one claimant wins); this finishes it the way the
provisioner would have: find its instance (by id, else by its label), wait until SSH answers,
mark it ready. What cannot be finished is released: nothing is left billing without a live
rental. Where no instance exists, the create never acted, or is still in flight at the provider
when its sender died: a late one is an orphan to reconcile, which destroys it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gpushop.fleet import lease
from gpushop.fleet.owners import Owner
from gpushop.fleet.release import release_rental
from gpushop.fleet.wait import NotReady, wait_ready
from gpushop.models import RentalState
from gpushop.providers.base import Provider
from gpushop.store import Rental, Store

IN_FLIGHT = (RentalState.REQUESTED, RentalState.CREATING, RentalState.PROVISIONING)


@dataclass(frozen=True)
class Finished:
    rental: Rental
    ready: bool
    reason: str


async def finish(
    store: Store, provider: Provider, rental: Rental, owner: Owner, *, ready_timeout_s: float
) -> Finished:
    """Drive a taken-over rental to READY, or release it (FAILED). Holds its lease meanwhile."""
    lost: list[str] = []
    beat = asyncio.create_task(lease.hold(store, rental.id, owner, asyncio.current_task(), lost))
    try:
        return await _finish(store, provider, rental, owner, ready_timeout_s)
    except BaseException as exc:
        if lost:  # taken over again (this replica stalled): the new owner's to finish
            raise lease.lease_lost(rental.id) from None
        current = await asyncio.to_thread(store.get, rental.id)
        if current is not None and not current.state.terminal:
            reason = "taken over, then " + (
                "interrupted" if isinstance(exc, asyncio.CancelledError) else str(exc)
            )
            await asyncio.shield(
                release_rental(store, provider, current, reason, final=RentalState.FAILED)
            )
        raise
    finally:
        beat.cancel()


async def _finish(
    store: Store, provider: Provider, rental: Rental, owner: Owner, ready_timeout_s: float
) -> Finished:
    who = f"provisioning taken over by {owner.name}"
    instance_id = rental.instance_id
    if instance_id is None:
        found = await provider.list_instances(label_prefix=rental.label)
        if not found:
            failed = await release_rental(
                store,
                provider,
                rental,
                f"{who}: its owner died before an instance was created",
                final=RentalState.FAILED,
            )
            return Finished(failed, False, "no instance was created")
        instance_id = found[0].instance_id
        rental = await asyncio.to_thread(store.update, rental.id, instance_id=instance_id)
    if rental.state is RentalState.REQUESTED:
        rental = await asyncio.to_thread(
            store.transition, rental.id, RentalState.CREATING, f"{who}: create found"
        )
    if rental.state is RentalState.CREATING:
        rental = await asyncio.to_thread(
            store.transition,
            rental.id,
            RentalState.PROVISIONING,
            f"{who}: instance found",
            instance_id=instance_id,
        )
    try:
        ready = await wait_ready(provider, instance_id, timeout_s=ready_timeout_s)
    except NotReady as exc:
        failed = await release_rental(
            store, provider, rental, f"{who}: not ready: {exc}", final=RentalState.FAILED
        )
        return Finished(failed, False, str(exc))
    await asyncio.to_thread(
        store.update,
        rental.id,
        ssh_host=ready.host,
        ssh_port=ready.port,
        ssh_user=provider.ssh_user,
    )
    rental = await asyncio.to_thread(
        store.transition, rental.id, RentalState.READY, f"SSH answers ({who})"
    )
    return Finished(rental, True, "ready")
