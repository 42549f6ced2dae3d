"""OfferQuery → Vast.ai search DSL (reference section 3.2). Pure functions."""

from __future__ import annotations

from typing import Any

from gpushop.models import OfferQuery, SortKey

# The server's sort for each of our sorts; ``value`` is ranked locally from a price-ordered pool.
_ORDER: dict[SortKey, list[list[str]]] = {
    SortKey.PRICE: [["dph_total", "asc"]],
    SortKey.VALUE: [["dph_total", "asc"]],
    SortKey.RELIABILITY: [["reliability", "desc"], ["dph_total", "asc"]],
    SortKey.PERF: [["dlperf_per_dphtotal", "desc"]],
}

# The few columns the market statistics need: a small answer for a broad search.
MARKET_COLUMNS = (
    "id",
    "gpu_name",
    "num_gpus",
    "gpu_ram",
    "dph_base",
    "min_bid",
    "storage_cost",
    "reliability2",
    "vericode",
    "hosting_type",
    "geolocation",
    "inet_up",
    "inet_down",
    "cuda_max_good",
    "driver_version",
    "dlperf",
    "disk_space",
    "machine_id",
    "cpu_cores_effective",
)

MARKET_LIMIT = 3000


def build_search_query(query: OfferQuery, *, sort: SortKey, limit: int) -> dict[str, Any]:
    """The body of ``POST /api/v0/bundles/``; units converted (GB → MB for memory)."""
    q: dict[str, Any] = {
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "external": {"eq": False},
    }
    if query.verified:
        q["verified"] = {"eq": True}
    if query.gpus:
        names: list[str] = []
        for selector in query.gpus:
            names.extend(v for v in selector.variants if v not in names)
        q["gpu_name"] = {"in": names}
    if query.min_vram_gb is not None:
        q["gpu_ram"] = {"gte": round(query.min_vram_gb * 1000, 3)}
    if query.num_gpus is not None:
        q["num_gpus"] = {"eq": query.num_gpus}
    if query.max_price is not None:
        q["dph_total"] = {"lte": query.max_price}
    if query.min_reliability is not None:
        q["reliability"] = {"gte": query.min_reliability}
    if query.disk_gb:
        q["disk_space"] = {"gte": query.disk_gb}
    if query.min_cuda is not None:
        q["cuda_max_good"] = {"gte": query.min_cuda}
    if query.countries:
        q["geolocation"] = {"in": [c.upper() for c in query.countries]}
    if query.datacenter is not None:
        q["datacenter"] = {"eq": query.datacenter}
    if query.min_inet_down_mbps is not None:
        q["inet_down"] = {"gte": query.min_inet_down_mbps}
    machines = sorted(int(m) for m in query.exclude_machines if m.isdigit())
    if machines:
        q["machine_id"] = {"notin": machines}  # blocklisted hosts (they lied about their GPUs)
    q["order"] = _ORDER[sort]
    q["type"] = "bid" if query.interruptible else "on-demand"
    q["allocated_storage"] = query.disk_gb
    q["limit"] = limit
    return q


def build_market_query(disk_gb: float) -> dict[str, Any]:
    """A broad search of the rentable, verified, on-demand market."""
    return {
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "external": {"eq": False},
        "verified": {"eq": True},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
        "allocated_storage": disk_gb,
        "limit": MARKET_LIMIT,
    }
