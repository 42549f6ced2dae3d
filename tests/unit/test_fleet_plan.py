import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from factories import offer

from gpushop.errors import MoneyLimitError
from gpushop.fleet import choice, labels, money, owners
from gpushop.fleet.reconcile_plan import Kind, plan
from gpushop.models import Instance, InstanceStatus, RentalState

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DEP = "abc123"


@dataclass
class R:
    id: str
    state: RentalState
    instance_id: str | None = None
    created_at: datetime = NOW - timedelta(hours=1)
    updated_at: datetime = NOW - timedelta(minutes=30)
    deadline: datetime = NOW + timedelta(hours=3)
    keep_interrupted: bool = False
    owner_host: str | None = "h"
    owner_pid: int | None = 1
    heartbeat_at: datetime | None = NOW
    details: dict[str, object] = field(default_factory=dict)
    alive: bool = field(default=False, repr=False)


def inst(
    iid: str, label: str | None, status: InstanceStatus = InstanceStatus.RUNNING, **data: object
) -> Instance:
    return Instance(
        provider="vastai",
        instance_id=iid,
        status=status,
        raw_status=None,
        label=label,
        gpu_name="RTX 4090",
        num_gpus=1,
        price_per_hour=0.3,
        provider_data=dict(data),
    )


def lbl(rid: str, dep: str = DEP) -> str:
    return labels.make_label(dep, rid)


def run(rentals: list[R], instances: list[Instance]) -> list[tuple[Kind, str | None, str | None]]:
    actions = plan(
        deployment_id=DEP,
        rentals=rentals,
        instances=instances,
        now=NOW,
        owner_alive=lambda r: r.alive,  # type: ignore[attr-defined]
    )
    return [(a.kind, a.instance_id, a.rental_id) for a in actions]


def test_orphans_are_destroyed_and_foreign_instances_never_touched() -> None:
    result = run(
        [R("r0000000001", RentalState.RELEASED, "2")],
        [
            inst("1", lbl("r0000000009")),  # ours, no rental
            inst("2", lbl("r0000000001")),  # ours, rental already released
            inst("3", lbl("r0000000005", dep="zzz999")),  # another installation's
            inst("4", "my-notebook"),  # not gpushop's
            inst("5", None),
        ],
    )
    assert result == [
        (Kind.DESTROY_ORPHAN, "1", "r0000000009"),
        (Kind.DESTROY_ORPHAN, "2", "r0000000001"),
    ]


def test_live_owner_is_never_touched_and_dead_owner_is_abandoned() -> None:
    live = R("r0000000001", RentalState.CREATING, "1", alive=True)
    dead = R("r0000000002", RentalState.PROVISIONING, "2", alive=False)
    dead_no_instance = R("r0000000003", RentalState.REQUESTED, None, alive=False)
    result = run([live, dead, dead_no_instance], [inst("1", lbl(live.id)), inst("2", lbl(dead.id))])
    assert result == [
        (Kind.ABANDONED, "2", "r0000000002"),
        (Kind.ABANDONED, None, "r0000000003"),
    ]


def test_expiry_outbid_and_ghosts() -> None:
    expired = R("r0000000001", RentalState.READY, "1", deadline=NOW - timedelta(seconds=1))
    bid = R("r0000000002", RentalState.READY, "2")
    kept = R("r0000000003", RentalState.READY, "3", keep_interrupted=True)
    ghost = R("r0000000004", RentalState.READY, "4")
    fresh_ghost = R("r0000000005", RentalState.READY, "5", updated_at=NOW - timedelta(seconds=10))
    stopped_bid = dict(is_bid=True, intended_status="stopped", cur_state="stopped")
    result = run(
        [expired, bid, kept, ghost, fresh_ghost],
        [
            inst("1", lbl(expired.id)),
            inst("2", lbl(bid.id), InstanceStatus.STOPPED, **stopped_bid),
            inst("3", lbl(kept.id), InstanceStatus.STOPPED, **stopped_bid),
        ],
    )
    assert result == [
        (Kind.EXPIRED, "1", expired.id),
        (Kind.OUTBID, "2", bid.id),
        (Kind.OUTBID, "3", kept.id),
        (Kind.GHOST, "4", ghost.id),
    ]
    actions = plan(
        deployment_id=DEP,
        rentals=[bid, kept],
        now=NOW,
        owner_alive=lambda r: False,
        instances=[
            inst("2", lbl(bid.id), InstanceStatus.STOPPED, **stopped_bid),
            inst("3", lbl(kept.id), InstanceStatus.STOPPED, **stopped_bid),
        ],
    )
    assert [a.release for a in actions] == [True, False]


def test_a_user_stop_is_not_an_outbid() -> None:
    r = R("r0000000001", RentalState.STOPPED, "1")
    stopped = inst(
        "1",
        lbl(r.id),
        InstanceStatus.STOPPED,
        is_bid=False,
        intended_status="stopped",
        cur_state="stopped",
    )
    assert run([r], [stopped]) == []


def test_labels_round_trip_and_reject_strangers() -> None:
    assert labels.parse_label(labels.make_label("a1b2c3", "r01jq8z3k2m")) == (
        "a1b2c3",
        "r01jq8z3k2m",
    )
    assert len(labels.make_label("a1b2c3", "r01jq8z3k2m")) < 60
    for bad in ["gpushop-r01", "gpushop-ABCDEF-r0000000001", "xgpushop-abc123-r0000000001", ""]:
        assert labels.parse_label(bad) is None
    with pytest.raises(ValueError):
        labels.make_label("bad id", "r1")


