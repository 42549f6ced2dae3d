"""What the rental commands do (`up`, `ps`, `down`, `reconcile`, `stop`, `start`, `extend`, `ssh`,
`costs`), for every face: each function takes the settings and plain arguments and returns data
the face renders.

Faces import this module inside their commands; what only some commands need (provisioning,
reconcile, SSH) is imported here inside the functions that use it, so a cold `gpushop ps` stays
fast.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from gpushop.config import Settings
from gpushop.errors import GpushopError, UsageError
from gpushop.fleet.enforcement import (
    has_watchdog,
    only_reconcile_note,
    overdue_warning,
    watched_lately,
)
from gpushop.fleet.money import month_window
from gpushop.fleet.owners import Owner
from gpushop.fleet.release import ReleaseFailed, release_rental
from gpushop.models import Feature, RentalState
from gpushop.shop import Shop
from gpushop.store import Rental, Store, accrued_cost

if TYPE_CHECKING:
    from gpushop.fleet.extend import Extension
    from gpushop.fleet.provision import UpOptions
    from gpushop.ssh.keys import KeyPair

Notify = Callable[[str], None]  # one line for the user, shown while the work goes on
PowerState = Literal["stopped", "running"]


# --- who bounds a rental's max duration -------------------------------------------------------


@dataclass(frozen=True)
class Unguarded:
    """Live rentals on a provider that no on-instance watchdog stops: only `reconcile` does."""

    provider: str
    rental_ids: list[str]
    note: str  # says so, and how to run reconcile
    overdue: str | None  # a warning when no reconcile has watched the provider lately


def _unguarded(
    provider: str, rental_ids: list[str], last_reconcile: datetime | None, now: datetime
) -> Unguarded:
    watched = watched_lately(last_reconcile, now)
    overdue = None if watched else overdue_warning(provider, last_reconcile, now)
    return Unguarded(provider, rental_ids, only_reconcile_note(provider), overdue)


def _known_rental(store: Store, rental_id: str) -> Rental:
    rental = store.get(rental_id)
    if rental is None:
        raise UsageError(f"no rental {rental_id!r} (see `gpushop ps --all`)")
    return rental


# --- up ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rented:
    rental: Rental
    summary: dict[str, Any]  # the rental as JSON
    unguarded: Unguarded | None  # None: its own watchdog stops it


async def rent(
    settings: Settings, opts: UpOptions, *, provider: str | None, progress: Notify
) -> Rented:
    """Reconcile first (what an earlier run left behind), then rent what ``opts`` asks for;
    ``provider``: as `Shop` takes it."""
    from gpushop.fleet.provision import summary
    from gpushop.fleet.reconcile import reconcile

    async with Shop(settings, provider=provider) as shop:
        report = await reconcile(shop.store, shop.provider_map())
        for entry in report.actions:
            progress(f"reconcile: {entry['kind']} {entry['rental_id'] or entry['instance_id']}")
        rental = await shop.provisioner().up(opts, progress)
        last_reconcile = shop.store.last_reconcile(rental.provider)
    unguarded = None
    if not has_watchdog(rental):
        unguarded = _unguarded(rental.provider, [rental.id], last_reconcile, datetime.now(UTC))
    return Rented(rental, summary(rental), unguarded)


# --- ps ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    rentals: list[Rental]  # newest first
    rows: list[dict[str, Any]]  # each rental as JSON, with its cost so far
    unguarded: list[Unguarded]  # by provider name
    now: datetime  # when the costs were counted


def list_rentals(settings: Settings, *, include_ended: bool) -> Listing:
    store = Store.open(settings.db_url)
    try:
        live = None if include_ended else [st for st in RentalState if not st.terminal]
        rentals = store.list(states=live)
        # when `reconcile` last watched each provider that has rentals with no watchdog
        last_reconcile = {
            r.provider: store.last_reconcile(r.provider)
            for r in rentals
            if not r.state.terminal and not has_watchdog(r)
        }
    finally:
        store.close()
    now = datetime.now(UTC)
    unguarded = [
        _unguarded(name, _live_ids(rentals, name), last, now)
        for name, last in sorted(last_reconcile.items())
    ]
    return Listing(rentals, [_row(r, now) for r in rentals], unguarded, now)


def _live_ids(rentals: list[Rental], provider: str) -> list[str]:
    return [r.id for r in rentals if r.provider == provider and not r.state.terminal]


def _row(rental: Rental, now: datetime) -> dict[str, Any]:
    r = rental
    return {
        "rental_id": r.id,
        "provider": r.provider,
        "instance_id": r.instance_id,
        "state": str(r.state),
        "gpu_name": r.gpu_name,
        "num_gpus": r.num_gpus,
        "price_per_hour": r.price_per_hour,
        "cost_usd": round(accrued_cost(r, r.created_at, now, now), 4),
        "created_at": r.created_at.isoformat(),
        "deadline": r.deadline.isoformat(),
        "ssh_host": r.ssh_host,
        "ssh_port": r.ssh_port,
        "label": r.label,
        # false: no on-instance watchdog, only `gpushop reconcile` ends it in time
        "watchdog": has_watchdog(r),
    }


# --- down -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Released:
    rental_id: str
    state: str
    error: str | None = None  # the release failed: the instance may still bill

    def as_json(self) -> dict[str, str]:
        out = {"rental_id": self.rental_id, "state": self.state}
        if self.error is not None:
            out["error"] = self.error
        return out


async def release(settings: Settings, rental_ids: list[str], *, every_live: bool) -> list[Released]:
    """Release the named rentals (and ``every_live`` one): destroy, then verify they are gone.
    Every name is looked up before anything is released."""
    async with Shop(settings) as shop:
        targets = [r for r in shop.store.list() if not r.state.terminal] if every_live else []
        targets += [_known_rental(shop.store, rid) for rid in rental_ids]
        me = Owner.me()
        return [await _release_one(shop, rental, me) for rental in targets]


async def _release_one(shop: Shop, rental: Rental, me: Owner) -> Released:
    if rental.state.terminal:
        return Released(rental.id, str(rental.state))
    rental = shop.store.claim(rental.id, me.host, me.pid)
    provider = shop.provider(rental.provider)
    try:
        done = await release_rental(shop.store, provider, rental, "released by the user")
    except ReleaseFailed as exc:
        return Released(rental.id, "releasing", str(exc))
    except ValueError:  # released meanwhile by someone else (reconcile's expiry): done all the same
        current = shop.store.get(rental.id)
        if current is None or not current.state.terminal:
            raise
        return Released(current.id, str(current.state))
    return Released(done.id, str(done.state))


# --- reconcile --------------------------------------------------------------------------------


async def reconcile_passes(
    settings: Settings, *, dry_run: bool, every_s: float | None
) -> AsyncIterator[dict[str, Any]]:
    """Each reconcile pass's report (as JSON), recorded as watching its providers; ``every_s``:
    pass again that long after each report is taken, forever; None: pass once."""
    from gpushop.fleet.reconcile import reconcile

    async with Shop(settings) as shop:
        while True:
            report = await reconcile(shop.store, shop.provider_map(), dry_run=dry_run, record=True)
            yield report.as_json()
            if every_s is None:
                return
            await asyncio.sleep(every_s)


# --- stop / start -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerChange:
    done: bool  # False: the provider queued it (a start while the host's GPUs are busy)
    gpu_released: bool  # the provider gives a stopped VM's GPU back (see below)


async def set_power(settings: Settings, rental_id: str, state: PowerState) -> PowerChange:
    """Stop a rental's instance or start it again, and record it."""
    async with Shop(settings) as shop:
        rental = shop.store.get(rental_id)
        if rental is None or rental.instance_id is None:
            raise UsageError(f"no rental {rental_id!r} with an instance")
        provider = shop.provider(rental.provider)
        # a provider whose stopped VM keeps billing the full rate unless its GPU is
        # released (TensorDock) releases it: a restart may then find no GPU free
        gpu_released = provider.supports(Feature.STOP_RELEASES_GPU)
        done = await provider.set_state(rental.instance_id, state)
        target = RentalState.STOPPED if state == "stopped" else RentalState.PROVISIONING
        if rental.state is not target:
            shop.store.transition(rental.id, target, f"user {state}")
    return PowerChange(done, gpu_released)


