"""The service's tables for webhooks (endpoints, the outbox of deliveries, their attempts) and
its background work (ticks of periodic jobs). Same Base as ``schema.py``.

``secret`` columns hold ciphertext only (store/secret_box.py): a copy of the store without
``GPUSHOP_SECRET_KEY`` reveals no webhook secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gpushop.store.schema import Base


class WebhookEndpointRow(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(Text)
    # event types it wants ("rental.ready", "job.*"); empty: every type its owner may see
    event_types: Mapped[list[Any]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    sealed_secret: Mapped[str] = mapped_column(Text)  # encrypted whsec_ secret
    # after a rotation the old secret signs too, until previous_until (consumers switch over)
    sealed_previous: Mapped[str | None] = mapped_column(Text)
    previous_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class WebhookDeliveryRow(Base):
    """The outbox: one row per (event, endpoint), written in the event's transaction; the body is
    serialised once, at enqueue time, and those exact bytes are signed and sent on every attempt.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(String(32), index=True)
    event_id: Mapped[int | None] = mapped_column(Integer)  # None: a test ping
    msg_id: Mapped[str] = mapped_column(String(64))  # webhook-id: the same on every attempt
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending|delivered|failed|held
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]  # a claim: lapses if its replica dies mid-send
    locked_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class WebhookAttemptRow(Base):
    """One HTTP attempt of a delivery: the delivery log users read."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    replica: Mapped[str] = mapped_column(String(128))


class TickRow(Base):
    """A periodic job's tick, taken by exactly one replica: the primary key is the proof."""

    __tablename__ = "ticks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tick: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    replica: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
