"""The :class:`Store`: rentals, their event log, money, host blocklist, timings, reconcile lock."""

from __future__ import annotations

import builtins
import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from gpushop.errors import ConfigError, MoneyLimitError, StoreUnavailable
from gpushop.models import TERMINAL, RentalState, can_transition
from gpushop.store import costs, events, spending
from gpushop.store.engine import WRITE_OPTION, display_url, make_engine, normalise_url, sqlite_path
from gpushop.store.events import Events
from gpushop.store.guards import StaleState, check_no_secrets, new_rental_id
from gpushop.store.idempotency import IdempotencyKeys
from gpushop.store.job_log import JobLog
from gpushop.store.jobs import JobRecords
from gpushop.store.locks import LockBusy, advisory_key, file_lock, pg_advisory_lock, thread_lock
from gpushop.store.migrate import upgrade
from gpushop.store.records import Rental, RentalEvent, Segment
from gpushop.store.schema import (
    HostBlockRow,
    MetaRow,
    RentalEventRow,
    RentalRow,
    TimingRow,
)
from gpushop.store.spending import SpendingLimits
from gpushop.store.ticks import Ticks
from gpushop.store.users import Users
from gpushop.store.webhooks import Webhooks

__all__ = ["LockBusy", "StaleState", "Store"]

Clock = Callable[[], datetime]

# gpushop_meta key prefix: when `gpushop reconcile` last finished a pass over a provider.
RECONCILED_AT = "reconciled_at:"

_RENTAL_FIELDS = {f.name for f in dataclasses.fields(Rental)}
# Fields callers may set; the rest (id, state, label, times of record, segments) the store manages.
SETTABLE = _RENTAL_FIELDS - {
    "id",
    "provider",
    "state",
    "label",
    "created_at",
    "updated_at",
    "segments",
}


# States in which a rental holds its offer (or is about to create on it): one at a time.
CLAIMING_STATES = (
    RentalState.REQUESTED,
    RentalState.CREATING,
    RentalState.PROVISIONING,
    RentalState.READY,
    RentalState.STOPPED,
)


class OfferClaimed(Exception):
    """Another live rental of this store holds the offer, or is about to create on it."""

    def __init__(self, rival: str) -> None:
        super().__init__(f"offer claimed by rental {rival}")
        self.rival = rival


def utcnow() -> datetime:
    return datetime.now(UTC)


def _seg_to_json(seg: Segment) -> list[Any]:
    return [seg.kind, seg.start.isoformat(), seg.end.isoformat(), seg.rate]


def _seg_from_json(raw: list[Any]) -> Segment:
    return Segment(
        str(raw[0]), datetime.fromisoformat(raw[1]), datetime.fromisoformat(raw[2]), float(raw[3])
    )


def _to_rental(row: RentalRow) -> Rental:
    values = {name: getattr(row, name) for name in _RENTAL_FIELDS}
    values["state"] = RentalState(row.state)
    values["details"] = dict(row.details or {})
    values["segments"] = [_seg_from_json(s) for s in row.segments or []]
    return Rental(**values)


def _to_event(row: RentalEventRow) -> RentalEvent:
    return RentalEvent(
        id=row.id,
        rental_id=row.rental_id,
        at=row.at,
        old_state=RentalState(row.old_state) if row.old_state else None,
        new_state=RentalState(row.new_state) if row.new_state else None,
        kind=row.kind,
        reason=row.reason,
        data=dict(row.data or {}),
    )


def _column_values(fields: Mapping[str, Any], current: Rental | None) -> dict[str, Any]:
    """Validate caller-given fields and turn them into column values.

    ``details`` is merged shallowly into the current details (a key set to None stays, as None).
    """
    unknown = set(fields) - SETTABLE
    if unknown:
        raise TypeError(f"not settable rental field(s): {', '.join(sorted(unknown))}")
    values = dict(fields)
    if "details" in values:
        check_no_secrets(values["details"])
        merged = dict(current.details) if current is not None else {}
        merged.update(values["details"] or {})
        values["details"] = merged
    return values


def _event_row(
    rental_id: str,
    at: datetime,
    kind: str,
    reason: str,
    old: RentalState | None = None,
    new: RentalState | None = None,
    data: Mapping[str, Any] | None = None,
) -> RentalEventRow:
    payload = dict(data or {})
    check_no_secrets(payload, "event data")
    return RentalEventRow(
        rental_id=rental_id,
        at=at,
        old_state=old.value if old else None,
        new_state=new.value if new else None,
        kind=kind,
        reason=reason,
        data=payload,
    )