# --- extend -----------------------------------------------------------------------------------


async def extend(settings: Settings, rental_id: str, max_duration_s: float) -> Extension:
    """Give a live rental a new max duration (from its start): the limit reconcile enforces and
    its watchdog's deadline."""
    from gpushop.fleet.extend import extend_rental

    async with Shop(settings) as shop:
        rental = _known_rental(shop.store, rental_id)
        provider = shop.provider(rental.provider)
        return await extend_rental(shop.store, provider, shop.keypair(), rental, max_duration_s)


# --- ssh --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshAccess:
    """A rental that has an SSH address, and our key pair to reach it with."""

    rental: Rental
    keypair: KeyPair


def ssh_access(settings: Settings, rental_id: str) -> SshAccess:
    store = Store.open(settings.db_url)
    try:
        rental = store.get(rental_id)
    finally:
        store.close()
    if rental is None or not rental.ssh_host or not rental.ssh_port:
        raise UsageError(f"rental {rental_id!r} has no SSH address (is it ready?)")
    return SshAccess(rental, Shop(settings).keypair())


async def run_over_ssh(access: SshAccess, command: list[str]) -> tuple[int, str, str]:
    """Run ``command`` (its words joined with spaces, as OpenSSH does) for up to a day:
    its exit code, stdout and stderr."""
    from gpushop.ssh import client as ssh

    rental = access.rental
    target = ssh.Target(rental.ssh_host or "", rental.ssh_port or 22, rental.ssh_user or "root")
    conn = await ssh.connect(
        target,
        access.keypair.load_private(),
        known_host_key=rental.host_key,
        record_host_key=lambda _: None,
    )
    async with conn:
        result = await ssh.run(conn, " ".join(command), timeout=24 * 3600)
    return result


