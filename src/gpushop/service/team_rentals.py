"""Rentals over HTTP, for the team service: a user's create becomes a rental provisioned in the
background of this process (the answer leaves once the rental is written ahead, before any
create call), each user sees their own rentals (an admin sees everyone's), and an
Idempotency-Key makes a retried create answer with the first one's rental instead of renting
twice, also when both arrive at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import shlex
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpushop.config import Settings, looks_like_credential, names_a_secret
from gpushop.errors import GpushopError, NotFound, UsageError
from gpushop.fleet.owners import Owner
from gpushop.fleet.provision import UpOptions
from gpushop.models import RentalState, SortKey
from gpushop.offer_flags import build_query
from gpushop.service import rentals
from gpushop.shop import Shop
from gpushop.store import Rental, Store, User, accrued_cost
from gpushop.units import parse_duration

log = logging.getLogger("gpushop.service")
IDEMPOTENCY_WAIT_S = 120.0  # a twin request waits this long for the first one's rental


class IdempotencyConflict(GpushopError):
    """The key was used with another request body, or its first request failed."""


@dataclass(frozen=True)
class RentalRequest:
    """What `gpushop up` takes, as the API's JSON body."""

    gpu: list[str] | None = None
    min_vram: float | None = None
    num_gpus: int | None = None
    max_price: float | None = None
    min_reliability: float = 0.98
    disk: float = 32.0
    min_cuda: float | None = None
    country: list[str] | None = None
    interruptible: bool = False
    unverified: bool = False
    sort: str = "value"
    provider: str | None = None
    offer: str | None = None
    image: str | None = None
    template: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    max_duration: str = "4h"
    attempts: int = 3
    ready_timeout: str = "15m"
    watchdog_grace: str = "10m"

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def up_options(cfg: Settings, req: RentalRequest, user: User) -> UpOptions:
    """The request as the provisioner takes it, with the same rules as `gpushop up`."""
    if req.image and req.template:
        raise UsageError("image, template: give one, not both")
    if not 1 <= req.attempts <= 20:
        raise UsageError("attempts: between 1 and 20")
    for name, value in req.env.items():
        if names_a_secret(name) or looks_like_credential(value):
            # the create call's env shows in every instance listing: secrets stay off it
            raise UsageError(f"env.{name}: looks like a secret; it would show in the listing")
    try:
        sort = SortKey(req.sort)
    except ValueError:
        raise UsageError(f"sort: one of {', '.join(k.value for k in SortKey)}") from None
    query = build_query(
        gpu=req.gpu,
        min_vram=req.min_vram,
        num_gpus=req.num_gpus,
        max_price=req.max_price,
        min_reliability=req.min_reliability,
        disk=req.disk,
        min_cuda=req.min_cuda,
        country=req.country,
        interruptible=req.interruptible,
        unverified=req.unverified,
        settings_max_price=cfg.vastai_max_bid_per_hour,
    )
    max_duration_s = parse_duration(req.max_duration)
    if not math.isfinite(max_duration_s) or max_duration_s <= 0:
        raise UsageError("max_duration: a positive duration such as 2h")
    return UpOptions(
        query=query,
        sort=sort,
        offer_id=req.offer,
        image=req.image or (None if req.template else UpOptions.image),
        template_hash=req.template,
        env=dict(req.env),
        ports=list(req.ports),
        max_duration_s=max_duration_s,
        max_attempts=req.attempts,
        ready_timeout_s=parse_duration(req.ready_timeout),
        watchdog_grace_s=None
        if req.watchdog_grace == "off"
        else parse_duration(req.watchdog_grace),
        budget_usd=cfg.gpushop_budget_usd,
        price_cap=req.max_price if req.max_price is not None else cfg.vastai_max_bid_per_hour,
        user=user,
    )


