"""TensorDock v2 JSON -> offers and instances, and the create body, against the fixtures."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from gpushop.errors import BadRequest, OfferUnavailable, ProviderUnavailable
from gpushop.models import InstanceStatus
from gpushop.providers.tensordock import mapping
from gpushop.providers.tensordock.countries import iso_code
from gpushop.providers.tensordock.pricing import Resources, Sizing

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tensordock" / "v2"
RTX4090_NODE = "c3a9f1d2-6b4e-4a8f-9d2c-1e5b7a3f9c11"
MIXED_NODE = "02c65d45-6da5-4232-a8db-ee0e5bc76110"
SOLD_OUT_NODE = "9f1b3d5f"
CPU_NODE = "4e6a8c0e"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def nodes() -> list[dict[str, Any]]:
    return mapping.hostnode_list(load("hostnodes_list.json"))


def node(prefix: str) -> dict[str, Any]:
    return next(n for n in nodes() if n["id"].startswith(prefix))


# -- offers -------------------------------------------------------------------------------


def test_one_offer_per_node_model_and_count() -> None:
    offers = mapping.offers_from_hostnode(node("c3a9f1d2"), disk_gb=200, sizing=Sizing())
    assert [o.offer_id for o in offers] == [
        f"{RTX4090_NODE}:geforcertx4090-pcie-24gb:{n}" for n in (1, 2, 3, 4)
    ]
    assert offers[0].id == f"tensordock:{RTX4090_NODE}:geforcertx4090-pcie-24gb:1"
    assert mapping.parse_offer_id(offers[0].id) == (RTX4090_NODE, "geforcertx4090-pcie-24gb", 1)
    assert mapping.parse_offer_id(offers[2].offer_id)[2] == 3


def test_an_offer_carries_the_price_of_its_configuration() -> None:
    offer = mapping.offers_from_hostnode(node("c3a9f1d2"), disk_gb=200, sizing=Sizing())[0]
    # the reference's worked example: 1x 4090 @ 0.35 + 8 vCPU + 32 GB RAM + 200 GB storage
    assert offer.price_per_hour == 0.448
    assert offer.gpu_price_per_hour == pytest.approx(0.438)  # what stops when the GPU is released
    assert offer.storage_price_per_hour == pytest.approx(0.01)  # what a stopped VM still bills
    assert offer.price_per_gpu_hour == pytest.approx(0.438)
    assert (offer.cpu_cores, offer.ram_gb, offer.disk_gb) == (8.0, 32.0, 200.0)
    assert offer.disk_available_gb == 3800
    assert offer.provider_data["per_gpu_hr"] == 0.35
    assert offer.provider_data["storage_gb"] == 200


def test_an_offer_is_normalised_like_vast_offers() -> None:
    offer = mapping.offers_from_hostnode(node("c3a9f1d2"), disk_gb=32, sizing=Sizing())[0]
    assert offer.provider == "tensordock"
    assert (offer.gpu_name, offer.gpu_variant) == ("RTX 4090", "geforcertx4090-pcie-24gb")
    assert offer.gpu_ram_gb == 24.6  # as Vast lists an RTX 4090 (24564 MB)
    assert offer.reliability == pytest.approx(0.9997)
    assert offer.country == "US"
    assert offer.location == "Chicago, Illinois, US"
    assert offer.verified and offer.datacenter  # tier 3
    assert offer.inet_down_mbps == 10_000 and offer.inet_up_mbps == 10_000
    assert offer.cuda is None and offer.driver is None and offer.dlperf is None
    assert not offer.interruptible and offer.min_bid is None
    assert offer.machine_id == RTX4090_NODE
    # storage is at least the API's minimum, and the price includes it
    assert offer.disk_gb == 100
    assert offer.storage_price_per_hour == pytest.approx(0.005)


def test_sold_out_models_cpu_only_nodes_and_unreachable_nodes_give_no_offer() -> None:
    sold_out = mapping.offers_from_hostnode(node(SOLD_OUT_NODE), disk_gb=100, sizing=Sizing())
    assert {o.gpu_variant for o in sold_out} == {"a100-pcie-80gb"}
    assert mapping.offers_from_hostnode(node(CPU_NODE), disk_gb=100, sizing=Sizing()) == []
    unreachable = dict(node("c3a9f1d2"))
    unreachable["available_resources"] = {
        **unreachable["available_resources"],
        "available_ports": [],
        "has_public_ip_available": False,
    }
    assert mapping.offers_from_hostnode(unreachable, disk_gb=100, sizing=Sizing()) == []


def test_a_node_with_two_models_offers_both_within_its_free_cpus() -> None:
    offers = mapping.offers_from_hostnode(node(MIXED_NODE), disk_gb=100, sizing=Sizing())
    assert sorted((o.gpu_name, o.num_gpus) for o in offers) == [
        ("RTX 4090", 1),
        ("RTX 4090", 2),
        ("RTX A6000", 1),
    ]
    a6000 = next(o for o in offers if o.gpu_name == "RTX A6000")
    assert a6000.gpu_ram_gb == 49.1
    assert a6000.price_per_hour == pytest.approx(0.543)  # pricing_examples.json
    assert a6000.country == "CA" and not a6000.datacenter  # tier 1: verified, no datacenter
    assert a6000.verified


def test_market_sample_has_one_single_gpu_offer_per_node_and_model() -> None:
    offers = [
        o
        for n in nodes()
        for o in mapping.offers_from_hostnode(n, disk_gb=32, sizing=Sizing(), all_counts=False)
    ]
    assert all(o.num_gpus == 1 for o in offers)
    # 9 nodes with a free GPU, two of them with two models (the sold-out one does not count)
    assert len(offers) == len({(o.machine_id, o.gpu_variant) for o in offers}) == 11


def test_every_fixture_node_maps_country_and_model() -> None:
    for n in nodes():
        for offer in mapping.offers_from_hostnode(n, disk_gb=100, sizing=Sizing()):
            assert offer.country is not None and len(offer.country) == 2
            assert offer.gpu_name != offer.gpu_variant  # a canonical model was found
            assert offer.gpu_ram_gb > 0


def test_hostnode_lists_and_details_in_every_shape() -> None:
    listed = nodes()
    assert len(listed) == 10
    assert mapping.hostnode_list({"data": listed}) == listed
    single = mapping.hostnode_body(load("hostnode_get.json"))
    assert single["id"] == RTX4090_NODE
    assert mapping.hostnode_body(single) == single  # flat
    with pytest.raises(ProviderUnavailable):
        mapping.hostnode_list({"data": {"something": "else"}})
    with pytest.raises(ProviderUnavailable):
        mapping.hostnode_body({"data": {}})


@pytest.mark.parametrize(("bad"), ["", "a:b", "a:b:0", "a:b:x", "tensordock:a::1", "vastai:123"])
def test_bad_offer_ids_are_bad_requests(bad: str) -> None:
    with pytest.raises(BadRequest):
        mapping.parse_offer_id(bad)


def test_country_names_become_iso_codes() -> None:
    assert iso_code("United States") == "US"
    assert iso_code("Czech Republic") == "CZ"
    assert iso_code("Netherlands") == "NL"
    assert iso_code("United Kingdom") == "GB"
    assert iso_code("Singapore") == "SG"
    assert iso_code("ca") == "CA"
    assert iso_code(None) is None and iso_code("Narnia") is None


def test_location_text_drops_repeats() -> None:
    assert mapping.location_text({"city": "Singapore", "country": "Singapore"}) == "Singapore, SG"
    assert mapping.location_text({}) == "?"


# -- instances ----------------------------------------------------------------------------


def test_running_detail_maps_ssh_to_the_forwarded_port() -> None:
    inst = mapping.instance_from_tensordock(load("instance_get_running.json"))
    assert inst.instance_id == "7f3a9c2e-4b1d-4e8a-9c6f-0a2b4d6e8f31"
    assert inst.label == "trainer-7f3a9c2e"
    assert inst.status is InstanceStatus.RUNNING and inst.raw_status == "running"
    assert (inst.ssh_host, inst.ssh_port) == ("203.0.113.45", 20012)
    assert (inst.direct_ssh_host, inst.direct_ssh_port) == ("203.0.113.45", 20012)
    assert (inst.gpu_name, inst.num_gpus) == ("RTX 4090", 1)
    assert inst.price_per_hour == 0.448
    assert inst.provider_data["gpu_released"] is False
    assert inst.provider_data["storage_gb"] == 200
    assert inst.provider_data["ssh_user"] == "user"


def test_stopped_detail_with_a_dedicated_ip_uses_port_22() -> None:
    inst = mapping.instance_from_tensordock(load("instance_get_stopped.json"))
    assert inst.status is InstanceStatus.STOPPED
    assert (inst.ssh_host, inst.ssh_port) == ("198.51.100.23", 22)
    assert (inst.gpu_name, inst.num_gpus) == ("A100", 2)
    assert inst.provider_data["gpu_released"] is False


def test_released_detail_is_stopped_and_says_so() -> None:
    raw = mapping.instance_body(load("instance_get_stoppeddisassociated.json"))
    inst = mapping.instance_from_tensordock(raw)
    assert inst.status is InstanceStatus.STOPPED
    assert inst.raw_status == "stoppeddisassociated"
    assert inst.provider_data["gpu_released"] is True
    assert inst.gpu_name == "RTX A4000"


@pytest.mark.parametrize(
    ("status", "ip", "expected"),
    [
        ("running", "1.2.3.4", InstanceStatus.RUNNING),
        ("running", None, InstanceStatus.LOADING),  # up, but no IP yet
        ("Running", "1.2.3.4", InstanceStatus.RUNNING),
        ("starting", None, InstanceStatus.LOADING),
        ("stopping", "1.2.3.4", InstanceStatus.STOPPED),
        ("Stopped", "1.2.3.4", InstanceStatus.STOPPED),
        ("StoppedDisassociated", None, InstanceStatus.STOPPED),
        ("stopped_disassociated", None, InstanceStatus.STOPPED),
        ("deleting", None, InstanceStatus.GONE),
        ("error", None, InstanceStatus.FAILED),
        (None, None, InstanceStatus.PROVISIONING),
        ("weird-new-status", None, InstanceStatus.OFFLINE),
    ],
)
def test_statuses_compare_without_case_or_separators(
    status: str | None, ip: str | None, expected: InstanceStatus
) -> None:
    assert mapping.instance_status(status, ip) is expected


def test_detail_wrapped_in_data_is_accepted() -> None:
    flat = load("instance_get_running.json")
    assert mapping.instance_body({"data": flat}) == mapping.instance_body(flat)
    with pytest.raises(ProviderUnavailable):
        mapping.instance_body({"data": {"type": "virtualmachine"}})


LIST_IDS = [
    "7f3a9c2e-4b1d-4e8a-9c6f-0a2b4d6e8f31",
    "41d0b6aa-8e2f-4c3b-a7d9-1b3c5e7f9a32",
    "c95e17b4-2d6a-4f0c-8b3e-5d7f9a1c3e33",
]


def _list_shapes() -> list[Any]:
    items = load("instances_list.json")["data"]["instances"]
    top_level = [{"id": i["id"], "type": "instance", **i["attributes"]} for i in items]
    return [
        load("instances_list.json"),
        {"data": items},
        {"data": {"type": "list", "id": "instances", "attributes": {"instances": items}}},
        {"data": {"instances": top_level}},
        {"data": top_level},
    ]


@pytest.mark.parametrize("body", _list_shapes(), ids=["doc", "array", "attrs", "top", "flat"])
def test_every_list_shape_gives_the_same_instances(body: Any) -> None:
    items = mapping.instance_list(body)
    assert [i["id"] for i in items] == LIST_IDS
    assert [i["name"] for i in items] == [
        "trainer-7f3a9c2e",
        "trainer-41d0b6aa",
        "trainer-c95e17b4",
    ]
    statuses = [mapping.instance_from_tensordock(i).status for i in items]
    assert statuses == [InstanceStatus.LOADING, InstanceStatus.STOPPED, InstanceStatus.STOPPED]


def test_empty_and_unknown_lists() -> None:
    assert mapping.instance_list(load("instances_list_empty.json")) == []
    assert mapping.instance_list({"data": None}) == []
    with pytest.raises(ProviderUnavailable):  # never read a changed API as "no instances"
        mapping.instance_list({"data": {"vms": []}})


def test_create_answer() -> None:
    assert mapping.created_instance(load("instance_create_response.json")) == (
        "7f3a9c2e-4b1d-4e8a-9c6f-0a2b4d6e8f31",
        "running",
    )
    assert mapping.created_instance({"status": 400}) == (None, None)


# -- create -------------------------------------------------------------------------------


def test_create_body_is_the_documented_hostnode_request() -> None:
    expected = load("instance_create_request_hostnode.json")
    attrs = expected["data"]["attributes"]
    body = mapping.create_body(
        name=attrs["name"],
        hostnode_id=attrs["hostnode_id"],
        v0_name="geforcertx4090-pcie-24gb",
        res=Resources(1, 8, 32, 200),
        image="ubuntu2404",
        forwards=[(22, 20012), (8888, 20013)],
        dedicated_ip=False,
        ssh_key=attrs["ssh_key"],
        init=attrs["cloud_init"],
    )
    assert body == expected


def test_create_body_with_a_stored_key_and_a_dedicated_ip() -> None:
    body = mapping.create_body(
        name="gpushop-abc123-r01",
        hostnode_id="h",
        v0_name="a100-pcie-80gb",
        res=Resources(2, 16, 64, 100),
        image="ubuntu2404",
        forwards=[],
        dedicated_ip=True,
        ssh_key_id="secret-1",
    )
    attrs = body["data"]["attributes"]
    assert attrs["ssh_key_id"] == "secret-1" and "ssh_key" not in attrs
    assert attrs["useDedicatedIp"] is True and "port_forwards" not in attrs
    assert attrs["resources"]["gpus"] == {"a100-pcie-80gb": {"count": 2}}
    assert "cloud_init" not in attrs
    with pytest.raises(ValueError):
        mapping.create_body(
            name="x",
            hostnode_id="h",
            v0_name="g",
            res=Resources(1, 2, 2, 100),
            image="ubuntu2404",
            forwards=[],
            dedicated_ip=False,
        )


def test_vm_name_is_the_label() -> None:
    assert mapping.vm_name("gpushop-a1b2c3-r01jq8z3k2m") == "gpushop-a1b2c3-r01jq8z3k2m"
    assert mapping.vm_name("my label/with:odd chars") == "my-label-with-odd-chars"
    assert len(mapping.vm_name("x" * 100)) == 60
    assert mapping.name_prefix("gpushop-a1b2c3-") == "gpushop-a1b2c3-"
    with pytest.raises(BadRequest):
        mapping.vm_name("  ")


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (None, ("ubuntu2404", None)),
        ("ubuntu2204", ("ubuntu2204", None)),
        ("Ubuntu2404", ("ubuntu2404", None)),
        ("pytorch/pytorch", ("ubuntu2404", "pytorch/pytorch")),
        ("pytorch/pytorch:2.4.0-cuda12.4", ("ubuntu2404", "pytorch/pytorch:2.4.0-cuda12.4")),
        ("localhost:5000/img:tag", ("ubuntu2404", "localhost:5000/img:tag")),
        ("vastai/base-image:@vastai-automatic-tag", ("ubuntu2404", None)),
        ("vastai/base-image", ("ubuntu2404", None)),
    ],
)
def test_os_slugs_are_vm_images_and_docker_images_are_recorded(
    image: str | None, expected: tuple[str, str | None]
) -> None:
    assert mapping.vm_image(image) == expected


def test_windows_images_are_refused() -> None:
    with pytest.raises(BadRequest, match="SSH"):
        mapping.vm_image("windows10")


def test_cloud_init_carries_onstart_env_and_docker_image() -> None:
    init = mapping.cloud_init(
        onstart="echo hi\necho there", env={"A": "1", "B": "x y"}, docker_image="pytorch/pytorch"
    )
    assert init == {
        "write_files": [
            {"path": "/etc/gpushop/docker-image", "content": "pytorch/pytorch\n"},
            {"path": "/etc/gpushop/env", "content": "A=1\nB=x y\n", "permissions": "0644"},
        ],
        "runcmd": ["echo hi\necho there"],
    }
    assert mapping.cloud_init(onstart=None, env={}, docker_image=None) is None
    with pytest.raises(BadRequest):
        mapping.cloud_init(onstart=None, env={"BAD KEY": "1"}, docker_image=None)


def test_ports_come_from_the_free_ones_or_a_dedicated_ip() -> None:
    free = [20010, 20011, 20012]
    forwards, dedicated = mapping.plan_ports([8888], free, False, random.Random(1))
    assert not dedicated
    assert [i for i, _ in forwards] == [22, 8888]
    assert {e for _, e in forwards} <= set(free) and len({e for _, e in forwards}) == 2
    assert mapping.plan_ports([22, 22], [1], False, random.Random(1)) == ([(22, 1)], False)
    assert mapping.plan_ports([8888, 7000, 6000], free, True, random.Random(1)) == ([], True)
    with pytest.raises(OfferUnavailable):
        mapping.plan_ports([8888], [20010], False, random.Random(1))
