"""Rentals end to end: `gpushop up / ps / ssh / down / reconcile` against the emulator, whose
instances run real SSH servers. Hard cases are made deterministic with the emulator's faults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cli_run import cli
from gpushop.store import Store
from waiting import until


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: Any, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))  # a fresh schema (tests/conftest.py)


def up(capsys: Any, *extra: str) -> dict[str, Any]:
    code, out, err = cli(
        capsys, "up", "--min-vram", "24", "--ready-timeout", "20s", "--json", *extra
    )
    assert code == 0, err
    return json.loads(out)


def instances(emu: Any) -> list[dict[str, Any]]:
    return list(emu.control.state()["instances"])


def store() -> Store:
    return Store.open(os.environ["GPUSHOP_DB_URL"])


def test_up_ssh_down_on_both_databases(
    env: Any, capsys: Any, db_url: str, monkeypatch: Any
) -> None:
    monkeypatch.setenv("GPUSHOP_DB_URL", db_url)
    rental = up(capsys)
    assert rental["state"] == "ready" and rental["ssh_port"] and rental["ssh_user"] == "root"
    assert rental["label"].startswith("gpushop-") and rental["rental_id"] in rental["label"]
    [inst] = instances(env)
    assert str(inst["id"]) == rental["instance_id"]
    code, out, _ = cli(capsys, "ssh", rental["rental_id"], "--", "echo", "hello-from-$HOSTNAME")
    assert code == 0 and "hello-from" in out
    code, out, _ = cli(capsys, "ps", "--json")
    assert [r["rental_id"] for r in json.loads(out)] == [rental["rental_id"]]
    code, out, _ = cli(capsys, "down", rental["rental_id"], "--json")
    assert code == 0 and json.loads(out)[0]["state"] == "released"
    assert instances(env) == []
    with store() as s:
        states = [e.new_state for e in s.events(rental["rental_id"]) if e.kind == "transition"]
    assert [str(x) for x in states] == [
        "requested",
        "creating",
        "provisioning",
        "ready",
        "releasing",
        "released",
    ]


def test_a_lost_create_response_does_not_rent_twice(env: Any, capsys: Any) -> None:
    env.control.fault("PUT /api/v0/asks/{id}/", "drop", count=1)
    rental = up(capsys)
    assert rental["state"] == "ready"
    assert len(instances(env)) == 1
    assert env.control.request_count("PUT /api/v0/asks/{id}/") == 1
    with store() as s:
        notes = [e.reason for e in s.events(rental["rental_id"])]
    assert any("found the instance by its label" in n for n in notes)


def test_a_lying_host_is_replaced_and_blocklisted(env: Any, capsys: Any) -> None:
    env.control.lying_host(cuda=11.2, count=1)
    rental = up(capsys)
    assert rental["state"] == "ready"
    assert len(instances(env)) == 1  # the liar was released
    with store() as s:
        failed = [r for r in s.list() if str(r.state) == "failed"]
        assert len(failed) == 1 and failed[0].machine_id

        assert failed[0].machine_id in s.blocked_hosts("vastai", datetime.now(UTC))


def test_a_stuck_loading_host_is_replaced_by_the_next_offer(env: Any, capsys: Any) -> None:
    env.control.stuck_loading(count=1)
    code, _, err = cli(capsys, "up", "--min-vram", "24", "--ready-timeout", "3s", "--json")
    assert code == 0, err
    assert "not ready after 3s" in err and "trying the next offer" in err
    assert len(instances(env)) == 1


def test_created_stopped_is_destroyed_and_the_next_offer_used(env: Any, capsys: Any) -> None:
    env.control.create_stopped(count=1)
    rental = up(capsys)
    assert rental["state"] == "ready" and len(instances(env)) == 1


def test_budget_refusal_rents_nothing(env: Any, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("GPUSHOP_BUDGET_USD", "0.05")
    code, _, err = cli(capsys, "up", "--min-vram", "24")
    assert code == 5 and "GPUSHOP_BUDGET_USD" in err
    assert instances(env) == []
    assert env.control.request_count("PUT /api/v0/asks/{id}/") == 0


def test_max_duration_expiry_is_enforced_by_reconcile(env: Any, capsys: Any) -> None:
    rental = up(capsys, "--max-duration", "1s")
    deadline = datetime.fromisoformat(rental["deadline"])
    until(lambda: datetime.now(UTC) > deadline, "the rental's max duration to pass")
    code, out, _ = cli(capsys, "reconcile", "--json")
    report = json.loads(out)
    assert code == 0 and [a["kind"] for a in report["actions"]] == ["expired"]
    assert instances(env) == []
    with store() as s:
        assert str(s.get(rental["rental_id"]).state) == "released"  # type: ignore[union-attr]


def test_a_destroy_that_needs_a_retry(env: Any, capsys: Any) -> None:
    rental = up(capsys)
    env.control.destroy_ignored(times=1, instance_id=int(rental["instance_id"]))
    code, _, err = cli(capsys, "down", rental["rental_id"])
    assert code == 0, err
    assert instances(env) == []
    with store() as s:
        assert any("destroy took 2 calls" in e.reason for e in s.events(rental["rental_id"]))


def test_reconcile_destroys_orphans_and_never_touches_foreign_instances(
    env: Any, capsys: Any
) -> None:
    import httpx

    rental = up(capsys)
    offers = httpx.post(f"{env.url}/api/v0/bundles/", json={"limit": 50}).json()["offers"]
    auth = {"Authorization": f"Bearer {env.api_key}"}
    used = {i["machine_id"] for i in instances(env)}
    free = [o for o in offers if o["machine_id"] not in used]
    foreign = httpx.put(
        f"{env.url}/api/v0/asks/{free[0]['id']}/",
        json={"image": "x", "label": "someone-elses-job"},
        headers=auth,
    ).json()
    other_install = httpx.put(
        f"{env.url}/api/v0/asks/{free[1]['id']}/",
        json={"image": "x", "label": "gpushop-zzz999-r0000000001"},
        headers=auth,
    ).json()
    ours_orphan = httpx.put(
        f"{env.url}/api/v0/asks/{free[2]['id']}/",
        json={"image": "x", "label": rental["label"].rsplit("-", 1)[0] + "-r0000000042"},
        headers=auth,
    ).json()
    code, out, _ = cli(capsys, "reconcile", "--json")
    report = json.loads(out)
    assert code == 0
    assert [(a["kind"], a["instance_id"]) for a in report["actions"]] == [
        ("destroy_orphan", str(ours_orphan["new_contract"]))
    ]
    left = {i["id"] for i in instances(env)}
    assert left == {
        int(rental["instance_id"]),
        foreign["new_contract"],
        other_install["new_contract"],
    }
    _, out, _ = cli(capsys, "events", "--json", "--type", "orphan.destroyed")
    [told] = [json.loads(line) for line in out.splitlines()]
    assert told["data"]["instance_id"] == str(ours_orphan["new_contract"])
    _, out, _ = cli(capsys, "events", "--json", "--type", "reconcile.completed")
    [done] = [json.loads(line) for line in out.splitlines()]
    assert [a["kind"] for a in done["data"]["actions"]] == ["destroy_orphan"]
    _, out, _ = cli(capsys, "reconcile", "--json")  # idempotent
    assert json.loads(out)["actions"] == []


def test_two_reconcilers_do_not_fight(env: Any, capsys: Any) -> None:
    with store() as s, s.reconcile_lock():
        proc = subprocess.run(
            [sys.executable, "-m", "gpushop", "reconcile", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ.copy(),
        )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["skipped"] == "another reconcile is running"


@pytest.fixture
def spawn_up() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """`gpushop up` in a process of its own; any still running when the test ends is killed, so
    a failed test leaves nothing renting from the emulator the next test resets and uses."""
    procs: list[subprocess.Popen[str]] = []

    def spawn(*extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpushop", "up", "--min-vram", "24", "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        proc.kill()
        proc.communicate()


def rental_states() -> list[str]:
    if not Path(os.environ["GPUSHOP_DB_URL"].removeprefix("sqlite:///")).exists():
        return []
    with store() as s:
        return [str(r.state) for r in s.list()]


def test_sigterm_during_up_releases_what_was_created(env: Any, spawn_up: Any) -> None:
    env.control.stuck_loading(count=1)
    proc = spawn_up("--ready-timeout", "10m")
    # SIGTERM while `up` waits for the (stuck) instance it created
    until(lambda: rental_states() == ["provisioning"], "up to wait for its instance")
    assert len(instances(env)) == 1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "released" in err
    assert instances(env) == []


def test_two_racing_ups_for_one_offer_rent_it_once(
    env: Any, monkeypatch: Any, spawn_up: Any
) -> None:
    """Both `up`s chose the same top offer and reach their claim at the same moment: the
    account's key list, which each asks for once right before it claims, is answered to both
    at once (an emulator barrier). Exactly one rents the offer; the other yields before any
    create call and rents the next one."""
    monkeypatch.setenv("GPUSHOP_SEED", "7")  # both rank the offers alike
    env.control.fault("GET /api/v0/ssh/", "barrier", count=2)
    procs = [spawn_up("--ready-timeout", "30s") for _ in range(2)]
    results, errors = [], []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
        errors.append(err)
    assert {r["state"] for r in results} == {"ready"}
    assert results[0]["instance_id"] != results[1]["instance_id"]
    assert len(instances(env)) == 2
    # both went for the same offer; the loser said so, and no create call was wasted
    first_tries = [re.search(r"renting (\S+):", err).group(1) for err in errors]  # type: ignore[union-attr]
    assert first_tries[0] == first_tries[1], errors
    assert sum(f"{first_tries[0]} was taken meanwhile" in err for err in errors) == 1, errors
    assert env.control.request_count("GET /api/v0/ssh/") >= 2
    assert env.control.request_count("PUT /api/v0/asks/{id}/") == 2


def test_kill_9_while_the_create_answer_is_held_then_reconcile_destroys_the_orphan(
    env: Any, capsys: Any, spawn_up: Any
) -> None:
    # act, then hold the answer: the instance exists but `up` never learns its id
    env.control.fault("PUT /api/v0/asks/{id}/", "drop", count=1, latency_s=30)
    proc = spawn_up("--ready-timeout", "30s")
    until(lambda: len(instances(env)) == 1, "the create to act")
    proc.kill()  # SIGKILL: no cleanup can run
    proc.communicate(timeout=10)
    assert len(instances(env)) == 1  # left behind, labelled
    with store() as s:
        [rental] = s.list()
        assert str(rental.state) == "creating" and rental.instance_id is None
    code, out, _ = cli(capsys, "reconcile", "--json")
    report = json.loads(out)
    assert code == 0, report
    assert [a["kind"] for a in report["actions"]] == ["abandoned"]
    assert instances(env) == []
    with store() as s:
        assert str(s.get(rental.id).state) == "failed"  # type: ignore[union-attr]


def test_interruptible_bids_above_min_bid_and_an_outbid_rental_is_released(
    env: Any, capsys: Any
) -> None:
    rental = up(capsys, "--interruptible")
    inst = env.control.instance(int(rental["instance_id"]))
    shown = next(i for i in instances(env) if str(i["id"]) == rental["instance_id"])
    assert shown["is_bid"] is True  # never silently on demand
    kept = up(capsys, "--interruptible", "--keep-interrupted")
    env.control.outbid(instance_id=int(rental["instance_id"]))
    env.control.outbid(instance_id=int(kept["instance_id"]))
    code, out, _ = cli(capsys, "reconcile", "--json")
    kinds = sorted((a["rental_id"], a["kind"]) for a in json.loads(out)["actions"])
    assert code == 0 and kinds == sorted(
        [(rental["rental_id"], "outbid"), (kept["rental_id"], "outbid")]
    )
    with store() as s:
        assert str(s.get(rental["rental_id"]).state) == "released"  # type: ignore[union-attr]
        assert str(s.get(kept["rental_id"]).state) == "interrupted"  # type: ignore[union-attr]
    assert [str(i["id"]) for i in instances(env)] == [kept["instance_id"]]
    assert inst["id"] == int(rental["instance_id"])


def test_a_max_price_below_the_market_rents_nothing(env: Any, capsys: Any) -> None:
    code, _, err = cli(capsys, "up", "--interruptible", "--gpu", "H100", "--max-price", "0.05")
    assert code == 6 and "no offer matches" in err
    assert instances(env) == []


def test_costs_after_a_rental(env: Any, capsys: Any) -> None:
    rental = up(capsys)

    def cost_so_far() -> float:
        code, out, _ = cli(capsys, "ps", "--json")
        assert code == 0
        return float(json.loads(out)[0]["cost_usd"])

    until(lambda: cost_so_far() > 0, "the rental to cost something")
    assert cli(capsys, "down", rental["rental_id"])[0] == 0
    code, out, err = cli(capsys, "costs", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["total_usd"] > 0
    assert set(data["by_gpu"]) == {rental["gpu_name"]}
    assert set(data["by_rental"]) == {rental["rental_id"]}
    assert "vastai" in data["billed_by_provider"]
    assert cli(capsys, "costs", "--days", "0")[0] == 2


def test_the_on_instance_watchdog_stops_the_instance_with_no_gpushop_running(
    env: Any, capsys: Any
) -> None:
    rental = up(capsys, "--max-duration", "1s", "--watchdog-grace", "1s")
    # `up` has returned: no gpushop process is left; the instance must stop by itself
    iid = int(rental["instance_id"])

    def stopped() -> bool:
        shown = next(i for i in instances(env) if i["id"] == iid)
        return shown["intended_status"] == "stopped"

    until(stopped, "the watchdog to stop the instance")
    env_seen = env.control.instance(iid)["env"]
    assert "CONTAINER_API_KEY" in env_seen  # the provider's own instance-scoped key
    assert env.api_key not in json.dumps(env_seen)  # never the account's key
    code, out, _ = cli(capsys, "reconcile", "--json")  # the next reconcile deletes it
    assert code == 0 and [a["kind"] for a in json.loads(out)["actions"]] == ["expired"]
    assert instances(env) == []


def test_offers_taken_between_search_and_create_cost_a_new_search_not_an_attempt(
    env: Any, capsys: Any
) -> None:
    env.control.offer_taken(count=4)  # more than the 3 attempts a failing host would get
    code, out, err = cli(capsys, "up", "--min-vram", "24", "--json")
    assert code == 0, err
    assert err.count("was taken meanwhile; searching again") == 4
    assert json.loads(out)["state"] == "ready" and len(instances(env)) == 1


def test_a_container_that_cannot_start_fails_fast_and_the_next_offer_is_used(
    env: Any, capsys: Any
) -> None:
    env.control.oci_error(count=1)
    started = time.monotonic()
    code, _, err = cli(capsys, "up", "--min-vram", "24", "--ready-timeout", "10m", "--json")
    assert code == 0, err
    assert "cannot start" in err and "OCI" in err
    assert time.monotonic() - started < 60  # not the 10 minute loading timeout
    assert len(instances(env)) == 1
