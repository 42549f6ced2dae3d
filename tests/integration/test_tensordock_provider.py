"""The TensorDock adapter against the emulator's TensorDock v2 side, over real HTTP and SSH.

The emulator imports nothing from the client, so this checks the adapter against the published
API: search with filters, create on a hostnode, wait until SSH answers, SSH as `user` with the
stored key, list ours by name prefix, stop (GPU released, storage billed), start, destroy, and
the typed errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from gpushop import gpus
from gpushop.emulator import EmulatorThread
from gpushop.errors import AuthFailed, InsufficientCredit, OfferUnavailable
from gpushop.fleet.wait import wait_ready
from gpushop.gpus import parse_gpu_list
from gpushop.models import CreateRequest, InstanceStatus, Offer, OfferQuery, SortKey
from gpushop.providers.tensordock import TensorDockProvider
from gpushop.ssh.client import banner

DEPLOYMENT = "gpushop-td0001-"
LABEL = DEPLOYMENT + "r0tdtest01"


@pytest.fixture
async def td(emulator: EmulatorThread) -> AsyncIterator[TensorDockProvider]:
    provider = TensorDockProvider(
        url=emulator.tensordock_url, api_token=emulator.tensordock_token, rate_limit=False
    )
    yield provider
    await provider.aclose()


@pytest.fixture
def key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def public(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


async def cheapest(td: TensorDockProvider, **fields: object) -> Offer:
    query = OfferQuery(gpus=parse_gpu_list(["4090"]), num_gpus=1, **fields)  # type: ignore[arg-type]
    offers = await td.search_offers(query, pool=50, sort=SortKey.PRICE)
    assert offers, "the emulator lists no 1x RTX 4090"
    return offers[0]


async def free_of(td: TensorDockProvider, offer: Offer) -> int:
    node = await td.hostnode(str(offer.machine_id))
    return sum(
        g["availableCount"]
        for g in node["available_resources"]["gpus"]
        if g["v0Name"] == offer.gpu_variant
    )


async def until_status(td: TensorDockProvider, vm_id: str, raw: str) -> None:
    for _ in range(500):
        inst = await td.get_instance(vm_id)
        assert inst is not None
        if inst.raw_status == raw:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{vm_id} never became {raw} (is {inst.raw_status})")


async def rent(td: TensorDockProvider, key: asyncssh.SSHKey, offer: Offer, **kw: object) -> str:
    await td.ensure_ssh_key(public(key))
    kw.setdefault("disk_gb", offer.disk_gb)
    request = CreateRequest(offer_id=offer.offer_id, label=LABEL, **kw)  # type: ignore[arg-type]
    result = await td.create_instance(request)
    assert result.started
    return result.instance_id


# -- offers ---------------------------------------------------------------------------------


async def test_search_filters_on_every_field(td: TensorDockProvider) -> None:
    everything = await td.search_offers(
        OfferQuery(min_reliability=None, verified=False, disk_gb=100), pool=10_000
    )
    assert everything and all(o.provider == "tensordock" for o in everything)
    assert all(o.gpu_name != o.gpu_variant for o in everything)  # every model is in the table
    prices = [o.price_per_hour for o in everything]
    assert prices == sorted(prices)

    pair = await td.search_offers(
        OfferQuery(gpus=parse_gpu_list(["4090"]), num_gpus=2, max_price=5.0), pool=100
    )
    assert pair and {(o.gpu_name, o.num_gpus) for o in pair} == {("RTX 4090", 2)}
    assert all(o.price_per_hour <= 5.0 and (o.reliability or 0) >= 0.98 for o in pair)

    big = await td.search_offers(OfferQuery(min_vram_gb=80, disk_gb=500), pool=1000)
    assert big and all(o.gpu_ram_gb >= 80 and o.disk_gb == 500 for o in big)
    assert all(o.disk_available_gb >= 500 for o in big)

    country = everything[0].country
    assert country is not None
    local = await td.search_offers(
        OfferQuery(countries=[country.lower()], min_reliability=None), pool=1000
    )
    assert local and {o.country for o in local} == {country}

    assert await td.search_offers(OfferQuery(interruptible=True), pool=10) == []
    # not reported: kept, and checked with nvidia-smi once rented
    assert await td.search_offers(OfferQuery(min_cuda=11.0), pool=10)
    market = await td.market_offers(32)
    assert market and all(o.num_gpus == 1 for o in market)


async def test_offer_price_is_what_the_vm_is_billed(
    td: TensorDockProvider, key: asyncssh.SSHKey
) -> None:
    offer = await cheapest(td, disk_gb=150)
    vm_id = await rent(td, key, offer)
    inst = await td.get_instance(vm_id)
    assert inst is not None
    assert inst.price_per_hour == pytest.approx(offer.price_per_hour, abs=1e-6)
    assert (inst.provider_data["vcpus"], inst.provider_data["ram_gb"]) == (
        offer.provider_data["vcpus"],
        offer.provider_data["ram_gb"],
    )
    assert inst.provider_data["storage_gb"] == 150
    assert await td.destroy_instance(vm_id)


# -- the life of a rental -------------------------------------------------------------------


async def test_rent_ssh_list_stop_start_destroy(
    emulator: EmulatorThread, td: TensorDockProvider, key: asyncssh.SSHKey
) -> None:
    offer = await cheapest(td)
    free_before = await free_of(td, offer)
    vm_id = await rent(
        td,
        key,
        offer,
        image="pytorch/pytorch",
        env={"MODE": "test"},
        ports=[8888],
        onstart="echo booted > /workspace/boot.txt",
    )
    assert len(emulator.control.tensordock_state()["secrets"]) == 1  # the key, stored once
    assert await free_of(td, offer) == free_before - 1

    ready = await wait_ready(td, vm_id, timeout_s=60, poll_interval_s=0.1)
    assert ready.direct and ready.instance.status is InstanceStatus.RUNNING
    assert (ready.host, ready.port) == (ready.instance.ssh_host, ready.instance.ssh_port)
    assert await banner(ready.host, ready.port, timeout=2.0)
    forwards = {f["internal_port"] for f in ready.instance.provider_data["port_forwards"]}
    assert forwards == {22, 8888}

    async with asyncssh.connect(
        ready.host,
        ready.port,
        username=td.ssh_user,
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        config=None,
    ) as conn:
        smi = await conn.run("nvidia-smi --query-gpu=name --format=csv,noheader", check=True)
        assert gpus.canonical(str(smi.stdout).strip()) == offer.gpu_name
        await conn.run("cloud-init status --wait", check=True)
        written = await conn.run("cat /etc/gpushop/docker-image /etc/gpushop/env", check=True)
        assert written.stdout == "pytorch/pytorch\nMODE=test\n"  # the VM's /etc, not the host's
    view = emulator.control.tensordock_vm(vm_id)
    assert view["cloud_init"] == "done"
    sandbox = Path(view["sandbox"])
    assert (sandbox / "workspace" / "boot.txt").read_text() == "booted\n"

    ours = await td.list_instances(label_prefix=DEPLOYMENT)
    assert [(i.instance_id, i.label) for i in ours] == [(vm_id, LABEL)]
    assert await td.list_instances(label_prefix="gpushop-other1-") == []

    # stop releases the GPU: storage only is billed, the host has the GPU free again
    assert td.stop_releases_gpu
    assert await td.set_state(vm_id, "stopped")
    await until_status(td, vm_id, "stoppeddisassociated")
    stopped = await td.get_instance(vm_id)
    assert stopped is not None and stopped.status is InstanceStatus.STOPPED
    assert stopped.provider_data["gpu_released"]
    billing = emulator.control.tensordock_vm(vm_id)["billing"]
    assert billing["current_rate"] == pytest.approx(offer.storage_price_per_hour, abs=1e-6)
    assert await free_of(td, offer) == free_before
    assert await td.set_state(vm_id, "stopped")  # again: already released, fine

    assert await td.set_state(vm_id, "running")
    again = await wait_ready(td, vm_id, timeout_s=60, poll_interval_s=0.1)
    assert again.instance.status is InstanceStatus.RUNNING
    assert await td.set_state(vm_id, "running")  # already running: fine

    assert await td.destroy_instance(vm_id)
    assert await td.get_instance(vm_id) is None
    assert not await td.destroy_instance(vm_id)
    assert await td.list_instances(label_prefix=DEPLOYMENT) == []
    assert await free_of(td, offer) == free_before


async def test_a_restart_may_find_no_gpu(
    emulator: EmulatorThread, td: TensorDockProvider, key: asyncssh.SSHKey
) -> None:
    vm_id = await rent(td, key, await cheapest(td))
    await wait_ready(td, vm_id, timeout_s=60, poll_interval_s=0.1)
    assert await td.set_state(vm_id, "stopped")
    await until_status(td, vm_id, "stoppeddisassociated")
    emulator.control.tensordock_fault("gpu_taken", vm_id=vm_id)  # other renters took them
    with pytest.raises(OfferUnavailable, match=r"(?i)gpu"):
        await td.set_state(vm_id, "running")
    inst = await td.get_instance(vm_id)
    assert inst is not None and inst.raw_status == "stoppeddisassociated"
    assert await td.destroy_instance(vm_id)


# -- errors ---------------------------------------------------------------------------------


async def test_a_bad_token_is_auth_failed(emulator: EmulatorThread) -> None:
    provider = TensorDockProvider(
        url=emulator.tensordock_url, api_token="not-the-token", rate_limit=False
    )
    try:
        with pytest.raises(AuthFailed) as caught:
            await provider.search_offers(OfferQuery(), pool=10)
        assert "not-the-token" not in str(caught.value)
        with pytest.raises(AuthFailed):
            await provider.list_instances()
    finally:
        await provider.aclose()


async def test_gpus_gone_at_create_are_offer_unavailable(
    emulator: EmulatorThread, td: TensorDockProvider, key: asyncssh.SSHKey
) -> None:
    offer = await cheapest(td)
    node = str(offer.machine_id)
    # taken between our hostnode check and the server's: HTTP 200 "No available nodes..."
    emulator.control.tensordock_fault("gpu_taken", hostnode_id=node)
    with pytest.raises(OfferUnavailable):
        await rent(td, key, offer)
    # more than the node has: refused before any create
    with pytest.raises(OfferUnavailable):
        await rent(td, key, dataclasses.replace(offer, offer_id=f"{node}:{offer.gpu_variant}:99"))
    assert await td.list_instances(label_prefix=DEPLOYMENT) == []


async def test_a_low_balance_is_insufficient_credit(
    emulator: EmulatorThread, td: TensorDockProvider, key: asyncssh.SSHKey
) -> None:
    emulator.control.reset(tensordock_balance=0.5)
    with pytest.raises(InsufficientCredit):
        await rent(td, key, await cheapest(td))
