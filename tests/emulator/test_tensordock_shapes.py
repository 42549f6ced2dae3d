"""Every TensorDock v2 body the emulator sends has the keys and JSON types of the fixtures in
tests/fixtures/tensordock/v2/ (copied from shared/fixtures), errors included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tensordock_helpers import (
    RTX4090,
    assert_same_shape,
    body,
    create_on,
    fixture,
    new_key,
    node_with,
    td_client,
    wait_for,
)

from gpushop.emulator import EmulatorThread


@pytest.fixture
def td(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        yield client


def generic_gpus(detail: dict[str, Any]) -> dict[str, Any]:
    """resources.gpus is keyed by model: compare its entries, whatever the model."""
    out = dict(detail)
    out["resources"] = dict(detail["resources"])
    entries = list(detail["resources"]["gpus"].values())
    out["resources"]["gpus"] = {"MODEL": entries[0]} if entries else {}
    return out


def test_discovery_shapes(td: httpx.Client) -> None:
    locations = td.get("/locations")
    assert locations.status_code == 200
    assert locations.headers["content-type"] == "application/json"
    assert_same_shape(locations.json(), fixture("v2/locations_list.json"))
    nodes = td.get("/hostnodes").json()
    assert_same_shape(nodes, fixture("v2/hostnodes_list.json"))
    one = td.get(f"/hostnodes/{nodes['data']['hostnodes'][0]['id']}").json()
    assert_same_shape(one, fixture("v2/hostnode_get.json"))
    # CPU-only hostnodes leave out the per-GPU caps, as the fixture's node #9 does
    cpu_only = [n for n in nodes["data"]["hostnodes"] if not n["available_resources"]["gpus"]]
    assert cpu_only
    assert "max_vcpus_per_gpu" not in cpu_only[0]["available_resources"]
    fixture_nodes = fixture("v2/hostnodes_list.json")["data"]["hostnodes"]
    theirs = next(n for n in fixture_nodes if not n["available_resources"]["gpus"])
    assert_same_shape(cpu_only[0], theirs)


def test_instance_shapes_through_the_life_cycle(td: httpx.Client) -> None:
    assert_same_shape(td.get("/instances").json(), fixture("v2/instances_list_empty.json"))
    key = new_key()
    created = td.post(
        "/instances",
        json=body(
            key,
            hostnode_id=node_with(td)["id"],
            resources={"gpus": {RTX4090: {"count": 1}}},
        ),
    )
    assert_same_shape(created.json(), fixture("v2/instance_create_response.json"))
    assert created.json()["data"]["status"] == "running"
    vm_id = created.json()["data"]["id"]
    running = wait_for(td, vm_id, "running", ip=True)
    assert_same_shape(generic_gpus(running), generic_gpus(fixture("v2/instance_get_running.json")))
    assert_same_shape(td.get("/instances").json(), fixture("v2/instances_list.json"))
    stop = td.post(f"/instances/{vm_id}/stop")
    assert_same_shape(stop.json(), fixture("v2/instance_stop_response.json"))
    stopped = wait_for(td, vm_id, "stopped")
    assert_same_shape(generic_gpus(stopped), generic_gpus(fixture("v2/instance_get_stopped.json")))
    start = td.post(f"/instances/{vm_id}/start")
    assert_same_shape(start.json(), fixture("v2/instance_start_response.json"))
    assert start.json()["data"]["attributes"]["status"] == "starting"
    wait_for(td, vm_id, "running")
    td.post(f"/instances/{vm_id}/stop", json={"disassociate_resources": True})
    released = wait_for(td, vm_id, "stoppeddisassociated")
    assert_same_shape(
        generic_gpus(released),
        generic_gpus(fixture("v2/instance_get_stoppeddisassociated.json")),
    )
    deleted = td.delete(f"/instances/{vm_id}")
    assert deleted.json() == fixture("v2/instance_delete_response.json")


def test_create_requests_of_the_fixtures_are_accepted(td: httpx.Client) -> None:
    """The fixtures' create bodies, pointed at seeded places: same fields, same meaning."""
    by_node = fixture("v2/instance_create_request_hostnode.json")
    attrs = by_node["data"]["attributes"]
    node = node_with(td)
    attrs["hostnode_id"] = node["id"]
    attrs["port_forwards"] = [
        {"internal_port": 22, "external_port": node["available_resources"]["available_ports"][0]}
    ]
    attrs["ssh_key"] = new_key().export_public_key().decode().strip()
    response = td.post("/instances", json=by_node)
    assert response.status_code == 200 and "error" not in response.json(), response.text
    by_location = fixture("v2/instance_create_request_location.json")
    attrs = by_location["data"]["attributes"]
    location = next(
        loc
        for loc in td.get("/locations").json()["data"]["locations"]
        for g in loc["gpus"]
        if g["max_count"] >= 2 and g["network_features"]["dedicated_ip_available"]
    )
    gpu = next(g for g in location["gpus"] if g["max_count"] >= 2)
    attrs["location_id"] = location["id"]
    attrs["resources"]["gpus"] = {gpu["v0Name"]: {"count": 2}}
    attrs["resources"]["vcpu_count"] = min(16, gpu["resources"]["max_vcpus"]) // 2 * 2
    attrs["resources"]["ram_gb"] = min(64, gpu["resources"]["max_ram_gb"])
    attrs["ssh_key"] = new_key().export_public_key().decode().strip()
    if not gpu["network_features"]["dedicated_ip_available"]:
        attrs.pop("useDedicatedIp")
    response = td.post("/instances", json=by_location)
    assert response.status_code == 200 and "error" not in response.json(), response.text


