"""Who is asking: the user a request's Bearer token names (401 otherwise)."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import Depends, Request

from gpushop.config import Settings
from gpushop.service import users
from gpushop.service.types import Store, User


class Stores:
    """The service's store, opened on first use and shared by every request (it is
    thread-safe: a session per call, one pool)."""

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self._store: Store | None = None
        self._lock = threading.Lock()

    def get(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = users.open_store(self.cfg)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def current_user(request: Request) -> User:
    """The token's user, within the token's request limits (a sync dependency: FastAPI runs it
    in its thread pool, off the loop)."""
    stores: Stores = request.app.state.stores
    user = users.authenticate(stores.get(), request.headers.get("authorization"))
    request.app.state.limits.hit(user.id)
    return user


async def acting_user(user: Annotated[User, Depends(current_user)]) -> User:
    """The request's user, also as the actor of every event it causes (an async dependency:
    it sets the context the endpoint, and the tasks it starts, run in)."""
    users.act_as(user)
    return user


CurrentUser = Annotated[User, Depends(acting_user)]