def openssh_argv(access: SshAccess) -> list[str]:
    """The OpenSSH command line of an interactive session (its binary first). It trusts only the
    host key the rental recorded, written to a known-hosts file of its own (any key at first
    contact when none was recorded)."""
    binary = shutil.which("ssh")
    if binary is None:
        raise GpushopError(
            "interactive SSH needs the OpenSSH client (apt-get install openssh-client)"
        )
    rental = access.rental
    with tempfile.NamedTemporaryFile("w", delete=False, prefix="gpushop-known-") as known:
        if rental.host_key:
            port = rental.ssh_port
            host = rental.ssh_host if port == 22 else f"[{rental.ssh_host}]:{port}"
            known.write(f"{host} {rental.host_key}\n")
    return [
        binary,
        "-i",
        str(access.keypair.private_path),
        "-p",
        str(rental.ssh_port),
        "-o",
        f"UserKnownHostsFile={known.name}",
        "-o",
        "StrictHostKeyChecking=" + ("yes" if rental.host_key else "accept-new"),
        f"{rental.ssh_user or 'root'}@{rental.ssh_host}",
    ]


# --- costs ------------------------------------------------------------------------------------


def _cost_window(now: datetime, days: int | None) -> tuple[datetime, datetime]:
    """[start, end): this UTC calendar month, or the last ``days`` UTC days up to ``now``."""
    if days is None:
        return month_window(now)
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, now


async def cost_report(
    settings: Settings,
    *,
    days: int | None,
    now: datetime,
    warn: Notify,
    shop: Shop | None = None,
) -> dict[str, Any]:
    """What the rentals cost this month, or in the last ``days`` days (as JSON), by day, GPU
    model and provider, against what each provider says it billed for our instances (``warn``:
    one that cannot say). ``shop``: one to use (and keep open), else one of its own."""
    if shop is None:
        async with Shop(settings) as own:
            return await cost_report(settings, days=days, now=now, warn=warn, shop=own)
    from gpushop.fleet.costs_report import add_charges, summarize

    start, end = _cost_window(now, days)
    rentals = await asyncio.to_thread(shop.store.list)
    report = summarize(rentals, start, min(end, now), now)
    for name, provider in shop.provider_map().items():
        if not provider.has_credentials or not provider.supports(Feature.CHARGES):
            continue
        try:
            charges = await provider.charges(start.timestamp(), now.timestamp())
        except GpushopError as exc:
            warn(f"cannot compare with {provider.display_name}'s charges: {exc}")
            continue
        ours = {r.instance_id for r in rentals if r.provider == name and r.instance_id}
        add_charges(report, name, charges, ours)
    return report.as_json()
