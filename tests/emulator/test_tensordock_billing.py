"""Money on the TensorDock side (reference 2.9): the full rate from create to delete, running or
stopped, storage only while released (`stoppeddisassociated`), nothing after delete; the balance
goes down with it and a create needs $1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from tensordock_helpers import (
    RTX4090,
    body,
    create_on,
    detail,
    new_key,
    node_with,
    td_client,
    wait_for,
)

from gpushop.emulator import EmulatorThread

HOUR = 3600.0


@pytest.fixture
def td(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        yield client


def cost(emulator: EmulatorThread, vm_id: str) -> float:
    return float(emulator.control.tensordock_vm(vm_id)["billing"]["cost"])


def test_stop_keeps_the_full_rate_release_bills_storage_only(
    emulator: EmulatorThread, td: httpx.Client
) -> None:
    control = emulator.control
    vm_id, _ = create_on(td, new_key(), node_with(td), RTX4090, resources={"storage_gb": 300})
    billing = control.tensordock_vm(vm_id)["billing"]
    rate, storage = billing["rate_hourly"], billing["storage_rate"]
    assert detail(td, vm_id)["rateHourly"] == rate
    assert 0 < storage < rate
    control.advance(HOUR)  # running: the full rate
    first = cost(emulator, vm_id)
    assert first == pytest.approx(rate, rel=1e-3)
    td.post(f"/instances/{vm_id}/stop")
    wait_for(td, vm_id, "stopped")
    control.advance(HOUR)  # stopped, GPU kept: still the full rate
    second = cost(emulator, vm_id)
    assert second - first == pytest.approx(rate, rel=1e-3)
    td.post(f"/instances/{vm_id}/start")
    wait_for(td, vm_id, "running")
    td.post(f"/instances/{vm_id}/stop", json={"disassociate_resources": True})
    released = wait_for(td, vm_id, "stoppeddisassociated")
    assert released["rateHourly"] == rate  # the quote stays (reference 2.9)
    third = cost(emulator, vm_id)
    control.advance(HOUR)  # released: storage only
    fourth = cost(emulator, vm_id)
    assert fourth - third == pytest.approx(storage, rel=1e-3)
    assert control.tensordock_vm(vm_id)["billing"]["current_rate"] == storage
    state = control.tensordock_state()
    assert state["hourly_cost"] == pytest.approx(storage)
    td.delete(f"/instances/{vm_id}")
    control.advance(HOUR)  # deleted: nothing more
    state = control.tensordock_state()
    (gone,) = state["deleted"]
    assert gone["cost"] == pytest.approx(fourth, rel=1e-3)
    assert state["spend"] == pytest.approx(gone["cost"])
    assert state["balance"] == pytest.approx(100.0 - gone["cost"])
    assert state["hourly_cost"] == 0


def test_the_stop_flag_forms(emulator: EmulatorThread, td: httpx.Client) -> None:
    """disassociate_resources as JSON, under data.attributes, or as a query parameter."""
    for how in ("json", "attributes", "query"):
        vm_id, _ = create_on(td, new_key(), node_with(td))
        if how == "json":
            td.post(f"/instances/{vm_id}/stop", json={"disassociate_resources": True})
        elif how == "attributes":
            td.post(
                f"/instances/{vm_id}/stop",
                json={"data": {"attributes": {"disassociate_resources": True}}},
            )
        else:
            td.post(f"/instances/{vm_id}/stop", params={"disassociate_resources": "true"})
        wait_for(td, vm_id, "stoppeddisassociated")
        td.delete(f"/instances/{vm_id}")


def test_a_stopped_vm_can_still_be_released(emulator: EmulatorThread, td: httpx.Client) -> None:
    vm_id, _ = create_on(td, new_key(), node_with(td))
    td.post(f"/instances/{vm_id}/stop")
    wait_for(td, vm_id, "stopped")
    again = td.post(f"/instances/{vm_id}/stop")
    assert again.status_code == 400
    assert again.json() == {
        "status": 400,
        "error": "Instance is stopped, therefore it cannot be stopped",
    }
    release = td.post(f"/instances/{vm_id}/stop", json={"disassociate_resources": True})
    assert release.status_code == 200
    wait_for(td, vm_id, "stoppeddisassociated")
    twice = td.post(f"/instances/{vm_id}/stop", json={"disassociate_resources": True})
    assert twice.json()["error"] == (
        "Instance is stoppeddisassociated, therefore it cannot be stopped"
    )


def test_the_balance_gates_creates_and_starts(emulator: EmulatorThread, td: httpx.Client) -> None:
    emulator.control.reset(tensordock_balance=1.5)
    node = node_with(td, "h100-sxm5-80gb", 8)
    vm_id, _ = create_on(
        td, new_key(), node, "h100-sxm5-80gb", 8, resources={"vcpu_count": 64, "ram_gb": 512}
    )
    rate = emulator.control.tensordock_vm(vm_id)["billing"]["rate_hourly"]
    emulator.control.advance(HOUR * 0.6 / rate)  # $0.60 spent: $0.90 left
    refused = td.post(
        "/instances",
        json=body(
            new_key(), hostnode_id=node_with(td)["id"], resources={"gpus": {RTX4090: {"count": 1}}}
        ),
    )
    assert refused.status_code == 200
    assert "need at least" in refused.json()["error"] and refused.json()["status"] == 400
    td.post(f"/instances/{vm_id}/stop")
    wait_for(td, vm_id, "stopped")
    start = td.post(f"/instances/{vm_id}/start")
    assert start.status_code == 200 and start.json()["status"] == 400
    assert emulator.control.tensordock_state()["balance"] < 1.0
