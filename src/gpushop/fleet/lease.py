"""Holding a rental's lease while working on it: renewed every ``owner.beat_s``; if another
process took the rental over meanwhile (our lease lapsed: a stalled process), the work on it is
stopped, for two owners must never drive one rental."""

from __future__ import annotations

import asyncio
from typing import Any

from gpushop.errors import GpushopError
from gpushop.fleet.owners import Owner
from gpushop.store import Store


class LeaseLost(GpushopError):
    """The rental was taken over by another process while this one was working on it."""


def lease_lost(rental_id: str) -> LeaseLost:
    return LeaseLost(
        f"rental {rental_id} was taken over by another process (this one's lease lapsed before"
        " it was renewed)"
    )


async def hold(
    store: Store, rental_id: str, owner: Owner, work: asyncio.Task[Any] | None, lost: list[str]
) -> None:
    """Renew until cancelled; on finding the rental another's, note it in ``lost`` and cancel
    ``work`` (whose handler then raises :func:`lease_lost` instead of releasing)."""
    while True:
        await asyncio.sleep(owner.beat_s)
        kept = await asyncio.to_thread(
            store.heartbeat, [rental_id], owner.host, owner.pid, lease_s=owner.lease_s
        )
        if rental_id not in kept:
            lost.append(rental_id)
            if work is not None:
                work.cancel()
            return
