"""Two replicas of `gpushop serve` on one PostgreSQL, as a team runs it: duplicated requests
rent once, a replica killed mid-provisioning is taken over by the other, every event reaches a
receiver signed, and the sync job runs once per tick whichever replicas are up."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from gpushop.models import RentalState
from gpushop.store import Store
from gpushop.store.secret_box import keygen
from receiver import receiving
from waiting import until

from .conftest import token
from .test_rentals_api import BODY, live_instances

RENTALS = 20
LEASE_S = 3.0
TICK_S = 0.25


@pytest.fixture
def store_kind() -> str:
    return "postgresql"


def _both_at_once(
    urls: list[str], keys: list[str], headers: dict[str, str]
) -> dict[str, list[Any]]:
    """Each key's request sent to every replica at the same moment."""
    barrier = threading.Barrier(len(urls) * len(keys))
    answers: dict[str, list[Any]] = defaultdict(list)
    lock = threading.Lock()

    def one(url: str, key: str) -> None:
        barrier.wait()
        answer = httpx.post(
            f"{url}/v1/rentals",
            json=BODY,
            headers={**headers, "Idempotency-Key": key},
            timeout=120,
        )
        with lock:
            answers[key].append(answer)

    threads = [threading.Thread(target=one, args=(u, k)) for k in keys for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    return answers


@pytest.mark.slow  # two replicas, forty requests, a kill -9, four seconds of provisioning
def test_two_replicas_rent_once_survive_a_kill_and_tell_every_event(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    # provisioning slow enough (about 4 s) that a replica dies with rentals in flight
    emulator.control.reset(speed=1.0, provision_delay_s=2.0, loading_delay_s=2.0)
    secret_key = keygen()
    env = {
        **environment,
        "GPUSHOP_SECRET_KEY": secret_key,
        "GPUSHOP_WEBHOOK_ALLOW_PRIVATE": "1",
        "GPUSHOP_WEBHOOK_RETRY_SCALE": "0.001",
        "GPUSHOP_WEBHOOK_POLL": "0.2",
        "GPUSHOP_LEASE_SECONDS": str(LEASE_S),
        "GPUSHOP_SYNC_INTERVAL": str(TICK_S),
        "GPUSHOP_API_RATE_LIMIT": "1000/second",  # one token sends forty at once
    }
    started = time.time()
    with receiving() as receiver:
        url_a, proc_a = serve(env)
        url_b, proc_b = serve(env)
        alice = token(capsys, "alice")
        hook = httpx.post(
            f"{url_b}/v1/webhooks",
            json={"url": f"{receiver.url}/alice", "event_types": ["rental.*"]},
            headers=alice,
        )
        assert hook.status_code == 201, hook.text
        secret = hook.json()["secret"]

        keys = [f"batch-7-{i}" for i in range(RENTALS)]
        answers = _both_at_once([url_a, url_b], keys, alice)
        ids = set()
        for key, pair in answers.items():
            assert [a.status_code for a in pair] == [202, 202], [a.text for a in pair]
            assert pair[0].json()["rental_id"] == pair[1].json()["rental_id"], key
            ids.add(pair[0].json()["rental_id"])
        assert len(ids) == RENTALS

        store = Store.open(env["GPUSHOP_DB_URL"])
        try:
            # every create sent, once: twenty instances, starting (they load for about 4 s)
            until(
                lambda: all(r.instance_id for r in store.list()) and len(store.list()) == RENTALS,
                "every rental's create",
            )
            assert len(emulator.control.state()["instances"]) == RENTALS
            # kill -9 the first replica while it provisions some of them
            held_by_a = until(
                lambda: [
                    r.id
                    for r in store.list(user_id=None)
                    if r.owner_pid == proc_a.pid and r.state.in_flight
                ],
                "replica A to hold rentals in flight",
            )
            os.kill(proc_a.pid, signal.SIGKILL)
            proc_a.wait(10)
            killed_at, killed_wall = time.monotonic(), time.time()
            # what the dead replica left in flight (it may have finished some meanwhile)
            held_by_a = [
                r.id
                for r in store.list()
                if r.id in held_by_a and r.owner_pid == proc_a.pid and r.state.in_flight
            ]
            assert held_by_a

            def settled() -> list[Any] | None:
                rentals = [store.get(i) for i in ids]
                if any(r is None or r.state.in_flight for r in rentals):
                    return None
                return rentals

            rentals = until(settled, "every rental to be ready or failed", timeout=90)
            # what A left: finished by B (ready, B's now) or released (nothing left behind)
            for r in rentals:
                if r.id in held_by_a:
                    assert r.state.terminal or r.owner_pid != proc_a.pid, r
                    # taken over within two lease periods (a second of slack for a busy box)
                    [claim] = [e for e in store.events(r.id) if e.kind == "claim"]
                    assert claim.at.timestamp() - killed_wall < 2 * LEASE_S + 1
            # none left billing without a live rental, and each ready rental has its instance
            ready = {r.instance_id for r in rentals if r.state is RentalState.READY}
            assert {str(i["id"]) for i in live_instances(emulator)} == ready
            assert len(emulator.control.state()["instances"]) == RENTALS  # none created again
            assert len(ready) == RENTALS  # each finished: by the replica that began it or the other
            assert time.monotonic() - killed_at < 60

            for rid in ids:
                released = httpx.post(
                    f"{url_b}/v1/rentals/{rid}/release", headers=alice, timeout=60
                )
                assert released.status_code == 200, released.text
            assert live_instances(emulator) == []

            # every event of every rental reached the receiver, signed; duplicates only with
            # the same webhook-id
            wanted = {
                (e.type, e.subject)
                for e in store.feed.after(0, types=None, limit=10_000)
                if e.subject.removeprefix("rental:") in ids and e.type.startswith("rental.")
            }

            def delivered() -> set[tuple[str, str]]:
                got = set()
                for r in receiver.on("/alice"):
                    body = json.loads(r.body)
                    got.add((body["type"], body["data"]["subject"]))
                return got if got >= wanted else set()

            until(delivered, "every rental event at the receiver", timeout=60)
            verifier = Webhook(secret)
            by_event: dict[int, set[str]] = defaultdict(set)
            for r in receiver.on("/alice"):
                verifier.verify(r.body, r.headers)  # raises on a bad signature
                by_event[json.loads(r.body)["data"]["event_id"]].add(r.headers["webhook-id"])
            assert all(len(msg_ids) == 1 for msg_ids in by_event.values())

            # the sync job: exactly one run per tick, every tick since both replicas started
            def sixty_ticks() -> list[Any]:
                ticks = store.ticks.list("sync")
                late = [t for t in ticks if t.started_at.timestamp() >= started + 2]
                return ticks if len(late) >= 60 else []

            ticks = until(sixty_ticks, "sixty ticks of the sync job", timeout=60)
            numbers = [t.tick for t in ticks if t.started_at.timestamp() >= started + 2]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            # each ran the job to its end (reconcile and charges) on the replica that took it,
            # and after the kill the survivor took every tick
            done = [t for t in ticks if t.finished_at]
            assert len(done) >= len(ticks) - 2
            assert all(t.outcome["replica"] == t.replica for t in done)
            runs = [t for t in done if "reconcile" in t.outcome]
            for t in done:  # a tick is run, or covered by the run its replica was still doing
                assert "reconcile" in t.outcome or t.outcome["covered_by"] in {r.tick for r in runs}
            later = [t for t in ticks if t.started_at.timestamp() > killed_wall + 1]
            assert later and all(not t.replica.endswith(f":{proc_a.pid}") for t in later)
        except AssertionError:
            proc_b.terminate()
            print("replica B said:", proc_b.communicate(timeout=30)[1][-5000:])
            raise
        finally:
            store.close()
