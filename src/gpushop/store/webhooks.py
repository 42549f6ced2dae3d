"""Webhook endpoints and the outbox of their deliveries (the writing side: store/outbox.py).

An event written in a transaction (store/events.py) enqueues, in that same transaction, one
delivery per endpoint that wants it: the endpoint's owner's events, or every event for an
admin's endpoint, filtered by its event types. The body is serialised once here; the dispatcher
(service/webhook_dispatch.py) claims due deliveries, signs and sends those exact bytes, and
records each attempt. A claim is a short lease (``locked_until``): a replica that dies mid-send
loses it and another sends again, with the same ``webhook-id`` (at least once).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, or_, select, update

from gpushop.store.outbox import (
    CHANNEL,
    DELIVERED,
    FAILED,
    HELD,
    PENDING,
    body_of,
    enqueue,
    iso,
    made_due,
    new_endpoint_id,
    new_msg_id,
    on_due,
    wants,
)
from gpushop.store.schema_webhooks import WebhookAttemptRow, WebhookDeliveryRow, WebhookEndpointRow

__all__ = [
    "CHANNEL",
    "DELIVERED",
    "FAILED",
    "HELD",
    "PENDING",
    "Attempt",
    "Delivery",
    "Endpoint",
    "Webhooks",
    "body_of",
    "enqueue",
    "iso",
    "on_due",
    "wants",
]

if TYPE_CHECKING:
    from gpushop.store.store import Store


@dataclass(frozen=True)
class Endpoint:
    id: str
    user_id: str
    url: str
    event_types: list[str]
    description: str
    secret: str  # sealed (store/secret_box.py)
    previous_secret: str | None
    previous_until: datetime | None
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


@dataclass(frozen=True)
class Delivery:
    id: int
    endpoint_id: str
    event_id: int | None
    msg_id: str
    event_type: str
    body: str
    status: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None


@dataclass(frozen=True)
class Attempt:
    id: int
    delivery_id: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float
    replica: str


def _endpoint(row: WebhookEndpointRow) -> Endpoint:
    return Endpoint(
        row.id,
        row.user_id,
        row.url,
        list(row.event_types or []),
        row.description,
        row.sealed_secret,
        row.sealed_previous,
        row.previous_until,
        row.created_at,
        row.disabled_at,
        row.disabled_reason,
    )


def _delivery(row: WebhookDeliveryRow) -> Delivery:
    return Delivery(
        row.id,
        row.endpoint_id,
        row.event_id,
        row.msg_id,
        row.event_type,
        row.body,
        row.status,
        row.attempts,
        row.next_attempt_at,
        row.created_at,
        row.delivered_at,
        row.last_status,
        row.last_error,
    )


class Webhooks:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- endpoints -----------------------------------------------------------------------------

    def add_endpoint(
        self, user_id: str, url: str, event_types: list[str], description: str, sealed: str
    ) -> Endpoint:
        row = WebhookEndpointRow(
            id=new_endpoint_id(),
            user_id=user_id,
            url=url,
            event_types=list(event_types),
            description=description,
            sealed_secret=sealed,
            sealed_previous=None,
            previous_until=None,
            created_at=self.store.clock(),
            disabled_at=None,
            disabled_reason=None,
        )
        with self.store._write() as session:
            session.add(row)
        return _endpoint(row)

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        with self.store._read() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            return None if row is None else _endpoint(row)

    def endpoints(self, user_id: str | None = None) -> builtins.list[Endpoint]:
        query = select(WebhookEndpointRow).order_by(WebhookEndpointRow.created_at)
        if user_id is not None:
            query = query.where(WebhookEndpointRow.user_id == user_id)
        with self.store._read() as session:
            return [_endpoint(r) for r in session.scalars(query)]

    def delete_endpoint(self, endpoint_id: str) -> None:
        """The endpoint goes; its undelivered deliveries end as failed (the log stays)."""
        with self.store._write() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise KeyError(endpoint_id)
            session.delete(row)
            session.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.endpoint_id == endpoint_id,
                    WebhookDeliveryRow.status.in_([PENDING, HELD]),
                )
                .values(status=FAILED, last_error="endpoint deleted", locked_until=None)
            )

    def reseal(
        self, endpoint_id: str, sealed: str, previous: str | None, until: datetime | None
    ) -> None:
        """A new secret (rotation: the old one signs too until ``until``), or the same secret
        under a new GPUSHOP_SECRET_KEY."""
        with self.store._write() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise KeyError(endpoint_id)
            row.sealed_secret, row.sealed_previous, row.previous_until = sealed, previous, until

    def disable(self, endpoint_id: str, reason: str) -> bool:
        """Disable it (410, or consistent failure) and tell its owner (``webhook.disabled``, to
        their other endpoints and the event feed); its pending deliveries are held. False when
        it was disabled already."""
        from gpushop.store import events

        with self.store._write() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            if row is None or row.disabled_at is not None:
                return False
            now = self.store.clock()
            row.disabled_at, row.disabled_reason = now, reason[:1000]
            session.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.endpoint_id == endpoint_id,
                    WebhookDeliveryRow.status == PENDING,
                )
                .values(status=HELD, locked_until=None)
            )
            session.flush()
            events.add(
                session,
                now,
                "webhook.disabled",
                f"webhook:{endpoint_id}",
                user_id=row.user_id,
                reason=reason,
                data={"endpoint_id": endpoint_id, "url": row.url},
            )
            return True

    def enable(self, endpoint_id: str) -> int:
        """Enable it again; the deliveries held meanwhile are sent now. How many."""
        with self.store._write() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise KeyError(endpoint_id)
            now = self.store.clock()
            row.disabled_at, row.disabled_reason = None, None
            held = session.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.endpoint_id == endpoint_id,
                    WebhookDeliveryRow.status == HELD,
                )
                .values(status=PENDING, next_attempt_at=now, locked_until=None)
            )
            resumed = int(getattr(held, "rowcount", 0) or 0)
            if resumed:
                made_due(session)
            return resumed

    # -- deliveries ----------------------------------------------------------------------------

    def ping(self, endpoint_id: str) -> Delivery:
        """A ``webhook.ping`` delivery to this endpoint alone, sent at once (even if disabled:
        a ping is how one checks a fixed receiver before enabling it again)."""
        now = self.store.clock()
        row = WebhookDeliveryRow(
            endpoint_id=endpoint_id,
            event_id=None,
            msg_id=new_msg_id(),
            event_type="webhook.ping",
            body=body_of("webhook.ping", now, {"endpoint_id": endpoint_id}),
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        with self.store._write() as session:
            if session.get(WebhookEndpointRow, endpoint_id) is None:
                raise KeyError(endpoint_id)
            session.add(row)
            session.flush()
            made_due(session)
            return _delivery(row)

    def claim(
        self, replica: str, *, limit: int = 50, lock_s: float = 60.0
    ) -> builtins.list[Delivery]:
        """Due deliveries for this replica to send, each claimed for ``lock_s``. On PostgreSQL
        concurrent claimers skip each other's rows (FOR UPDATE SKIP LOCKED): never the same
        attempt twice; on SQLite writers are serialised (BEGIN IMMEDIATE), one dispatcher."""
        now = self.store.clock()
        due = (
            select(WebhookDeliveryRow.id)
            .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookDeliveryRow.endpoint_id)
            .where(
                WebhookDeliveryRow.status == PENDING,
                WebhookDeliveryRow.next_attempt_at <= now,
                or_(
                    WebhookDeliveryRow.locked_until.is_(None),
                    WebhookDeliveryRow.locked_until < now,
                ),
            )
            .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDeliveryRow)
        )
        with self.store._write() as session:
            ids = list(session.scalars(due))
            if not ids:
                return []
            rows = session.scalars(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id.in_(ids))
                .values(locked_until=now + timedelta(seconds=lock_s), locked_by=replica)
                .returning(WebhookDeliveryRow)
                .execution_options(synchronize_session=False)
            ).all()
            return sorted((_delivery(r) for r in rows), key=lambda d: d.id)

    def record(
        self,
        delivery_id: int,
        *,
        replica: str,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        outcome: str,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """One attempt's result. ``outcome``: ``delivered``, ``pending`` (retry at
        ``next_attempt_at``) or ``failed`` (no attempt left)."""
        now = self.store.clock()
        with self.store._write() as session:
            session.add(
                WebhookAttemptRow(
                    delivery_id=delivery_id,
                    at=now,
                    status_code=status_code,
                    error=error[:1000] if error else None,
                    duration_ms=duration_ms,
                    replica=replica,
                )
            )
            values: dict[str, Any] = {
                "attempts": WebhookDeliveryRow.attempts + 1,
                "last_status": status_code,
                "last_error": error[:1000] if error else None,
                "locked_until": None,
                "locked_by": None,
                "status": outcome,
            }
            if outcome == PENDING:
                # held (its endpoint was disabled) or failed (deleted) while this attempt was on
                # its way: it stays so
                values["status"] = case(
                    (WebhookDeliveryRow.status.in_([HELD, FAILED]), WebhookDeliveryRow.status),
                    else_=PENDING,
                )
            if outcome == DELIVERED:
                values["delivered_at"] = now
            elif outcome == PENDING:
                values["next_attempt_at"] = next_attempt_at or now
            session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id == delivery_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def delivery(self, delivery_id: int) -> Delivery | None:
        with self.store._read() as session:
            row = session.get(WebhookDeliveryRow, delivery_id)
            return None if row is None else _delivery(row)

    def deliveries(
        self,
        endpoint_id: str,
        *,
        status: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> builtins.list[Delivery]:
        """The endpoint's deliveries, newest first (``before``: a delivery id, the cursor)."""
        query = (
            select(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.endpoint_id == endpoint_id)
            .order_by(WebhookDeliveryRow.id.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(WebhookDeliveryRow.status == status)
        if before is not None:
            query = query.where(WebhookDeliveryRow.id < before)
        with self.store._read() as session:
            return [_delivery(r) for r in session.scalars(query)]

    def attempts(self, delivery_id: int) -> builtins.list[Attempt]:
        query = (
            select(WebhookAttemptRow)
            .where(WebhookAttemptRow.delivery_id == delivery_id)
            .order_by(WebhookAttemptRow.id)
        )
        with self.store._read() as session:
            return [
                Attempt(r.id, r.delivery_id, r.at, r.status_code, r.error, r.duration_ms, r.replica)
                for r in session.scalars(query)
            ]

    def redeliver(self, delivery_id: int) -> Delivery:
        """Send it again now, with the same ``webhook-id`` (a manual replay)."""
        with self.store._write() as session:
            row = session.get(WebhookDeliveryRow, delivery_id)
            if row is None:
                raise KeyError(delivery_id)
            row.status, row.next_attempt_at, row.locked_until = PENDING, self.store.clock(), None
            session.flush()
            made_due(session)
            return _delivery(row)

    def delivered_since(self, endpoint_id: str, since: datetime) -> bool:
        """Whether anything reached the endpoint since ``since`` (consistent failure: nothing)."""
        query = select(func.count()).where(
            WebhookDeliveryRow.endpoint_id == endpoint_id,
            WebhookDeliveryRow.status == DELIVERED,
            WebhookDeliveryRow.delivered_at >= since,
        )
        with self.store._read() as session:
            return bool(session.scalar(query))

    def pending(self) -> int:
        query = select(func.count()).where(WebhookDeliveryRow.status == PENDING)
        with self.store._read() as session:
            return int(session.scalar(query) or 0)

    def due_at(self) -> datetime | None:
        """When a claim can next take a pending delivery: its next attempt's time, or when its
        current claim lapses (a dispatcher sleeps until then at most)."""
        row = WebhookDeliveryRow
        claimable = case(
            (row.locked_until > row.next_attempt_at, row.locked_until), else_=row.next_attempt_at
        )
        query = (
            select(func.min(claimable))
            .join(WebhookEndpointRow, WebhookEndpointRow.id == row.endpoint_id)
            .where(row.status == PENDING)
        )
        with self.store._read() as session:
            due: datetime | None = session.scalar(query)
            return due

    def listen_url(self) -> str | None:
        """A libpq URL of the store's PostgreSQL for a LISTEN connection (it holds the password:
        never show it); None on SQLite."""
        url = self.store._engine.url
        if url.get_backend_name() != "postgresql":
            return None
        return url.set(drivername="postgresql").render_as_string(hide_password=False)
