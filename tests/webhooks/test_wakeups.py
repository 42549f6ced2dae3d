"""When the dispatcher looks: at once after a commit of this process that made deliveries due,
at once after one of another replica's (PostgreSQL NOTIFY), and polling otherwise; and two
replicas sharing the work send each delivery exactly once."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import psycopg
import pytest

from gpushop.store import outbox

from .conftest import Bed
from .helpers import eventually, verify

SLOW_POLL = 60.0  # the longest poll allowed: whatever arrives sooner was woken


async def test_a_commit_in_this_process_wakes_the_dispatcher(bed: Bed) -> None:
    made = await bed.endpoint("/soon")
    bed.start(bed.dispatcher(webhook_poll=SLOW_POLL))
    bed.tell()
    await eventually(lambda: len(bed.receiver.at("/soon")) == 1, "the first event", 10)
    bed.tell()  # the dispatcher sleeps now: only the commit can wake it
    await eventually(lambda: len(bed.receiver.at("/soon")) == 2, "the second event", 10)
    # a ping and a redelivery wake it too
    bed.store.webhooks.ping(made["id"])
    await eventually(lambda: len(bed.receiver.at("/soon")) == 3, "the ping", 10)
    bed.store.webhooks.redeliver(bed.deliveries(made["id"])[-1].id)
    await eventually(lambda: len(bed.receiver.at("/soon")) == 4, "the redelivery", 10)
    ids = [r.headers["webhook-id"] for r in bed.receiver.at("/soon")]
    assert ids[3] == ids[0]  # a redelivery keeps its webhook-id


async def test_a_rolled_back_transaction_wakes_nobody(bed: Bed) -> None:
    await bed.endpoint("/never")
    woken: list[int] = []
    stop = outbox.on_due(lambda: woken.append(1))
    try:
        with pytest.raises(RuntimeError), bed.store._write() as session:
            outbox.made_due(session)
            raise RuntimeError("rolled back")
        assert woken == []
        bed.tell()
        assert woken == [1]
    finally:
        stop()


async def test_another_replicas_commit_wakes_the_dispatcher_through_notify(
    pg_bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    bed = pg_bed
    made = await bed.endpoint("/far")
    monkeypatch.setattr(outbox, "_wake_all", lambda: None)  # no in-process wake-ups
    other = bed.other_store()
    dispatcher = bed.start(bed.dispatcher(store=other, webhook_poll=SLOW_POLL))
    await asyncio.wait_for(dispatcher.listening.wait(), 10)
    bed.tell()
    await eventually(lambda: len(bed.receiver.at("/far")) == 1, "the first event", 10)
    bed.tell()
    await eventually(lambda: len(bed.receiver.at("/far")) == 2, "the notified event", 10)
    for request in bed.receiver.at("/far"):
        verify(made["secret"], request)


async def test_two_replicas_send_each_delivery_exactly_once(pg_bed: Bed) -> None:
    bed = pg_bed
    made = await bed.endpoint("/many")
    bed.tell(200)
    one = bed.dispatcher("replica-1")
    two = bed.dispatcher("replica-2", store=bed.other_store())
    sent = await asyncio.gather(one.drain(), two.drain())

    assert sum(sent) == 200
    ids = Counter(r.headers["webhook-id"] for r in bed.receiver.at("/many"))
    assert len(ids) == 200 and set(ids.values()) == {1}
    deliveries = bed.deliveries(made["id"])
    assert {d.status for d in deliveries} == {"delivered"} and len(deliveries) == 200
    replicas = Counter(a.replica for d in deliveries for a in bed.store.webhooks.attempts(d.id))
    assert sum(replicas.values()) == 200 and set(replicas) == {"replica-1", "replica-2"}


async def test_a_dropped_listen_connection_is_opened_again(
    pg_bed: Bed, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bed = pg_bed
    await bed.endpoint("/again")
    monkeypatch.setattr(outbox, "_wake_all", lambda: None)  # NOTIFY only
    opened: list[psycopg.AsyncConnection[Any]] = []
    connect = psycopg.AsyncConnection.connect

    async def spy(*args: Any, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        conn = await connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", spy)
    caplog.set_level(logging.INFO, "gpushop")
    dispatcher = bed.start(bed.dispatcher(webhook_poll=SLOW_POLL))
    await asyncio.wait_for(dispatcher.listening.wait(), 10)
    dsn = bed.store.webhooks.listen_url()
    assert dsn is not None
    with psycopg.connect(dsn, autocommit=True) as admin:  # the server drops it
        admin.execute("SELECT pg_terminate_backend(%s)", (opened[0].info.backend_pid,))
    await eventually(lambda: len(opened) == 2 and dispatcher.listening.is_set(), "a new LISTEN")
    bed.tell()
    await eventually(lambda: bed.receiver.at("/again"), "the notified event", 10)
    assert "no LISTEN connection" in caplog.text
    assert "password" not in caplog.text


async def test_a_claim_whose_replica_died_is_sent_by_another_once_it_lapses(bed: Bed) -> None:
    """A replica that claimed a delivery and died before sending it loses the claim when it
    lapses; a live replica sends it then, with its webhook-id (nothing waits on the dead one)."""
    made = await bed.endpoint("/late")
    bed.tell()
    [claimed] = bed.store.webhooks.claim("dead-replica", lock_s=0.3)  # then it was killed
    survivor = bed.dispatcher("r2")
    assert await survivor.drain() == 0  # still claimed: not sent twice at once
    await asyncio.sleep(0.35)
    assert await survivor.drain() == 1
    [got] = bed.receiver.at("/late")
    assert got.headers["webhook-id"] == claimed.msg_id
    assert bed.one(made["id"]).status == "delivered"
    assert [a.replica for a in bed.store.webhooks.attempts(claimed.id)] == ["r2"]
