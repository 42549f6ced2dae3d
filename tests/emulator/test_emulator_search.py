"""Offer search: the three request forms, the whole query DSL, and the wire format."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from emulator_wire import ERRORS, OFFER_KEYS

from gpushop.emulator import EmulatorThread

ALL = 10_000  # a limit above the market size


def search(client: httpx.Client, query: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post("/api/v0/bundles/", json=query)
    assert response.status_code == 200, response.text
    offers: list[dict[str, Any]] = response.json()["offers"]
    return offers


def ids(offers: list[dict[str, Any]]) -> list[int]:
    return [o["id"] for o in offers]


@pytest.fixture
def market(anon: httpx.Client) -> list[dict[str, Any]]:
    """Every offer of the session market (600), in id order."""
    return sorted(search(anon, {"limit": ALL}), key=lambda o: o["id"])


def brute(market: list[dict[str, Any]], pred: Any) -> set[int]:
    return {o["id"] for o in market if pred(o)}


def test_offers_have_exactly_the_real_fields_and_types(market: list[dict[str, Any]]) -> None:
    assert len(market) == 600
    sample = {
        "id": 1,
        "gpu_ram": 1,
        "gpu_name": "",
        "dph_total": 0.1,
        "reliability": 0.9,
        "rentable": True,
        "gpu_ids": [],
        "search": {},
        "driver_version": "",
        "cuda_max_good": 12.0,
        "compute_cap": 1,
        "external": None,
        "duration": 1.0,
        "end_date": 1.0,
    }
    for offer in market:
        assert set(offer) == OFFER_KEYS
        for name, example in sample.items():
            assert type(offer[name]) is type(example), name


def test_derived_fields_follow_the_fixture_formulas(market: list[dict[str, Any]]) -> None:
    now = time.time()
    for o in market:
        storage = o["storage_cost"] * 5 / 720
        assert o["storage_total_cost"] == pytest.approx(storage, rel=1e-6)
        assert o["dph_total"] == pytest.approx(o["dph_base"] + storage, rel=1e-6)
        assert o["dlperf_per_dphtotal"] == pytest.approx(o["dlperf"] / o["dph_total"], rel=1e-4)
        assert o["flops_per_dphtotal"] == pytest.approx(o["total_flops"] / o["dph_total"], 1e-4)
        assert o["vram_costperhour"] == pytest.approx(
            o["dph_total"] / (o["gpu_total_ram"] / 1024), rel=1e-4
        )
        assert o["search"]["totalHour"] == o["dph_total"]
        assert o["instance"]["totalHour"] == o["storage_total_cost"]
        assert o["gpu_total_ram"] == o["gpu_ram"] * o["num_gpus"]
        assert o["duration"] == pytest.approx(o["end_date"] - now, abs=30)
        assert o["ask_contract_id"] == o["id"]
        assert o["geolocation"][-2:].isupper()


def test_default_order_is_score_desc_and_default_limit_64(anon: httpx.Client) -> None:
    offers = search(anon, {})
    assert len(offers) == 64
    scores = [o["score"] for o in offers]
    assert scores == sorted(scores, reverse=True)
    assert [o["rn"] for o in offers] == list(range(1, 65))


@pytest.mark.parametrize(
    ("spec", "pred"),
    [
        ({"eq": 2}, lambda v: v == 2),
        ({"neq": 1}, lambda v: v != 1),
        ({"gt": 1}, lambda v: v > 1),
        ({"gte": 2}, lambda v: v >= 2),
        ({"lt": 4}, lambda v: v < 4),
        ({"lte": 2}, lambda v: v <= 2),
        ({"in": [1, 8]}, lambda v: v in (1, 8)),
        ({"notin": [1, 2]}, lambda v: v not in (1, 2)),
        ({"gte": 2, "lte": 4}, lambda v: 2 <= v <= 4),
        ({"eq": "2"}, lambda v: v == 2),
        ({"in": ["1", "8"]}, lambda v: v in (1, 8)),
    ],
)
def test_every_operator(anon: httpx.Client, market: list[dict[str, Any]], spec, pred) -> None:
    got = ids(search(anon, {"num_gpus": spec, "limit": ALL}))
    assert set(got) == brute(market, lambda o: pred(o["num_gpus"]))
    assert got  # the market has offers of every size


def test_string_values_are_coerced_to_the_column_type(anon: httpx.Client) -> None:
    typed = {"num_gpus": {"eq": 1}, "reliability": {"gt": 0.98}, "rentable": {"eq": True}}
    as_strings = {
        "num_gpus": {"eq": "1"},
        "reliability": {"gt": "0.98"},
        "rentable": {"eq": "true"},
    }
    assert ids(search(anon, {**typed, "limit": ALL})) == ids(
        search(anon, {**as_strings, "limit": ALL})
    )


def test_string_and_boolean_columns(anon: httpx.Client, market: list[dict[str, Any]]) -> None:
    got = search(anon, {"gpu_name": {"eq": "RTX 4090"}, "limit": ALL})
    assert set(ids(got)) == brute(market, lambda o: o["gpu_name"] == "RTX 4090")
    got = search(anon, {"gpu_name": {"in": ["RTX 3090", "H100 SXM"]}, "limit": ALL})
    assert set(ids(got)) == brute(market, lambda o: o["gpu_name"] in ("RTX 3090", "H100 SXM"))
    got = search(anon, {"rentable": {"eq": False}, "limit": ALL})
    assert set(ids(got)) == brute(market, lambda o: not o["rentable"])


def test_server_side_aliases(anon: httpx.Client, market: list[dict[str, Any]]) -> None:
    def same(alias_query: dict[str, Any], pred: Any) -> None:
        assert set(ids(search(anon, {**alias_query, "limit": ALL}))) == brute(market, pred)

    same({"reliability2": {"gte": 0.99}}, lambda o: o["reliability"] >= 0.99)
    same({"dphtotal": {"lt": 0.5}}, lambda o: o["dph_total"] < 0.5)
    same({"gpu_totalram": {"gte": 96000}}, lambda o: o["gpu_total_ram"] >= 96000)
    same({"gpu_ram_GB": {"gte": 24}}, lambda o: o["gpu_ram"] >= 24000)
    same({"gpu_totalram_GB": {"gte": "80"}}, lambda o: o["gpu_total_ram"] >= 80000)
    same({"cpu_ram_GB": {"gt": 256}}, lambda o: o["cpu_ram"] > 256000)
    same({"ubuntu_version": {"eq": "22.04"}}, lambda o: o["os_version"] == "22.04")
    same({"driver_version": {"gte": "560.35.03"}}, lambda o: o["driver_vers"] >= 560035003)
    same({"driver_version": {"gte": 560035003}}, lambda o: o["driver_vers"] >= 560035003)


def test_virtual_fields(anon: httpx.Client, market: list[dict[str, Any]]) -> None:
    def same(query: dict[str, Any], pred: Any) -> None:
        got = set(ids(search(anon, {**query, "limit": ALL})))
        assert got == brute(market, pred)
        assert got, query

    same({"verified": {"eq": True}}, lambda o: o["vericode"] == 1)
    same({"verified": {"eq": "false"}}, lambda o: o["vericode"] == 0)
    same({"datacenter": {"eq": True}}, lambda o: o["hosting_type"] == 1)
    same({"geolocation": {"in": ["US", "CA"]}}, lambda o: o["geolocation"][-2:] in ("US", "CA"))
    same({"geolocation": {"eq": "de"}}, lambda o: o["geolocation"].endswith(", DE"))
    same({"geolocation": {"notin": ["US"]}}, lambda o: not o["geolocation"].endswith("US"))
    same({"target_reliability": 0.99}, lambda o: o["expected_reliability"] >= 0.99)
    now = time.time()
    same({"duration": {"gt": 30 * 86400}}, lambda o: o["end_date"] - now > 30 * 86400)
    # `external` is a scope control: offers carry null, and external=false keeps them all.
    same({"external": {"eq": False}}, lambda o: True)
    assert search(anon, {"external": {"eq": True}}) == []


def test_rented_is_false_anonymously(anon: httpx.Client, market: list[dict[str, Any]]) -> None:
    assert len(search(anon, {"rented": {"eq": False}, "limit": ALL})) == len(market)
    assert search(anon, {"rented": {"eq": True}}) == []


def test_allocated_storage_prices_storage_and_needs_disk(
    anon: httpx.Client, market: list[dict[str, Any]]
) -> None:
    offers = search(anon, {"allocated_storage": 100, "limit": ALL})
    assert set(ids(offers)) == brute(market, lambda o: o["disk_space"] >= 100)
    for o in offers:
        assert o["storage_total_cost"] == pytest.approx(o["storage_cost"] * 100 / 720, rel=1e-6)
        assert o["dph_total"] == pytest.approx(o["dph_base"] + o["storage_total_cost"], rel=1e-6)
    # pricing applies to filters and order too
    cheap = search(anon, {"allocated_storage": 500, "order": [["dph_total", "asc"]], "limit": 20})
    totals = [o["dph_total"] for o in cheap]
    assert totals == sorted(totals)


def test_order_single_and_multiple_keys(anon: httpx.Client) -> None:
    asc = search(anon, {"order": [["dph_total", "asc"]], "limit": 50})
    assert [o["dph_total"] for o in asc] == sorted(o["dph_total"] for o in asc)
    cheapest = search(anon, {"order": [["dphtotal", "asc"]], "limit": ALL})[0]
    assert cheapest["id"] == asc[0]["id"]
    desc = search(anon, {"order": [["gpu_ram", "desc"]], "limit": 30})
    assert [o["gpu_ram"] for o in desc] == sorted((o["gpu_ram"] for o in desc), reverse=True)
    multi = search(anon, {"order": [["num_gpus", "desc"], ["dph_total", "asc"]], "limit": ALL})
    keys = [(-o["num_gpus"], o["dph_total"]) for o in multi]
    assert keys == sorted(keys)


def test_limit(anon: httpx.Client) -> None:
    assert len(search(anon, {"limit": 5})) == 5
    assert len(search(anon, {"limit": "7"})) == 7
    assert search(anon, {"limit": 0}) == []


def test_bid_pricing_uses_min_bid(anon: httpx.Client) -> None:
    on_demand = {o["id"]: o for o in search(anon, {"limit": 100})}
    for kind in ("bid", "interruptible"):
        for o in search(anon, {"type": kind, "limit": 100}):
            assert o["is_bid"] is True
            assert o["dph_base"] == on_demand[o["id"]]["min_bid"]
            assert o["dph_total"] == pytest.approx(o["min_bid"] + o["storage_total_cost"])
            assert o["dph_total"] < on_demand[o["id"]]["dph_total"]
    cheap_bids = search(anon, {"type": "bid", "dph_total": {"lt": 0.1}, "limit": ALL})
    assert cheap_bids and all(o["dph_total"] < 0.1 for o in cheap_bids)


def test_reserved_pricing_is_discounted(anon: httpx.Client) -> None:
    for o in search(anon, {"type": "reserved", "limit": 100}):
        assert o["discount_rate"] == o["credit_discount_max"]
        assert o["discounted_dph_total"] == pytest.approx(
            o["dph_total"] - o["dph_base"] * o["credit_discount_max"]
        )
    for spelling in ("on-demand", "ondemand"):
        assert search(anon, {"type": spelling, "limit": 3})[0]["is_bid"] is False


def test_the_three_search_forms_agree(anon: httpx.Client) -> None:
    query = {
        "gpu_ram": {"gte": 24000.0},
        "reliability": {"gt": "0.95"},
        "verified": {"eq": True},
        "order": [["dph_total", "asc"]],
        "limit": 20,
    }
    post = anon.post("/api/v0/bundles/", json=query).json()["offers"]
    import json

    get = anon.get("/api/v0/bundles/", params={"q": json.dumps(query)}).json()["offers"]
    put = anon.put("/api/v0/search/asks/", json={"select_cols": ["*"], "q": query}).json()
    assert ids(post) == ids(get) == ids(put["offers"])
    assert len(post) == 20
    strip = [{k: v for k, v in o.items() if k != "duration"} for o in post]
    assert strip == [{k: v for k, v in o.items() if k != "duration"} for o in get]


def test_get_select_cols_returns_only_those_plus_id(anon: httpx.Client) -> None:
    import json

    response = anon.get(
        "/api/v0/bundles/",
        params={
            "q": json.dumps({"limit": 3}),
            "select_cols": json.dumps(["gpu_name", "dph_total"]),
        },
    )
    assert [set(o) for o in response.json()["offers"]] == [{"id", "gpu_name", "dph_total"}] * 3


def test_cli_probe_body_is_accepted(anon: httpx.Client) -> None:
    """The exact body `vastai search offers ...` sent in the reference's PROBE."""
    body = {
        "verified": {"eq": True},
        "external": {"eq": False},
        "rentable": {"eq": True},
        "gpu_ram": {"gte": 24000.0},
        "num_gpus": {"eq": "1"},
        "gpu_name": {"eq": "RTX 4090"},
        "reliability": {"gt": "0.98"},
        "dph_total": {"lt": "1.5"},
        "geolocation": {"in": ["US", "CA"]},
        "duration": {"gt": 604800.0},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
        "limit": 5,
        "allocated_storage": 5.0,
        "disable_bundling": False,
        "show_incompatible": False,
    }
    offers = search(anon, body)
    assert 0 < len(offers) <= 5
    for o in offers:
        assert o["gpu_name"] == "RTX 4090" and o["num_gpus"] == 1
        assert o["geolocation"][-2:] in ("US", "CA") and o["reliability"] > 0.98


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[1, 2]", ERRORS["error_bad_query"]),
        (b'"text"', ERRORS["error_bad_query"]),
        (b'{"num_gpus": 1}', ERRORS["error_bad_query"]),
        (b"{not json", ERRORS["error_bad_json"]),
    ],
)
def test_malformed_queries(anon: httpx.Client, content: bytes, expected: dict[str, Any]) -> None:
    response = anon.post("/api/v0/bundles/", content=content)
    assert response.status_code == 400
    assert response.json() == expected


