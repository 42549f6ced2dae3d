from gpushop.gpus import resolve
from gpushop.models import OfferQuery, SortKey
from gpushop.providers.vastai.query import build_search_query


def test_query_converts_units_and_sets_the_safe_defaults() -> None:
    q = OfferQuery(
        gpus=[resolve("4090"), resolve("A100")],
        min_vram_gb=24,
        num_gpus=1,
        max_price=1.5,
        min_reliability=0.98,
        disk_gb=32,
        min_cuda=12.4,
        countries=["us", "ca"],
    )
    body = build_search_query(q, sort=SortKey.PRICE, limit=20)
    assert body["gpu_ram"] == {"gte": 24000}  # GB -> MB
    assert body["gpu_name"] == {"in": ["RTX 4090", "A100 SXM4", "A100 PCIE", "A100X", "A100 SXM"]}
    assert body["verified"] == {"eq": True}
    assert body["rentable"] == {"eq": True}
    assert body["rented"] == {"eq": False}
    assert body["external"] == {"eq": False}
    assert body["reliability"] == {"gte": 0.98}
    assert body["dph_total"] == {"lte": 1.5}
    assert body["geolocation"] == {"in": ["US", "CA"]}
    assert body["cuda_max_good"] == {"gte": 12.4}
    assert body["allocated_storage"] == 32 and body["disk_space"] == {"gte": 32}
    assert body["type"] == "on-demand" and body["limit"] == 20
    assert body["order"] == [["dph_total", "asc"]]


def test_interruptible_searches_bids() -> None:
    body = build_search_query(OfferQuery(interruptible=True), sort=SortKey.VALUE, limit=5)
    assert body["type"] == "bid"
