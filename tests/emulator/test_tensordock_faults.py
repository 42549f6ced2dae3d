"""Fault injection on the TensorDock side: endpoint faults (shared book, TensorDock bodies) and
host faults (`POST /_emulator/tensordock/faults`)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

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
    ssh,
    td_client,
    wait_for,
)

from gpushop.emulator import EmulatorThread
from gpushop.emulator.control import EmulatorControlError
from waiting import until

CREATE = "POST /tensordock/api/v2/instances"


@pytest.fixture
def td(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        yield client


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_status_faults_use_tensordock_bodies(emulator: EmulatorThread, td: httpx.Client) -> None:
    control = emulator.control
    control.fault("GET /tensordock/api/v2/instances", "status", status=500)
    broken = td.get("/instances")
    assert broken.status_code == 500
    assert broken.json() == {"status": 500, "error": "Internal server error"}
    control.fault("GET /tensordock/api/v2/hostnodes", "status", status=503, count=2)
    for _ in range(2):
        page = td.get("/hostnodes")
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert td.get("/hostnodes").status_code == 200  # healed
    control.fault("GET /tensordock/api/v2/locations", "status", status=429)
    assert td.get("/locations").json() == {"status": 429, "error": "Too many requests"}
    assert td.get("/instances").status_code == 200


def test_a_dropped_create_still_creates(emulator: EmulatorThread, td: httpx.Client) -> None:
    """The answer is lost, not the VM: clients must look it up by name before retrying."""
    emulator.control.fault(CREATE, "drop")
    node = node_with(td)
    payload = body(new_key(), name="lost-answer", hostnode_id=node["id"])
    with pytest.raises(httpx.RemoteProtocolError):
        td.post("/instances", json=payload)
    listed = td.get("/instances").json()["data"]["instances"]
    assert [i["attributes"]["name"] for i in listed] == ["lost-answer"]


def test_latency_fault(emulator: EmulatorThread, td: httpx.Client) -> None:
    emulator.control.fault("GET /tensordock/api/v2/instances/{id}", "latency", latency_s=0.3)
    vm_id, _ = create_on(td, new_key(), node_with(td))
    started = time.monotonic()
    assert td.get(f"/instances/{vm_id}").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_star_faults_reach_tensordock_too(emulator: EmulatorThread, td: httpx.Client) -> None:
    emulator.control.fault("*", "status", status=502)
    assert td.get("/instances").status_code == 502


def test_stuck_provisioning(emulator: EmulatorThread, td: httpx.Client) -> None:
    emulator.control.tensordock_fault("stuck_provisioning")
    vm_id, port = create_on(td, new_key(), node_with(td))
    row = until(lambda: (r := detail(td, vm_id))["status"] == "running" and r, "the VM to run")
    assert row["ipAddress"] == ""
    assert refused(port)
    assert emulator.control.tensordock_vm(vm_id)["billing"]["cost"] > 0  # it bills anyway


def test_host_offline(emulator: EmulatorThread, td: httpx.Client) -> None:
    key = new_key()
    vm_id, port = create_on(td, key, node_with(td))
    wait_for(td, vm_id, "running", ip=True)
    assert ssh(port, key, "true").exit_status == 0
    emulator.control.tensordock_fault("host_offline", vm_id=vm_id)
    assert refused(port)
    assert detail(td, vm_id)["status"] == "running"  # the API cannot tell
    view = emulator.control.tensordock_vm(vm_id)
    assert (
        not view["reachable"] and view["billing"]["current_rate"] == view["billing"]["rate_hourly"]
    )
    assert td.delete(f"/instances/{vm_id}").status_code == 200


def test_gpu_reclaimed_by_the_host(emulator: EmulatorThread, td: httpx.Client) -> None:
    key = new_key()
    node = node_with(td)
    vm_id, port = create_on(td, key, node, RTX4090, free_gpus(node, RTX4090))  # all of them
    wait_for(td, vm_id, "running", ip=True)
    emulator.control.tensordock_fault("gpu_reclaimed", vm_id=vm_id, after_s=50)  # 0.05 s
    row = wait_for(td, vm_id, "stoppeddisassociated")
    assert row["rateHourly"] > 0 and refused(port)
    billing = emulator.control.tensordock_vm(vm_id)["billing"]
    assert billing["current_rate"] == billing["storage_rate"]
    start = td.post(f"/instances/{vm_id}/start")  # the GPU went to someone else
    assert start.status_code == 400 and start.json()["error"].startswith("GPU slot expired")


def test_destroy_ignored(emulator: EmulatorThread, td: httpx.Client) -> None:
    vm_id, _ = create_on(td, new_key(), node_with(td))
    emulator.control.tensordock_fault("destroy_ignored", vm_id=vm_id, times=2)
    for _ in range(2):
        assert td.delete(f"/instances/{vm_id}").status_code == 200
        assert td.get(f"/instances/{vm_id}").status_code == 200  # still there
    assert td.delete(f"/instances/{vm_id}").status_code == 200
    assert td.get(f"/instances/{vm_id}").status_code == 404


def test_gpu_taken_at_create(emulator: EmulatorThread, td: httpx.Client) -> None:
    node = node_with(td)
    emulator.control.tensordock_fault("gpu_taken", hostnode_id=node["id"])
    payload = body(new_key(), hostnode_id=node["id"], resources={"gpus": {RTX4090: {"count": 1}}})
    response = td.post("/instances", json=payload)
    assert response.status_code == 200
    assert response.json()["error"].startswith("No available nodes")
    after = td.get(f"/hostnodes/{node['id']}").json()["data"]
    assert free_gpus(after, RTX4090) == 0
    taken = emulator.control.tensordock_state()["taken"]
    assert taken == [
        {"hostnode_id": node["id"], "v0Name": RTX4090, "count": free_gpus(node, RTX4090)}
    ]


def test_gpu_taken_while_released(emulator: EmulatorThread, td: httpx.Client) -> None:
    vm_id, _ = create_on(td, new_key(), node_with(td))
    td.post(f"/instances/{vm_id}/stop", json={"disassociate_resources": True})
    wait_for(td, vm_id, "stoppeddisassociated")
    emulator.control.tensordock_fault("gpu_taken", vm_id=vm_id)
    start = td.post(f"/instances/{vm_id}/start")
    assert start.status_code == 400 and "GPU slot expired" in start.json()["error"]


def test_lying_host_and_old_cuda(emulator: EmulatorThread, td: httpx.Client) -> None:
    key = new_key()
    vm_id, port = create_on(td, key, node_with(td))
    wait_for(td, vm_id, "running", ip=True)
    emulator.control.tensordock_fault(
        "lying_host", vm_id=vm_id, gpu_name="RTX 3060", gpu_ram=12288, cuda="12.2"
    )
    smi = ssh(port, key, "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader")
    assert smi.stdout == "NVIDIA GeForce RTX 3060, 12288 MiB\n"
    refused_run = ssh(port, key, "docker run --rm --gpus all ostris/aitoolkit true")
    assert refused_run.exit_status == 125
    assert "unsatisfied condition: cuda>=13.0" in refused_run.stderr


def test_bad_fault_specs(emulator: EmulatorThread) -> None:
    control = emulator.control
    for spec in (
        {"kind": "nope"},
        {"kind": "host_offline", "vm_id": "missing"},
        {"kind": "host_offline", "hostnode_id": "missing"},
        {"kind": "lying_host"},
        {"kind": "host_offline", "count": 0},
        {"kind": "host_offline", "color": "red"},
    ):
        kind = spec.pop("kind")
        with pytest.raises(EmulatorControlError):
            control.tensordock_fault(kind, **spec)
    with pytest.raises(EmulatorControlError):
        control.tensordock_trainer_fault("missing", "oom", 1)
    with pytest.raises(EmulatorControlError):
        control.tensordock_vm("missing")


def test_pending_faults_show_and_clear(emulator: EmulatorThread, td: httpx.Client) -> None:
    emulator.control.tensordock_fault("stuck_provisioning", count=3)
    assert emulator.control.tensordock_state()["faults"][0]["count"] == 3
    emulator.control.clear_faults()
    assert emulator.control.tensordock_state()["faults"] == []
    vm_id, _ = create_on(td, new_key(), node_with(td))
    wait_for(td, vm_id, "running", ip=True)
