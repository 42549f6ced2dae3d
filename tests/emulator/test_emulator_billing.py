"""Billing: credit falls with dph x running time plus storage; /charges/ shows the same money."""

from __future__ import annotations

import json

import httpx
import pytest
from emulator_ssh import cheapest, create, show

from gpushop.emulator import EmulatorThread


@pytest.fixture
def emu(emulator: EmulatorThread) -> EmulatorThread:
    # real-time speed and fixed short phases: the test moves the clock by hours
    emulator.control.reset(speed=1.0, provision_delay_s=0.0, loading_delay_s=0.0, credit=50.0)
    return emulator


def credit(client: httpx.Client) -> float:
    return float(client.get("/api/v0/users/current").json()["credit"])


def test_credit_falls_with_running_time_and_storage_while_stopped(
    emu: EmulatorThread, client: httpx.Client
) -> None:
    offer = cheapest(client)
    instance_id = create(client, offer["id"], disk=100)
    row = show(client, instance_id)
    assert row is not None
    gpu_rate, disk_rate = row["dph_base"], offer["storage_cost"] * 100 / 720
    assert row["dph_total"] == pytest.approx(gpu_rate + disk_rate, rel=1e-6)

    emu.control.advance(2 * 3600)  # 2 h running
    expected = 2 * (gpu_rate + disk_rate)
    assert credit(client) == pytest.approx(50.0 - expected, abs=2e-3)
    user = client.get("/api/v0/users/current").json()
    assert user["total_spend"] == pytest.approx(expected, abs=2e-3)

    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    emu.control.advance(10 * 3600)  # 10 h stopped: storage only
    expected += 10 * disk_rate
    assert credit(client) == pytest.approx(50.0 - expected, abs=2e-3)

    client.delete(f"/api/v0/instances/{instance_id}/")
    emu.control.advance(5 * 3600)  # gone: nothing more
    assert credit(client) == pytest.approx(50.0 - expected, abs=2e-3)


def test_charges_match_the_accounting(emu: EmulatorThread, client: httpx.Client) -> None:
    offer = cheapest(client)
    instance_id = create(client, offer["id"], disk=64, label="gpushop-abc")
    emu.control.advance(3 * 3600)
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    emu.control.advance(21 * 3600)
    row = show(client, instance_id)
    assert row is not None
    body = client.get("/api/v0/charges/").json()
    assert (body["success"], body["count"], body["total"], body["next_token"]) == (
        True,
        1,
        1,
        None,
    )
    (entry,) = body["results"]
    assert entry["source"] == f"instance-{instance_id}" and entry["type"] == "instance"
    assert entry["metadata"] == {"label": "gpushop-abc"}
    assert entry["description"] == f"Instance {instance_id} Charges - 1 day"
    gpu, disk = entry["items"]
    assert gpu["type"] == "gpu" and gpu["description"].startswith("3.000 hours at $")
    assert gpu["amount"] == pytest.approx(3 * row["dph_base"], abs=2e-3)
    assert disk["type"] == "disk"
    assert disk["description"] == (
        f"64.000 GB for 1.000 days at ${offer['storage_cost']:.3f}/GB/month"
    )
    assert disk["amount"] == pytest.approx(24 * offer["storage_cost"] * 64 / 720, abs=2e-3)
    assert entry["amount"] == pytest.approx(gpu["amount"] + disk["amount"], abs=1e-3)
    spend = client.get("/api/v0/users/current").json()["total_spend"]
    assert entry["amount"] == pytest.approx(spend, abs=2e-3)


def test_charges_day_range_paging_and_auth(emu: EmulatorThread, client: httpx.Client) -> None:
    ids = [create(client, cheapest(client)["id"]) for _ in range(3)]
    emu.control.advance(3600)
    first = client.get("/api/v0/charges/", params={"limit": 2}).json()
    assert first["count"] == 2 and first["total"] == 3 and first["next_token"]
    second = client.get(
        "/api/v0/charges/", params={"limit": 2, "after_token": first["next_token"]}
    ).json()
    assert second["count"] == 1 and second["next_token"] is None
    sources = [r["source"] for r in first["results"] + second["results"]]
    assert sources == [f"instance-{i}" for i in ids]

    now = emu.control.state()["instances"][0]["start_date"] + 3600
    future = {"day": {"gte": now + 86400, "lte": now + 2 * 86400}, "type": {"in": ["instance"]}}
    empty = client.get("/api/v0/charges/", params={"select_filters": json.dumps(future)}).json()
    assert empty["results"] == [] and empty["total"] == 0
    half = {"day": {"gte": now - 1800, "lte": now}}
    part = client.get("/api/v0/charges/", params={"select_filters": json.dumps(half)}).json()
    assert part["total"] == 3
    assert part["results"][0]["end"] - part["results"][0]["start"] == pytest.approx(1800, abs=2)

    anon = httpx.get(f"{emu.url}/api/v0/charges/")
    assert anon.status_code == 403 and anon.json()["msg"] == "This action requires login."
    wrong = httpx.get(f"{emu.url}/api/v0/charges/", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 404 and wrong.json()["msg"] == "Invalid user key"


def test_no_gpu_billing_while_loading(emulator: EmulatorThread, client: httpx.Client) -> None:
    emulator.control.reset(speed=1.0, provision_delay_s=0.0, loading_delay_s=3600.0)
    offer = cheapest(client)
    instance_id = create(client, offer["id"], disk=10)
    emulator.control.advance(1800)
    view = emulator.control.instance(instance_id)
    assert view["actual_status"] == "loading" and view["billing"]["gpu_hours"] == 0.0
    assert view["billing"]["cost"] == pytest.approx(
        0.5 * offer["storage_cost"] * 10 / 720, rel=1e-2
    )


def test_running_instances_stop_when_credit_runs_out(
    emulator: EmulatorThread, client: httpx.Client
) -> None:
    emulator.control.reset(speed=1.0, provision_delay_s=0.0, loading_delay_s=0.0, credit=1.0)
    offer = cheapest(client)
    instance_id = create(client, offer["id"], disk=10)
    row = show(client, instance_id)
    assert row is not None
    rate, disk_rate = row["dph_total"], offer["storage_cost"] * 10 / 720
    hours_to_zero = 1.0 / rate
    total = hours_to_zero + 5.0
    emulator.control.advance(total * 3600)
    row = show(client, instance_id)
    assert row is not None
    assert (row["intended_status"], row["actual_status"]) == ("stopped", "exited")
    assert row["status_msg"] == "Instance stopped: account credit exhausted"
    # stopped when credit crossed 0, then storage kept billing
    assert credit(client) == pytest.approx(-5.0 * disk_rate, abs=2e-3)
    start = client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
    assert start.status_code == 400 and start.json()["error"] == "missing_billing"
    user = client.get("/api/v0/users/current").json()
    assert user["can_pay"] is False
