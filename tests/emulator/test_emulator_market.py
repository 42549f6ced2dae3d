"""The synthetic market: deterministic per seed, realistic distributions."""

from __future__ import annotations

import collections
import statistics
from collections.abc import Callable

import httpx
import pytest

from gpushop.emulator import EmulatorConfig, EmulatorThread
from gpushop.emulator.catalog import GPU_MODELS
from gpushop.emulator.market import Market, driver_int

TABLE = {m.name: m for m in GPU_MODELS}
DATACENTER_GPUS = {"A100 PCIE", "A100 SXM4", "H100 PCIE", "H100 SXM", "H200", "Tesla V100"}


@pytest.fixture(scope="module")
def big() -> Market:
    return Market.generate(5000, seed=42, now=1_773_576_000.0)


def test_same_seed_same_market_other_seed_other_market() -> None:
    a = Market.generate(300, seed=5, now=1_000.0)
    b = Market.generate(300, seed=5, now=1_000.0)
    c = Market.generate(300, seed=6, now=1_000.0)
    assert a.offers == b.offers
    assert [o["id"] for o in a.offers] != [o["id"] for o in c.offers]


def test_determinism_over_http(make_emulator: Callable[..., EmulatorThread]) -> None:
    def snapshot(emu: EmulatorThread) -> list[tuple[int, str, float]]:
        offers = httpx.post(f"{emu.url}/api/v0/bundles/", json={"limit": 500}).json()["offers"]
        return [(o["id"], o["gpu_name"], o["dph_total"]) for o in offers]

    first = snapshot(make_emulator(seed=77, offers=200, rate_limit=False))
    second = snapshot(make_emulator(seed=77, offers=200, rate_limit=False))
    assert first == second and len(first) == 200


def test_gpu_mix(big: Market) -> None:
    counts = collections.Counter(o["gpu_name"] for o in big.offers)
    top_two = {name for name, _ in counts.most_common(2)}
    assert top_two == {"RTX 4090", "RTX 3090"}
    assert set(counts) == set(TABLE)  # every model shows up
    for name in ("RTX 3060", "RTX 5090", "RTX A6000"):
        assert counts[name] > counts["H200"]
    assert sum(counts[n] for n in DATACENTER_GPUS) < 0.25 * len(big)


def test_prices_per_model_follow_the_table(big: Market) -> None:
    per_model: dict[str, list[float]] = collections.defaultdict(list)
    for o in big.offers:
        per_model[o["gpu_name"]].append(o["dph_base"] / o["num_gpus"])
        assert 0.55 <= o["min_bid"] / o["dph_base"] <= 0.85 + 1e-3
        assert 0.05 <= o["storage_cost"] <= 0.25
        assert o["gpu_ram"] == TABLE[o["gpu_name"]].ram_mb
    for name, prices in per_model.items():
        model = TABLE[name]
        inside = [model.price_lo * 0.97 <= p <= model.price_hi * 1.03 for p in prices]
        assert sum(inside) / len(inside) >= 0.85, name  # a few outliers only
        assert model.price_lo <= statistics.median(prices) <= model.price_hi, name
    assert len(per_model) == len(TABLE)


def test_datacenter_offers_are_pricier_and_verified(big: Market) -> None:
    dc = [o for o in big.offers if o["hosting_type"] == 1]
    assert 0.12 <= len(dc) / len(big) <= 0.30
    assert all(o["vericode"] == 1 for o in dc)
    for name in ("RTX 4090", "RTX A6000"):
        dc_price = [o["dph_base"] / o["num_gpus"] for o in dc if o["gpu_name"] == name]
        other = [
            o["dph_base"] / o["num_gpus"]
            for o in big.offers
            if o["gpu_name"] == name and o["hosting_type"] == 0
        ]
        assert statistics.median(dc_price) > statistics.median(other)


def test_verification_reliability_and_sizes(big: Market) -> None:
    unverified = [o for o in big.offers if o["vericode"] == 0]
    assert 0.08 <= len(unverified) / len(big) <= 0.16
    assert all(o["verification"] == "unverified" for o in unverified)
    reliabilities = [o["reliability"] for o in big.offers]
    assert min(reliabilities) >= 0.8 and max(reliabilities) <= 0.9995
    assert sum(r >= 0.95 for r in reliabilities) / len(big) >= 0.8
    assert sum(r < 0.9 for r in reliabilities) > 0  # a tail
    sizes = collections.Counter(o["num_gpus"] for o in big.offers)
    assert set(sizes) == {1, 2, 4, 8} and sizes[1] > sizes[2] > sizes[8]
    eight = [o for o in big.offers if o["num_gpus"] == 8]
    datacenterish = [o for o in eight if o["gpu_name"] in DATACENTER_GPUS or o["hosting_type"]]
    assert len(datacenterish) / len(eight) > 0.5


def test_places_drivers_and_derived_ids(big: Market) -> None:
    countries = collections.Counter(o["geolocation"][-2:] for o in big.offers)
    assert len(countries) >= 15 and countries.most_common(1)[0][0] == "US"
    for o in big.offers:
        assert 11.8 <= o["cuda_max_good"] <= 13.0
        assert o["driver_vers"] == driver_int(o["driver_version"])
        assert o["cpu_cores_effective"] == pytest.approx(o["cpu_cores"] * o["gpu_frac"], abs=0.06)
        assert len(o["gpu_ids"]) == o["num_gpus"]
        if o["gpu_name"] == "RTX 5090":
            assert int(o["driver_version"].split(".")[0]) >= 570
    machines = collections.Counter(o["machine_id"] for o in big.offers)
    assert any(n > 1 for n in machines.values())  # some machines list several asks


@pytest.mark.slow
def test_twenty_thousand_offers(make_emulator: Callable[..., EmulatorThread]) -> None:
    emu = make_emulator(offers=20_000, rate_limit=False)
    assert emu.control.state()["offers"] == 20_000
    query = {"gpu_ram": {"gte": 24000}, "order": [["dph_total", "asc"]], "limit": 64}
    offers = httpx.post(f"{emu.url}/api/v0/bundles/", json=query).json()["offers"]
    assert len(offers) == 64


def test_more_than_twenty_thousand_is_refused() -> None:
    with pytest.raises(ValueError, match="20000"):
        EmulatorConfig(offers=20_001)
