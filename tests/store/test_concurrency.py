"""Races: compare-and-set transitions, and the reconcile lock across processes."""

from __future__ import annotations

import threading
import time

import pytest

from gpushop.models import RentalState
from gpushop.store import LockBusy, OfferClaimed, StaleState, Store

from .conftest import Clock, python

S = RentalState


def ready_rental(store: Store) -> str:
    r = store.new_rental(provider="vastai", max_duration_s=3600, owner_host="h", owner_pid=1)
    for state in (S.CREATING, S.PROVISIONING, S.READY):
        store.transition(r.id, state, "setup")
    return r.id


@pytest.mark.parametrize("expect", [True, False])
def test_exactly_one_concurrent_transition_wins(store: Store, expect: bool) -> None:
    rental_id = ready_rental(store)
    n = 6
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def release() -> None:
        barrier.wait()
        try:
            store.transition(rental_id, S.RELEASING, "race", expect=S.READY if expect else None)
            outcomes.append("won")
        except StaleState:
            outcomes.append("stale")
        except ValueError:  # without expect: releasing -> releasing is refused
            outcomes.append("refused")

    threads = [threading.Thread(target=release) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("won") == 1
    if expect:
        assert outcomes.count("stale") == n - 1
    transitions = [e for e in store.events(rental_id) if e.new_state is S.RELEASING]
    assert len(transitions) == 1


def claim(store: Store, offer_id: str = "7001") -> str:
    rental = store.new_rental(
        provider="vastai",
        max_duration_s=3600,
        owner_host="h",
        owner_pid=1,
        offer_id=offer_id,
        exclusive=True,
    )
    return rental.id


def test_exactly_one_of_racing_claims_on_an_offer_wins(store_url: str) -> None:
    """Each claimant is its own Store (as `up`s in separate processes or on separate hosts)."""
    n = 6
    stores = [Store.open(store_url) for _ in range(n)]
    barrier = threading.Barrier(n)
    won: list[str] = []
    lost: list[str] = []

    def race(store: Store) -> None:
        barrier.wait()
        try:
            won.append(claim(store))
        except OfferClaimed as exc:
            lost.append(exc.rival)

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    assert len(won) == 1 and lost == won * (n - 1)


def test_a_claim_loses_to_a_live_one_whatever_its_clock_says(store_url: str, clock: Clock) -> None:
    with Store.open(store_url) as first, Store.open(store_url, clock=clock) as late:
        holder = claim(first)
        clock.at(-60)  # a host whose clock is behind claims it afterwards
        with pytest.raises(OfferClaimed) as raised:
            claim(late)
        assert raised.value.rival == holder
        assert [r.id for r in first.list()] == [holder]  # the loser wrote nothing
        assert claim(late, offer_id="7002")  # another offer is free
        first.transition(holder, S.FAILED, "create refused")
        assert claim(late)  # an offer whose rental ended is free again


HOLD = """
import sys
from gpushop.store import Store
store = Store.open(sys.argv[1])
with store.reconcile_lock():
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def hold_lock(url: str):  # type: ignore[no-untyped-def]
    proc = python(HOLD, url)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read() if proc.stderr else ""
    return proc


def acquire_within(store: Store, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with store.reconcile_lock():
                return True
        except LockBusy:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def test_reconcile_lock_excludes_another_process_until_it_exits(
    store: Store, store_url: str
) -> None:
    holder = hold_lock(store_url)
    try:
        with pytest.raises(LockBusy), store.reconcile_lock():
            pass
        out, err = holder.communicate("\n", timeout=30)
        assert holder.returncode == 0, err
        assert "released" in out
        with store.reconcile_lock():
            pass
    finally:
        holder.kill()
        holder.wait()


def test_reconcile_lock_is_freed_when_the_holder_is_killed(store: Store, store_url: str) -> None:
    holder = hold_lock(store_url)
    try:
        with pytest.raises(LockBusy), store.reconcile_lock():
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.communicate(timeout=30)
    assert acquire_within(store, 10)


def test_reconcile_lock_waits_when_asked(store: Store, store_url: str) -> None:
    holder = hold_lock(store_url)
    threading.Timer(0.3, lambda: holder.communicate("\n", timeout=30)).start()
    started = time.monotonic()
    with store.reconcile_lock(wait=True):
        assert time.monotonic() - started >= 0.2
    holder.wait(30)


def test_the_lock_holder_can_still_write_and_others_can_too(store: Store, store_url: str) -> None:
    # the lock must not lock the database: reconcile writes while holding it
    with store.reconcile_lock():
        rental_id = ready_rental(store)
        with Store.open(store_url) as other:
            other.update(rental_id, ssh_host="10.0.0.1")
            with pytest.raises(LockBusy), other.reconcile_lock():
                pass
    with store.reconcile_lock():
        pass
