"""The team service's users in the store: looked up by their token's digest, never by a token."""

from __future__ import annotations

import builtins
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gpushop.errors import UsageError
from gpushop.store.schema import SshIdentityRow, UserRow

if TYPE_CHECKING:
    from gpushop.store.store import Store

QUOTAS = ("max_rentals", "max_usd_per_hour", "monthly_budget_usd")


@dataclass(frozen=True)
class User:
    id: str
    name: str
    is_admin: bool
    hint: str  # the token's first characters, to tell tokens apart
    max_rentals: int | None
    max_usd_per_hour: float | None
    monthly_budget_usd: float | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        name=row.name,
        is_admin=row.is_admin,
        hint=row.hint,
        max_rentals=row.max_rentals,
        max_usd_per_hour=row.max_usd_per_hour,
        monthly_budget_usd=row.monthly_budget_usd,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class Users:
    """Users of one store (``store.users``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, name: str, *, digest: str, hint: str, is_admin: bool, **quotas: Any) -> User:
        now = self.store.clock()
        row = UserRow(
            id="u" + secrets.token_hex(8),
            name=name,
            is_admin=is_admin,
            digest=digest,
            hint=hint,
            created_at=now,
            updated_at=now,
            revoked_at=None,
            **{k: quotas.get(k) for k in QUOTAS},
        )
        try:
            with self.store._write() as session:
                session.add(row)
                session.flush()
                return _user(row)
        except IntegrityError:
            raise UsageError(f"a user named {name!r} exists already") from None

    def by_digest(self, digest: str) -> User | None:
        """The active user whose token has this digest."""
        with self.store._read() as session:
            row = session.scalars(
                select(UserRow).where(UserRow.digest == digest, UserRow.revoked_at.is_(None))
            ).first()
            return _user(row) if row is not None else None

    def get(self, user_id: str) -> User | None:
        with self.store._read() as session:
            row = session.get(UserRow, user_id)
            return _user(row) if row is not None else None

    def by_name(self, name: str) -> User | None:
        with self.store._read() as session:
            row = session.scalars(select(UserRow).where(UserRow.name == name)).first()
            return _user(row) if row is not None else None

    def list(self) -> list[User]:
        with self.store._read() as session:
            return [_user(r) for r in session.scalars(select(UserRow).order_by(UserRow.name))]

    def update(self, name: str, **values: Any) -> User:
        """Set quotas (``QUOTAS``), a new ``digest`` and ``hint``, or ``revoked_at``."""
        with self.store._write() as session:
            row = session.scalars(select(UserRow).where(UserRow.name == name)).first()
            if row is None:
                raise UsageError(f"no user named {name!r} (see `gpushop users list`)")
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = self.store.clock()
            session.flush()
            return _user(row)

    def add_identity(self, user_id: str, public_line: str, fingerprint: str) -> str:
        """Record a user's public SSH key (once: the same key again is a no-op); its id."""
        with self.store._write() as session:
            found = session.scalars(
                select(SshIdentityRow).where(
                    SshIdentityRow.user_id == user_id, SshIdentityRow.fingerprint == fingerprint
                )
            ).first()
            if found is not None:
                return found.id
            row = SshIdentityRow(
                id="k" + secrets.token_hex(8),
                user_id=user_id,
                public_line=public_line,
                fingerprint=fingerprint,
                created_at=self.store.clock(),
            )
            session.add(row)
            return row.id

    def identities(self, user_id: str) -> builtins.list[tuple[str, str, str]]:
        """(id, public line, fingerprint) of each of the user's public SSH keys."""
        with self.store._read() as session:
            rows = session.scalars(
                select(SshIdentityRow)
                .where(SshIdentityRow.user_id == user_id)
                .order_by(SshIdentityRow.created_at)
            )
            return [(r.id, r.public_line, r.fingerprint) for r in rows]
