"""Idempotency-Keys of money-spending requests: the first request with a key reserves it, its
rental is attached once claimed, and a retry (or a twin sent at the same moment) finds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from gpushop.store.schema import IdempotencyRow

if TYPE_CHECKING:
    from gpushop.store.store import Store


@dataclass(frozen=True)
class Reservation:
    first: bool  # this request reserved the key: it does the work
    request_hash: str  # the first request's (a different body with the same key is an error)
    rental_id: str | None  # the first request's rental, once claimed


class IdempotencyKeys:
    def __init__(self, store: Store) -> None:
        self.store = store

    def reserve(self, user_id: str, key: str, request_hash: str) -> Reservation:
        try:
            with self.store._write() as session:
                session.add(
                    IdempotencyRow(
                        user_id=user_id,
                        idempotency_key=key,
                        request_hash=request_hash,
                        rental_id=None,
                        created_at=self.store.clock(),
                    )
                )
            return Reservation(True, request_hash, None)
        except IntegrityError:
            found = self.get(user_id, key)
            if found is None:  # released meanwhile (the first request failed): try again
                return self.reserve(user_id, key, request_hash)
            return found

    def get(self, user_id: str, key: str) -> Reservation | None:
        with self.store._read() as session:
            row = session.scalars(
                select(IdempotencyRow).where(
                    IdempotencyRow.user_id == user_id, IdempotencyRow.idempotency_key == key
                )
            ).first()
            return None if row is None else Reservation(False, row.request_hash, row.rental_id)

    def attach(self, user_id: str, key: str, rental_id: str) -> None:
        with self.store._write() as session:
            row = session.get(IdempotencyRow, (user_id, key))
            if row is not None:
                row.rental_id = rental_id

    def release(self, user_id: str, key: str) -> None:
        """The first request failed before it rented anything: a retry may try again."""
        with self.store._write() as session:
            session.execute(
                delete(IdempotencyRow).where(
                    IdempotencyRow.user_id == user_id,
                    IdempotencyRow.idempotency_key == key,
                    IdempotencyRow.rental_id.is_(None),
                )
            )
