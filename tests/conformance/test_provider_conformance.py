"""The provider conformance suite: every adapter passes the same tests against its emulator.

Adding a provider (RunPod and Lambda are next) means writing its adapter and its emulator, then
adding a `Harness` below: how to build the adapter against the emulator, and how to make that
emulator take an offer or fail an endpoint. The tests themselves do not change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gpushop.errors import AuthFailed, OfferUnavailable, ProviderUnavailable
from gpushop.fleet.reconcile import reconcile
from gpushop.fleet.wait import wait_ready
from gpushop.gpus import resolve
from gpushop.market import ranking
from gpushop.models import CreateRequest, InstanceStatus, Offer, OfferQuery
from gpushop.providers.base import Provider
from gpushop.providers.http import RetryPolicy
from gpushop.ssh.keys import load_or_create
from gpushop.store import Store

FAST_RETRY = RetryPolicy(attempts=3, connect_attempts=2, backoff_base_s=0.01, backoff_max_s=0.05)


@dataclass(frozen=True)
class Harness:
    name: str
    build: Callable[..., Provider]  # (emu, *, key: str | None, limits_dir, rate_limit, retry)
    list_endpoint: str  # the emulator's name of the "list our instances" endpoint
    take: Callable[[Any, Offer], None]  # someone else rents the offer's GPUs
    min_disk_gb: float  # what a create asks for at least


def _vast(emu: Any, *, key: str | None, limits_dir: Path, rate_limit: bool, retry: Any) -> Any:
    from gpushop.providers.vastai import VastAIProvider

    return VastAIProvider(
        url=emu.url,
        api_key=emu.api_key if key is None else key,
        shared_limits_dir=limits_dir,
        rate_limit=rate_limit,
        retry=retry,
    )


def _tensordock(
    emu: Any, *, key: str | None, limits_dir: Path, rate_limit: bool, retry: Any
) -> Any:
    from gpushop.providers.tensordock import TensorDockProvider

    return TensorDockProvider(
        url=emu.tensordock_url,
        api_token=emu.tensordock_token if key is None else key,
        shared_limits_dir=limits_dir,
        rate_limit=rate_limit,
        retry=retry,
    )


HARNESSES = [
    Harness(
        "vastai",
        _vast,
        "GET /api/v1/instances/",
        lambda emu, offer: emu.control.offer_taken(offer_id=int(offer.offer_id)),
        32.0,
    ),
    Harness(
        "tensordock",
        _tensordock,
        "GET /tensordock/api/v2/instances",
        lambda emu, offer: emu.control.tensordock_fault("gpu_taken", hostnode_id=offer.machine_id),
        100.0,
    ),
]


@pytest.fixture(params=HARNESSES, ids=lambda h: h.name)
def harness(request: Any) -> Harness:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make(harness: Harness, emulator: Any, tmp_path: Path) -> Callable[..., Provider]:
    def build(
        *, key: str | None = None, emu: Any = None, rate_limit: bool = False, retry: Any = None
    ) -> Provider:
        return harness.build(
            emu or emulator,
            key=key,
            limits_dir=tmp_path / "limits",
            rate_limit=rate_limit,
            retry=retry or FAST_RETRY,
        )

    return build


def run(coro: Any) -> Any:
    return asyncio.run(coro)


BROAD = OfferQuery(min_reliability=None, verified=False, disk_gb=100.0)


FILTERS: dict[str, Callable[[list[Offer]], OfferQuery]] = {
    "gpu": lambda _: OfferQuery(gpus=[resolve("4090")], min_reliability=None, disk_gb=100.0),
    "min_vram": lambda _: OfferQuery(min_vram_gb=40, min_reliability=None, disk_gb=100.0),
    "num_gpus": lambda _: OfferQuery(num_gpus=2, min_reliability=None, disk_gb=100.0),
    "max_price": lambda broad: OfferQuery(
        max_price=sorted(o.price_per_hour for o in broad)[len(broad) // 2],
        min_reliability=None,
        disk_gb=100.0,
    ),
    "min_reliability": lambda _: OfferQuery(min_reliability=0.99, disk_gb=100.0),
    "disk": lambda _: OfferQuery(disk_gb=250.0, min_reliability=None),
    "country": lambda broad: OfferQuery(
        countries=[next(o.country for o in broad if o.country)],
        min_reliability=None,
        disk_gb=100.0,
    ),
    "exclude_machines": lambda broad: OfferQuery(
        exclude_machines=frozenset({broad[0].machine_id or ""}),
        min_reliability=None,
        disk_gb=100.0,
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_search_honours_each_filter(make: Any, name: str) -> None:
    async def go() -> None:
        provider = make()
        try:
            broad = await provider.search_offers(BROAD, pool=1000)
            assert broad, "the emulated market is empty"
            query = FILTERS[name](broad)
            found = await provider.search_offers(query, pool=1000)
            assert found, f"no offer for {name}"
            assert len(found) < len(broad) or name == "disk"
            for offer in found:
                assert ranking.mismatch(offer, query) is None, (name, offer.id)
                assert offer.id.startswith(f"{provider.name}:")
        finally:
            await provider.aclose()

    run(go())


def test_create_wait_ssh_list_destroy(make: Any, harness: Harness, tmp_path: Path) -> None:
    keys = load_or_create(None, tmp_path)

    async def go() -> None:
        provider = make()
        try:
            await provider.ensure_ssh_key(keys.public_key)
            offer = (await provider.search_offers(OfferQuery(min_reliability=None), pool=5))[0]
            label = "gpushop-conform-r0000000001"
            result = await provider.create_instance(
                CreateRequest(offer_id=offer.offer_id, label=label, disk_gb=harness.min_disk_gb)
            )
            assert result.started
            ready = await wait_ready(provider, result.instance_id, timeout_s=60)
            for _ in range(50):  # SSH may answer before the API says "running"
                shown = await provider.get_instance(result.instance_id)
                if shown is not None and shown.status is InstanceStatus.RUNNING:
                    break
                await asyncio.sleep(0.1)
            assert shown is not None and shown.status is InstanceStatus.RUNNING
            async with asyncssh.connect(
                ready.host,
                ready.port,
                username=provider.ssh_user,
                client_keys=[keys.load_private()],
                known_hosts=None,
            ) as conn:
                out = await conn.run("nvidia-smi -L", check=True)
            assert resolve(offer.gpu_name).matches(str(out.stdout).split(":")[1].split("(")[0])
            ours = await provider.list_instances(label_prefix="gpushop-conform-")
            assert [i.instance_id for i in ours] == [result.instance_id]
            assert ours[0].label == label
            assert await provider.destroy_instance(result.instance_id)
            for _ in range(50):
                if await provider.get_instance(result.instance_id) is None:
                    break
                await asyncio.sleep(0.1)
            assert await provider.get_instance(result.instance_id) is None
            assert await provider.list_instances(label_prefix="gpushop-conform-") == []
            assert not await provider.destroy_instance(result.instance_id)
        finally:
            await provider.aclose()

    run(go())


def test_reconcile_destroys_our_orphans_only(make: Any, harness: Harness, tmp_path: Path) -> None:
    keys = load_or_create(None, tmp_path)

    async def go() -> None:
        provider = make()
        store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        try:
            await provider.ensure_ssh_key(keys.public_key)
            offers = await provider.search_offers(OfferQuery(min_reliability=None), pool=5)
            ours = f"gpushop-{store.deployment_id}-rzzzzzzzzzz"
            for offer, label in zip(offers, (ours, "foreign-instance"), strict=False):
                await provider.create_instance(
                    CreateRequest(offer_id=offer.offer_id, label=label, disk_gb=harness.min_disk_gb)
                )
            report = await reconcile(store, {provider.name: provider})
            assert [a["kind"] for a in report.actions] == ["destroy_orphan"]
            left = [i.label for i in await provider.list_instances()]
            assert left == ["foreign-instance"]
            again = await reconcile(store, {provider.name: provider})
            assert again.actions == []  # idempotent
        finally:
            store.close()
            await provider.aclose()

    run(go())


def test_error_mapping(make: Any, harness: Harness, emulator: Any, tmp_path: Path) -> None:
    keys = load_or_create(None, tmp_path)

    async def go() -> None:
        bad = make(key="not-the-key")
        good = make()
        try:
            await good.ensure_ssh_key(keys.public_key)
            with pytest.raises(AuthFailed) as caught:
                await bad.list_instances()
            assert "not-the-key" not in str(caught.value)  # a key never shows in an error
            assert await good.get_instance("987654") is None
            assert not await good.destroy_instance("987654")
            offer = (await good.search_offers(OfferQuery(min_reliability=None), pool=5))[0]
            harness.take(emulator, offer)
            with pytest.raises(OfferUnavailable):
                await good.create_instance(
                    CreateRequest(
                        offer_id=offer.offer_id, label="gpushop-x-r1", disk_gb=harness.min_disk_gb
                    )
                )
            emulator.control.fault(harness.list_endpoint, kind="status", status=503, count=10)
            with pytest.raises(ProviderUnavailable):
                await good.list_instances()
        finally:
            await bad.aclose()
            await good.aclose()

    run(go())


def test_a_429_is_waited_out_not_failed(make: Any, harness: Harness, emulator: Any) -> None:
    async def go() -> None:
        provider = make()
        try:
            emulator.control.fault(harness.list_endpoint, kind="status", status=429, count=2)
            assert await provider.list_instances() == []
            assert emulator.control.request_count(harness.list_endpoint) == 3
        finally:
            await provider.aclose()

    run(go())


@pytest.mark.slow
def test_a_burst_is_paced_under_the_real_limits(
    make: Any, harness: Harness, make_emulator: Any
) -> None:
    emu = make_emulator(offers=100, seed=5, rate_limit=True)

    async def go() -> None:
        provider = make(emu=emu, rate_limit=True)
        try:
            results = await asyncio.gather(*(provider.list_instances() for _ in range(12)))
            assert all(r == [] for r in results)
        finally:
            await provider.aclose()

    run(go())
    statuses = [
        r["status"] for r in emu.control.requests() if r["endpoint"] == harness.list_endpoint
    ]
    assert len(statuses) >= 12
    assert 429 not in statuses, "the client's pacing should keep it under the provider's limit"
