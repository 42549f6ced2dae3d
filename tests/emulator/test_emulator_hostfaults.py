"""Host faults through the control API: each one as a client sees it over HTTP (and SSH)."""

from __future__ import annotations

import asyncssh
import httpx
import pytest
from emulator_ssh import cheapest, create, new_key, register, show, ssh_run, wait_status

from gpushop.emulator import EmulatorThread
from gpushop.emulator.control import EmulatorControlError


@pytest.fixture
def emu(emulator: EmulatorThread) -> EmulatorThread:
    emulator.control.reset(speed=1.0)  # the tests move the clock themselves
    return emulator


def test_stuck_loading_never_runs(emu: EmulatorThread, client: httpx.Client) -> None:
    offer = cheapest(client)
    emu.control.stuck_loading(offer_id=offer["id"])
    instance_id = create(client, offer["id"], image="acme/app:1")
    emu.control.advance(100_000)
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "loading"
    assert "6 of 9 layers complete" in row["status_msg"]
    assert row["ports"] == {}
    # the fault was consumed: the next instance on another offer runs
    other = create(client, cheapest(client)["id"], image="acme/app:1")
    emu.control.advance(100_000)
    assert show(client, other)["actual_status"] == "running"  # type: ignore[index]


def test_oci_error_shows_created(emu: EmulatorThread, client: httpx.Client) -> None:
    emu.control.oci_error()  # the next create, whatever the offer
    instance_id = create(client, cheapest(client)["id"])
    emu.control.advance(100_000)
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "created"
    assert "OCI runtime create failed" in row["status_msg"]
    assert (row["intended_status"], row["cur_state"]) == ("running", "running")
    with pytest.raises(OSError):
        ssh_run(row["ssh_port"], new_key(), "true")


def test_host_goes_offline(emulator: EmulatorThread, client: httpx.Client) -> None:
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    key = new_key()
    register(client, key)
    instance_id = create(client, cheapest(client)["id"])
    row = wait_status(client, instance_id, "running")
    ssh_run(row["ssh_port"], key, "sleep infinity >/dev/null 2>&1 &")
    from emulator_ssh import all_gone, inside

    pids = inside(emulator.control.instance(instance_id))
    emulator.control.host_offline(instance_id=instance_id)
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "offline" and row["ports"] == {}
    with pytest.raises(OSError):
        ssh_run(row["ssh_port"], key, "true")
    assert pids and all_gone(pids)
    # billing stopped for the GPU when it went offline
    billing = emulator.control.instance(instance_id)["billing"]
    emulator.control.advance(3600)
    assert emulator.control.instance(instance_id)["billing"]["gpu_hours"] == pytest.approx(
        billing["gpu_hours"], abs=1e-4
    )


def test_offline_after_a_delay_during_start_up(emu: EmulatorThread, client: httpx.Client) -> None:
    emu.control.host_offline(after_s=10.0)
    instance_id = create(client, cheapest(client)["id"], image="acme/app:1")
    emu.control.advance(5.0)
    assert show(client, instance_id)["actual_status"] == "loading"  # type: ignore[index]
    emu.control.advance(10.0)
    assert show(client, instance_id)["actual_status"] == "offline"  # type: ignore[index]
    emu.control.advance(100_000)
    assert show(client, instance_id)["actual_status"] == "offline"  # type: ignore[index]


def test_create_answers_success_false_with_a_stopped_instance(
    emu: EmulatorThread, client: httpx.Client
) -> None:
    emu.control.create_stopped()
    offer = cheapest(client)
    response = client.put(f"/api/v0/asks/{offer['id']}/", json={"image": "acme/a", "disk": 16})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False and isinstance(body["new_contract"], int)
    row = show(client, body["new_contract"])
    assert row is not None
    assert (row["intended_status"], row["cur_state"], row["next_state"]) == ("stopped",) * 3
    assert row["actual_status"] == "exited"
    start = client.put(f"/api/v0/instances/{body['new_contract']}/", json={"state": "running"})
    assert start.json()["error"] == "resources_unavailable"
    emu.control.advance(3600)
    billing = emu.control.instance(body["new_contract"])["billing"]
    assert billing["gpu_hours"] == 0.0
    assert billing["cost"] == pytest.approx(offer["storage_cost"] * 16 / 720, rel=1e-3)


