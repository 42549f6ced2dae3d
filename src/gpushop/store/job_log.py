"""A service job's log in the store (table ``job_log``): what its command wrote (``out``, with
each piece's byte offset) and gpushop's notes on it (``note``), numbered by ``seq``. Any replica
reads it (GET /v1/jobs/{id}/log, the SSE stream resumes after a ``seq``), and a replica that
takes the job over rebuilds its local copy from it."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gpushop.store.guards import StaleState
from gpushop.store.schema import JobLogRow

if TYPE_CHECKING:
    from gpushop.store.store import Store

OUT = "out"
NOTE = "note"
MAX_ROW = 256 * 1024
READ_ROWS = 16  # rows of up to MAX_ROW: a reader holds at most 4 MiB of a log at once


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    kind: str
    offset: int  # out: where the piece starts in the job's output; note: the output's size then
    data: bytes
    at: datetime


class JobLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def append(self, job_id: str, pieces: Sequence[tuple[str, bytes]]) -> int:
        """Add pieces in order (consecutive ``out`` pieces become one row); the last seq. One
        writer at a time is the lease's business (the runner is fenced); should two race
        anyway, the loser's insert fails on the key (StaleState) rather than reuse a seq."""
        merged: list[tuple[str, bytes]] = []
        for kind, data in pieces:
            if kind not in (OUT, NOTE):
                raise ValueError(f"log kind {kind!r}")
            if merged and kind == OUT and merged[-1][0] == OUT:
                merged[-1] = (OUT, merged[-1][1] + data)
            elif data:
                merged.append((kind, data))
        # rows of at most MAX_ROW bytes: what a reader holds at once stays bounded
        merged = [
            (kind, data[i : i + MAX_ROW])
            for kind, data in merged
            for i in range(0, len(data), MAX_ROW if kind == OUT else max(1, len(data)))
        ]
        try:
            with self.store._write() as session:
                seq, size = self._ends(session, job_id)
                now = self.store.clock()
                for kind, data in merged:
                    seq += 1
                    session.add(
                        JobLogRow(job_id=job_id, seq=seq, kind=kind, offset=size, data=data, at=now)
                    )
                    if kind == OUT:
                        size += len(data)
                session.flush()
        except IntegrityError:
            raise StaleState(f"job {job_id}'s log was written by another process") from None
        return seq

    def size(self, job_id: str) -> int:
        """Bytes of the job's output so far."""
        with self.store._read() as session:
            return self._size(session, job_id)

    def last_seq(self, job_id: str) -> int:
        with self.store._read() as session:
            return self._ends(session, job_id)[0]

    def since(
        self, job_id: str, after: int, limit: int = READ_ROWS, *, kind: str | None = None
    ) -> builtins.list[LogEntry]:
        """Entries after seq ``after`` (of one ``kind``, or all), oldest first."""
        query = (
            select(JobLogRow)
            .where(JobLogRow.job_id == job_id, JobLogRow.seq > after)
            .order_by(JobLogRow.seq)
            .limit(limit)
        )
        if kind is not None:
            query = query.where(JobLogRow.kind == kind)
        with self.store._read() as session:
            return [_entry(row) for row in session.scalars(query)]

    def seq_at(self, job_id: str, offset: int) -> int:
        """The seq after which the entries hold the output from ``offset`` on (a stream resumed
        from a byte offset trims what comes before it)."""
        query = select(func.max(JobLogRow.seq)).where(
            JobLogRow.job_id == job_id, JobLogRow.kind == OUT, JobLogRow.offset <= offset
        )
        with self.store._read() as session:
            found = session.scalar(query)
        return 0 if found is None else int(found) - 1

    def read(self, job_id: str, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of output from ``offset``."""
        wanted = bytearray()
        for piece_offset, data in self.pieces(job_id, offset):
            start = max(0, offset - piece_offset)
            wanted += data[start : start + limit - len(wanted)]
            if len(wanted) >= limit:
                break
        return bytes(wanted)

    def pieces(self, job_id: str, offset: int = 0) -> Iterator[tuple[int, bytes]]:
        """The output's pieces that hold bytes from ``offset`` on, as (offset, bytes), read a
        few rows at a time (a reader that stops early read little more than it used)."""
        after = self.seq_at(job_id, offset)
        while True:
            batch = self.since(job_id, after, kind=OUT)
            if not batch:
                return
            after = batch[-1].seq
            for entry in batch:
                if entry.offset + len(entry.data) > offset:
                    yield entry.offset, entry.data

    def last_note(self, job_id: str) -> LogEntry | None:
        """gpushop's latest note on the job (its phase), without reading its output."""
        query = (
            select(JobLogRow)
            .where(JobLogRow.job_id == job_id, JobLogRow.kind == NOTE)
            .order_by(JobLogRow.seq.desc())
            .limit(1)
        )
        with self.store._read() as session:
            row = session.scalars(query).first()
            return _entry(row) if row is not None else None

    @staticmethod
    def _ends(session: Session, job_id: str) -> tuple[int, int]:
        """(last seq, output size)."""
        last = session.scalar(select(func.max(JobLogRow.seq)).where(JobLogRow.job_id == job_id))
        return int(last or 0), JobLog._size(session, job_id)

    @staticmethod
    def _size(session: Session, job_id: str) -> int:
        out = session.execute(
            select(JobLogRow.offset, func.length(JobLogRow.data))
            .where(JobLogRow.job_id == job_id, JobLogRow.kind == OUT)
            .order_by(JobLogRow.seq.desc())
            .limit(1)
        ).first()
        return 0 if out is None else int(out[0]) + int(out[1])


def _entry(row: JobLogRow) -> LogEntry:
    return LogEntry(row.seq, row.kind, row.offset, bytes(row.data), row.at)
