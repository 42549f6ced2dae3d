"""Every recorded Vast.ai response parses through the real client into models without loss.

The provider runs unchanged; only the transport is httpx's standard in-memory double serving
the fixture bodies (copied from shared/fixtures/vastai, see its README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop import errors
from gpushop.models import InstanceStatus, OfferQuery, SortKey
from gpushop.providers.http import RetryPolicy
from gpushop.providers.vastai import VastAIProvider
from gpushop.providers.vastai.errors import map_error
from gpushop.providers.vastai.mapping import instance_from_vast, offer_from_vast

FIXTURES = Path(__file__).parent / "fixtures" / "vastai"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def provider_serving(routes: dict[str, tuple[int, Any]]) -> VastAIProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path}"
        status, body = routes[key]
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return VastAIProvider(
        url="http://vast.test",
        api_key="k" * 64,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=1),
        rate_limit=False,
    )


async def test_offer_search_fixture_maps_every_offer_without_loss() -> None:
    raw_offers = load("offers_search.json")["offers"]
    provider = provider_serving({"POST /api/v0/bundles/": (200, load("offers_search.json"))})
    query = OfferQuery(min_reliability=None, verified=False, disk_gb=5.0)
    offers = await provider.search_offers(query, pool=100, sort=SortKey.PRICE)
    await provider.aclose()
    assert len(offers) == len(raw_offers) == 30
    for raw, offer in zip(raw_offers, offers, strict=True):
        assert offer.id == f"vastai:{raw['id']}"
        assert offer.gpu_variant == raw["gpu_name"]
        assert offer.num_gpus == raw["num_gpus"]
        assert offer.gpu_ram_gb == raw["gpu_ram"] / 1000
        # priced for the same 5 GB the fixture was priced for: equals the server's dph_total
        assert offer.price_per_hour == pytest.approx(raw["dph_total"], abs=1e-6)
        assert offer.gpu_price_per_hour == raw["dph_base"]
        assert offer.reliability == raw["reliability2"]
        assert offer.verified == (raw["verification"] == "verified")
        assert offer.datacenter == (raw["hosting_type"] == 1)
        assert offer.location == raw["geolocation"]
        assert offer.country == raw["geolocation"][-2:]
        assert offer.inet_down_mbps == raw["inet_down"]
        assert offer.inet_up_mbps == raw["inet_up"]
        assert offer.cuda == raw["cuda_max_good"]
        assert offer.driver == raw["driver_version"]
        assert offer.dlperf == raw["dlperf"]
        assert offer.min_bid == raw["min_bid"]
        assert offer.disk_available_gb == raw["disk_space"]
        assert offer.machine_id == str(raw["machine_id"])
        assert offer.dlperf_per_dollar == pytest.approx(raw["dlperf_per_dphtotal"], rel=1e-3)


def test_interruptible_offers_are_priced_at_min_bid_plus_disk() -> None:
    raw = load("offers_search.json")["offers"][0]
    offer = offer_from_vast(raw, disk_gb=32, interruptible=True)
    assert offer.price_per_hour == pytest.approx(raw["min_bid"] + raw["storage_cost"] * 32 / 720)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("instance_show_running.json", InstanceStatus.RUNNING),
        ("instance_show_loading.json", InstanceStatus.LOADING),
        ("instance_show_stopped.json", InstanceStatus.STOPPED),
    ],
)
async def test_show_instance_fixtures(name: str, status: InstanceStatus) -> None:
    body = load(name)
    raw = body["instances"]
    provider = provider_serving({f"GET /api/v0/instances/{raw['id']}/": (200, body)})
    inst = await provider.get_instance(str(raw["id"]))
    await provider.aclose()
    assert inst is not None
    assert inst.status is status
    assert inst.instance_id == str(raw["id"])
    assert inst.label == raw["label"]
    assert inst.ssh_host == raw["ssh_host"] and inst.ssh_port == raw["ssh_port"]
    assert inst.price_per_hour == raw["dph_total"]
    assert inst.image == raw["image_uuid"]
    if status is InstanceStatus.RUNNING:
        assert inst.direct_ssh_host == raw["public_ipaddr"].strip()
        assert inst.direct_ssh_port == int(raw["ports"]["22/tcp"][0]["HostPort"])
    if status is InstanceStatus.LOADING:
        assert raw["public_ipaddr"].endswith("\n")  # the quirk the client must strip
        assert inst.direct_ssh_port is None


async def test_show_instance_not_found_is_none() -> None:
    provider = provider_serving(
        {"GET /api/v0/instances/5/": (200, load("instance_show_not_found.json"))}
    )
    assert await provider.get_instance("5") is None
    await provider.aclose()


async def test_v1_list_fixture_every_status() -> None:
    body = load("instances_list_v1.json")
    provider = provider_serving({"GET /api/v1/instances/": (200, body)})
    found = await provider.list_instances()
    await provider.aclose()
    assert [i.instance_id for i in found] == [str(r["id"]) for r in body["instances"]]
    by_raw = {i.raw_status: i.status for i in found}
    assert by_raw["running"] is InstanceStatus.RUNNING
    assert by_raw["exited"] is InstanceStatus.STOPPED
    assert by_raw["created"] is InstanceStatus.FAILED  # OCI runtime error: never reaches running
    assert by_raw["loading"] is InstanceStatus.LOADING
    assert by_raw[None] is InstanceStatus.PROVISIONING


def test_legacy_list_fixture_maps_like_v1() -> None:
    v0 = [instance_from_vast(r) for r in load("instances_list.json")["instances"]]
    v1 = [instance_from_vast(r) for r in load("instances_list_v1.json")["instances"]]
    assert [(i.instance_id, i.status) for i in v0] == [(i.instance_id, i.status) for i in v1]


async def test_create_fixtures() -> None:
    from gpushop.models import CreateRequest

    req = CreateRequest(offer_id="24518230", label="gpushop-abc123-r1", disk_gb=32, image="x")
    ok = provider_serving({"PUT /api/v0/asks/24518230/": (200, load("create_instance.json"))})
    result = await ok.create_instance(req)
    assert (result.instance_id, result.started) == ("31874902", True)
    stopped = provider_serving(
        {"PUT /api/v0/asks/24518230/": (200, load("create_instance_stopped.json"))}
    )
    result = await stopped.create_instance(req)
    # created but not started: it exists and bills storage, so the caller must destroy it
    assert (result.instance_id, result.started) == ("31875004", False)
    await ok.aclose()
    await stopped.aclose()


async def test_destroy_fixture_and_destroy_of_a_gone_instance() -> None:
    provider = provider_serving(
        {
            "DELETE /api/v0/instances/1/": (200, load("destroy.json")),
            "DELETE /api/v0/instances/2/": (404, load("error_instance_not_found.json")),
        }
    )
    assert await provider.destroy_instance("1") is True
    assert await provider.destroy_instance("2") is False
    await provider.aclose()


async def test_user_fixture_drops_the_api_key() -> None:
    provider = provider_serving({"GET /api/v0/users/current/": (200, load("user_current.json"))})
    user = await provider.current_user()
    await provider.aclose()
    assert user["credit"] == 87.42
    assert "api_key" not in user


ERRORS = [
    ("error_auth_invalid_key.json", 401, errors.AuthFailed),
    ("error_auth_invalid_key.json", 404, errors.AuthFailed),
    ("error_auth_missing.json", 403, errors.AuthFailed),
    ("error_session_expired.json", 404, errors.AuthFailed),
    ("error_instance_not_found.json", 404, errors.NotFound),
    ("error_invalid_instance_id.json", 400, errors.BadRequest),
    ("error_offer_not_found.json", 404, errors.OfferUnavailable),
    ("error_offer_no_longer_available.json", 410, errors.OfferUnavailable),
    ("error_offer_not_your_own.json", 403, errors.AuthFailed),
    ("error_invalid_args.json", 400, errors.BadRequest),
    ("error_invalid_price.json", 400, errors.BadRequest),
    ("error_insufficient_credit.json", 400, errors.InsufficientCredit),
    ("error_insufficient_credit_bulk.json", 400, errors.InsufficientCredit),
    ("error_bad_query.json", 400, errors.BadRequest),
    ("error_bad_json.json", 400, errors.BadRequest),
    ("error_v1_bad_filter.json", 400, errors.BadRequest),
    ("error_v1_bad_token.json", 400, errors.BadRequest),
    ("error_rate_limited.json", 429, errors.RateLimited),
    ("error_rate_limited_json.json", 429, errors.RateLimited),
    ("error_rate_limited.txt", 429, errors.RateLimited),
    ("error_search_quota_exceeded.json", 429, errors.QuotaExceeded),
    ("error_v0_instances_deprecated.json", 410, errors.OfferUnavailable),
    ("error_no_ssh_key.json", 400, errors.BadRequest),
    ("error_execute_running.json", 400, errors.BadRequest),
]


@pytest.mark.parametrize(("name", "status", "kind"), ERRORS)
def test_error_fixtures_map_to_typed_errors(name: str, status: int, kind: type) -> None:
    path = FIXTURES / name
    text = path.read_text()
    response = httpx.Response(status, text=text, request=httpx.Request("GET", "http://x/"))
    err = map_error(response, "GET /x/")
    assert type(err) is kind
    assert err.status == status
    assert "k" * 20 not in str(err)


def test_every_fixture_file_is_covered() -> None:
    used = {n for n, _, _ in ERRORS} | {
        "offers_search.json",
        "instance_show_running.json",
        "instance_show_loading.json",
        "instance_show_stopped.json",
        "instance_show_not_found.json",
        "instances_list.json",
        "instances_list_v1.json",
        "create_instance.json",
        "create_instance_stopped.json",
        "destroy.json",
        "user_current.json",
    }
    used |= {
        "attach_ssh.json",
        "detach_ssh.json",
        "ssh_key_create.json",
        "ssh_keys_list.json",
        "templates_search.json",
        "charges.json",
        "manage_instance.json",
        "gpu_names_unique.json",
        "error_resources_unavailable.json",
    }
    # the log and execute endpoints are not used by gpushop (it reads logs over SSH)
    unused = {"request_logs.json", "execute_command.json"}
    on_disk = {p.name for p in FIXTURES.iterdir() if p.suffix in (".json", ".txt")}
    assert on_disk == used | unused


async def test_manage_ssh_templates_charges_and_gpu_names_fixtures() -> None:
    attach = load("attach_ssh.json")
    provider = provider_serving(
        {
            "PUT /api/v0/instances/7/": (200, load("manage_instance.json")),
            "PUT /api/v0/instances/8/": (200, load("error_resources_unavailable.json")),
            "GET /api/v0/ssh/": (200, load("ssh_keys_list.json")),
            "POST /api/v0/ssh/": (200, load("ssh_key_create.json")),
            "POST /api/v0/instances/31874215/ssh/": (200, attach),
            "DELETE /api/v0/instances/31874215/ssh/7730112/": (200, load("detach_ssh.json")),
            "GET /api/v0/template/": (200, load("templates_search.json")),
            "GET /api/v0/charges/": (200, load("charges.json")),
            "GET /api/v0/gpu_names/unique/": (200, load("gpu_names_unique.json")),
        }
    )
    assert await provider.set_state("7", "stopped") is True
    # start while the GPUs are taken: HTTP 200 but queued, not running
    assert await provider.set_state("8", "running") is False
    await provider.set_label("7", "gpushop-abc123-r1")
    keys = await provider.list_ssh_keys()
    assert [k["id"] for k in keys] == [48211, 51907]
    assert all(k["public_key"].startswith("ssh-ed25519 ") for k in keys)
    created = await provider.add_ssh_key("ssh-ed25519 AAAA test")
    assert created["id"] == load("ssh_key_create.json")["key"]["id"]
    attached = await provider.attach_ssh_key("31874215", "ssh-ed25519 AAAA test")
    assert attached == json.loads(attach["key"])  # the JSON-encoded string, decoded
    assert await provider.detach_ssh_key("31874215", "7730112") is True
    templates = await provider.search_templates({"name": {"eq": "x"}})
    assert len(templates) == load("templates_search.json")["templates_found"]
    charges = await provider.charges(0, 1e10)
    assert [c["source"] for c in charges] == [r["source"] for r in load("charges.json")["results"]]
    names = await provider.gpu_names()
    assert names == load("gpu_names_unique.json")["gpu_names"]
    await provider.aclose()