def test_owner_liveness() -> None:
    beat = NOW - timedelta(seconds=5)
    assert owners.owner_alive("h", 7, beat, NOW, this_host="h", is_alive=lambda p: True)
    assert not owners.owner_alive("h", 7, beat, NOW, this_host="h", is_alive=lambda p: False)
    # same host, pid alive, but the heartbeat is ancient: the pid was reused
    old = NOW - timedelta(hours=1)
    assert not owners.owner_alive("h", 7, old, NOW, this_host="h", is_alive=lambda p: True)
    # another host: only the heartbeat tells
    assert owners.owner_alive("other", 7, beat, NOW, this_host="h")
    assert not owners.owner_alive("other", 7, NOW - timedelta(minutes=5), NOW, this_host="h")
    assert not owners.owner_alive(None, None, None, NOW)
    assert owners.pid_alive(owners.Owner.me().pid)


def test_budget_and_price_cap() -> None:
    money.check_budget(budget=None, spent=1e9, committed=0, price_per_hour=1, hours=1)
    money.check_budget(budget=10, spent=4, committed=4, price_per_hour=0.5, hours=4)
    with pytest.raises(MoneyLimitError, match=r"GPUSHOP_BUDGET_USD=10.*\$4.00 this month"):
        money.check_budget(budget=10, spent=4, committed=4, price_per_hour=0.6, hours=4)
    with pytest.raises(MoneyLimitError):
        money.check_price_cap(0.51, 0.5)
    assert money.month_window(NOW) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert money.month_window(datetime(2026, 12, 31, 23, tzinfo=UTC))[1] == datetime(
        2027, 1, 1, tzinfo=UTC
    )


def test_near_equal_offers_are_spread_across_concurrent_ups() -> None:
    ranked = [
        offer("1", 0.300, 0.99),
        offer("2", 0.301, 0.99),
        offer("3", 0.305, 0.99),
        offer("4", 0.50, 0.99),
    ]
    firsts = {
        choice.order_of_attempts(ranked, random.Random(seed))[0].offer_id for seed in range(40)
    }
    assert firsts == {"1", "2", "3"}  # never the clearly worse one first
    order = choice.order_of_attempts(ranked, random.Random(1))
    assert order[-1].offer_id == "4" and len(order) == 4
    assert replace(ranked[0]) == ranked[0]


def test_a_detached_no_wait_rental_is_not_abandoned_but_still_expires() -> None:
    kept = R(
        "r0000000001",
        RentalState.PROVISIONING,
        "1",
        owner_host=None,
        owner_pid=None,
        details={"detached": True},
    )
    late = R(
        "r0000000002",
        RentalState.PROVISIONING,
        "2",
        owner_host=None,
        owner_pid=None,
        details={"detached": True},
        deadline=NOW - timedelta(seconds=1),
    )
    gone = R(
        "r0000000003",
        RentalState.PROVISIONING,
        "3",
        owner_host=None,
        owner_pid=None,
        details={"detached": True},
    )
    result = run([kept, late, gone], [inst("1", lbl(kept.id)), inst("2", lbl(late.id))])
    assert result == [(Kind.EXPIRED, "2", late.id), (Kind.GHOST, "3", gone.id)]


def test_the_default_bid_is_just_above_min_bid_and_never_above_the_cap() -> None:
    from gpushop.errors import OfferUnavailable
    from gpushop.fleet.provision import UpOptions, choose_bid
    from gpushop.models import OfferQuery

    o = offer("1", 0.30, 0.99, min_bid=0.20, storage_price_per_hour=0.01)
    q = OfferQuery(interruptible=True)
    assert choose_bid(o, UpOptions(query=q)) == pytest.approx(0.2105, abs=1e-4)
    assert choose_bid(o, UpOptions(query=q, bid_price=0.25)) == 0.25
    assert choose_bid(o, UpOptions(query=q, price_cap=0.215)) == pytest.approx(0.205)
    with pytest.raises(OfferUnavailable):
        choose_bid(o, UpOptions(query=q, price_cap=0.15))


def test_an_expired_lease_is_a_dead_owner_and_a_live_one_spans_hosts() -> None:
    beat = NOW - timedelta(seconds=2)
    lapsed, held = NOW - timedelta(seconds=1), NOW + timedelta(seconds=30)
    # the pid still runs, but it stopped renewing: dead (a stuck replica is as good as gone)
    assert not owners.owner_alive(
        "h", 7, beat, NOW, lease_until=lapsed, this_host="h", is_alive=lambda p: True
    )
    assert owners.owner_alive(
        "h", 7, beat, NOW, lease_until=held, this_host="h", is_alive=lambda p: True
    )
    # a dead pid on this host is dead before its lease lapses
    assert not owners.owner_alive(
        "h", 7, beat, NOW, lease_until=held, this_host="h", is_alive=lambda p: False
    )
    # another host within its lease is alive even with a heartbeat older than the grace
    lease_long = NOW + timedelta(minutes=10)
    old_beat = NOW - timedelta(minutes=5)
    assert owners.owner_alive("other", 7, old_beat, NOW, lease_until=lease_long, this_host="h")
    assert not owners.owner_alive("other", 7, beat, NOW, lease_until=lapsed, this_host="h")


def test_a_second_instance_under_a_ready_rentals_label_is_an_orphan() -> None:
    ready = R("r0000000001", RentalState.READY, "1")
    result = run([ready], [inst("1", lbl(ready.id)), inst("7", lbl(ready.id))])
    assert result == [(Kind.DESTROY_ORPHAN, "7", None)]  # its own instance "1" is kept
    # while it is still being created, the rental has no instance id yet: nothing is judged
    creating = R("r0000000002", RentalState.CREATING, None, alive=True)
    assert run([creating], [inst("8", lbl(creating.id))]) == []
