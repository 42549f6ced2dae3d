"""Random search bodies never make the emulator answer 500.

POST /api/v0/bundles/ (the query object itself) and PUT /api/v0/search/asks/ (`{"q": query,
"select_cols": [...]}`) get bodies built from the reference's query DSL (shared/reference/
vastai-api.md §3.2: fields, operators, order, limit, type, allocated_storage) mixed with junk.
The answer is 200 with offers, or the reference's 400 `{"error": "invalid_request", "msg": ...}`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
from fuzzing import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st


def _words(text: str) -> list[str]:
    return text.split()


# Offer fields of the reference's §3.4 table, the server-side aliases and virtual fields of §3.2,
# and a few names that are no field at all.
FIELDS = [
    *_words(
        "id ask_contract_id bundle_id bundled_results machine_id host_id hostname num_gpus "
        "gpu_name "
        "gpu_arch gpu_ram gpu_total_ram gpu_frac gpu_ids gpu_lanes gpu_mem_bw gpu_max_power "
        "gpu_max_temp gpu_display_active bw_nvlink compute_cap cuda_max_good driver_version "
        "driver_vers total_flops dlperf dlperf_per_dphtotal flops_per_dphtotal score cpu_name "
        "cpu_arch cpu_cores cpu_cores_effective cpu_ghz cpu_ram has_avx mobo_name pci_gen pcie_bw "
        "disk_space disk_bw disk_name os_version inet_up inet_up_cost internet_up_cost_per_tb "
        "inet_up_billed inet_down inet_down_cost direct_port_count public_ipaddr static_ip "
        "geolocation geolocode dph_base storage_cost storage_total_cost dph_total dph_total_adj "
        "discount_rate discounted_dph_total credit_discount_max vram_costperhour min_bid is_bid "
        "search instance time_remaining reliability reliability_mult expected_reliability "
        "verification vericode hosting_type external rentable rented start_date end_date duration "
        "vms_enabled resource_type cluster_id avail_vol_ask_id nw_disk_min_bw platform_fee "
        "pending_count rn logo "
        # aliases and virtual fields (§3.2)
        "reliability2 dphtotal gpu_totalram gpu_totalram_GB cpu_ram_GB gpu_ram_GB ubuntu_version "
        "verified datacenter "
        # junk
        "nope _country __class__ GPU_NAME"
    ),
    "",
    " ",
    "gpu name",
    "ü",
]
OPERATORS = ["eq", "neq", "gt", "lt", "gte", "lte", "in", "notin", "nin", "==", "EQ", ""]
SPECIAL = ["order", "limit", "type", "allocated_storage", "target_reliability", "select_cols"]

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["RTX 4090", "RTX_4090", "US", "us", "CA", "535.86.05", "12.4", "1", "0.98"]),
    st.sampled_from(["true", "false", "None", "any", "nan", "inf", "-inf", "1e999", "", " "]),
    st.text(max_size=12),
)
# JSON that orjson can write (no NaN, no ints beyond 64 bits at the leaves of junk)
junk: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), junk)
conditions = st.dictionaries(st.sampled_from(OPERATORS), values, min_size=0, max_size=3)
orders = st.one_of(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(FIELDS), st.sampled_from(["asc", "desc", "ASC", "up", ""])),
            st.tuples(st.sampled_from(FIELDS)),
            junk,
        ),
        max_size=3,
    ),
    junk,
)
special_values = {
    "order": orders,
    "limit": st.one_of(
        st.integers(-5, 3000), finite, st.sampled_from(["5", "x", "1e300", None]), junk
    ),
    "type": st.one_of(
        st.sampled_from(["on-demand", "ondemand", "bid", "interruptible", "reserved", "BID", "x"]),
        junk,
    ),
    "allocated_storage": st.one_of(finite, st.integers(-10, 10**6), junk),
    "target_reliability": st.one_of(finite, conditions, junk),
    "select_cols": st.one_of(st.lists(st.sampled_from([*FIELDS, "*"]), max_size=4), junk),
}


@st.composite
def queries(draw: st.DrawFn) -> Any:
    """A query object: mostly the DSL's shape with random fields, operators and values."""
    if draw(st.integers(0, 9)) == 0:
        return draw(junk)  # not even an object, now and then
    body: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 5))):
        body[draw(st.sampled_from(FIELDS))] = draw(st.one_of(conditions, conditions, values))
    for key in draw(st.lists(st.sampled_from(SPECIAL), max_size=3, unique=True)):
        body[key] = draw(special_values[key])
    return body


def _encode(body: Any) -> bytes:
    # floats: hypothesis draws finite ones; JSON allows ints of any size (the server must cope)
    return json.dumps(body, allow_nan=False).encode()


def _check(response: httpx.Response, body: Any) -> None:
    assert response.status_code in (200, 400), (response.status_code, response.text[:300], body)
    data = response.json()
    if response.status_code == 400:
        assert data.get("error") == "invalid_request", data
        assert isinstance(data.get("msg"), str) and data["msg"], data
    else:
        assert isinstance(data["offers"], list)


@settings(max_examples=examples(120))
@given(body=queries())
@example(body={"limit": 9.3e18})  # found by make fuzz: islice() refused it, 500
@example(body={"bundled_results": {"eq": []}})  # make fuzz: a list as a cache key, 500
@example(body={"hostname": {"in": [{}]}})
def test_random_search_bodies_get_200_or_invalid_request(client: httpx.Client, body: Any) -> None:
    headers = {"Content-Type": "application/json"}
    response = client.post("/api/v0/bundles/", content=_encode(body), headers=headers)
    _check(response, body)


@settings(max_examples=examples(60))
@given(query=queries(), select=special_values["select_cols"], wrap=st.booleans())
def test_random_search_asks_bodies_get_200_or_invalid_request(
    client: httpx.Client, query: Any, select: Any, wrap: bool
) -> None:
    body: Any = {"q": query, "select_cols": select} if wrap else query
    headers = {"Content-Type": "application/json"}
    response = client.put("/api/v0/search/asks/", content=_encode(body), headers=headers)
    _check(response, body)


@settings(max_examples=examples(20))
@given(raw=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)))
def test_bodies_that_are_not_json_get_invalid_json_body(client: httpx.Client, raw: bytes) -> None:
    response = client.post(
        "/api/v0/bundles/", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (200, 400), (response.status_code, response.text[:300], raw)
    if response.status_code == 400:
        assert response.json()["error"] == "invalid_request"


def test_the_strategies_reach_both_answers(client: httpx.Client) -> None:
    """The generator is not all junk: a plain DSL query is answered with offers."""
    body = {"num_gpus": {"gte": 1}, "order": [["dph_total", "asc"]], "limit": 3, "type": "bid"}
    response = client.post("/api/v0/bundles/", json=body)
    assert response.status_code == 200 and len(response.json()["offers"]) == 3
    assert math.isfinite(response.json()["offers"][0]["dph_total"])
