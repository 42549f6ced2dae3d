"""OfferQuery filtering and ordering of TensorDock offers (the API filters nothing for us)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpushop.gpus import parse_gpu_list
from gpushop.models import Offer, OfferQuery, SortKey
from gpushop.providers.tensordock import mapping, query
from gpushop.providers.tensordock.pricing import Sizing

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tensordock" / "v2"


def offers(disk_gb: float = 100.0, sizing: Sizing | None = None) -> list[Offer]:
    data = json.loads((FIXTURES / "hostnodes_list.json").read_text())
    return [
        o
        for n in mapping.hostnode_list(data)
        for o in mapping.offers_from_hostnode(n, disk_gb=disk_gb, sizing=sizing or Sizing())
    ]


def search(q: OfferQuery, sort: SortKey = SortKey.PRICE, limit: int = 1000) -> list[Offer]:
    return query.select(offers(q.disk_gb), q, sort=sort, limit=limit)


def loose(**fields: object) -> OfferQuery:
    base: dict[str, object] = {"min_reliability": None, "verified": False, "disk_gb": 100.0}
    base.update(fields)
    return OfferQuery(**base)  # type: ignore[arg-type]


def test_everything_matches_a_loose_query_cheapest_first() -> None:
    found = search(loose())
    assert len(found) == len(offers())
    prices = [o.price_per_hour for o in found]
    assert prices == sorted(prices)
    assert found[0].gpu_name == "RTX A4000"


def test_gpu_names_match_tensordock_spellings() -> None:
    found = search(loose(gpus=parse_gpu_list(["4090"])))
    assert {o.gpu_variant for o in found} == {"geforcertx4090-pcie-24gb"}
    assert {o.machine_id[:8] for o in found if o.machine_id} == {"c3a9f1d2", "02c65d45", "b8d0f2a4"}
    h100 = search(loose(gpus=parse_gpu_list(["H100 SXM"])))
    assert {o.gpu_variant for o in h100} == {"h100-sxm5-80gb"}
    assert search(loose(gpus=parse_gpu_list(["H100 PCIE"]))) == []
    a100 = search(loose(gpus=parse_gpu_list(["A100"])))
    assert {o.gpu_variant for o in a100} == {"a100-pcie-80gb"}
    assert search(loose(gpus=parse_gpu_list(["A100 SXM4"]))) == []
    assert {o.gpu_name for o in search(loose(gpus=parse_gpu_list(["V100"])))} == {"Tesla V100"}


def test_vram_count_and_price() -> None:
    assert {o.gpu_name for o in search(loose(min_vram_gb=48))} == {"A100", "H100", "RTX A6000"}
    assert {o.num_gpus for o in search(loose(num_gpus=8))} == {8}
    assert [o.gpu_name for o in search(loose(num_gpus=8))] == ["H100"]
    cheap = search(loose(max_price=0.2))
    assert cheap and all(o.price_per_hour <= 0.2 for o in cheap)


def test_reliability_is_the_hosts_uptime() -> None:
    found = search(loose(min_reliability=0.999))
    assert found and all(o.reliability is not None and o.reliability >= 0.999 for o in found)
    assert "02c65d45-6da5-4232-a8db-ee0e5bc76110" not in {o.machine_id for o in found}
    # the default 0.98 keeps the 98.92 % host
    assert "02c65d45-6da5-4232-a8db-ee0e5bc76110" in {
        o.machine_id for o in search(OfferQuery(disk_gb=100))
    }


def test_disk_needs_room_on_the_node() -> None:
    found = search(loose(disk_gb=1000))
    assert found and all(o.disk_available_gb >= 1000 and o.disk_gb == 1000 for o in found)
    # the mixed node has 580 GB free, Singapore 900
    assert not {o.location for o in found} & {"Winnipeg, Manitoba, CA", "Singapore, SG"}


def test_countries_are_iso_codes() -> None:
    assert {o.country for o in search(loose(countries=["de", "NL"]))} == {"DE", "NL"}
    assert search(loose(countries=["FR"])) == []


def test_unreported_cuda_passes_a_cuda_filter_and_is_checked_on_the_machine() -> None:
    # TensorDock does not report CUDA: the offers stay, and fleet/verify.py checks nvidia-smi
    assert search(loose(min_cuda=12.0)) == search(loose())


def test_no_interruptible_offers() -> None:
    assert search(loose(interruptible=True)) == []


def test_verified_datacenter_and_bandwidth() -> None:
    assert len(search(loose(verified=True))) == len(offers())  # every fixture tier is >= 1
    dc = search(loose(datacenter=True))
    assert dc and all(o.provider_data["tier"] >= 3 for o in dc)
    assert {o.country for o in search(loose(min_inet_down_mbps=25_000))} == {"US", "DE"}


def test_unverified_tier_0_is_excluded_by_default() -> None:
    offer = offers()[0]
    offer.verified = False
    assert query.mismatch(offer, OfferQuery(min_reliability=None)) == "unverified"
    assert query.mismatch(offer, loose()) is None


def test_blocklisted_hosts_are_excluded() -> None:
    node = "c3a9f1d2-6b4e-4a8f-9d2c-1e5b7a3f9c11"
    found = search(loose(exclude_machines=frozenset({node})))
    assert found and node not in {o.machine_id for o in found}


def test_sort_by_reliability_and_limit() -> None:
    found = search(loose(), sort=SortKey.RELIABILITY, limit=5)
    assert len(found) == 5
    assert [o.reliability for o in found] == sorted(
        (o.reliability or 0 for o in found), reverse=True
    )
    assert found[0].reliability == pytest.approx(0.9999)


def test_sizing_changes_the_price() -> None:
    small = offers(sizing=Sizing(vcpu_per_gpu=2, ram_gb_per_gpu=8))
    big = offers()
    assert small[0].price_per_hour < big[0].price_per_hour
    assert small[0].cpu_cores == 2 and small[0].ram_gb == 8
