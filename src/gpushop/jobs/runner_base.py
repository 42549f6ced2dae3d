"""The job runner's state and the helpers every part of it uses: the rental and its SSH
connection, releasing, the cost so far, the log's flush (runner.py drives, following.py follows,
losses.py handles a lost or outbid rental)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncssh

from gpushop.errors import ProviderError
from gpushop.fleet.connect import connect_rental
from gpushop.fleet.owners import Owner
from gpushop.fleet.provision import Provisioner
from gpushop.fleet.release import ReleaseFailed, release_rental
from gpushop.jobs.contract import (
    Hooks,
    JobFailed,
    Output,
    ServiceRun,
)
from gpushop.jobs.logbook import LogBook
from gpushop.models import InstanceStatus
from gpushop.providers.base import Provider
from gpushop.ssh import transfer
from gpushop.ssh.keys import KeyPair
from gpushop.store import Job, Rental, Store, accrued_cost

log = logging.getLogger("gpushop.jobs")
STATUS_POLL_S = 1.0
RECONNECT_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # ~1 minute of SSH trouble on a live host


def abort_kill_s() -> float:
    """Ctrl-C, SIGTERM or a cancel: how long stopping the job may take (the kill itself gives
    it ~2 s); an instance that does not answer by then is released anyway, its outputs unsaved
    (GPUSHOP_STOP_TIMEOUT, seconds; 20 by default)."""
    try:
        return max(1.0, float(os.environ.get("GPUSHOP_STOP_TIMEOUT") or 20.0))
    except ValueError:
        return 20.0


MAX_REBIDS = 10  # --rebid: a market that outbids a job ten times is not worth chasing


class RunnerBase:
    def __init__(
        self,
        store: Store,
        providers: dict[str, Provider],
        provisioner: Provisioner,
        keypair: KeyPair,
        output: Output,
        *,
        hooks: Hooks | None = None,
        secrets: dict[str, str] | None = None,
        owner: Owner | None = None,
        service: ServiceRun | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.provisioner = provisioner
        self.keypair = keypair
        self.out = output
        self.hooks = hooks or Hooks()
        self.secrets = secrets or {}
        self.owner = owner or Owner.me()
        self.service = service
        self.book = LogBook(Path("/dev/null"))
        self._conn: asyncssh.SSHClientConnection | None = None
        self._stop: str | None = None  # why the drive was cancelled from outside

    def cost(self, job: Job) -> float:
        return self.cost_of(self.store, job)

    @staticmethod
    def cost_of(store: Store, job: Job) -> float:
        """What the job's rentals cost so far (all of it once they are released)."""
        now = datetime.now(UTC)
        total = 0.0
        for rid in job.details.get("rentals", []):
            rental = store.get(rid)
            if rental is not None:
                total += accrued_cost(rental, rental.created_at, now, now)
        return round(total, 6)

    async def _flush_log(self) -> None:
        try:
            await self.book.flush()
        except Exception as exc:  # the store is down: the end is recorded all the same
            log.warning("the job's last log lines did not reach the store: %s", exc)

    def _rental(self, job: Job) -> Rental:
        rental = self.store.get(job.rental_id) if job.rental_id else None
        if rental is None:
            raise JobFailed(f"job {job.id} has no rental")
        return rental

    def _endpoint(self, rental: Rental) -> transfer.Endpoint:
        assert rental.ssh_host and rental.ssh_port
        current = self.store.get(rental.id) or rental
        return transfer.Endpoint(
            host=rental.ssh_host,
            port=rental.ssh_port,
            user=rental.ssh_user or "root",
            key_path=self.keypair.private_path,
            host_key=current.host_key,
        )

    async def _connection(
        self, rental: Rental, *, quick: bool = False
    ) -> asyncssh.SSHClientConnection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        current = self.store.get(rental.id) or rental
        self._conn = await connect_rental(
            self.store, current, self.keypair, delays=(0.0,) if quick else (0.0, 0.5, 1.0, 2.0)
        )
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2)

    async def _instance_alive(self, rental: Rental) -> bool:
        if not rental.instance_id:
            return False
        try:
            inst = await self.providers[rental.provider].get_instance(rental.instance_id)
        except ProviderError:
            return True  # cannot tell: assume a blip, SSH retries decide
        return inst is not None and inst.status in (InstanceStatus.RUNNING, InstanceStatus.LOADING)

    async def _release_rental(self, rental: Rental, reason: str) -> None:
        rental = self.store.get(rental.id) or rental
        if rental.state.terminal:
            return
        try:
            await release_rental(self.store, self.providers[rental.provider], rental, reason)
            self.out.message(f"released {rental.id} (instance {rental.instance_id})")
        except (ReleaseFailed, ProviderError, OSError) as exc:
            self.out.message(
                f"could not release {rental.id} ({exc}): `gpushop reconcile` will destroy it"
            )


class Noted:
    """The face's output, with every message also a note in the job's stored log (the service's
    own folders left out of it: its users see paths relative to them)."""

    def __init__(self, face: Output, book: LogBook, hidden: tuple[str, ...] = ()) -> None:
        self.face = face
        self.book = book
        self.hidden = sorted((p.rstrip("/") + "/" for p in hidden if p), key=len, reverse=True)

    def message(self, text: str) -> None:
        shown = text
        for prefix in self.hidden:
            shown = shown.replace(prefix, "")
        self.book.note(shown)
        self.face.message(text)

    def log(self, data: bytes) -> None:
        self.face.log(data)

    def progress(self, label: str) -> Callable[[int, int], None]:
        return self.face.progress(label)