def test_destroy_that_does_not_take_the_first_time(
    emu: EmulatorThread, client: httpx.Client
) -> None:
    emu.control.destroy_ignored()
    instance_id = create(client, cheapest(client)["id"])
    first = client.delete(f"/api/v0/instances/{instance_id}/")
    assert first.status_code == 200 and first.json() == {"success": True}
    assert show(client, instance_id) is not None
    listed = client.get("/api/v1/instances/").json()["instances"]
    assert [r["id"] for r in listed] == [instance_id]
    assert client.delete(f"/api/v0/instances/{instance_id}/").json() == {"success": True}
    assert show(client, instance_id) is None


def test_offer_taken_between_search_and_create(emu: EmulatorThread, client: httpx.Client) -> None:
    offer = cheapest(client)
    emu.control.offer_taken(offer_id=offer["id"])
    response = client.put(f"/api/v0/asks/{offer['id']}/", json={"image": "acme/app:1"})
    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "error": "no_such_ask",
        "msg": f"No ask by id {offer['id']} is available.",
        "ask_id": offer["id"],
    }
    assert cheapest(client)["id"] != offer["id"]

    # untargeted: whatever the next create picks is gone
    emu.control.offer_taken()
    second = cheapest(client)
    assert client.put(f"/api/v0/asks/{second['id']}/", json={}).status_code == 404
    third = cheapest(client)
    assert third["id"] != second["id"]
    assert client.put(f"/api/v0/asks/{third['id']}/", json={}).status_code == 200


def test_outbid_interruptible_instance(emu: EmulatorThread, client: httpx.Client) -> None:
    offer = cheapest(client)
    instance_id = create(client, offer["id"], price=offer["min_bid"] + 0.01)
    emu.control.advance(100_000)
    assert show(client, instance_id)["actual_status"] == "running"  # type: ignore[index]
    emu.control.outbid(instance_id=instance_id)
    row = show(client, instance_id)
    assert row is not None
    assert (row["intended_status"], row["cur_state"], row["next_state"]) == ("stopped",) * 3
    assert row["actual_status"] == "exited"
    assert row["status_msg"] == "Instance stopped: outbid by a higher priority rental"

    on_demand = create(client, cheapest(client)["id"])
    with pytest.raises(EmulatorControlError, match="interruptible"):
        emu.control.outbid(instance_id=on_demand)


def test_outbid_later_for_the_next_bid(emu: EmulatorThread, client: httpx.Client) -> None:
    emu.control.outbid(after_s=100_000)
    offer = cheapest(client)
    on_demand = create(client, offer["id"])  # not a bid: the fault waits
    bid_offer = cheapest(client)
    bid = create(client, bid_offer["id"], price=bid_offer["min_bid"])
    emu.control.advance(50_000)
    assert show(client, bid)["actual_status"] == "running"  # type: ignore[index]
    emu.control.advance(60_000)
    assert show(client, bid)["actual_status"] == "exited"  # type: ignore[index]
    assert show(client, on_demand)["actual_status"] == "running"  # type: ignore[index]


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "lying_host"},
        {"kind": "lying_host", "num_gpus": 0},
        {"kind": "stuck_loading", "instance_id": 1, "offer_id": 2},
        {"kind": "outbid", "after_s": -1},
        {"kind": "offline", "instance_id": 999},
        {"kind": "stuck_loading", "gpu_name": "RTX 3090"},
        {"kind": "create_stopped", "count": 0},
    ],
)
def test_bad_host_faults_are_refused(emu: EmulatorThread, spec: dict[str, object]) -> None:
    response = httpx.post(f"{emu.url}/_emulator/faults", json=spec)
    assert response.status_code == 400, response.text


def test_host_faults_show_in_state_and_clear(emu: EmulatorThread) -> None:
    emu.control.stuck_loading(count=2)
    faults = emu.control.state()["faults"]
    assert [f["kind"] for f in faults] == ["stuck_loading"] and faults[0]["count"] == 2
    emu.control.clear_faults()
    assert emu.control.state()["faults"] == []


def test_keys_are_asyncssh_importable() -> None:
    key = new_key()
    assert asyncssh.import_public_key(key.export_public_key()).public_data == key.public_data
