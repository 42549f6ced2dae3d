"""The store's contract, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from gpushop.models import IN_FLIGHT, TERMINAL, TRANSITIONS, RentalState
from gpushop.store import Rental, StaleState, Store
from gpushop.store.schema import RentalEventRow, RentalRow

from .conftest import T0, Clock

S = RentalState


def new(store: Store, **fields: object) -> Rental:
    return store.new_rental(
        provider="vastai",
        max_duration_s=4 * 3600,
        owner_host="host-a",
        owner_pid=111,
        **fields,
    )


def walk(store: Store, rental_id: str, *states: RentalState) -> Rental:
    rental = store.get(rental_id)
    assert rental is not None
    for state in states:
        rental = store.transition(rental_id, state, f"to {state}")
    return rental


def test_new_rental_writes_the_row_and_its_first_event(store: Store, clock: Clock) -> None:
    r = new(store, gpu_name="RTX 4090", price_per_hour=0.4, details={"query": {"gpu": "4090"}})
    assert re.fullmatch(r"r[0-9a-z]{10}", r.id)
    assert r.label == f"gpushop-{store.deployment_id}-{r.id}"
    assert r.state is S.REQUESTED
    assert r.created_at == r.heartbeat_at == T0
    assert (r.owner_host, r.owner_pid) == ("host-a", 111)
    assert r.deadline == T0 + timedelta(hours=4)
    assert store.get(r.id) == r
    assert store.by_label(r.label) == r
    [event] = store.events(r.id)
    assert (event.old_state, event.new_state, event.kind) == (None, S.REQUESTED, "transition")


def test_new_rental_is_atomic(store: Store) -> None:
    """The database refuses the event's INSERT: the rental row must not remain either."""

    def refuse_events(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO rental_events"):
            raise RuntimeError("disk full (simulated)")

    event.listen(store._engine, "before_cursor_execute", refuse_events)
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            new(store)
    finally:
        event.remove(store._engine, "before_cursor_execute", refuse_events)
    with store._read() as session:
        assert session.scalars(select(RentalRow)).all() == []
        assert session.scalars(select(RentalEventRow)).all() == []


def test_unknown_and_managed_fields_are_refused(store: Store) -> None:
    with pytest.raises(TypeError, match="colour"):
        new(store, colour="red")
    r = new(store)
    with pytest.raises(TypeError, match="state"):
        store.update(r.id, state="ready")
    with pytest.raises(KeyError):
        store.update("rnope", ssh_host="x")
    assert store.get("rnope") is None


def test_the_whole_happy_life_and_its_timestamps(store: Store, clock: Clock) -> None:
    r = new(store, price_per_hour=0.5)
    clock.at(1)
    r = store.transition(r.id, S.CREATING, "creating", offer_id="vastai:42")
    clock.at(2)
    r = store.transition(r.id, S.PROVISIONING, "created", instance_id="9001", machine_id="m7")
    clock.at(5)
    r = store.transition(r.id, S.READY, "ssh answers", ssh_host="1.2.3.4", ssh_port=2222)
    assert (r.ready_at, r.running_since) == (clock(), clock())
    assert (r.ssh_host, r.ssh_port, r.instance_id, r.offer_id) == (
        "1.2.3.4",
        2222,
        "9001",
        "vastai:42",
    )
    clock.at(65)
    r = store.transition(r.id, S.RELEASING, "user asked")
    r = store.transition(r.id, S.RELEASED, "gone")
    assert r.ended_at == clock() and r.state.terminal
    events = store.events(r.id)
    assert [e.new_state for e in events] == [
        S.REQUESTED, S.CREATING, S.PROVISIONING, S.READY, S.RELEASING, S.RELEASED
    ]  # fmt: skip
    assert events[2].data == {"instance_id": "9001"}
    # one hour at 0.5 USD while READY, accounted as a closed segment
    assert store.spent_between(T0, T0 + timedelta(days=1), now=clock()) == pytest.approx(0.5)


@pytest.mark.parametrize("old", list(S))
def test_every_transition_follows_the_table(store: Store, old: RentalState) -> None:
    paths = {
        S.REQUESTED: [],
        S.CREATING: [S.CREATING],
        S.PROVISIONING: [S.CREATING, S.PROVISIONING],
        S.READY: [S.CREATING, S.PROVISIONING, S.READY],
        S.STOPPED: [S.CREATING, S.PROVISIONING, S.READY, S.STOPPED],
        S.INTERRUPTED: [S.CREATING, S.PROVISIONING, S.READY, S.INTERRUPTED],
        S.RELEASING: [S.CREATING, S.RELEASING],
        S.RELEASED: [S.CREATING, S.RELEASING, S.RELEASED],
        S.FAILED: [S.FAILED],
        S.LOST: [S.CREATING, S.PROVISIONING, S.LOST],
    }
    for new_state in S:
        r = walk(store, new(store).id, *paths[old])
        assert r.state is old
        if new_state in TRANSITIONS[old]:
            assert store.transition(r.id, new_state, "ok").state is new_state
        else:
            with pytest.raises(ValueError, match=f"{old.value} -> {new_state.value}"):
                store.transition(r.id, new_state, "refused")
            assert store.get(r.id).state is old  # type: ignore[union-attr]
            assert len(store.events(r.id)) == len(paths[old]) + 1


def test_expect_detects_a_stale_read(store: Store) -> None:
    r = walk(store, new(store).id, S.CREATING, S.PROVISIONING, S.READY)
    store.transition(r.id, S.RELEASING, "reconcile: past its deadline", expect=S.READY)
    with pytest.raises(StaleState, match="releasing"):
        store.transition(r.id, S.STOPPED, "user: stop", expect=S.READY)


def test_update_and_note(store: Store) -> None:
    r = new(store, details={"query": "q", "attempts": 1})
    r2 = store.update(r.id, ssh_user="root", details={"attempts": 2})
    assert r2.ssh_user == "root" and r2.details == {"query": "q", "attempts": 2}
    assert len(store.events(r.id)) == 1  # no note, no event
    store.update(r.id, error="boom", note="create failed")
    store.note(r.id, "billed 0.12", kind="cost", usd=0.12)
    kinds = [(e.kind, e.reason, e.data) for e in store.events(r.id)[1:]]
    assert kinds == [
        ("note", "create failed", {"error": "boom"}),
        ("cost", "billed 0.12", {"usd": 0.12}),
    ]


def test_list_newest_first_with_filters(store: Store, clock: Clock) -> None:
    a = new(store)
    clock.at(1)
    b = store.new_rental(provider="tensordock", max_duration_s=60, owner_host="h", owner_pid=1)
    clock.at(2)
    c = walk(store, new(store).id, S.FAILED)
    assert [r.id for r in store.list()] == [c.id, b.id, a.id]
    assert [r.id for r in store.list(states=IN_FLIGHT)] == [b.id, a.id]
    assert [r.id for r in store.list(states=TERMINAL)] == [c.id]
    assert [r.id for r in store.list(provider="tensordock")] == [b.id]


def test_heartbeat_only_for_the_owner_and_claim_takes_over(store: Store, clock: Clock) -> None:
    a, b = new(store), new(store)
    clock.at(3)
    assert store.heartbeat([a.id, b.id], "host-a", 111) == {a.id, b.id}
    assert store.get(a.id).heartbeat_at == clock()  # type: ignore[union-attr]
    clock.at(4)
    claimed = store.claim(a.id, "host-b", 222)
    assert (claimed.owner_host, claimed.owner_pid, claimed.heartbeat_at) == ("host-b", 222, clock())
    assert store.events(a.id)[-1].data == {"previous": {"host": "host-a", "pid": 111}}
    clock.at(5)
    # the old owner's heartbeat no longer touches the claimed rental
    assert store.heartbeat([a.id, b.id], "host-a", 111) == {b.id}
    assert store.get(a.id).heartbeat_at == T0 + timedelta(minutes=4)  # type: ignore[union-attr]
    assert store.heartbeat([], "host-a", 111) == set()


def test_spent_and_committed_with_stop_restart_and_month_change(store: Store, clock: Clock) -> None:
    """T0 = 31 March 22:00. READY 22:20 - 01:20 at 0.6/h, STOPPED 01:20 - 04:20 at 0.02/h
    storage, READY again 04:30 - 05:30, then released."""
    march = (T0.replace(day=1, hour=0), T0.replace(month=4, day=1, hour=0))
    april = (march[1], march[1].replace(month=5))
    r = new(store, price_per_hour=0.6, details={"storage_per_hour": 0.02})
    r = store.update(r.id, max_duration_s=10 * 3600.0)
    clock.at(10)
    walk(store, r.id, S.CREATING, S.PROVISIONING)
    clock.at(20)
    walk(store, r.id, S.READY)
    # 00:50 in April while still running: March 22:20-24:00 = 1.0, April 00:00-00:50 = 0.5
    assert store.spent_between(*march, now=clock.at(170)) == pytest.approx(1.0)
    assert store.spent_between(*april, now=clock()) == pytest.approx(0.5)
    # committed: 10 h from 22:00 -> deadline 08:00; 7 h 10 min left at 00:50
    assert store.committed(now=clock()) == pytest.approx(0.6 * (7 + 10 / 60))
    clock.at(200)
    walk(store, r.id, S.STOPPED)
    clock.at(380)
    walk(store, r.id, S.PROVISIONING)
    clock.at(390)
    walk(store, r.id, S.READY)
    clock.at(450)
    walk(store, r.id, S.RELEASING)
    clock.at(451)
    walk(store, r.id, S.RELEASED)
    now = clock.at(24 * 60)
    assert store.spent_between(*march, now=now) == pytest.approx(1.0)
    assert store.spent_between(*april, now=now) == pytest.approx(0.8 + 0.06 + 0.6)
    assert store.committed(now=now) == 0.0
    # a rental that ended before the window is not even read; one never READY costs nothing
    walk(store, new(store, price_per_hour=5.0).id, S.FAILED)
    assert store.spent_between(*april, now=now) == pytest.approx(1.46)


def test_blocklist_expires(store: Store) -> None:
    store.block_host("vastai", "m1", "claims CUDA 12.4, has 11.8", until=T0 + timedelta(hours=1))
    store.block_host("vastai", "m2", "3 GPUs, not 4", until=T0 + timedelta(days=7))
    store.block_host("tensordock", "m1", "lies", until=T0 + timedelta(days=7))
    assert store.blocked_hosts("vastai", now=T0) == {"m1", "m2"}
    assert store.blocked_hosts("vastai", now=T0 + timedelta(hours=2)) == {"m2"}
    # blocking again replaces the expiry
    store.block_host("vastai", "m1", "lied again", until=T0 + timedelta(days=1))
    assert store.blocked_hosts("vastai", now=T0 + timedelta(hours=2)) == {"m1", "m2"}
    assert store.blocked_hosts("vastai", now=T0 + timedelta(days=8)) == set()


def test_timings(store: Store) -> None:
    r = new(store)
    store.record_timing(r.id, "create", 1.5)
    store.record_timing(r.id, "ssh", 0.25)
    store.record_timing(None, "search", 0.1)
    assert [(t["phase"], t["seconds"]) for t in store.timings(rental_id=r.id)] == [
        ("create", 1.5),
        ("ssh", 0.25),
    ]
    assert [t["rental_id"] for t in store.timings(phase="search")] == [None]


def test_secrets_are_refused(store: Store) -> None:
    r = new(store)
    for bad in (
        {"api_key": "x"},
        {"env": {"HF_TOKEN": "hf_x"}},
        {"k": "-----BEGIN OPENSSH PRIVATE KEY-----"},
    ):
        with pytest.raises(ValueError, match="secret"):
            store.update(r.id, details=bad)
    with pytest.raises(ValueError, match="secret"):
        store.note(r.id, "oops", password="hunter2")
    store.update(r.id, details={"tokens_per_second": 12.0})  # not a secret


def test_url_for_display_masks_the_password(pg_url: str) -> None:
    # the store's own URL carries no password here: show masking on one that does
    from gpushop.store.engine import display_url, normalise_url

    url = normalise_url("postgresql://postgres:s3cret@127.0.0.1:5432/test")
    assert url.drivername == "postgresql+psycopg"
    assert "s3cret" not in display_url(url) and "***" in display_url(url)
    with Store.open(pg_url) as s:
        assert s.dialect == "postgresql" and "s3cret" not in repr(s)
