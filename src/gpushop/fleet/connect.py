"""SSH to a rental: the host key it first showed (trust on first use, kept in the store), and
retries with backoff while a fresh instance still installs our key (10-15 s on Vast.ai)."""

from __future__ import annotations

import asyncio

import asyncssh

from gpushop.ssh import client as ssh
from gpushop.ssh.keys import KeyPair
from gpushop.store import Rental, Store

RETRY_DELAYS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


async def connect_rental(
    store: Store,
    rental: Rental,
    keypair: KeyPair,
    *,
    delays: tuple[float, ...] = RETRY_DELAYS,
    timeout: float = 10.0,
) -> asyncssh.SSHClientConnection:
    """A connection whose host key is the rental's; raises ``HostKeyChanged`` at once, and the
    last ``SshError`` when every try failed."""
    if not rental.ssh_host or not rental.ssh_port:
        raise ssh.SshError(f"rental {rental.id} has no SSH address (is it ready?)")
    target = ssh.Target(rental.ssh_host, rental.ssh_port, rental.ssh_user or "root")
    known = rental.host_key

    def record(key: str) -> None:
        nonlocal known
        known = key
        store.update(rental.id, host_key=key)

    last: ssh.SshError | None = None
    for delay in delays:
        await asyncio.sleep(delay)
        try:
            return await ssh.connect(
                target,
                keypair.load_private(),
                known_host_key=known,
                record_host_key=record,
                timeout=timeout,
            )
        except ssh.HostKeyChanged:
            raise
        except ssh.SshError as exc:
            last = exc
    assert last is not None
    raise last
