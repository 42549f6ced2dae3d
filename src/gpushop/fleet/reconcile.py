"""``gpushop reconcile``: make the provider agree with the store. Idempotent and safe at any time;
two reconcilers never fight (a lock in the store). The decisions are in ``reconcile_plan``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpushop.errors import MoneyLimitError, ProviderError
from gpushop.fleet import labels, rebid
from gpushop.fleet.owners import Owner, owner_alive
from gpushop.fleet.reconcile_plan import Action, Kind, RentalView, plan
from gpushop.fleet.release import ReleaseFailed, destroy_verified, release_rental
from gpushop.fleet.wait import NotReady
from gpushop.models import RentalState
from gpushop.providers.base import Provider
from gpushop.store import LockBusy, Store

log = logging.getLogger("gpushop.reconcile")


@dataclass
class ReconcileReport:
    dry_run: bool
    listed: int = 0
    actions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None  # why nothing was done (another reconcile holds the lock)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "listed": self.listed,
            "actions": self.actions,
            "errors": self.errors,
            "skipped": self.skipped,
        }


async def reconcile(
    store: Store,
    providers: Mapping[str, Provider],
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    owner: Owner | None = None,
    record: bool = False,
    tell_idle: bool = True,
    taken_care_of: Callable[[RentalView], bool] | None = None,
) -> ReconcileReport:
    """``record``: note in the store that each provider was watched (``gpushop reconcile``;
    not `up`'s own pass, which protects nothing once `up` has returned), and tell
    ``reconcile.completed`` (``tell_idle=False``: only a pass that acted or erred, as the
    service's sync job does every minute). ``taken_care_of``: in-flight rentals someone else
    finishes when their owner dies (the service's takeovers): never judged abandoned here."""
    report = ReconcileReport(dry_run=dry_run)
    try:
        with store.reconcile_lock(wait=False):
            for name, provider in providers.items():
                if not provider.has_credentials:
                    continue
                await _one(
                    store, name, provider, report, now or datetime.now(UTC), owner, taken_care_of
                )
                if record and not dry_run:
                    store.record_reconcile(name, now or datetime.now(UTC))
            if record and not dry_run and (tell_idle or report.actions or report.errors):
                actions = report.as_json()["actions"]
                store.tell(
                    "reconcile.completed",
                    "reconcile",
                    f"{len(actions)} action(s), {len(report.errors)} error(s)",
                    {"actions": actions, "errors": len(report.errors)},
                )
    except LockBusy:
        report.skipped = "another reconcile is running"
    return report


async def _one(
    store: Store,
    name: str,
    provider: Provider,
    report: ReconcileReport,
    now: datetime,
    owner: Owner | None,
    taken_care_of: Callable[[RentalView], bool] | None = None,
) -> None:
    instances = await provider.list_instances(
        label_prefix=labels.deployment_prefix(store.deployment_id)
    )
    report.listed += len(instances)
    # Live rentals only: ended ones pile up for ever. An ended rental matters just when its
    # instance is still listed (an orphan), and those few are fetched by id.
    live = [st for st in RentalState if not st.terminal]
    rentals = store.list(provider=name, states=live)
    known = {r.id for r in rentals}
    for inst in instances:
        parsed = labels.parse_label(inst.label)
        if parsed and parsed[1] not in known:
            ended = store.get(parsed[1])
            if ended is not None:
                rentals.append(ended)
                known.add(ended.id)
    me = owner or Owner.me()

    def alive(r: RentalView) -> bool:
        if r.owner_host == me.host and r.owner_pid == me.pid:
            return True  # our own process (e.g. `up` reconciling first) is alive by definition
        if taken_care_of is not None and taken_care_of(r):
            return True  # not ours to judge: a takeover finishes it
        return owner_alive(
            r.owner_host, r.owner_pid, r.heartbeat_at, now, lease_until=r.lease_until
        )

    for action in plan(
        deployment_id=store.deployment_id,
        rentals=rentals,
        instances=instances,
        now=now,
        owner_alive=alive,
    ):
        entry = {
            "kind": str(action.kind),
            "provider": name,
            "instance_id": action.instance_id,
            "rental_id": action.rental_id,
            "reason": action.reason,
        }
        report.actions.append(entry)
        if report.dry_run:
            continue
        try:
            result = await _apply(store, provider, action)
            if result:
                entry["result"] = result
        except (ProviderError, ReleaseFailed, ValueError) as exc:
            entry["error"] = str(exc)
            report.errors.append(f"{action.kind} {action.rental_id or action.instance_id}: {exc}")


async def _apply(store: Store, provider: Provider, action: Action) -> str | None:
    """Do it; a line worth showing when the outcome is not plain from the action (a re-bid)."""
    rental = store.get(action.rental_id) if action.rental_id else None
    if action.kind is Kind.DESTROY_ORPHAN or rental is None:
        if action.instance_id:
            await destroy_verified(provider, action.instance_id)
            store.tell(
                "orphan.destroyed",
                f"instance:{provider.name}:{action.instance_id}",
                action.reason,
                {"provider": provider.name, "instance_id": action.instance_id},
            )
        if rental is not None:
            store.note(rental.id, f"orphan instance {action.instance_id} destroyed by reconcile")
        return None
    if action.kind is Kind.ABANDONED:
        await release_rental(
            store, provider, rental, f"reconcile: {action.reason}", final=RentalState.FAILED
        )
    elif action.kind is Kind.FINISH_RELEASE or action.kind is Kind.EXPIRED:
        await release_rental(store, provider, rental, f"reconcile: {action.reason}")
    elif action.kind is Kind.OUTBID:
        rental = store.transition(rental.id, RentalState.INTERRUPTED, "outbid")
        refused = ""
        if rebid.wanted(rental):  # `--rebid`: bid what wins now, up to the cap
            lines: list[str] = []
            try:
                rental = await rebid.rebid(store, provider, rental, progress=lines.append)
                return lines[-1] if lines else "re-bid"
            except MoneyLimitError as exc:  # nothing was sent: the bid never passes the cap
                refused = f"not re-bid: {exc}"
                store.note(rental.id, refused)
            except NotReady as exc:  # re-bid, but it did not come back: as if outbid
                refused = f"re-bid, but it did not run again: {exc}"
                store.note(rental.id, refused)
                rental = store.get(rental.id) or rental
                await release_rental(store, provider, rental, "re-bid, not ready: released")
                return f"{refused}; released"
        if action.release:
            await release_rental(store, provider, rental, "interrupted: released")
        return f"{refused}; {'released' if action.release else 'kept'}" if refused else None
    elif action.kind is Kind.GHOST:
        if action.instance_id and await provider.get_instance(action.instance_id) is not None:
            return None  # listed late, but there: not a ghost
        store.transition(rental.id, RentalState.LOST, "instance gone from the provider")
    return None
