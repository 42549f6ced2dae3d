"""Every recorded TensorDock v2 response parses through the real adapter.

The provider runs unchanged; only the transport is httpx's in-memory double serving the fixture
bodies (copied from shared/fixtures/tensordock, see its README).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop import errors
from gpushop.config import load_settings
from gpushop.models import CreateRequest, InstanceStatus, OfferQuery, SortKey
from gpushop.providers.http import RetryPolicy
from gpushop.providers.tensordock import TensorDockProvider, mapping
from gpushop.providers.tensordock.errors import error_in_body, map_error
from gpushop.providers.tensordock.provider import LIMIT, RATE_PER_MINUTE
from gpushop.shop import Shop

FIXTURES = Path(__file__).parent / "fixtures" / "tensordock"
V2 = FIXTURES / "v2"
TOKEN = "td-token-" + "x" * 24
BASE = "http://td.test/api/v2"
NODE = "c3a9f1d2-6b4e-4a8f-9d2c-1e5b7a3f9c11"
RUNNING = "7f3a9c2e-4b1d-4e8a-9c6f-0a2b4d6e8f31"
STOPPED = "41d0b6aa-8e2f-4c3b-a7d9-1b3c5e7f9a32"
RELEASED = "c95e17b4-2d6a-4f0c-8b3e-5d7f9a1c3e33"
GPU = "geforcertx4090-pcie-24gb"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFixtureKeyDoNotUseXXXXXXXXXXXXXXXXXXXX me@host"

Reply = tuple[int, Any] | Callable[[httpx.Request], tuple[int, Any]]


def load(name: str) -> Any:
    return json.loads((V2 / name).read_text())


class Served:
    """A provider over a MockTransport answering from a route table; requests are recorded."""

    def __init__(self, routes: dict[str, Reply]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []
        self.provider = TensorDockProvider(
            url=BASE,
            api_token=TOKEN,
            transport=httpx.MockTransport(self.handle),
            retry=RetryPolicy(attempts=2, backoff_base_s=0.0, backoff_max_s=0.0),
            rate_limit=False,
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = f"{request.method} {request.url.path.removeprefix('/api/v2')}"
        if key not in self.routes:
            return httpx.Response(404, json=load("errors/instance_not_found_http404.json"))
        reply = self.routes[key]
        status, body = reply(request) if callable(reply) else reply
        headers = {"Retry-After": "0"} if status == 429 else None
        return httpx.Response(status, json=body, headers=headers)

    def sent(self, key: str) -> list[Any]:
        return [
            json.loads(r.content) if r.content else None
            for r in self.requests
            if f"{r.method} {r.url.path.removeprefix('/api/v2')}" == key
        ]


DETAILS = {
    RUNNING: "instance_get_running.json",
    STOPPED: "instance_get_stopped.json",
    RELEASED: "instance_get_stoppeddisassociated.json",
}


def account() -> dict[str, Reply]:
    routes: dict[str, Reply] = {
        "GET /hostnodes": (200, load("hostnodes_list.json")),
        f"GET /hostnodes/{NODE}": (200, load("hostnode_get.json")),
        "GET /locations": (200, load("locations_list.json")),
        "GET /instances": (200, load("instances_list.json")),
        "POST /instances": (200, load("instance_create_response.json")),
        "GET /secrets": (200, {"data": {"secrets": []}}),
        "POST /secrets": (200, {"data": {"id": "sec-1", "name": "k", "type": "SSHKEY"}}),
        f"POST /instances/{RUNNING}/stop": (200, load("instance_stop_response.json")),
        f"POST /instances/{STOPPED}/start": (200, load("instance_start_response.json")),
        f"DELETE /instances/{RUNNING}": (200, load("instance_delete_response.json")),
    }
    for iid, name in DETAILS.items():
        routes[f"GET /instances/{iid}"] = (200, load(name))
    return routes


# -- discovery and offers -------------------------------------------------------------------


async def test_search_maps_every_hostnode_offer() -> None:
    served = Served(account())
    query = OfferQuery(min_reliability=None, verified=False, disk_gb=200)
    offers = await served.provider.search_offers(query, pool=1000, sort=SortKey.PRICE)
    market = await served.provider.market_offers(32)
    await served.provider.aclose()
    nodes = load("hostnodes_list.json")["data"]["hostnodes"]
    free = sum(g["availableCount"] for n in nodes for g in n["available_resources"]["gpus"])
    assert len(offers) == free  # every count of every free model fits its node
    assert all(o.id.startswith("tensordock:") for o in offers)
    first = next(o for o in offers if o.offer_id == f"{NODE}:geforcertx4090-pcie-24gb:1")
    assert first.price_per_hour == 0.448
    assert len(market) == 11
    # one GET /hostnodes served both (cached briefly)
    assert len(served.sent("GET /hostnodes")) == 1
    assert served.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


async def test_interruptible_search_asks_nothing() -> None:
    served = Served(account())
    assert await served.provider.search_offers(OfferQuery(interruptible=True), pool=10) == []
    assert served.requests == []


async def test_hostnode_and_locations() -> None:
    served = Served(account())
    node = await served.provider.hostnode(NODE)
    locations = await served.provider.locations()
    assert node["id"] == NODE and node["available_resources"]["gpus"][0]["availableCount"] == 4
    assert len(locations) == len(load("locations_list.json")["data"]["locations"])
    assert {g["v0Name"] for loc in locations for g in loc["gpus"]} >= {"h100-sxm5-80gb"}


# -- instances ------------------------------------------------------------------------------


async def test_list_fetches_each_detail_and_filters_by_name() -> None:
    served = Served(account())
    everything = await served.provider.list_instances()
    ours = await served.provider.list_instances(label_prefix="trainer-41")
    assert [i.instance_id for i in everything] == [RUNNING, STOPPED, RELEASED]
    assert [i.status for i in everything] == [
        InstanceStatus.RUNNING,
        InstanceStatus.STOPPED,
        InstanceStatus.STOPPED,
    ]
    assert everything[0].ssh_port == 20012 and everything[1].ssh_port == 22
    assert everything[2].provider_data["gpu_released"]
    assert [i.label for i in ours] == ["trainer-41d0b6aa"]
    assert len(served.sent(f"GET /instances/{STOPPED}")) == 2


async def test_empty_list_and_missing_instance() -> None:
    routes = account()
    routes["GET /instances"] = (200, load("instances_list_empty.json"))
    served = Served(routes)
    assert await served.provider.list_instances(label_prefix="gpushop-") == []
    assert await served.provider.get_instance("0000-gone") is None


async def test_create_sends_the_documented_body_with_the_stored_key() -> None:
    served = Served(account())
    provider = served.provider
    await provider.ensure_ssh_key(PUBKEY)
    await provider.ensure_ssh_key(PUBKEY)  # idempotent: one lookup, one secret
    result = await provider.create_instance(
        CreateRequest(
            offer_id=f"{NODE}:geforcertx4090-pcie-24gb:1",
            label="gpushop-a1b2c3-r01jq8z3k2m",
            disk_gb=200,
            image="pytorch/pytorch",
            ports=[8888],
            onstart="echo fixture-boot > /tmp/boot.txt",
        )
    )
    assert (result.instance_id, result.started) == (RUNNING, True)
    assert len(served.sent("GET /secrets")) == 1
    secret = served.sent("POST /secrets")
    assert len(secret) == 1 and secret[0]["data"]["attributes"]["type"] == "SSHKEY"
    assert secret[0]["data"]["attributes"]["value"] == " ".join(PUBKEY.split()[:2])
    (body,) = served.sent("POST /instances")
    attrs = body["data"]["attributes"]
    documented = load("instance_create_request_hostnode.json")["data"]["attributes"]
    assert set(attrs) == (set(documented) - {"ssh_key"}) | {"ssh_key_id"}
    assert attrs["ssh_key_id"] == "sec-1"
    assert attrs["name"] == "gpushop-a1b2c3-r01jq8z3k2m"
    assert attrs["hostnode_id"] == NODE and attrs["image"] == "ubuntu2404"
    assert attrs["resources"] == documented["resources"]  # 8 vCPU, 32 GB, 200 GB, 1x 4090
    free = load("hostnode_get.json")["data"]["available_resources"]["available_ports"]
    assert [f["internal_port"] for f in attrs["port_forwards"]] == [22, 8888]
    assert all(f["external_port"] in free for f in attrs["port_forwards"])
    assert attrs["cloud_init"]["runcmd"] == ["echo fixture-boot > /tmp/boot.txt"]
    assert attrs["cloud_init"]["write_files"][0]["content"] == "pytorch/pytorch\n"


async def test_create_with_the_key_inline_where_there_are_no_secrets() -> None:
    routes = account()
    del routes["GET /secrets"]  # 404
    served = Served(routes)
    await served.provider.ensure_ssh_key(PUBKEY)
    await served.provider.create_instance(
        CreateRequest(offer_id=f"tensordock:{NODE}:{GPU}:2", label="l", disk_gb=5)
    )
    (body,) = served.sent("POST /instances")
    attrs = body["data"]["attributes"]
    assert attrs["ssh_key"] == " ".join(PUBKEY.split()[:2]) and "ssh_key_id" not in attrs
    assert attrs["resources"]["storage_gb"] == 100  # the API's minimum
    assert attrs["resources"]["gpus"] == {"geforcertx4090-pcie-24gb": {"count": 2}}
    assert "cloud_init" not in attrs


@pytest.mark.parametrize(
    ("fixture", "status", "error"),
    [
        ("errors/create_no_capacity_http200.json", 200, errors.OfferUnavailable),
        ("errors/create_insufficient_balance_http200.json", 200, errors.InsufficientCredit),
        ("errors/create_validation_http400.json", 400, errors.BadRequest),
        ("errors/unauthorized_http401.json", 401, errors.AuthFailed),
    ],
)
async def test_create_failures_are_typed(
    fixture: str, status: int, error: type[errors.ProviderError]
) -> None:
    routes = account()
    routes["POST /instances"] = (status, load(fixture))
    served = Served(routes)
    await served.provider.ensure_ssh_key(PUBKEY)
    with pytest.raises(error) as caught:
        await served.provider.create_instance(
            CreateRequest(offer_id=f"{NODE}:geforcertx4090-pcie-24gb:1", label="l", disk_gb=100)
        )
    assert TOKEN not in str(caught.value)
    assert len(served.sent("POST /instances")) == 1  # a create is never retried blindly


async def test_create_checks_the_hostnode_first() -> None:
    served = Served(account())
    await served.provider.ensure_ssh_key(PUBKEY)
    with pytest.raises(errors.OfferUnavailable, match="4 free"):
        await served.provider.create_instance(
            CreateRequest(offer_id=f"{NODE}:geforcertx4090-pcie-24gb:5", label="l", disk_gb=100)
        )
    with pytest.raises(errors.OfferUnavailable):  # hostnode gone: 404
        await served.provider.create_instance(
            CreateRequest(offer_id="0000:geforcertx4090-pcie-24gb:1", label="l", disk_gb=100)
        )
    assert served.sent("POST /instances") == []


async def test_create_answer_without_an_id_is_unclear() -> None:
    routes = account()
    routes["POST /instances"] = (200, {"data": {"type": "virtualmachine"}})
    served = Served(routes)
    await served.provider.ensure_ssh_key(PUBKEY)
    with pytest.raises(errors.ProviderUnavailable):  # the caller looks the label up
        await served.provider.create_instance(
            CreateRequest(offer_id=f"{NODE}:geforcertx4090-pcie-24gb:1", label="l", disk_gb=100)
        )


async def test_stop_releases_the_gpu_and_start_and_delete() -> None:
    served = Served(account())
    provider = served.provider
    assert provider.stop_releases_gpu
    assert await provider.set_state(RUNNING, "stopped")
    assert served.sent(f"POST /instances/{RUNNING}/stop") == [{"disassociate_resources": True}]
    assert await provider.set_state(STOPPED, "running")
    assert await provider.destroy_instance(RUNNING)
    assert not await provider.destroy_instance(STOPPED)  # 404: already gone
    with pytest.raises(errors.BadRequest):
        await provider.set_state(RUNNING, "paused")


async def test_start_of_a_running_vm_and_stop_of_a_released_one_are_fine() -> None:
    routes = account()
    refused = load("errors/start_not_stopped_http400.json")
    routes[f"POST /instances/{RUNNING}/start"] = (400, refused)
    routes[f"POST /instances/{RELEASED}/stop"] = (400, {"status": 400, "error": "already stopped"})
    served = Served(routes)
    assert await served.provider.set_state(RUNNING, "running")
    assert await served.provider.set_state(RELEASED, "stopped")


async def test_a_refused_release_of_a_vm_that_keeps_its_gpu_is_an_error() -> None:
    routes = account()
    routes[f"POST /instances/{STOPPED}/stop"] = (400, {"status": 400, "error": "already stopped"})
    served = Served(routes)
    with pytest.raises(errors.BadRequest, match="keeps its GPU"):
        await served.provider.set_state(STOPPED, "stopped")


async def test_restart_without_capacity_is_offer_unavailable() -> None:
    routes = account()
    expired = {"status": 400, "error": "GPU slot expired"}
    routes[f"POST /instances/{RELEASED}/start"] = (400, expired)
    served = Served(routes)
    with pytest.raises(errors.OfferUnavailable):
        await served.provider.set_state(RELEASED, "running")


# -- the HTTP layer -------------------------------------------------------------------------


async def test_a_429_is_retried_and_a_401_is_auth_failed() -> None:
    calls = {"n": 0}

    def flaky(_: httpx.Request) -> tuple[int, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            return 429, load("errors/rate_limited_http429.json")
        return 200, load("hostnodes_list.json")

    routes = account()
    routes["GET /hostnodes"] = flaky
    served = Served(routes)
    assert len(await served.provider.hostnodes()) == 10
    assert calls["n"] == 2
    routes["GET /instances"] = (401, load("errors/unauthorized_http401.json"))
    with pytest.raises(errors.AuthFailed) as caught:
        await served.provider.list_instances()
    assert TOKEN not in str(caught.value)


async def test_instance_calls_need_a_token() -> None:
    provider = TensorDockProvider(url=BASE, api_token=None, rate_limit=False)
    assert not provider.has_credentials
    with pytest.raises(errors.AuthFailed, match="TENSORDOCK_API_TOKEN"):
        await provider.list_instances()
    with pytest.raises(errors.AuthFailed, match="not set"):
        await provider.search_offers(OfferQuery(), pool=10)
    await provider.aclose()


def test_one_bucket_for_every_endpoint_at_100_a_minute_with_a_margin() -> None:
    provider = TensorDockProvider(url=BASE, api_token=TOKEN)
    limiter = provider.http.limiter
    assert limiter.bucket("GET /hostnodes") is limiter.bucket("POST /instances/{id}/stop")
    assert RATE_PER_MINUTE == 100
    assert LIMIT.interval_s == pytest.approx(0.6 * 1.15)
    # the most calls any 60 s window can see: the burst plus the refill
    assert LIMIT.burst + 60 / LIMIT.interval_s < RATE_PER_MINUTE


# -- every fixture ----------------------------------------------------------------------------


def _parse(name: str, data: Any) -> None:
    """Read one fixture with the adapter's reader for its endpoint."""
    sizing = TensorDockProvider(url=BASE, api_token=TOKEN).sizing
    if name.startswith("errors/"):
        status = int(name.rsplit("_http", 1)[1].removesuffix(".json"))
        if status == 200:
            assert error_in_body(data, "POST /instances") is not None
        else:
            request = httpx.Request("GET", BASE)
            assert map_error(httpx.Response(status, json=data, request=request), "GET /x")
    elif name == "hostnodes_list.json":
        for node in mapping.hostnode_list(data):
            mapping.offers_from_hostnode(node, disk_gb=100, sizing=sizing)
    elif name == "hostnode_get.json":
        assert mapping.offers_from_hostnode(mapping.hostnode_body(data), disk_gb=100, sizing=sizing)
    elif name == "locations_list.json":
        assert data["data"]["locations"]
    elif name.startswith("instance_get_"):
        mapping.instance_from_tensordock(mapping.instance_body(data))
    elif name.startswith("instances_list"):
        [mapping.instance_from_tensordock(i) for i in mapping.instance_list(data)]
    elif name == "instance_create_response.json":
        assert mapping.created_instance(data)[0]
    elif name.startswith("instance_create_request_"):
        attrs = data["data"]["attributes"]
        assert mapping.vm_image(attrs["image"]) == (attrs["image"], None)
        assert mapping.vm_name(attrs["name"]) == attrs["name"]
    elif name in (
        "instance_start_response.json",
        "instance_stop_response.json",
        "instance_delete_response.json",
    ):
        assert error_in_body(data, "POST /x") is None
    elif name == "instance_modify_request.json":
        assert mapping.normalize_status("StoppedDisassociated") == mapping.RELEASED
    else:
        raise AssertionError(f"no reader for fixture {name}")


