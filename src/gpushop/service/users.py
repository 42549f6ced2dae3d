"""The team service's users: tokens (``gps_`` + random, shown once, kept as a sha256 digest),
admins, quotas, and who a request's Bearer token belongs to."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict
from typing import Any

from gpushop.config import Settings
from gpushop.errors import GpushopError, UsageError
from gpushop.store import Store, User
from gpushop.store.users import QUOTAS

TOKEN_PREFIX = "gps_"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class Unauthorized(GpushopError):
    """No token, or one that names no active user."""

    exit_code = 4


class Forbidden(GpushopError):
    """The user may not do this (an admin's action), or see it."""

    exit_code = 4


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise Forbidden("only an admin may do this")


def open_store(cfg: Settings) -> Store:
    """The store users live in (close it, or use it as a context manager)."""
    return Store.open(cfg.db_url)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _hint(token: str) -> str:
    return token[: len(TOKEN_PREFIX) + 4] + "…"


def _checked_quotas(quotas: dict[str, Any]) -> dict[str, Any]:
    unknown = set(quotas) - set(QUOTAS)
    if unknown:
        raise UsageError(f"unknown quota {sorted(unknown)[0]!r}")
    for key, value in quotas.items():
        if value is not None and (value != value or value < 0):  # NaN or negative
            raise UsageError(f"{key.replace('_', '-')} must be 0 or more")
    return quotas


def add(store: Store, name: str, *, is_admin: bool = False, **quotas: Any) -> tuple[User, str]:
    """A new user and their token (shown once: only its digest is kept)."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"user name {name!r}: lower-case letters, digits, '.', '_' or '-' (64 at most)"
        )
    token = new_token()
    user = store.users.add(
        name, digest=digest(token), hint=_hint(token), is_admin=is_admin, **_checked_quotas(quotas)
    )
    return user, token


def rotate(store: Store, name: str) -> tuple[User, str]:
    """A new token for the user; the old one stops working at once."""
    token = new_token()
    return store.users.update(name, digest=digest(token), hint=_hint(token)), token


def revoke(store: Store, name: str) -> User:
    return store.users.update(name, revoked_at=store.clock())


def set_quotas(store: Store, name: str, **quotas: Any) -> User:
    return store.users.update(name, **_checked_quotas(quotas))


def authenticate(store: Store, authorization: str | None) -> User:
    """The user an ``Authorization: Bearer gps_...`` header names."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an Authorization: Bearer token is required")
    user = store.users.by_digest(digest(token.strip()))
    if user is None:
        raise Unauthorized("the token is not valid (revoked, rotated, or never issued)")
    return user


def public(user: User) -> dict[str, Any]:
    """What the API and `users list --json` show of a user (no digest, ever)."""
    shown = asdict(user)
    shown["created_at"] = user.created_at.isoformat()
    shown["revoked_at"] = user.revoked_at.isoformat() if user.revoked_at else None
    return shown


def add_ssh_key(store: Store, user: User, text: str) -> dict[str, str]:
    """Register a user's PUBLIC SSH key (installed on the rentals they make from now on)."""
    import asyncssh

    line = text.strip()
    if "PRIVATE KEY" in line:
        raise UsageError("public_key: that is a PRIVATE key; send the .pub file's line")
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError):
        raise UsageError("public_key: not an OpenSSH public key line") from None
    public_line = key.export_public_key("openssh").decode().strip()
    fingerprint = key.get_fingerprint()
    key_id = store.users.add_identity(user.id, public_line, fingerprint)
    return {"id": key_id, "fingerprint": fingerprint}


def ssh_keys(store: Store, user: User) -> list[dict[str, str]]:
    return [
        {"id": key_id, "public_key": line, "fingerprint": fingerprint}
        for key_id, line, fingerprint in store.users.identities(user.id)
    ]


def act_as(user: User) -> None:
    """Events caused from here on, in this context, name the user as their actor."""
    from gpushop.store.events import ACTING

    ACTING.set(f"user:{user.name}")
