"""The outbox: an event enqueues one delivery per endpoint that wants it, in the event's own
transaction; due deliveries are claimed once (SKIP LOCKED on PostgreSQL); a disabled endpoint's
deliveries wait; leases on rentals are taken over by exactly one claimant."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from gpushop.models import RentalState
from gpushop.store import Store
from gpushop.store.secret_box import SecretBox, SecretUnreadable, keygen

from .conftest import T0, Clock


def _users(store: Store) -> tuple[str, str, str]:
    admin = store.users.add("admin", digest="d" * 64, hint="gps_a", is_admin=True)
    bob = store.users.add("bob", digest="e" * 64, hint="gps_b", is_admin=False)
    eve = store.users.add("eve", digest="f" * 64, hint="gps_e", is_admin=False)
    return admin.id, bob.id, eve.id


def _rental(store: Store, user_id: str | None) -> str:
    rental = store.new_rental(
        provider="vastai", max_duration_s=3600, owner_host="h", owner_pid=1, user_id=user_id
    )
    store.transition(rental.id, RentalState.CREATING, "create sent")
    store.transition(rental.id, RentalState.PROVISIONING, "created", instance_id="i1")
    store.transition(rental.id, RentalState.READY, "SSH answers")
    return rental.id


def test_an_event_reaches_its_owner_and_admins_endpoints_only(store: Store) -> None:
    admin, bob, eve = _users(store)
    hooks = store.webhooks
    everything = hooks.add_endpoint(admin, "http://a.example/h", [], "", "fernet:x")
    bobs = hooks.add_endpoint(bob, "http://b.example/h", ["rental.ready"], "", "fernet:x")
    eves = hooks.add_endpoint(eve, "http://e.example/h", [], "", "fernet:x")
    rid = _rental(store, bob)

    claimed = hooks.claim("replica-1")
    by_endpoint = {(d.endpoint_id, d.event_type) for d in claimed}
    assert (bobs.id, "rental.ready") in by_endpoint
    assert (everything.id, "rental.ready") in by_endpoint
    assert not any(d.endpoint_id == eves.id for d in claimed)  # not eve's rental
    ready = [d for d in claimed if d.event_type == "rental.ready"]
    assert len({d.msg_id for d in ready}) == 1  # one webhook-id per event, on every endpoint
    body = json.loads(ready[0].body)
    assert body["type"] == "rental.ready"
    assert body["data"]["rental_id"] == rid and body["timestamp"].endswith("Z")
    assert hooks.claim("replica-2") == []  # claimed: nobody else sends them meanwhile


def test_a_change_rolled_back_enqueues_nothing(store: Store) -> None:
    admin, _, _ = _users(store)
    store.webhooks.add_endpoint(admin, "http://a.example/h", [], "", "fernet:x")
    rental = store.new_rental(provider="vastai", max_duration_s=60, owner_host="h", owner_pid=1)
    with pytest.raises(ValueError):
        store.transition(rental.id, RentalState.READY, "not allowed from requested")
    assert store.webhooks.pending() == 0


def test_attempts_are_logged_and_retries_wait_their_turn(store: Store, clock: Clock) -> None:
    admin, _, _ = _users(store)
    endpoint = store.webhooks.add_endpoint(admin, "http://a.example/h", ["rental.ready"], "", "x")
    _rental(store, None)
    [first] = store.webhooks.claim("r1")
    store.webhooks.record(
        first.id,
        replica="r1",
        status_code=500,
        error="HTTP 500",
        duration_ms=3.0,
        outcome="pending",
        next_attempt_at=T0 + timedelta(minutes=5),
    )
    assert store.webhooks.claim("r1") == []  # not due yet
    clock.at(5)
    [again] = store.webhooks.claim("r1")
    assert again.msg_id == first.msg_id and again.attempts == 1
    store.webhooks.record(
        again.id, replica="r1", status_code=200, error=None, duration_ms=2.0, outcome="delivered"
    )
    [done] = store.webhooks.deliveries(endpoint.id)
    assert done.status == "delivered" and done.attempts == 2 and done.last_status == 200
    assert [a.status_code for a in store.webhooks.attempts(done.id)] == [500, 200]


def test_a_disabled_endpoint_holds_its_deliveries_until_enabled(store: Store) -> None:
    admin, _, _ = _users(store)
    endpoint = store.webhooks.add_endpoint(admin, "http://a.example/h", ["rental.*"], "", "x")
    assert store.webhooks.disable(endpoint.id, "HTTP 410 Gone")
    _rental(store, None)
    assert store.webhooks.claim("r1") == []
    told = store.feed.after(0, types=["webhook.disabled"])
    assert told and told[0].reason == "HTTP 410 Gone"
    assert store.webhooks.enable(endpoint.id) == 1
    [held] = store.webhooks.claim("r1")
    assert held.event_type == "rental.ready"


def test_concurrent_claims_never_share_a_delivery(store: Store) -> None:
    admin, _, _ = _users(store)
    store.webhooks.add_endpoint(admin, "http://a.example/h", [], "", "x")
    for _ in range(10):
        _rental(store, None)
    total = store.webhooks.pending()
    got: list[list[int]] = []

    def claim(name: str) -> None:
        mine: list[int] = []
        while batch := store.webhooks.claim(name, limit=3):
            mine += [d.id for d in batch]
        got.append(mine)

    threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in got for i in ids]
    assert len(every) == len(set(every)) == total


def test_a_lapsed_lease_is_taken_over_by_one_claimant(store: Store, clock: Clock) -> None:
    rental = store.new_rental(
        provider="vastai", max_duration_s=3600, owner_host="dead", owner_pid=7
    )
    stale = store.get(rental.id)
    assert stale is not None
    wins = [store.take_over(stale, f"replica{i}", 100 + i, lease_s=30) for i in range(3)]
    winners = [w for w in wins if w is not None]
    assert len(winners) == 1 and winners[0].owner_host == "replica0"
    assert winners[0].lease_until is not None
    assert "taken over" in store.events(rental.id)[-1].reason


def test_sealed_secrets_open_only_with_the_key() -> None:
    key, other = keygen(), keygen()
    sealed = SecretBox(key).seal("whsec_abc")
    assert "whsec_abc" not in sealed
    assert SecretBox(f"{other},{key}").open(sealed) == "whsec_abc"  # old key kept: rotation
    rotated = SecretBox(f"{other},{key}").reseal(sealed)
    assert SecretBox(other).open(rotated) == "whsec_abc"
    with pytest.raises(SecretUnreadable):
        SecretBox(other).open(sealed)


def test_a_claim_drops_the_previous_owners_lease(store: Store, clock: Clock) -> None:
    """A rental released by hand after a replica's lease lapsed is the releaser's: the old
    lease must not make it look abandoned (a takeover would release it a second time)."""
    rental = store.new_rental(
        provider="vastai",
        max_duration_s=3600,
        owner_host="replica",
        owner_pid=7,
        lease_until=T0 + timedelta(seconds=30),
    )
    clock.at(10)  # the replica's lease lapsed long ago
    claimed = store.claim(rental.id, "laptop", 99)
    assert claimed.lease_until is None
    leased = store.claim(rental.id, "replica-2", 8, lease_s=30)
    assert leased.lease_until == clock.now + timedelta(seconds=30)