def test_modify_request_of_the_fixture(td: httpx.Client) -> None:
    node = node_with(td, "a100-pcie-80gb")
    vm_id, _ = create_on(td, new_key(), node, "a100-pcie-80gb", resources={"storage_gb": 200})
    td.post(f"/instances/{vm_id}/stop")
    wait_for(td, vm_id, "stopped")
    response = td.put(f"/instances/{vm_id}/modify", json=fixture("v2/instance_modify_request.json"))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "data": {"type": "success", "attributes": {"message": "Instance modified successfully"}}
    }
    resources = wait_for(td, vm_id, "stopped")["resources"]
    assert resources["vcpu_count"] == 8 and resources["ram_gb"] == 32
    assert resources["storage_gb"] == 250
    assert resources["gpus"] == {"a100-pcie-80gb": {"count": 1, "v0Name": "a100-pcie-80gb"}}


def test_error_shapes(emulator: EmulatorThread, td: httpx.Client) -> None:
    unauthorized = httpx.get(emulator.tensordock_url + "/instances", timeout=10)
    assert unauthorized.status_code == 401
    assert unauthorized.json() == fixture("v2/errors/unauthorized_http401.json")
    missing = td.get("/instances/7f3a9c2e-4b1d-4e8a-9c6f-0a2b4d6e8f31")
    assert missing.status_code == 404
    assert missing.json() == fixture("v2/errors/instance_not_found_http404.json")
    node = node_with(td)
    small = td.post("/instances", json=body(new_key(), hostnode_id=node["id"], resources={
        "storage_gb": 50}))  # fmt: skip
    assert small.status_code == 400
    assert small.json() == fixture("v2/errors/create_validation_http400.json")
    too_many = td.post(
        "/instances",
        json=body(
            new_key(),
            location_id=node["location_id"],
            resources={"gpus": {RTX4090: {"count": 64}}},
        ),
    )
    assert too_many.status_code == 200  # the quirk: an error in an HTTP 200 body
    assert too_many.json() == fixture("v2/errors/create_no_capacity_http200.json")
    vm_id, _ = create_on(td, new_key(), node)
    not_stopped = td.post(f"/instances/{vm_id}/start")
    assert not_stopped.status_code == 400
    assert not_stopped.json() == fixture("v2/errors/start_not_stopped_http400.json")
    emulator.control.reset(tensordock_balance=0.5)
    broke = td.post(
        "/instances",
        json=body(new_key(), hostnode_id=node["id"], resources={"gpus": {RTX4090: {"count": 1}}}),
    )
    assert broke.status_code == 200
    assert broke.json() == fixture("v2/errors/create_insufficient_balance_http200.json")


def test_rate_limited_body_matches_the_fixture(make_emulator: Any) -> None:
    emu = make_emulator(offers=20, rate_limit=True, ssh=False)
    with td_client(emu.tensordock_url, emu.tensordock_token) as client:
        answers = [client.get("/instances") for _ in range(101)]
    assert [a.status_code for a in answers[:100]] == [200] * 100
    assert answers[100].status_code == 429
    assert answers[100].json() == fixture("v2/errors/rate_limited_http429.json")


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("instances", {"data": {"instances": [{"type": "VM", "id": "ID", "attributes": "A"}]}}),
        (
            "attributes",
            {
                "data": {
                    "type": "list",
                    "id": "instances",
                    "attributes": {
                        "instances": [{"type": "instance", "id": "ID", "attributes": "A"}]
                    },
                }
            },
        ),
        ("array", {"data": [{"type": "instance", "id": "ID", "name": "N", "status": "S"}]}),
    ],
)
def test_the_several_list_shapes(
    emulator: EmulatorThread, td: httpx.Client, shape: str, expected: dict[str, Any]
) -> None:
    emulator.control.reset(tensordock_list_shape=shape)
    vm_id, _ = create_on(td, new_key(), node_with(td), name="shaped")
    listed = td.get("/instances").json()
    text = repr(listed)
    assert vm_id in text and "shaped" in text and "'running'" in text
    normalized = repr(expected).replace("'ID'", repr(vm_id)).replace("'N'", "'shaped'")
    normalized = normalized.replace("'S'", "'running'").replace(
        "'A'", repr({"name": "shaped", "status": "running"})
    )
    assert text == normalized


def test_wrapped_detail(emulator: EmulatorThread, td: httpx.Client) -> None:
    emulator.control.reset(tensordock_detail_shape="wrapped")
    vm_id, _ = create_on(td, new_key(), node_with(td))
    wrapped = td.get(f"/instances/{vm_id}").json()
    assert set(wrapped) == {"data"}
    assert_same_shape(
        generic_gpus(wrapped["data"]), generic_gpus(fixture("v2/instance_get_running.json"))
    )