class Provisioning:
    """Creates run in tasks of this process; the answer waits only for the write-ahead rental.
    The rentals are held under this replica's lease: if it dies, another replica takes them over
    (service/replica.py)."""

    def __init__(self, cfg: Settings, owner: Owner | None = None) -> None:
        self.cfg = cfg
        # the replica's lease holder: if this process dies, another replica takes its rentals over
        self.owner = owner or Owner.me(cfg.gpushop_lease_seconds)
        self.tasks: set[asyncio.Task[None]] = set()

    async def create(
        self, store: Store, user: User, req: RentalRequest, key: str | None
    ) -> tuple[Rental, bool]:
        """(the rental, True when this request created it; False: a retry of ``key``)."""
        opts = up_options(self.cfg, req, user)
        if key is not None:
            found = await asyncio.to_thread(
                store.idempotency.reserve, user.id, key, req.fingerprint()
            )
            if not found.first:
                return await self._first_ones(store, user, key, req), False
        try:
            rental = await self._start(req, opts, user)
        except BaseException:
            if key is not None:
                await asyncio.to_thread(store.idempotency.release, user.id, key)
            raise
        if key is not None:
            await asyncio.to_thread(store.idempotency.attach, user.id, key, rental.id)
        return rental, True

    async def _start(self, req: RentalRequest, opts: UpOptions, user: User) -> Rental:
        loop = asyncio.get_running_loop()
        written: asyncio.Future[Rental] = loop.create_future()
        latest: list[Rental] = []

        async def work() -> None:
            try:
                async with Shop(self.cfg, provider=req.provider) as shop:

                    def claimed(rental: Rental) -> None:
                        # the answer names the first rental; one that replaces it (its host
                        # failed, the next offer is tried) is named on it, for the client
                        if latest:
                            shop.store.update(latest[-1].id, details={"replaced_by": rental.id})
                        latest.append(rental)
                        if not written.done():
                            written.set_result(rental)

                    error: str | None = None
                    try:
                        provisioner = shop.provisioner(self.owner)
                        rental = await provisioner.up(opts, lambda line: None, claimed)
                        lines = [line for _, line, _ in shop.store.users.identities(user.id)]
                        if lines and rental.ssh_host:
                            await install_ssh_keys(self.cfg, rental.id, lines)
                    except Exception as exc:
                        error = str(exc)
                        raise
                    finally:
                        await asyncio.to_thread(_ended, shop.store, latest, error)
            except Exception as exc:
                if not written.done():
                    written.set_exception(exc)
                else:  # after the answer: the rental's own state and error say what happened
                    log.warning("provisioning ended in failure: %s", exc)

        task = asyncio.create_task(work())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return await asyncio.shield(written)

    async def _first_ones(self, store: Store, user: User, key: str, req: RentalRequest) -> Rental:
        deadline = asyncio.get_running_loop().time() + IDEMPOTENCY_WAIT_S
        while True:
            found = await asyncio.to_thread(store.idempotency.get, user.id, key)
            if found is None:
                raise IdempotencyConflict(
                    "the first request with this Idempotency-Key failed; send it again"
                )
            if found.request_hash != req.fingerprint():
                raise IdempotencyConflict("this Idempotency-Key was used for another request")
            if found.rental_id is not None:
                rental = await asyncio.to_thread(store.get, found.rental_id)
                if rental is not None:
                    return rental
            if asyncio.get_running_loop().time() > deadline:
                raise IdempotencyConflict("the first request with this key is still running")
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        """Cancel what is still provisioning: each cancelled create releases what it made."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks))


def _ended(store: Store, rentals: list[Rental], error: str | None) -> None:
    """Say on each rental a create made that its provisioning is over (a client following one
    stops waiting for a replacement), and how."""
    for rental in rentals:
        store.update(rental.id, details={"provisioning_ended": True, "provisioning_error": error})


def visible(store: Store, user: User, rental_id: str) -> Rental:
    """The rental if the user may see it (theirs, or any for an admin): 404 otherwise, never
    saying whether it exists."""
    rental = store.get(rental_id)
    if rental is None or not (user.is_admin or rental.user_id == user.id):
        raise NotFound(f"no rental {rental_id!r}")
    return rental


def view(rental: Rental, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    return {
        "rental_id": rental.id,
        "user_id": rental.user_id,
        "state": rental.state.value,
        "provider": rental.provider,
        "instance_id": rental.instance_id,
        "offer_id": rental.offer_id,
        "gpu_name": rental.gpu_name,
        "num_gpus": rental.num_gpus,
        "price_per_hour": rental.price_per_hour,
        "cost_usd": round(accrued_cost(rental, rental.created_at, now, now), 6),
        "ssh": (
            {"host": rental.ssh_host, "port": rental.ssh_port, "user": rental.ssh_user}
            if rental.ssh_host
            else None
        ),
        "created_at": rental.created_at.isoformat(),
        "deadline": rental.deadline.isoformat(),
        "error": rental.error,
        # the host failed and the next offer is being rented as this other rental
        "replaced_by": rental.details.get("replaced_by"),
        # the create that made it is over: no replacement will come (and why, if it failed)
        "provisioning_ended": bool(rental.details.get("provisioning_ended")),
        "provisioning_error": rental.details.get("provisioning_error"),
    }


def listing(
    store: Store, user: User, *, everyone: bool, include_ended: bool
) -> list[dict[str, Any]]:
    """The user's rentals, newest first (an admin's ``everyone``: all users')."""
    states = None if include_ended else [s for s in RentalState if not s.terminal]
    now = datetime.now(UTC)
    mine = None if everyone and user.is_admin else user.id
    return [view(r, now) for r in store.list(states=states, user_id=mine)]


async def release(cfg: Settings, store: Store, user: User, rental_id: str) -> dict[str, Any]:
    await asyncio.to_thread(visible, store, user, rental_id)
    [done] = await rentals.release(cfg, [rental_id], every_live=False)
    return done.as_json()


async def set_power(
    cfg: Settings, store: Store, user: User, rental_id: str, state: rentals.PowerState
) -> dict[str, Any]:
    await asyncio.to_thread(visible, store, user, rental_id)
    change = await rentals.set_power(cfg, rental_id, state)
    rental = await asyncio.to_thread(store.get, rental_id)
    assert rental is not None
    return {**view(rental), "done": change.done, "gpu_released": change.gpu_released}


async def install_ssh_keys(cfg: Settings, rental_id: str, lines: list[str]) -> None:
    """Append the user's public keys to the instance's ``~/.ssh/authorized_keys`` (each once),
    over SSH with the service's key: the same on every provider, and the user logs in with
    their own key while the service's stays the service's."""
    quoted = " ".join(shlex.quote(line) for line in lines)
    script = (
        "umask 077; mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && "
        f'for k in {quoted}; do grep -qxF "$k" ~/.ssh/authorized_keys || '
        "printf '%s\\n' \"$k\" >> ~/.ssh/authorized_keys; done"
    )
    access = await asyncio.to_thread(rentals.ssh_access, cfg, rental_id)
    code, _, err = await rentals.run_over_ssh(access, ["sh", "-c", shlex.quote(script)])
    if code != 0:
        raise GpushopError(f"installing the user's SSH keys failed: {err.strip()[:200]}")