@pytest.mark.parametrize(
    "query",
    [
        {"no_such_field": {"eq": 1}},
        {"num_gpus": {"between": 1}},
        {"num_gpus": {"in": 1}},
        {"num_gpus": {"eq": "many"}},
        {"order": [["no_such_field", "asc"]]},
        {"order": [["dph_total", "up"]]},
        {"type": "spot"},
        {"limit": "lots"},
    ],
)
def test_invalid_queries_name_the_problem(anon: httpx.Client, query: dict[str, Any]) -> None:
    response = anon.post("/api/v0/bundles/", json=query)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["msg"].startswith("Invalid query")
    if "no_such_field" in str(query):
        assert "no_such_field" in body["msg"]


@pytest.mark.parametrize(
    "path",
    ["/api/v0/bundles/", "/api/v0/bundles", "/api/v0/search/asks/", "/api/v0/search/asks"],
)
def test_both_slash_forms_answer_json_without_redirect(anon: httpx.Client, path: str) -> None:
    method = "PUT" if "asks" in path else "POST"
    response = anon.request(method, path, json={"limit": 1}, follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


def test_gpu_names_anonymous(emulator: EmulatorThread, anon: httpx.Client) -> None:
    for path in ("/api/v0/gpu_names/unique/", "/api/v0/gpu_names/unique"):
        response = anon.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        names = response.json()["gpu_names"]
        assert "RTX 4090" in names and names == sorted(set(names))
