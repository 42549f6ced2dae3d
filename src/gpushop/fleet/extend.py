"""Extend a live rental's max duration: the store's limit (what reconcile enforces) and the
deadline of its on-instance watchdog, moved over SSH, so the instance is never stopped by its
own watchdog while gpushop still wants it (a proxy pool's backend, a long job)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpushop.errors import GpushopError, UsageError
from gpushop.fleet.connect import connect_rental
from gpushop.providers.base import Provider
from gpushop.ssh import client as ssh
from gpushop.ssh.keys import KeyPair
from gpushop.store import Rental, Store


@dataclass(frozen=True)
class Extension:
    rental_id: str
    max_duration_s: float
    watchdog_deadline: float | None  # UTC epoch seconds; None: the rental has no watchdog


class WatchdogNotMoved(GpushopError):
    """The instance's watchdog could not be told; nothing was changed."""


async def extend_rental(
    store: Store, provider: Provider, keypair: KeyPair, rental: Rental, max_duration_s: float
) -> Extension:
    """Watchdog first, then the store: if the instance cannot be reached, both keep the old
    limit (the instance stops then, which costs nothing more than planned)."""
    if rental.state.terminal:
        raise UsageError(f"rental {rental.id} has ended ({rental.state})")
    if max_duration_s <= 0:
        raise UsageError("--max-duration must be positive")
    old = rental.details.get("watchdog_deadline")
    deadline = None
    if isinstance(old, int | float):
        grace = old - rental.created_at.timestamp() - rental.max_duration_s
        deadline = math.ceil(rental.created_at.timestamp() + max_duration_s + max(grace, 0.0))
        command = provider.move_deadline_command(deadline)
        if command is not None:
            try:
                conn = await connect_rental(store, rental, keypair)
                async with conn:
                    code, _, err = await ssh.run(conn, command)
            except ssh.SshError as exc:
                raise WatchdogNotMoved(f"rental {rental.id}: {exc}; nothing changed") from exc
            if code != 0:
                raise WatchdogNotMoved(
                    f"rental {rental.id}: moving the watchdog's deadline failed ({code}): "
                    f"{err.strip()}; nothing changed"
                )
    details = {**rental.details}
    if deadline is not None:
        details["watchdog_deadline"] = deadline
    store.update(
        rental.id,
        note=f"max duration extended to {max_duration_s:g} s",
        max_duration_s=max_duration_s,
        details=details,
    )
    return Extension(rental.id, max_duration_s, deadline)