@pytest.mark.parametrize(
    "name", sorted(str(p.relative_to(V2)) for p in V2.rglob("*.json")), ids=str
)
def test_every_fixture_file_parses(name: str) -> None:
    _parse(name, load(name))


# -- configuration and the facade ---------------------------------------------------------------


def test_shop_adds_tensordock_only_with_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # no credentials at all: Vast.ai alone (its search needs no key)
    assert [p.name for p in Shop(load_settings()).providers()] == ["vastai"]
    monkeypatch.setenv("TENSORDOCK_API_TOKEN", TOKEN)
    monkeypatch.setenv("TENSORDOCK_URL", "http://127.0.0.1:9/api/v2/")
    monkeypatch.setenv("TENSORDOCK_VCPU_PER_GPU", "4")
    # by default: every provider with credentials
    assert [p.name for p in Shop(load_settings()).providers()] == ["tensordock"]
    assert [p.name for p in Shop(load_settings(), provider="all").providers()] == [
        "vastai",
        "tensordock",
    ]
    monkeypatch.setenv("VASTAI_API_KEY", "k")
    providers = Shop(load_settings()).providers()
    assert [p.name for p in providers] == ["vastai", "tensordock"]
    td = providers[1]
    assert isinstance(td, TensorDockProvider)
    assert td.url == "http://127.0.0.1:9/api/v2"
    assert (td.sizing.vcpu_per_gpu, td.sizing.ram_gb_per_gpu) == (4, 32)
