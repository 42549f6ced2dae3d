"""Events for every face: a user's own (an admin's: everyone's), in order, from a cursor."""

from __future__ import annotations

from typing import Any

from gpushop.store import Store, User

MAX_PAGE = 1000


def page(
    store: Store,
    *,
    after: int,
    types: list[str] | None,
    subject: str | None,
    limit: int,
    user: User | None = None,
) -> dict[str, Any]:
    """``{"events": [...], "next": cursor}``: pass ``next`` as ``after`` for what follows.
    ``user``: only theirs unless an admin (None: the CLI's own store, everything)."""
    mine = user.id if user is not None and not user.is_admin else None
    found = store.feed.after(
        after, types=types or None, subject=subject, user_id=mine, limit=min(limit, MAX_PAGE)
    )
    return {"events": [e.to_json() for e in found], "next": found[-1].id if found else after}
