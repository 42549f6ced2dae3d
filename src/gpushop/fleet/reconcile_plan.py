"""What reconcile must do, decided from what the store and the provider say. Pure: no I/O.

Rules (issue: rentals, section 5):
- An instance with our deployment's label and no rental, or whose rental already ended
  (released, failed, lost), is an **orphan**: destroy it.
- An in-flight rental (requested, creating, provisioning, releasing) whose owner is gone is
  **abandoned**: destroy its instance (found by label) and mark it failed. A live owner's rental
  is never touched.
- An active rental (ready, stopped, interrupted) whose instance is gone is a **ghost**: marked
  lost once the provider confirms and the grace has passed.
- An active rental past its max duration is **released**.
- An interruptible instance whose states all say stopped was **outbid**: interrupted, then
  released unless the user asked to keep it.
- An instance under the label of a live rental that has another instance is an **orphan** too
  (a duplicate create): destroyed, the rental's own instance kept.
- Instances without our deployment's label are never touched.
- A provisioning rental handed over by ``up --no-wait`` (detached) is treated as active.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from gpushop.fleet import labels
from gpushop.models import Instance, InstanceStatus, RentalState

GHOST_GRACE = timedelta(minutes=2)
ACTIVE = frozenset({RentalState.READY, RentalState.STOPPED, RentalState.INTERRUPTED})


class RentalView(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def state(self) -> RentalState: ...
    @property
    def instance_id(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def deadline(self) -> datetime: ...
    @property
    def keep_interrupted(self) -> bool: ...
    @property
    def owner_host(self) -> str | None: ...
    @property
    def owner_pid(self) -> int | None: ...
    @property
    def heartbeat_at(self) -> datetime | None: ...
    @property
    def lease_until(self) -> datetime | None: ...
    @property
    def details(self) -> dict[str, Any]: ...
    @property
    def user_id(self) -> str | None: ...


def detached(rental: RentalView) -> bool:
    """``up --no-wait`` hands its provisioning rental over: no owner, yet not abandoned."""
    return rental.state is RentalState.PROVISIONING and bool(rental.details.get("detached"))


class Kind(enum.StrEnum):
    DESTROY_ORPHAN = "destroy_orphan"  # no live rental: destroy the instance only
    ABANDONED = "abandoned"  # destroy (if any) and mark the rental failed
    EXPIRED = "expired"  # release: max duration reached
    OUTBID = "outbid"  # mark interrupted (and release unless kept)
    GHOST = "ghost"  # confirm with the provider, then mark lost
    FINISH_RELEASE = "finish_release"  # a releasing rental whose owner died: destroy + released


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    reason: str
    instance_id: str | None = None
    rental_id: str | None = None
    release: bool = True  # for OUTBID: whether to release after marking interrupted


def outbid(instance: Instance) -> bool:
    data = instance.provider_data
    return (
        bool(data.get("is_bid"))
        and instance.status is InstanceStatus.STOPPED
        and (data.get("intended_status") == "stopped" and data.get("cur_state") == "stopped")
    )


def plan(
    *,
    deployment_id: str,
    rentals: Iterable[RentalView],
    instances: Sequence[Instance],
    now: datetime,
    owner_alive: Callable[[RentalView], bool],
    ghost_grace: timedelta = GHOST_GRACE,
) -> list[Action]:
    """The actions, in a stable order. ``instances`` is the provider's listing (any labels)."""
    by_id = {r.id: r for r in rentals}
    actions: list[Action] = []
    seen_rentals: set[str] = set()
    for inst in instances:
        parsed = labels.parse_label(inst.label)
        if parsed is None or parsed[0] != deployment_id:
            continue  # not ours: never touched
        rental_id = parsed[1]
        seen_rentals.add(rental_id)
        rental = by_id.get(rental_id)
        iid = inst.instance_id
        if rental is None:
            actions.append(Action(Kind.DESTROY_ORPHAN, "no rental for this label", iid, rental_id))
        elif rental.state.terminal:
            actions.append(
                Action(Kind.DESTROY_ORPHAN, f"rental already {rental.state}", iid, rental_id)
            )
        elif rental.state.in_flight and not detached(rental):
            if owner_alive(rental):
                continue
            kind = Kind.FINISH_RELEASE if rental.state is RentalState.RELEASING else Kind.ABANDONED
            actions.append(
                Action(kind, f"owner of the {rental.state} rental is gone", iid, rental.id)
            )
        elif rental.instance_id and iid != rental.instance_id:
            # a second create under one label (a create retried after its sender died, whose
            # first copy landed late): the rental has its own instance, this one is nobody's
            actions.append(
                Action(
                    Kind.DESTROY_ORPHAN,
                    f"a second instance under the label of rental {rental.id}"
                    f" (whose instance is {rental.instance_id})",
                    iid,
                    None,
                )
            )
        elif rental.deadline <= now:
            actions.append(Action(Kind.EXPIRED, "max duration reached", iid, rental.id))
        elif outbid(inst) and rental.state is not RentalState.INTERRUPTED:
            actions.append(
                Action(Kind.OUTBID, "outbid", iid, rental.id, release=not rental.keep_interrupted)
            )
        elif rental.state is RentalState.INTERRUPTED and not rental.keep_interrupted:
            actions.append(Action(Kind.EXPIRED, "interrupted and not kept", iid, rental.id))
    for rental in by_id.values():
        if rental.id in seen_rentals or rental.state.terminal:
            continue
        if rental.state in ACTIVE or detached(rental):
            if now - rental.updated_at >= ghost_grace:
                actions.append(
                    Action(Kind.GHOST, "instance not listed", rental.instance_id, rental.id)
                )
        elif rental.state.in_flight and not owner_alive(rental):
            kind = Kind.FINISH_RELEASE if rental.state is RentalState.RELEASING else Kind.ABANDONED
            # no labelled instance listed: nothing to destroy unless the create left one behind
            # under an id we know (destroy is idempotent, so try it)
            actions.append(
                Action(
                    kind,
                    f"owner of the {rental.state} rental is gone",
                    rental.instance_id,
                    rental.id,
                )
            )
    return actions
