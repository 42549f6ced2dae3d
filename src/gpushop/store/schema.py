"""The store's tables (SQLAlchemy 2.0 typed ORM). The migrations in ``migrations/versions`` create
exactly these; ``tests/store`` checks that the two agree.

No column holds a secret (API keys, private keys, tokens): see the package docstring.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so that later migrations (batch mode on SQLite) can refer to them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC on every backend, returned tz-aware (UTC).

    Naive storage keeps SQLite's text comparison and PostgreSQL's ``timestamp`` ordering identical.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store: pass a tz-aware (UTC) datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    # why: DeclarativeBase reads this class attribute; it is never mutated
    type_annotation_map = {  # noqa: RUF012
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class MetaRow(Base):
    """Key/value facts about this store (``deployment_id``, ``created_at``)."""

    __tablename__ = "gpushop_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RentalRow(Base):
    __tablename__ = "rentals"
    __table_args__ = (Index("ix_rentals_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), index=True)
    label: Mapped[str] = mapped_column(String(64), unique=True)
    offer_id: Mapped[str | None] = mapped_column(String(128))
    instance_id: Mapped[str | None] = mapped_column(String(128), index=True)
    gpu_name: Mapped[str | None] = mapped_column(String(64))
    num_gpus: Mapped[int | None] = mapped_column(Integer)
    price_per_hour: Mapped[float | None] = mapped_column(Float)
    disk_gb: Mapped[float | None] = mapped_column(Float)
    image: Mapped[str | None] = mapped_column(Text)
    template_hash: Mapped[str | None] = mapped_column(String(128))
    interruptible: Mapped[bool] = mapped_column(default=False)
    bid_price: Mapped[float | None] = mapped_column(Float)
    keep_interrupted: Mapped[bool] = mapped_column(default=False)
    max_duration_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    ready_at: Mapped[datetime | None]
    running_since: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    ssh_host: Mapped[str | None] = mapped_column(String(255))
    ssh_port: Mapped[int | None] = mapped_column(Integer)
    ssh_user: Mapped[str | None] = mapped_column(String(64))
    host_key: Mapped[str | None] = mapped_column(Text)  # the server's PUBLIC host key
    machine_id: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # closed billing segments: [[kind, start iso, end iso, usd per hour], ...] (costs.py)
    segments: Mapped[list[Any]] = mapped_column(JSON, default=list)


class RentalEventRow(Base):
    __tablename__ = "rental_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rental_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("rentals.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    old_state: Mapped[str | None] = mapped_column(String(16))
    new_state: Mapped[str | None] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class HostBlockRow(Base):
    """A host that lied about its GPU/CUDA: left out of searches until ``until``."""

    __tablename__ = "host_blocks"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    machine_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    until: Mapped[datetime] = mapped_column(index=True)


class TimingRow(Base):
    __tablename__ = "timings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rental_id: Mapped[str | None] = mapped_column(String(32), index=True)
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    phase: Mapped[str] = mapped_column(String(64), index=True)
    seconds: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime]


class JobRow(Base):
    """A command run on a rental (or on several, when one was lost and the job resumed)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # "run", "flux-lora"
    name: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    rental_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # what to run: command, transfers, env NAMES (values are never stored), limits (jobs/spec.py)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    remote_dir: Mapped[str | None] = mapped_column(Text)
    log_offset: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # a job submitted to the service: its user, and the secrets it needs (HF_TOKEN) encrypted
    # with GPUSHOP_SECRET_KEY (store/secret_box.py) so that a takeover can send them again
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    sealed_secrets: Mapped[str | None] = mapped_column(Text)


class JobLogRow(Base):
    """A service job's log, in the order it was written, so that any replica serves it and a
    takeover goes on from where it ended: ``out`` pieces are the job's own output (``offset``:
    where the piece starts in it), ``note`` lines are gpushop's ("rented ...", "uploaded ...").
    ``(job_id, seq)`` is the key: one writer at a time, a stale one fails its insert."""

    __tablename__ = "job_log"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(8))  # "out" or "note"
    offset: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[datetime]


class UserRow(Base):
    """A member of the team the service serves. Their token is never stored: only its sha256
    ``digest`` (tokens are long and random, so a plain hash is enough) and a ``hint`` (its
    first characters) to tell tokens apart in a listing."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    # quotas (None: no limit of the user's own; the account-wide budget still holds)
    max_rentals: Mapped[int | None] = mapped_column(Integer)
    max_usd_per_hour: Mapped[float | None] = mapped_column(Float)
    monthly_budget_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class IdempotencyRow(Base):
    """A POST that spends money, by its ``Idempotency-Key``: a retry gets the first one's rental."""

    __tablename__ = "idempotency"

    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # chosen by the client, not a secret: it only makes a retry find the first answer
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # the same key for another body: 422
    rental_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]


class SshIdentityRow(Base):
    """A user's PUBLIC SSH key (one OpenSSH line), installed on their rentals so that they log
    in with their own key; the service's own key stays the service's."""

    __tablename__ = "ssh_identities"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    public_line: Mapped[str] = mapped_column(Text)  # "ssh-ed25519 AAAA... comment"
    fingerprint: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class EventRow(Base):
    """One state change the team hears of (a rental ready, a job failed...), written in the
    transaction of the change; ``id`` orders them and is the listing's cursor."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(64), index=True)  # noun.verb, past tense
    subject: Mapped[str] = mapped_column(String(80), index=True)  # "rental:r123", "job:j45"
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(128))  # who made the change (host:pid, a user)
    reason: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
