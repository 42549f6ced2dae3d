"""Ticks of periodic jobs (the sync job): of the replicas that wake for a tick, the one whose
row goes in runs it; the primary key (name, tick) makes that exactly one, on any store, with no
lock held while the job runs."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from gpushop.store.schema_webhooks import TickRow

if TYPE_CHECKING:
    from gpushop.store.store import Store


@dataclass(frozen=True)
class Tick:
    name: str
    tick: int
    replica: str
    started_at: datetime
    finished_at: datetime | None
    outcome: dict[str, Any]


class Ticks:
    def __init__(self, store: Store) -> None:
        self.store = store

    def take(self, name: str, tick: int, replica: str) -> bool:
        """True for the one replica that takes this tick; False for every other."""
        try:
            with self.store._write() as session:
                session.add(
                    TickRow(
                        name=name,
                        tick=tick,
                        replica=replica,
                        started_at=self.store.clock(),
                        finished_at=None,
                        outcome={},
                    )
                )
        except IntegrityError:
            return False
        return True

    def finish(self, name: str, tick: int, outcome: dict[str, Any]) -> None:
        with self.store._write() as session:
            session.execute(
                update(TickRow)
                .where(TickRow.name == name, TickRow.tick == tick)
                .values(finished_at=self.store.clock(), outcome=outcome)
            )

    def list(self, name: str, *, limit: int = 1000) -> builtins.list[Tick]:
        """The newest ticks of a job, oldest first."""
        query = select(TickRow).where(TickRow.name == name).order_by(TickRow.tick.desc())
        with self.store._read() as session:
            rows = list(session.scalars(query.limit(limit)))
        return [
            Tick(r.name, r.tick, r.replica, r.started_at, r.finished_at, dict(r.outcome or {}))
            for r in reversed(rows)
        ]
