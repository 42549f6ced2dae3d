"""Events (`noun.verb`, past tense) of rentals and jobs, written in the transaction of the state
change they tell of, and read back in order from a cursor."""

from __future__ import annotations

import os
import socket
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpushop.models import JobState, RentalState
from gpushop.store import outbox
from gpushop.store.schema import EventRow

if TYPE_CHECKING:
    from gpushop.store.store import Store

RENTAL_EVENTS = {
    RentalState.READY: "rental.ready",
    RentalState.STOPPED: "rental.stopped",
    RentalState.RELEASED: "rental.released",
    RentalState.FAILED: "rental.failed",
    RentalState.LOST: "rental.lost",
    RentalState.INTERRUPTED: "rental.interrupted",
}
JOB_EVENTS = {
    JobState.RUNNING: "job.started",
    JobState.SUCCEEDED: "job.succeeded",
    JobState.FAILED: "job.failed",
    JobState.TIMED_OUT: "job.timed_out",
    JobState.CANCELLED: "job.cancelled",
}
# Every type an endpoint may ask for (store/webhooks.py filters on them)
KNOWN_TYPES = frozenset(
    {
        *RENTAL_EVENTS.values(),
        "rental.expired",
        *JOB_EVENTS.values(),
        "orphan.destroyed",
        "reconcile.completed",
        "budget.warning",
        "budget.exceeded",
        "webhook.disabled",
        "webhook.ping",
    }
)
EXPIRY = "max duration reached"  # reconcile's reason for releasing an overdue rental


# Who acts in this context: set by the service for a request (and the work it starts), e.g.
# "user:alice"; unset, the change is this process's own (a CLI, a replica's background work).
ACTING: ContextVar[str | None] = ContextVar("gpushop_acting", default=None)


def actor() -> str:
    """Who makes a change: the user a request acts for, else this process (host:pid)."""
    return ACTING.get() or f"{socket.gethostname()}:{os.getpid()}"


def rental_event_type(new: RentalState, reason: str) -> str | None:
    if new is RentalState.RELEASED and EXPIRY in reason:
        return "rental.expired"
    return RENTAL_EVENTS.get(new)


def add(
    session: Session,
    at: datetime,
    type_: str,
    subject: str,
    *,
    user_id: str | None,
    reason: str,
    data: dict[str, Any] | None = None,
) -> None:
    row = EventRow(
        at=at,
        type=type_,
        subject=subject,
        user_id=user_id,
        actor=actor(),
        reason=reason[:2000],
        data=dict(data or {}),
    )
    session.add(row)
    session.flush()  # its id, for the outbox rows written beside it
    outbox.enqueue(session, row)


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    type: str
    subject: str
    user_id: str | None
    actor: str
    reason: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "type": self.type,
            "subject": self.subject,
            "user_id": self.user_id,
            "actor": self.actor,
            "reason": self.reason,
            "data": self.data,
        }


class Events:
    def __init__(self, store: Store) -> None:
        self.store = store

    def after(
        self,
        cursor: int = 0,
        *,
        types: list[str] | None = None,
        subject: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Events after ``cursor`` (an event id), oldest first."""
        query = select(EventRow).where(EventRow.id > cursor).order_by(EventRow.id).limit(limit)
        if types:
            query = query.where(EventRow.type.in_(types))
        if subject is not None:
            query = query.where(EventRow.subject == subject)
        if user_id is not None:
            query = query.where(EventRow.user_id == user_id)
        with self.store._read() as session:
            return [
                Event(r.id, r.at, r.type, r.subject, r.user_id, r.actor, r.reason, dict(r.data))
                for r in session.scalars(query)
            ]
