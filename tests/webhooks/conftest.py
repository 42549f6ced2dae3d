"""Webhook fixtures: a store on SQLite and on PostgreSQL (a fresh schema per test), a real HTTP
receiver on 127.0.0.1, and a test bed that makes endpoints, events and dispatchers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gpushop.config import Settings, load_settings
from gpushop.service import webhooks as service
from gpushop.service.webhook_dispatch import Dispatcher
from gpushop.store import Store, User
from gpushop.store.secret_box import keygen
from gpushop.store.webhooks import Delivery

from .receiver import Receiver


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gpushop.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.close()


class Bed:
    """A store with an admin, endpoints on the receiver, and dispatchers (closed at the end)."""

    def __init__(self, url: str, receiver: Receiver) -> None:
        self.url = url
        self.receiver = receiver
        self.key = keygen()
        self.store = Store.open(url)
        self.cfg = self.settings()
        self.admin: User = self.store.users.add(
            "admin", digest="d" * 64, hint="gps_a", is_admin=True
        )
        self.dispatchers: list[Dispatcher] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.stores: list[Store] = [self.store]

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "gpushop_secret_key": self.key,
            "gpushop_webhook_allow_private": True,
            "gpushop_webhook_retry_scale": 0.001,
            "gpushop_db_url": self.url,
        }
        values.update({f"gpushop_{k}": v for k, v in overrides.items()})
        return load_settings(**values)

    async def endpoint(
        self, path: str, types: tuple[str, ...] = ("reconcile.completed",), **overrides: Any
    ) -> dict[str, Any]:
        """A new endpoint of the admin's on the receiver (view + ``secret``)."""
        cfg = self.settings(**overrides) if overrides else self.cfg
        url = path if "://" in path else self.receiver.url(path)
        return await service.create(cfg, self.store, self.admin, url, list(types), "test")

    def tell(self, count: int = 1, store: Store | None = None) -> None:
        for i in range(count):
            (store or self.store).tell(
                "reconcile.completed", "reconcile", f"pass {i}", {"n": i}, user_id=None
            )

    def dispatcher(self, replica: str = "r1", store: Store | None = None, **cfg: Any) -> Dispatcher:
        made = Dispatcher(self.settings(**cfg), store or self.store, replica)
        self.dispatchers.append(made)
        return made

    def start(self, dispatcher: Dispatcher) -> Dispatcher:
        """Run it in the background until the test ends."""
        self.tasks.append(asyncio.create_task(dispatcher.run()))
        return dispatcher

    def other_store(self) -> Store:
        """A second Store on the same database (another replica)."""
        other = Store.open(self.url)
        self.stores.append(other)
        return other

    def deliveries(self, endpoint_id: str) -> list[Delivery]:
        return self.store.webhooks.deliveries(endpoint_id, limit=500)

    def one(self, endpoint_id: str) -> Delivery:
        [found] = self.deliveries(endpoint_id)
        return found

    def status(self, endpoint_id: str) -> Callable[[], str]:
        return lambda: self.one(endpoint_id).status

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for dispatcher in self.dispatchers:
            await dispatcher.aclose()
        for store in self.stores:
            store.close()


@pytest.fixture
async def bed(store_url: str, receiver: Receiver) -> AsyncIterator[Bed]:
    made = Bed(store_url, receiver)
    yield made
    await made.close()


@pytest.fixture
async def pg_bed(pg_url: str, receiver: Receiver) -> AsyncIterator[Bed]:
    made = Bed(pg_url, receiver)
    yield made
    await made.close()
