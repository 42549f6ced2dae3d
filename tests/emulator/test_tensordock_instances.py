"""TensorDock VMs: create by hostnode or by location, the life cycle and its delays, list and
get, start/stop/delete/modify and their refusals, SSH keys stored as secrets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tensordock_helpers import (
    RTX4090,
    body,
    create_on,
    detail,
    free_gpus,
    new_key,
    node_with,
    public_text,
    td_client,
    wait_for,
)

from gpushop.emulator import EmulatorThread


@pytest.fixture
def td(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        yield client


def error(response: httpx.Response) -> tuple[int, int, str]:
    data = response.json()
    return response.status_code, data["status"], data["error"]


def test_create_by_hostnode_then_get_list_delete(td: httpx.Client) -> None:
    node = node_with(td)
    ports = node["available_resources"]["available_ports"][:2]
    payload = body(
        new_key(),
        name="gpushop-abc123-r01",
        hostnode_id=node["id"],
        port_forwards=[
            {"internal_port": 22, "external_port": ports[0]},
            {"internal_port": 8888, "external_port": ports[1], "protocol": "tcp"},
        ],
        resources={"gpus": {RTX4090: {"count": 1}}},
    )
    created = td.post("/instances", json=payload)
    assert created.status_code == 200
    vm_id = created.json()["data"]["id"]
    row = detail(td, vm_id)
    assert row["status"] == "running" and row["ipAddress"] == ""  # booting: no IP yet
    assert row["portForwards"] == [
        {"internal_port": 22, "external_port": ports[0]},
        {"internal_port": 8888, "external_port": ports[1]},
    ]
    row = wait_for(td, vm_id, "running", ip=True)
    assert row["ipAddress"] == "127.0.0.1"
    assert row["name"] == "gpushop-abc123-r01"
    listed = td.get("/instances").json()["data"]["instances"]
    assert listed == [
        {
            "type": "VM",
            "id": vm_id,
            "attributes": {"name": "gpushop-abc123-r01", "status": "running"},
        }
    ]
    assert td.get(f"/instances/{vm_id}/").status_code == 200  # both slash forms
    assert td.delete(f"/instances/{vm_id}").status_code == 200
    assert td.get(f"/instances/{vm_id}").status_code == 404
    assert td.delete(f"/instances/{vm_id}").status_code == 404  # clients treat it as gone
    assert td.get("/instances").json() == {"data": {"instances": []}}


def test_create_by_location_lands_on_its_hostnode(td: httpx.Client) -> None:
    location = next(
        loc
        for loc in td.get("/locations").json()["data"]["locations"]
        if any(g["v0Name"] == RTX4090 for g in loc["gpus"])
    )
    gpu = next(g for g in location["gpus"] if g["v0Name"] == RTX4090)
    payload = body(
        new_key(),
        location_id=location["id"],
        port_forwards=[{"internal_port": 22, "external_port": 1}],  # remapped
        resources={"gpus": {RTX4090: {"count": 1}}},
    )
    vm_id = td.post("/instances", json=payload).json()["data"]["id"]
    row = detail(td, vm_id)
    (forward,) = row["portForwards"]
    assert forward["internal_port"] == 22 and forward["external_port"] >= 20000
    expected = gpu["price_per_hr"] + 4 * gpu["pricing"]["per_vcpu_hr"]
    expected += 16 * gpu["pricing"]["per_gb_ram_hr"] + 100 * gpu["pricing"]["per_gb_storage_hr"]
    assert row["rateHourly"] == pytest.approx(expected, abs=1e-5)
    after = td.get("/locations").json()["data"]["locations"]
    counts = {g["v0Name"]: g["max_count"] for loc in after if loc["id"] == location["id"]
              for g in loc["gpus"]}  # fmt: skip
    assert counts.get(RTX4090, 0) == gpu["max_count"] - 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"resources": {"storage_gb": 99}}, "Storage must be at least 100 GB"),
        ({"resources": {"vcpu_count": 3}}, "vcpu_count must be an even number of at least 2"),
        ({"image": "ubuntu1804"}, "Invalid image: ubuntu1804"),
        ({"location_id": "x"}, "Specify exactly one of location_id or hostnode_id"),
        ({"ssh_key": None}, "Specify exactly one of ssh_key or ssh_key_id"),
        ({"ssh_key": "ssh-ed25519 not-a-key"}, "Invalid SSH public key"),
        ({"ssh_key_id": "nope"}, "Specify exactly one of ssh_key or ssh_key_id"),
        ({"resources": {"gpus": {"rtx4090-pcie-24gb": {"count": 1}}}}, "Unknown GPU model"),
        (
            {"resources": {"gpus": {RTX4090: {"count": 1}, "a100-pcie-80gb": {"count": 1}}}},
            "Only one GPU model per instance is supported",
        ),
        ({"port_forwards": [{"internal_port": 22, "external_port": 1}]}, "External port 1"),
        ({"name": ""}, "name is required"),
    ],
)
def test_validation_errors_are_http_400(
    td: httpx.Client, change: dict[str, Any], message: str
) -> None:
    node = node_with(td)
    payload = body(new_key(), hostnode_id=node["id"])
    attrs = payload["data"]["attributes"]
    for key, value in change.items():
        if key == "resources":
            attrs["resources"].update(value)
        elif value is None:
            attrs.pop(key)
        else:
            attrs[key] = value
    response = td.post("/instances", json=payload)
    assert response.status_code == 400
    assert response.json()["status"] == 400
    assert message in response.json()["error"]


def test_location_placement_needs_a_gpu_and_a_known_location(td: httpx.Client) -> None:
    location = td.get("/locations").json()["data"]["locations"][0]
    cpu = td.post("/instances", json=body(new_key(), location_id=location["id"]))
    assert error(cpu) == (400, 400, "Location-based deployments require at least one GPU")
    unknown = td.post(
        "/instances",
        json=body(new_key(), location_id="nowhere", resources={"gpus": {RTX4090: {"count": 1}}}),
    )
    assert error(unknown) == (400, 400, "Location nowhere not found")
    assert td.post("/instances", content=b"{not json").status_code == 400


def test_capacity_errors_come_with_http_200(td: httpx.Client) -> None:
    node = node_with(td)
    have = free_gpus(node, RTX4090)
    payload = body(
        new_key(), hostnode_id=node["id"], resources={"gpus": {RTX4090: {"count": have + 1}}}
    )
    response = td.post("/instances", json=payload)
    status, inner, message = error(response)
    assert (status, inner) == (200, 400)
    assert message.startswith("No available nodes found matching the requested resources")
    assert f"{have} x {RTX4090} available" in message
    cpu_only = next(n for n in td.get("/hostnodes").json()["data"]["hostnodes"] if not
                    n["available_resources"]["gpus"])  # fmt: skip
    greedy = body(
        new_key(),
        hostnode_id=cpu_only["id"],
        resources={"vcpu_count": cpu_only["available_resources"]["vcpu_count"] + 2},
    )
    assert error(td.post("/instances", json=greedy))[:2] == (200, 400)
    assert td.get("/instances").json()["data"]["instances"] == []  # nothing was made


def test_cpu_only_vm_on_a_hostnode(td: httpx.Client) -> None:
    node = next(
        n
        for n in td.get("/hostnodes").json()["data"]["hostnodes"]
        if not n["available_resources"]["gpus"]
    )
    vm_id, _ = create_on(td, new_key(), node, None)
    row = wait_for(td, vm_id, "running", ip=True)
    assert row["resources"]["gpus"] == {}


def test_dedicated_ip_still_forwards_ssh(td: httpx.Client) -> None:
    """Every VM shares 127.0.0.1 here, so a dedicated IP gets a forward for 22 all the same."""
    nodes = td.get("/hostnodes").json()["data"]["hostnodes"]
    node = next(n for n in nodes if n["available_resources"]["has_public_ip_available"])
    payload = body(new_key(), hostnode_id=node["id"], useDedicatedIp=True)
    vm_id = td.post("/instances", json=payload).json()["data"]["id"]
    (forward,) = detail(td, vm_id)["portForwards"]
    assert forward["internal_port"] == 22
    assert forward["external_port"] in node["available_resources"]["available_ports"]
    no_ip = next(n for n in nodes if not n["available_resources"]["has_public_ip_available"])
    refused = td.post(
        "/instances", json=body(new_key(), hostnode_id=no_ip["id"], useDedicatedIp=True)
    )
    assert error(refused)[:2] == (200, 400) and "dedicated IP" in error(refused)[2]


def test_life_cycle_transitions(emulator: EmulatorThread, td: httpx.Client) -> None:
    # at speed 1 (deploy 40 s, start 20 s, stop 6 s), on the emulator's clock: `advance`
    # crosses a phase, the wall clock's milliseconds cannot
    emulator.control.reset(speed=1.0)
    vm_id, _ = create_on(td, new_key(), node_with(td))
    assert detail(td, vm_id)["ipAddress"] == ""
    emulator.control.advance(41.0)
    wait_for(td, vm_id, "running", ip=True)
    stop = td.post(f"/instances/{vm_id}/stop")
    assert stop.json()["data"]["attributes"]["status"] == "stopping"
    assert detail(td, vm_id)["status"] == "stopping"
    emulator.control.advance(7.0)
    wait_for(td, vm_id, "stopped")
    assert detail(td, vm_id)["ipAddress"] == "127.0.0.1"  # the VM keeps its address
    td.post(f"/instances/{vm_id}/start")
    assert detail(td, vm_id)["status"] == "starting"
    emulator.control.advance(21.0)
    wait_for(td, vm_id, "running")


def test_start_and_stop_refusals(td: httpx.Client) -> None:
    vm_id, _ = create_on(td, new_key(), node_with(td))
    assert error(td.post(f"/instances/{vm_id}/start")) == (
        400,
        400,
        "Instance must be stopped to be started",
    )
    td.post(f"/instances/{vm_id}/stop")
    assert error(td.post(f"/instances/{vm_id}/stop"))[:2] == (400, 400)
    unknown = "00000000-0000-4000-8000-000000000000"
    for method, path in (("POST", "start"), ("POST", "stop"), ("PUT", "modify")):
        response = td.request(method, f"/instances/{unknown}/{path}", json={})
        assert error(response) == (404, 404, "Instance not found")


def test_released_vm_restarts_when_its_gpus_are_free(td: httpx.Client) -> None:
    node = node_with(td)
    vm_id, _ = create_on(td, new_key(), node)
    td.post(f"/instances/{vm_id}/stop", json={"disassociate_resources": True})
    wait_for(td, vm_id, "stoppeddisassociated")
    now = td.get(f"/hostnodes/{node['id']}").json()["data"]
    assert free_gpus(now, RTX4090) == free_gpus(node, RTX4090)  # the GPU went back
    assert (
        now["available_resources"]["storage_gb"] == node["available_resources"]["storage_gb"] - 100
    )
    assert td.post(f"/instances/{vm_id}/start").status_code == 200
    wait_for(td, vm_id, "running")
    # ... and fails when someone took them meanwhile ("GPU slot expired")
    td.post(f"/instances/{vm_id}/stop", json={"disassociate_resources": True})
    wait_for(td, vm_id, "stoppeddisassociated")
    others = []
    for _ in range(free_gpus(node, RTX4090)):
        others.append(
            create_on(td, new_key(), td.get(f"/hostnodes/{node['id']}").json()["data"])[0]
        )
    status, inner, message = error(td.post(f"/instances/{vm_id}/start"))
    assert (status, inner) == (400, 400) and message.startswith("GPU slot expired")
    td.delete(f"/instances/{others[0]}")
    assert td.post(f"/instances/{vm_id}/start").status_code == 200


def test_modify_rules(td: httpx.Client) -> None:
    vm_id, _ = create_on(td, new_key(), node_with(td), resources={"storage_gb": 200})
    assert error(td.put(f"/instances/{vm_id}/modify", json={"cpuCores": 6})) == (
        400,
        400,
        "Instance must be stopped to be modified",
    )
    td.post(f"/instances/{vm_id}/stop")
    wait_for(td, vm_id, "stopped")
    rate = detail(td, vm_id)["rateHourly"]
    for bad, message in (
        ({"cpuCores": 5}, "cpuCores must be an even number"),
        ({"diskGb": 150}, "Storage can never be reduced"),
        ({"diskGb": 260}, "multiple of 50"),
        ({}, "Nothing to modify"),
        ({"gpus": {"gpuV0Name": "h100-sxm5-80gb", "count": 1}}, "Not enough resources"),
        ({"cpuCores": 4000}, "Not enough resources"),
    ):
        response = td.put(f"/instances/{vm_id}/modify", json=bad)
        assert response.status_code == 400 and message in response.json()["error"], bad
    ok = td.put(f"/instances/{vm_id}/modify", json={"cpuCores": 8, "ramGb": 32, "diskGb": 300})
    assert ok.status_code == 200
    row = detail(td, vm_id)
    assert row["resources"]["vcpu_count"] == 8 and row["resources"]["storage_gb"] == 300
    assert row["rateHourly"] > rate


def test_ssh_keys_as_secrets(td: httpx.Client) -> None:
    key = new_key()
    created = td.post(
        "/secrets",
        json={"data": {"type": "secret", "attributes": {"name": "k1", "type": "SSHKEY",
                                                        "value": public_text(key)}}},
    )  # fmt: skip
    assert created.status_code == 200
    secret = created.json()["data"]
    assert set(secret) == {"id", "name", "type"} and secret["type"] == "SSHKEY"
    assert td.get("/secrets").json() == {
        "data": {"secrets": [{"type": "SSHKEY", "id": secret["id"], "name": "k1"}]}
    }
    assert td.get(f"/secrets/{secret['id']}").json()["data"]["value"] == public_text(key)
    node = node_with(td)
    payload = body(None, hostnode_id=node["id"], ssh_key_id=secret["id"])
    vm_id = td.post("/instances", json=payload).json()["data"]["id"]
    assert td.get(f"/instances/{vm_id}").status_code == 200
    bad = td.post("/secrets", json={"data": {"attributes": {"name": "x", "type": "SSHKEY",
                                                             "value": "nope"}}})  # fmt: skip
    assert error(bad) == (400, 400, "Invalid SSH public key")
    deleted = td.delete(f"/secrets/{secret['id']}")
    assert deleted.json()["data"]["attributes"]["message"] == "Secret deleted successfully"
    assert error(td.get(f"/secrets/{secret['id']}")) == (404, 404, "Secret not found")


def test_windows_needs_a_password_and_no_key(td: httpx.Client) -> None:
    node = node_with(td)
    weak = td.post(
        "/instances",
        json=body(None, hostnode_id=node["id"], image="windows10", password="short"),
    )
    assert weak.status_code == 400 and "password" in weak.json()["error"]
    good = td.post(
        "/instances",
        json=body(None, hostnode_id=node["id"], image="windows10", password="Str0ng!Passw0rd"),
    )
    assert good.status_code == 200 and "error" not in good.json()


def test_unknown_paths_and_methods(td: httpx.Client) -> None:
    assert error(td.get("/nothing")) == (404, 404, "Not found")
    assert error(td.patch("/instances")) == (405, 405, "Method not allowed")
