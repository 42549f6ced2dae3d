"""A replica takes over what a dead one left half-done (service/replica.py): an in-flight
rental whose owner's lease lapsed is claimed by exactly one replica and finished (its instance
found by label, waited for, ready) or released when nothing was created."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gpushop.config import load_settings
from gpushop.fleet.owners import Owner
from gpushop.models import CreateRequest, OfferQuery, RentalState
from gpushop.service.replica import Replica
from gpushop.shop import Shop
from gpushop.store import Store
from waiting import until_async

from .test_rentals_api import live_instances


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _abandoned(store: Store, user_id: str, **fields: Any) -> str:
    """A rental its owner (on another host) stopped renewing a second ago."""
    rental = store.new_rental(
        provider="vastai",
        max_duration_s=3600,
        owner_host="replica-that-died",
        owner_pid=4242,
        lease_until=datetime.now(UTC) - timedelta(seconds=1),
        user_id=user_id,
        **fields,
    )
    return rental.id


async def test_a_lapsed_provisioning_is_finished_and_an_empty_one_failed(
    environment: dict[str, str], emulator: Any
) -> None:
    cfg = load_settings(gpushop_lease_seconds=5)
    store = Store.open(cfg.db_url)
    user = store.users.add("alice", digest="a" * 64, hint="gps_a", is_admin=False)
    async with Shop(cfg) as shop:
        provider = shop.provider("vastai")
        await provider.ensure_ssh_key(shop.keypair().public_key)
        offer = (await provider.search_offers(OfferQuery(min_reliability=None), pool=5))[0]
        created = _abandoned(store, user.id, offer_id=offer.offer_id)
        store.transition(created, RentalState.CREATING, "create sent")
        rental = store.get(created)
        assert rental is not None
        # the create reached the provider, then its sender died: no instance id in the store
        await provider.create_instance(
            CreateRequest(offer_id=offer.offer_id, label=rental.label, disk_gb=32)
        )
        empty = _abandoned(store, user.id)  # died before any create

    first, second = Replica(cfg, lambda: store), Replica(cfg, lambda: store)
    second.owner = Owner("another-replica", 99, 5.0)
    try:
        claims = await asyncio.gather(first.take_over_abandoned(), second.take_over_abandoned())
        assert sorted(claims[0] + claims[1]) == sorted([created, empty])  # each claimed once
        assert not set(claims[0]) & set(claims[1])
        await asyncio.gather(*first._finishing.values(), *second._finishing.values())
        done, failed = store.get(created), store.get(empty)
        assert done is not None and done.state is RentalState.READY and done.ssh_port
        assert done.instance_id is not None
        assert failed is not None and failed.state is RentalState.FAILED
        assert "died before an instance was created" in (failed.error or "") + "".join(
            e.reason for e in store.events(empty)
        )
        assert [str(i["id"]) for i in live_instances(emulator)] == [done.instance_id]
        told = {e.type for e in store.feed.after(0, subject=f"rental:{created}")}
        assert "rental.ready" in told
        # a live owner's rental is never taken
        assert await first.take_over_abandoned() == []
    finally:
        await first.aclose()
        await second.aclose()
        store.close()


async def test_a_replica_whose_rental_was_taken_over_stops_without_releasing_it(
    environment: dict[str, str], emulator: Any
) -> None:
    """Two owners must not drive one rental: a provisioner whose lease lapsed (a stalled
    replica) and whose rental another took over stops at its next renewal, leaving the instance
    to the new owner instead of releasing it under them."""
    from gpushop.fleet.lease import LeaseLost
    from gpushop.service.team_rentals import RentalRequest, up_options

    emulator.control.reset(speed=1.0, provision_delay_s=1.0, loading_delay_s=3.0)
    cfg = load_settings()
    store = Store.open(cfg.db_url)
    user = store.users.add("bob", digest="b" * 64, hint="gps_b", is_admin=False)
    opts = up_options(cfg, RentalRequest(min_vram=24), user)
    owner = Owner.me(lease_s=3.0)
    try:
        async with Shop(cfg) as shop:
            up = asyncio.create_task(shop.provisioner(owner).up(opts, lambda line: None))

            def provisioning() -> Any:
                found = store.list(states=[RentalState.PROVISIONING])
                return found[0] if found else None

            rental = await until_async(lambda: asyncio.to_thread(provisioning), "provisioning")
            assert store.take_over(rental, "another-replica", 99, lease_s=30) is not None
            with pytest.raises(LeaseLost):
                await asyncio.wait_for(up, 30)
        kept = store.get(rental.id)
        assert kept is not None and kept.state is RentalState.PROVISIONING
        assert kept.owner_host == "another-replica"
        assert [str(i["id"]) for i in live_instances(emulator)] == [kept.instance_id]
    finally:
        store.close()


async def test_the_sync_jobs_reconcile_leaves_the_services_rentals_to_the_takeovers(
    environment: dict[str, str], emulator: Any
) -> None:
    """Between a takeover pass and reconcile a lease may lapse: reconcile must not release a
    service rental a takeover would finish (a CLI's abandoned rental it still releases)."""
    from gpushop.fleet.reconcile import reconcile
    from gpushop.service.replica import ours_to_take_over

    cfg = load_settings(gpushop_lease_seconds=5)
    store = Store.open(cfg.db_url)
    user = store.users.add("carl", digest="c" * 64, hint="gps_c", is_admin=False)
    theirs = _abandoned(store, user.id)
    cli_rental = store.new_rental(
        provider="vastai",
        max_duration_s=3600,
        owner_host="laptop-gone",
        owner_pid=7,
        lease_until=datetime.now(UTC) - timedelta(seconds=1),
    ).id
    replica = Replica(cfg, lambda: store)
    try:
        report = await reconcile(
            store,
            replica.shop.provider_map(),
            owner=replica.owner,
            taken_care_of=ours_to_take_over,
        )
        judged = {a["rental_id"] for a in report.actions if a["kind"] == "abandoned"}
        assert judged == {cli_rental}
        kept = store.get(theirs)
        assert kept is not None and kept.state is RentalState.REQUESTED
    finally:
        await replica.aclose()
        store.close()
