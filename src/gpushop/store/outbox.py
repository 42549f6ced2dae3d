"""The outbox's writing side: an event enqueues, in its own transaction, one delivery per
endpoint that wants it, its body serialised once; and the commit of such a transaction wakes
the dispatchers (this process's directly; on PostgreSQL every replica's through NOTIFY)."""

from __future__ import annotations

import logging
import secrets
import string
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import event as sa_event
from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session, SessionTransaction

from gpushop.store.schema import EventRow, UserRow
from gpushop.store.schema_webhooks import WebhookDeliveryRow, WebhookEndpointRow

PENDING, DELIVERED, FAILED, HELD = "pending", "delivered", "failed", "held"
MAX_BODY = 16_000  # the spec asks for bodies under ~20 kB: larger data is cut to its ids
_ALNUM = string.ascii_letters + string.digits
# PostgreSQL: a transaction that made deliveries due NOTIFYs this channel at its commit, and
# every replica's dispatcher LISTENs on it (polling stays the fallback)
CHANNEL = "gpushop_webhooks"
_DUE = "gpushop_enqueued"  # Session.info flag: this transaction made deliveries due

log = logging.getLogger("gpushop.webhooks")

# In-process wake-ups: callables run after a commit that made deliveries due (dispatchers'
# ``wake``; thread-safe, they must not block)
_wakers: set[Callable[[], None]] = set()
_wakers_lock = threading.Lock()


def on_due(waker: Callable[[], None]) -> Callable[[], None]:
    """Call ``waker`` after each commit in this process that makes deliveries due; returns the
    function that stops it."""
    with _wakers_lock:
        _wakers.add(waker)

    def stop() -> None:
        with _wakers_lock:
            _wakers.discard(waker)

    return stop


def _wake_all() -> None:
    with _wakers_lock:
        wakers = list(_wakers)
    for waker in wakers:
        try:
            waker()
        except Exception as exc:  # a closed loop: that dispatcher is gone
            log.debug("webhook waker failed: %s", type(exc).__name__)


def made_due(session: Session) -> None:
    """Mark the transaction: its commit wakes this process's dispatchers, and (PostgreSQL)
    every replica's through NOTIFY, which the server delivers only if it commits."""
    if session.info.get(_DUE):
        return
    session.info[_DUE] = True
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_DUE, False):
        _wake_all()


@sa_event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, _previous: SessionTransaction) -> None:
    session.info.pop(_DUE, None)


def new_msg_id() -> str:
    """A ``webhook-id``: unique per event, the same on every attempt and every endpoint."""
    return "msg_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def new_endpoint_id() -> str:
    return "wh_" + "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(16)
    )


def wants(event_types: list[str], type_: str) -> bool:
    """Whether an endpoint's filter takes this type: empty takes all; ``rental.*`` a family."""
    if not event_types:
        return True
    for wanted in event_types:
        if wanted == type_ or (wanted.endswith(".*") and type_.startswith(wanted[:-1])):
            return True
    return False


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def body_of(type_: str, at: datetime, data: dict[str, Any]) -> str:
    """``{type, timestamp, data}``, compact; the exact text that is signed and sent."""
    text = orjson.dumps({"type": type_, "timestamp": iso(at), "data": data}).decode()
    if len(text) > MAX_BODY:
        ids = {k: v for k, v in data.items() if k.endswith("_id") or k in ("event_id", "subject")}
        text = orjson.dumps(
            {"type": type_, "timestamp": iso(at), "data": {**ids, "truncated": True}}
        ).decode()
    return text


def enqueue(session: Session, event: EventRow) -> int:
    """Outbox rows for the event (flushed, so it has its id), in its transaction; how many."""
    query = (
        select(WebhookEndpointRow)
        .join(UserRow, UserRow.id == WebhookEndpointRow.user_id)
        .where(UserRow.revoked_at.is_(None))
    )
    query = query.where(
        or_(WebhookEndpointRow.user_id == event.user_id, UserRow.is_admin.is_(True))
        if event.user_id is not None
        else UserRow.is_admin.is_(True)
    )
    endpoints = [e for e in session.scalars(query) if wants(list(e.event_types), event.type)]
    if not endpoints:
        return 0
    data = {"event_id": event.id, "subject": event.subject, "reason": event.reason, **event.data}
    body = body_of(event.type, event.at, data)
    msg_id = new_msg_id()
    for endpoint in endpoints:
        session.add(
            WebhookDeliveryRow(
                endpoint_id=endpoint.id,
                event_id=event.id,
                msg_id=msg_id,
                event_type=event.type,
                body=body,
                # a disabled endpoint's deliveries wait for it to be enabled again
                status=HELD if endpoint.disabled_at is not None else PENDING,
                attempts=0,
                next_attempt_at=event.at,
                created_at=event.at,
            )
        )
    if any(e.disabled_at is None for e in endpoints):
        made_due(session)
    return len(endpoints)
