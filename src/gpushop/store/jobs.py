"""Jobs in the store: a command run on a rental, its state, owner and heartbeat lease. Mixed
into :class:`~gpushop.store.store.Store` (its methods are the store's)."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gpushop.models import JobState
from gpushop.store import events
from gpushop.store.guards import StaleState, check_no_secrets, new_rental_id
from gpushop.store.records import Job
from gpushop.store.schema import JobRow
from gpushop.store.secret_box import PREFIX as SEALED_PREFIX


class JobRecords:
    clock: Callable[[], datetime]
    _read: Callable[[], AbstractContextManager[Session]]
    _write: Callable[[], AbstractContextManager[Session]]

    # -- jobs ----------------------------------------------------------------------------------

    def new_job(
        self,
        *,
        kind: str,
        name: str,
        spec: Mapping[str, Any],
        owner_host: str,
        owner_pid: int,
        user_id: str | None = None,
        sealed_secrets: str | None = None,
        lease_s: float | None = None,
    ) -> Job:
        """A PENDING job. ``sealed_secrets``: ciphertext (store/secret_box.py), never plain."""
        check_no_secrets(dict(spec), "spec")
        if sealed_secrets is not None and not sealed_secrets.startswith(SEALED_PREFIX):
            raise ValueError("a job's secrets are stored sealed only")
        now = self.clock()
        job = Job(
            id="j" + new_rental_id()[1:],
            kind=kind,
            name=name,
            state=JobState.PENDING,
            created_at=now,
            updated_at=now,
            spec=dict(spec),
            owner_host=owner_host,
            owner_pid=owner_pid,
            heartbeat_at=now,
            lease_until=None if lease_s is None else now + timedelta(seconds=lease_s),
            user_id=user_id,
            sealed_secrets=sealed_secrets,
        )
        values = dataclasses.asdict(job)
        values["state"] = job.state.value
        with self._write() as session:
            session.add(JobRow(**values))
        return job

    def get_job(self, job_id: str) -> Job | None:
        with self._read() as session:
            row = session.get(JobRow, job_id)
            return _to_job(row) if row is not None else None

    def list_jobs(
        self, *, active_only: bool = False, user_id: str | None = None, service_only: bool = False
    ) -> builtins.list[Job]:
        """Jobs, newest first; ``user_id``: that user's; ``service_only``: submitted to the
        service (any user's)."""
        query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc())
        if user_id is not None:
            query = query.where(JobRow.user_id == user_id)
        if service_only:
            query = query.where(JobRow.user_id.is_not(None))
        if active_only:
            ended = [s.value for s in JobState if s.terminal]
            query = query.where(JobRow.state.not_in(ended))
        with self._read() as session:
            return [_to_job(row) for row in session.scalars(query)]

    def update_job(
        self, job_id: str, *, expect: Iterable[JobState] | None = None, **fields: Any
    ) -> Job:
        """Set fields (``details`` is merged); with ``expect``, only from one of those states
        (compare-and-set, else :class:`StaleState`)."""
        unknown = set(fields) - _JOB_SETTABLE
        if unknown:
            raise ValueError(f"not settable on a job: {sorted(unknown)}")
        for key in ("spec", "details", "error"):
            if fields.get(key) is not None:
                check_no_secrets(fields[key], key)
        with self._write() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise KeyError(f"no job {job_id!r}")
            if expect is not None and JobState(row.state) not in set(expect):
                raise StaleState(f"job {job_id} is {row.state}")
            before = row.state
            for key, value in fields.items():
                if key == "details":
                    value = {**(row.details or {}), **value}
                elif key == "state":
                    value = JobState(value).value
                setattr(row, key, value)
            if JobState(row.state).terminal:
                row.sealed_secrets = None  # an ended job needs its secrets no more
            row.updated_at = self.clock()
            told = events.JOB_EVENTS.get(JobState(row.state)) if row.state != before else None
            if told is not None:  # what the team hears of, in the same transaction
                events.add(
                    session,
                    row.updated_at,
                    told,
                    f"job:{job_id}",
                    user_id=row.user_id,
                    reason=row.error or row.state,
                    data={"job_id": job_id, "rental_id": row.rental_id, "exit_code": row.exit_code},
                )
            session.flush()
            return _to_job(row)

    def sealed_jobs(self) -> builtins.list[tuple[str, str]]:
        """(job id, sealed secrets) of every job that still keeps some (to re-encrypt them)."""
        query = select(JobRow.id, JobRow.sealed_secrets).where(JobRow.sealed_secrets.is_not(None))
        with self._read() as session:
            return [(job_id, str(sealed)) for job_id, sealed in session.execute(query)]

    def claim_job(
        self, job_id: str, owner_host: str, owner_pid: int, *, lease_s: float | None = None
    ) -> Job:
        now = self.clock()
        lease = None if lease_s is None else now + timedelta(seconds=lease_s)
        return self.update_job(
            job_id, owner_host=owner_host, owner_pid=owner_pid, heartbeat_at=now, lease_until=lease
        )

    def take_over_job(
        self, job: Job, owner_host: str, owner_pid: int, *, lease_s: float
    ) -> Job | None:
        """Claim a job whose owner is dead, if it is still as ``job`` saw it (compare-and-set on
        its owner and lease): exactly one of the processes that try wins; None for the others."""
        now = self.clock()
        with self._write() as session:
            result = session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job.id,
                    _same(JobRow.owner_host, job.owner_host),
                    _same(JobRow.owner_pid, job.owner_pid),
                    _same(JobRow.lease_until, job.lease_until),
                    JobRow.state == job.state.value,
                )
                .values(
                    owner_host=owner_host,
                    owner_pid=owner_pid,
                    heartbeat_at=now,
                    lease_until=now + timedelta(seconds=lease_s),
                    updated_at=now,
                )
            )
            if not getattr(result, "rowcount", 0):
                return None
            row = session.get(JobRow, job.id)
            assert row is not None
            session.flush()
            return _to_job(row)

    def heartbeat_job(
        self, job_id: str, owner_host: str, owner_pid: int, *, lease_s: float | None = None
    ) -> bool:
        """Refresh the heartbeat (and renew the lease) while we still own the job; False when
        someone took it over."""
        now = self.clock()
        values: dict[str, Any] = {"heartbeat_at": now}
        if lease_s is not None:
            values["lease_until"] = now + timedelta(seconds=lease_s)
        with self._write() as session:
            result = session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.owner_host == owner_host,
                    JobRow.owner_pid == owner_pid,
                )
                .values(**values)
            )
            return bool(getattr(result, "rowcount", 0))


def _same(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value


_JOB_SETTABLE = {f.name for f in dataclasses.fields(Job)} - {
    "id",
    "kind",
    "created_at",
    "updated_at",
}


def _to_job(row: JobRow) -> Job:
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(Job)}
    values["state"] = JobState(row.state)
    values["spec"] = dict(row.spec or {})
    values["details"] = dict(row.details or {})
    return Job(**values)