class Store(JobRecords):
    """Persistent state of gpushop. Every method is one short transaction; sync (wrap with
    ``asyncio.to_thread`` in async code). Thread-safe: sessions are per call, the pool is shared.
    """

    def __init__(self, engine: Engine, deployment_id: str, clock: Clock | None = None) -> None:
        self._engine = engine
        # Writers on SQLite begin with BEGIN IMMEDIATE (engine.py); a no-op on PostgreSQL.
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self.deployment_id = deployment_id
        self.dialect: str = engine.dialect.name
        self.url_for_display = display_url(engine.url)
        self.clock: Clock = clock or utcnow
        self._memory_lock = threading.Lock()

    @classmethod
    def open(cls, url: str | None = None, *, clock: Clock | None = None) -> Store:
        """Connect and migrate to head. ``url=None``: the SQLite file under the user data dir.

        A URL gpushop cannot use raises ConfigError, a database it cannot reach or open
        StoreUnavailable: one line each, without the URL's password."""
        try:
            parsed = normalise_url(url)
        except (ValueError, ArgumentError) as exc:
            raise ConfigError(f"GPUSHOP_DB_URL: {exc}") from None
        try:
            engine = make_engine(parsed)  # SQLite: makes the file's folder
        except OSError as exc:
            reason = f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
            raise StoreUnavailable(
                f"cannot open the store {display_url(parsed)}: {reason}"
            ) from None
        try:
            deployment_id = upgrade(engine)
        except DBAPIError as exc:
            engine.dispose()
            reason = (str(exc.orig or exc).strip().splitlines() or ["no reason given"])[0]
            if parsed.password:
                reason = reason.replace(parsed.password, "***")
            raise StoreUnavailable(
                f"cannot open the store {display_url(parsed)}: {reason}"
            ) from None
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, deployment_id, clock)

    def close(self) -> None:
        self._engine.dispose()

    def tell(
        self,
        type_: str,
        subject: str,
        reason: str,
        data: dict[str, Any] | None = None,
        *,
        user_id: str | None = None,
    ) -> None:
        """An event that is not a rental's or a job's state change (orphan.destroyed,
        reconcile.completed)."""
        check_no_secrets(data or {}, "event data")
        with self._write() as session:
            events.add(
                session, self.clock(), type_, subject, user_id=user_id, reason=reason, data=data
            )

    @property
    def feed(self) -> Events:
        """Events the team hears of: rental and job state changes (store/events.py)."""
        return Events(self)

    @property
    def job_log(self) -> JobLog:
        """Service jobs' logs (store/job_log.py)."""
        return JobLog(self)

    @property
    def ticks(self) -> Ticks:
        """Ticks of periodic jobs, each taken by one replica (store/ticks.py)."""
        return Ticks(self)

    @property
    def webhooks(self) -> Webhooks:
        """Webhook endpoints and the outbox of their deliveries (store/webhooks.py)."""
        return Webhooks(self)

    @property
    def idempotency(self) -> IdempotencyKeys:
        """Idempotency-Keys of money-spending requests (store/idempotency.py)."""
        return IdempotencyKeys(self)

    @property
    def users(self) -> Users:
        """The team service's users (store/users.py)."""
        return Users(self)

    def ping(self) -> None:
        """One round trip to the database (raises StoreUnavailable when it does not answer)."""
        try:
            with self._read() as session:
                session.execute(select(1))
        except DBAPIError as exc:
            reason = (str(exc.orig or exc).strip().splitlines() or ["no reason given"])[0]
            raise StoreUnavailable(
                f"the store {self.url_for_display} does not answer: {reason}"
            ) from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url_for_display!r}, deployment_id={self.deployment_id!r})"

    # -- sessions ------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    @staticmethod
    def _row(session: Session, rental_id: str) -> RentalRow:
        row = session.get(RentalRow, rental_id)
        if row is None:
            raise KeyError(f"no rental {rental_id!r}")
        return row

    # -- rentals -------------------------------------------------------------------------------

    def label_for(self, rental_id: str) -> str:
        return f"gpushop-{self.deployment_id}-{rental_id}"

    def new_rental(
        self,
        *,
        provider: str,
        max_duration_s: float,
        owner_host: str,
        owner_pid: int,
        exclusive: bool = False,
        limits: SpendingLimits | None = None,
        **fields: Any,
    ) -> Rental:
        """Write a REQUESTED rental (and its first event) before anything is rented: write-ahead.

        ``exclusive``: the rental claims its ``offer_id``; if another rental in
        :data:`CLAIMING_STATES` holds it, raise :class:`OfferClaimed` and write nothing. The check
        and the write are one serialised transaction, so of two racing claims exactly one wins
        (whatever the clocks of their hosts say).

        ``limits``: the budget and quotas the rental must fit (store/spending.py), checked in the
        same serialised transaction: of concurrent rentals a limit allows one of, one is written."""
        if max_duration_s <= 0:
            raise ValueError("max_duration_s must be positive")
        values = _column_values(fields, None)
        now = self.clock()
        for _ in range(3):  # 50 random bits: a collision is a freak, but cheap to survive
            rid = new_rental_id()
            rental = Rental(
                id=rid,
                provider=provider,
                state=RentalState.REQUESTED,
                label=self.label_for(rid),
                max_duration_s=float(max_duration_s),
                created_at=now,
                updated_at=now,
                **{"owner_host": owner_host, "owner_pid": owner_pid, "heartbeat_at": now, **values},
            )
            row_values = dataclasses.asdict(rental)
            row_values["state"] = rental.state.value
            row_values["segments"] = []
            try:
                with self._refusals_told(), self._write() as session:
                    if limits is not None:
                        self._serialise(session, "spend")
                        spending.check(
                            session, _to_rental, limits, rental.price_per_hour or 0.0, now
                        )
                    if exclusive and rental.offer_id:
                        rival = self._offer_holder(session, provider, rental.offer_id)
                        if rival is not None:
                            raise OfferClaimed(rival)
                    session.add(RentalRow(**row_values))
                    session.flush()  # the rental row first: the event refers to it
                    session.add(_event_row(rid, now, "transition", "requested", None, rental.state))
            except IntegrityError:
                if self.get(rid) is None:
                    raise  # not an id collision: a real error
                continue
            return rental
        raise RuntimeError("could not allocate a unique rental id")

    @contextmanager
    def _refusals_told(self) -> Iterator[None]:
        """A rental a monthly budget refused is told of (budget.exceeded), in a transaction of
        its own: the refused one is rolled back."""
        try:
            yield
        except MoneyLimitError as exc:
            subject = getattr(exc, "budget_subject", None)
            if subject is not None:
                self.tell(
                    "budget.exceeded",
                    subject,
                    str(exc),
                    user_id=getattr(exc, "budget_user_id", None),
                )
            raise

    def _serialise(self, session: Session, what: str) -> None:
        """Until this transaction ends, no other of this deployment serialised on ``what`` runs.
        PostgreSQL's READ COMMITTED would let two check-then-insert transactions both pass;
        SQLite writers are serialised already (BEGIN IMMEDIATE)."""
        if self.dialect == "postgresql":
            key = advisory_key(f"{what}:{self.deployment_id}")
            session.execute(select(func.pg_advisory_xact_lock(key)))

    def _offer_holder(self, session: Session, provider: str, offer_id: str) -> str | None:
        self._serialise(session, f"offer:{provider}:{offer_id}")
        holder = select(RentalRow.id).where(
            RentalRow.provider == provider,
            RentalRow.offer_id == offer_id,
            RentalRow.state.in_([s.value for s in CLAIMING_STATES]),
        )
        return session.scalars(holder).first()

    def get(self, rental_id: str) -> Rental | None:
        with self._read() as session:
            row = session.get(RentalRow, rental_id)
            return _to_rental(row) if row is not None else None

    def get_many(self, rental_ids: Iterable[str]) -> dict[str, Rental]:
        """The rentals of these ids that exist, in one query."""
        wanted = sorted(set(rental_ids))
        if not wanted:
            return {}
        with self._read() as session:
            rows = session.scalars(select(RentalRow).where(RentalRow.id.in_(wanted)))
            return {row.id: _to_rental(row) for row in rows}

    def by_label(self, label: str) -> Rental | None:
        with self._read() as session:
            row = session.scalars(select(RentalRow).where(RentalRow.label == label)).first()
            return _to_rental(row) if row is not None else None

    def list(
        self,
        *,
        states: Iterable[RentalState] | None = None,
        provider: str | None = None,
        user_id: str | None = None,
    ) -> builtins.list[Rental]:
        """Rentals, newest first (``user_id``: one user's of the team service)."""
        query = select(RentalRow).order_by(RentalRow.created_at.desc(), RentalRow.id.desc())
        if states is not None:
            query = query.where(RentalRow.state.in_([RentalState(s).value for s in states]))
        if provider is not None:
            query = query.where(RentalRow.provider == provider)
        if user_id is not None:
            query = query.where(RentalRow.user_id == user_id)
        with self._read() as session:
            return [_to_rental(row) for row in session.scalars(query)]

    def transition(
        self,
        rental_id: str,
        new: RentalState,
        reason: str,
        *,
        expect: RentalState | Iterable[RentalState] | None = None,
        **fields: Any,
    ) -> Rental:
        """Move the rental to ``new`` (validated by ``can_transition``), set ``fields``, log it.

        Atomic and compare-and-set: the update only applies if the state is still the one read.
        ``expect``: the state(s) the caller based its decision on; if the rental is elsewhere by now
        (another process moved it), raise :class:`StaleState`. Without ``expect`` the transition
        is checked against the state current when it applies. An illegal transition raises
        ``ValueError`` naming both states. The store sets ``ready_at`` (first time) and
        ``running_since`` on READY, ``stopped_at`` on STOPPED/INTERRUPTED, ``ended_at`` on a
        terminal state, unless ``fields`` gives them; it closes the billing segment in progress.
        """
        new = RentalState(new)
        expected = (
            None
            if expect is None
            else frozenset(
                [RentalState(expect)] if isinstance(expect, str) else map(RentalState, expect)
            )
        )
        for _ in range(5):
            with self._write() as session:
                row = self._row(session, rental_id)
                current = _to_rental(row)
                old = current.state
                if expected is not None and old not in expected:
                    want = "/".join(sorted(s.value for s in expected))
                    raise StaleState(
                        f"rental {rental_id} is {old.value}, not {want}: changed by someone else"
                    )
                if not can_transition(old, new):
                    raise ValueError(
                        f"rental {rental_id}: transition {old.value} -> {new.value} is not allowed"
                    )
                now = self.clock()
                managed: dict[str, Any] = {"state": new.value, "updated_at": now}
                managed["segments"] = [_seg_to_json(s) for s in costs.close_segment(current, now)]
                if new is RentalState.READY:
                    managed["running_since"] = now
                    if current.ready_at is None:
                        managed["ready_at"] = now
                elif new in (RentalState.STOPPED, RentalState.INTERRUPTED):
                    managed["stopped_at"] = now
                if new in TERMINAL:
                    managed["ended_at"] = now
                values = {**managed, **_column_values(fields, current)}
                won = session.execute(
                    update(RentalRow)
                    .where(RentalRow.id == rental_id, RentalRow.state == old.value)
                    .values(**values)
                    .returning(RentalRow.id)
                    .execution_options(synchronize_session=False)
                ).scalar_one_or_none()
                if won is None:
                    # PostgreSQL: a concurrent transaction changed the state after our read
                    if expected is not None:
                        raise StaleState(f"rental {rental_id} left {old.value} meanwhile")
                    continue  # re-read and re-check against the new state
                data = {k: v for k, v in fields.items() if k in ("error", "instance_id")}
                session.add(_event_row(rental_id, now, "transition", reason, old, new, data))
                told = events.rental_event_type(new, reason)
                if told is not None:  # what the team hears of, in the same transaction
                    events.add(
                        session,
                        now,
                        told,
                        f"rental:{rental_id}",
                        user_id=current.user_id,
                        reason=reason,
                        data={"rental_id": rental_id, "instance_id": current.instance_id}
                        | ({"error": fields["error"]} if fields.get("error") else {}),
                    )
                session.flush()
                session.refresh(row)  # the UPDATE went around the ORM: reload the row
                return _to_rental(row)
        raise StaleState(f"rental {rental_id} keeps changing under us")

    def update(self, rental_id: str, *, note: str | None = None, **fields: Any) -> Rental:
        """Set fields without a state change; logs an event only when ``note`` is given."""
        with self._write() as session:
            row = self._row(session, rental_id)
            current = _to_rental(row)
            now = self.clock()
            for name, value in _column_values(fields, current).items():
                setattr(row, name, value)
            row.updated_at = now
            if note is not None:
                data = {k: v for k, v in fields.items() if k != "details"}
                session.add(_event_row(rental_id, now, "note", note, data=_jsonable(data)))
            session.flush()
            return _to_rental(row)

    def note(self, rental_id: str, reason: str, kind: str = "note", **data: Any) -> None:
        with self._write() as session:
            self._row(session, rental_id)
            session.add(_event_row(rental_id, self.clock(), kind, reason, data=data))

    def events(self, rental_id: str) -> builtins.list[RentalEvent]:
        """The rental's log, oldest first."""
        query = (
            select(RentalEventRow)
            .where(RentalEventRow.rental_id == rental_id)
            .order_by(RentalEventRow.id)
        )
        with self._read() as session:
            return [_to_event(row) for row in session.scalars(query)]

    def heartbeat(
        self,
        rental_ids: Iterable[str],
        owner_host: str,
        owner_pid: int,
        *,
        lease_s: float | None = None,
    ) -> set[str]:
        """Refresh the heartbeat (and renew the lease for ``lease_s``) of the given rentals that
        this owner still owns; returns those.

        A rental claimed by someone else meanwhile is left alone (and absent from the result).
        """
        ids = list(rental_ids)
        if not ids:
            return set()
        now = self.clock()
        values: dict[str, Any] = {"heartbeat_at": now}
        if lease_s is not None:
            values["lease_until"] = now + timedelta(seconds=lease_s)
        with self._write() as session:
            done = session.scalars(
                update(RentalRow)
                .where(
                    RentalRow.id.in_(ids),
                    RentalRow.owner_host == owner_host,
                    RentalRow.owner_pid == owner_pid,
                )
                .values(**values)
                .returning(RentalRow.id)
                .execution_options(synchronize_session=False)
            )
            return set(done)

    def take_over(
        self, rental: Rental, owner_host: str, owner_pid: int, *, lease_s: float
    ) -> Rental | None:
        """Claim a rental whose owner is dead, if it is still as ``rental`` shows it (the same
        owner, heartbeat and state): of replicas racing to take it over, exactly one wins; the
        others get None."""
        now = self.clock()
        with self._write() as session:
            won = session.execute(
                update(RentalRow)
                .where(
                    RentalRow.id == rental.id,
                    RentalRow.state == rental.state.value,
                    _same(RentalRow.owner_host, rental.owner_host),
                    _same(RentalRow.owner_pid, rental.owner_pid),
                    _same(RentalRow.heartbeat_at, rental.heartbeat_at),
                )
                .values(
                    owner_host=owner_host,
                    owner_pid=owner_pid,
                    heartbeat_at=now,
                    lease_until=now + timedelta(seconds=lease_s),
                    updated_at=now,
                )
                .returning(RentalRow.id)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if won is None:
                return None
            previous = f"{rental.owner_host}:{rental.owner_pid}"
            session.add(
                _event_row(
                    rental.id,
                    now,
                    "claim",
                    f"taken over by {owner_host}:{owner_pid} from {previous} (lease expired)",
                    data={"previous": {"host": rental.owner_host, "pid": rental.owner_pid}},
                )
            )
            row = self._row(session, rental.id)
            session.refresh(row)
            return _to_rental(row)

    def claim(
        self, rental_id: str, owner_host: str, owner_pid: int, *, lease_s: float | None = None
    ) -> Rental:
        """Take over ownership (attach, reconcile): owner and heartbeat, with a "claim" event."""
        with self._write() as session:
            row = self._row(session, rental_id)
            now = self.clock()
            previous = {"host": row.owner_host, "pid": row.owner_pid}
            row.owner_host, row.owner_pid, row.heartbeat_at = owner_host, owner_pid, now
            # the previous owner's lease is not ours: without one of our own, the pid and the
            # heartbeat's age tell whether we are alive (fleet/owners.py)
            row.lease_until = None if lease_s is None else now + timedelta(seconds=lease_s)
            row.updated_at = now
            session.add(
                _event_row(
                    rental_id,
                    now,
                    "claim",
                    f"claimed by {owner_host}:{owner_pid}",
                    data={"previous": previous},
                )
            )
            session.flush()
            return _to_rental(row)

    # -- reconcile lock ------------------------------------------------------------------------

    def reconcile_lock(self, *, wait: bool = False) -> AbstractContextManager[Connection | None]:
        """Exclusive across processes (and threads) for this store; freed when the holder exits
        or dies. ``wait=False``: raise :class:`LockBusy` at once when it is held elsewhere.

        SQLite: ``flock`` on ``<db file>.reconcile.lock`` (see locks.py for why not BEGIN
        IMMEDIATE); PostgreSQL: a session advisory lock whose key derives from the deployment id,
        so stores in other schemas of the same database do not exclude each other, on a session
        with TCP keepalives (locks.LOCK_KEEPALIVES) so that a vanished holder loses it within a
        minute; the context then gives that session's connection.
        """
        what = "the reconcile lock"
        if self.dialect == "postgresql":
            key = advisory_key(f"reconcile:{self.deployment_id}")
            return pg_advisory_lock(self._engine, key, wait=wait, what=what)
        path = sqlite_path(self._engine.url)
        if path is None:
            return thread_lock(self._memory_lock, wait=wait, what=what)
        return file_lock(path.with_name(path.name + ".reconcile.lock"), wait=wait, what=what)

    def record_reconcile(self, provider: str, at: datetime) -> None:
        """A ``gpushop reconcile`` finished a pass over ``provider`` at ``at``: what tells `up`
        and `ps` whether rentals without an on-instance watchdog are being watched."""
        key = f"{RECONCILED_AT}{provider}"
        with self._write() as session:
            row = session.get(MetaRow, key)
            if row is None:
                session.add(MetaRow(key=key, value=at.astimezone(UTC).isoformat()))
            else:
                row.value = at.astimezone(UTC).isoformat()

    def last_reconcile(self, provider: str) -> datetime | None:
        with self._read() as session:
            row = session.get(MetaRow, f"{RECONCILED_AT}{provider}")
        return None if row is None else datetime.fromisoformat(row.value)

    # -- money ---------------------------------------------------------------------------------

    def spent_between(self, start: datetime, end: datetime, now: datetime) -> float:
        """USD accrued by all rentals within ``[start, end)``, as known at ``now`` (costs.py)."""
        query = select(RentalRow).where(
            RentalRow.created_at < end,
            or_(RentalRow.ended_at.is_(None), RentalRow.ended_at >= start),
        )
        with self._read() as session:
            rentals = [_to_rental(row) for row in session.scalars(query)]
        return sum(costs.accrued_cost(r, start, end, now) for r in rentals)

    def committed(self, now: datetime) -> float:
        """USD the active rentals may still cost until their deadlines (price x remaining)."""
        active = self.list(states=[s for s in RentalState if s not in TERMINAL])
        return sum(costs.committed_cost(r, now) for r in active)

    # -- host blocklist ------------------------------------------------------------------------

    def block_host(self, provider: str, machine_id: str, reason: str, until: datetime) -> None:
        """Leave this host out of searches until ``until`` (a later call replaces the entry)."""
        values = {
            "provider": provider,
            "machine_id": machine_id,
            "reason": reason,
            "created_at": self.clock(),
            "until": until,
        }
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = insert(HostBlockRow).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[HostBlockRow.provider, HostBlockRow.machine_id],
            set_={"reason": reason, "created_at": values["created_at"], "until": until},
        )
        with self._write() as session:
            session.execute(stmt)

    def blocked_hosts(self, provider: str, now: datetime) -> set[str]:
        query = select(HostBlockRow.machine_id).where(
            HostBlockRow.provider == provider, HostBlockRow.until > now
        )
        with self._read() as session:
            return set(session.scalars(query))

    # -- timings -------------------------------------------------------------------------------

    def record_timing(
        self, rental_id: str | None, phase: str, seconds: float, *, job_id: str | None = None
    ) -> None:
        with self._write() as session:
            session.add(
                TimingRow(
                    rental_id=rental_id,
                    job_id=job_id,
                    phase=phase,
                    seconds=seconds,
                    at=self.clock(),
                )
            )

    def timings(
        self, *, rental_id: str | None = None, phase: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Recorded timings, oldest first, with the rental's GPU, image and provider:
        ``{"rental_id", "job_id", "phase", "seconds", "at", "gpu_name", "image", "provider"}``."""
        query = (
            select(TimingRow, RentalRow.gpu_name, RentalRow.image, RentalRow.provider)
            .outerjoin(RentalRow, RentalRow.id == TimingRow.rental_id)
            .order_by(TimingRow.id)
        )
        if rental_id is not None:
            query = query.where(TimingRow.rental_id == rental_id)
        if phase is not None:
            query = query.where(TimingRow.phase == phase)
        with self._read() as session:
            return [
                {
                    "rental_id": t.rental_id,
                    "job_id": t.job_id,
                    "phase": t.phase,
                    "seconds": t.seconds,
                    "at": t.at,
                    "gpu_name": gpu,
                    "image": image,
                    "provider": provider,
                }
                for t, gpu, image, provider in session.execute(query)
            ]


def _same(column: Any, value: Any) -> Any:
    """``column = value``, where a NULL equals a NULL (compare-and-set on what was read)."""
    return column.is_(None) if value is None else column == value


def _jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    """Event data from update fields: datetimes as ISO text, everything else as given."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}
