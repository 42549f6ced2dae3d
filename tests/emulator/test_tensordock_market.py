"""The seeded TensorDock market: locations and hostnodes, their per-resource prices, and the
pricing formula the emulator quotes (`rateHourly`) and bills with."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tensordock_helpers import RTX4090, create_on, detail, fixture, new_key, node_with, td_client

from gpushop.emulator import EmulatorThread
from gpushop.emulator.tensordock.catalog import COUNTRY_CODES, GPUS_BY_NAME
from gpushop.emulator.tensordock.market import (
    FIRST_PORT,
    LAST_PORT,
    Hostnode,
    Location,
    NodeGpu,
    generate,
    hourly_rate,
)

REQUIRED_GPUS = {
    "geforcertx4090-pcie-24gb",
    "h100-sxm5-80gb",
    "rtxa6000-pcie-48gb",
    "a100-pcie-80gb",
    "l40s-pcie-48gb",
}


@pytest.fixture
def td(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        yield client


def test_the_market_is_a_pure_function_of_the_seed() -> None:
    assert generate(7) == generate(7)
    assert generate(7) != generate(8)
    for seed in range(10):
        market = generate(seed)
        assert 24 <= len(market.hostnodes) <= 60
        assert set(market.gpu_names) >= REQUIRED_GPUS  # every model, whatever the seed
        free = {g.v0_name for n in market.hostnodes for g in n.gpus if g.count > 0}
        assert free == set(market.gpu_names)  # and every one rentable at the start
        assert set(market.gpu_names) <= set(GPUS_BY_NAME)
        ports = [p for n in market.hostnodes for p in n.ports]
        assert len(ports) == len(set(ports))  # no port on two hostnodes
        assert all(FIRST_PORT <= p <= LAST_PORT for p in ports)
        for loc in market.locations:  # one hostnode per (location, GPU model)
            models = [g.v0_name for n in market.hostnodes if n.location == loc for g in n.gpus]
            assert len(models) == len(set(models))
        assert sum(1 for n in market.hostnodes if not n.gpus) >= 1  # CPU-only nodes


def test_hostnodes_over_the_wire(td: httpx.Client) -> None:
    nodes = td.get("/hostnodes").json()["data"]["hostnodes"]
    assert len(nodes) >= 24
    for node in nodes:
        res, loc = node["available_resources"], node["location"]
        assert node["engine"] == "kvm"
        assert 98.0 <= node["uptime_percentage"] <= 99.99
        assert loc["uuid"] == node["location_id"]
        assert loc["country"] in COUNTRY_CODES  # a full name, mapped to ISO by clients
        assert 0 <= loc["tier"] <= 4
        assert res["max_vcpus"] == res["vcpu_count"] and res["vcpu_count"] % 2 == 0
        assert res["available_ports"] == sorted(res["available_ports"])
        for gpu in res["gpus"]:
            assert gpu["v0Name"] in GPUS_BY_NAME
            assert gpu["availableCount"] >= 0 and gpu["price_per_hr"] > 0
        assert set(node["pricing"]) == {"per_vcpu_hr", "per_gb_ram_hr", "per_gb_storage_hr"}
    names = {g["v0Name"] for n in nodes for g in n["available_resources"]["gpus"]}
    assert names >= REQUIRED_GPUS
    assert any(g["availableCount"] == 0 for n in nodes for g in n["available_resources"]["gpus"])


def test_locations_are_derived_from_their_hostnodes(td: httpx.Client) -> None:
    nodes = td.get("/hostnodes").json()["data"]["hostnodes"]
    for loc in td.get("/locations").json()["data"]["locations"]:
        assert loc["gpus"], "locations without a deployable GPU are left out"
        for gpu in loc["gpus"]:
            (node,) = [
                n
                for n in nodes
                if n["location_id"] == loc["id"]
                and any(g["v0Name"] == gpu["v0Name"] for g in n["available_resources"]["gpus"])
            ]
            res = node["available_resources"]
            entry = next(g for g in res["gpus"] if g["v0Name"] == gpu["v0Name"])
            assert gpu["max_count"] == entry["availableCount"] > 0
            assert gpu["price_per_hr"] == entry["price_per_hr"]
            assert gpu["pricing"] == node["pricing"]
            assert gpu["resources"]["max_vcpus"] == min(
                res["vcpu_count"], res["max_vcpus_per_gpu"] * gpu["max_count"]
            )
            assert (
                gpu["network_features"]["dedicated_ip_available"]
                == (res["has_public_ip_available"])
            )
            assert loc["city"] == node["location"]["city"]


def test_hostnode_filters(td: httpx.Client) -> None:
    everything = td.get("/hostnodes").json()["data"]["hostnodes"]
    h100 = td.get("/hostnodes", params={"gpu": "h100-sxm5-80gb"}).json()["data"]["hostnodes"]
    assert h100 and all(
        any(g["v0Name"] == "h100-sxm5-80gb" for g in n["available_resources"]["gpus"]) for n in h100
    )
    country = everything[0]["location"]["country"]
    by_country = td.get("/hostnodes", params={"location": country}).json()["data"]["hostnodes"]
    assert by_country and all(n["location"]["country"] == country for n in by_country)
    big = td.get("/hostnodes", params={"minVcpu": 64}).json()["data"]["hostnodes"]
    assert all(n["available_resources"]["vcpu_count"] >= 64 for n in big)
    unknown = td.get("/hostnodes", params={"whatever": "x"}).json()["data"]["hostnodes"]
    assert len(unknown) == len(everything)
    one = td.get(f"/hostnodes/{everything[0]['id']}").json()["data"]
    assert one == everything[0]
    missing = td.get("/hostnodes/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert missing.json() == {"status": 404, "error": "Hostnode not found"}


def _fixture_node(example: dict[str, Any]) -> Hostnode:
    loc = Location("loc", generate(0).locations[0].place, 3, True)
    gpus = ()
    if example["gpu_v0Name"]:
        gpus = (NodeGpu(example["gpu_v0Name"], 8, example["per_gpu_hr"]),)
    return Hostnode(
        id="node",
        location=loc,
        uptime=99.9,
        gpus=gpus,
        vcpus=256,
        ram_gb=2048,
        storage_gb=20000,
        vcpus_per_gpu=32,
        ram_per_gpu=256,
        per_vcpu_hr=example["per_vcpu_hr"],
        per_gb_ram_hr=example["per_gb_ram_hr"],
        per_gb_storage_hr=example["per_gb_storage_hr"],
        ports=(20000,),
        public_ip=True,
        network_gbps=10,
        upload_gbps=10,
        organization="org",
        organization_name="Org",
        driver_version="580.95.05",
        cuda_version="13.0",
    )


@pytest.mark.parametrize("example", fixture("pricing_examples.json")["examples"])
def test_the_pricing_formula_matches_the_worked_examples(example: dict[str, Any]) -> None:
    node = _fixture_node(example)
    rate = hourly_rate(
        node,
        example["gpu_v0Name"],
        example["gpu_count"],
        example["vcpu_count"],
        example["ram_gb"],
        example["storage_gb"],
    )
    assert rate == pytest.approx(example["expected_total_per_hr"], abs=1e-9)


def test_rate_hourly_is_the_formula_over_the_hostnode_prices(td: httpx.Client) -> None:
    node = node_with(td, RTX4090, 1)
    vm_id, _ = create_on(
        td, new_key(), node, RTX4090, resources={"vcpu_count": 6, "ram_gb": 24, "storage_gb": 150}
    )
    price = next(g for g in node["available_resources"]["gpus"] if g["v0Name"] == RTX4090)
    p = node["pricing"]
    expected = (
        price["price_per_hr"]
        + 6 * p["per_vcpu_hr"]
        + 24 * p["per_gb_ram_hr"]
        + 150 * p["per_gb_storage_hr"]
    )
    assert detail(td, vm_id)["rateHourly"] == pytest.approx(expected, abs=1e-5)
    # what the VM holds comes off the hostnode's free amounts
    after = td.get(f"/hostnodes/{node['id']}").json()["data"]["available_resources"]
    before = node["available_resources"]
    assert after["vcpu_count"] == before["vcpu_count"] - 6
    assert after["ram_gb"] == before["ram_gb"] - 24
    assert after["storage_gb"] == before["storage_gb"] - 150
    assert after["available_ports"] == before["available_ports"][1:]
    free = next(g for g in after["gpus"] if g["v0Name"] == RTX4090)["availableCount"]
    assert free == price["availableCount"] - 1
    td.delete(f"/instances/{vm_id}")
    assert td.get(f"/hostnodes/{node['id']}").json()["data"]["available_resources"] == before
