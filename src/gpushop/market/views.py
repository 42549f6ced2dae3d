"""The documented JSON forms of offers and market summaries (README, "JSON output"): what
`--json` prints and what the API answers, one definition for every face."""

from __future__ import annotations

from typing import Any

from gpushop.market import ranking
from gpushop.market.service import MarketSummary
from gpushop.models import Offer


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def offer_json(offer: Offer) -> dict[str, Any]:
    """The documented JSON form of an offer (README, "JSON output")."""
    return {
        "id": offer.id,
        "provider": offer.provider,
        "offer_id": offer.offer_id,
        "gpu_name": offer.gpu_name,
        "gpu_variant": offer.gpu_variant,
        "num_gpus": offer.num_gpus,
        "gpu_ram_gb": rounded(offer.gpu_ram_gb, 1),
        "price_per_hour": rounded(offer.price_per_hour),
        "price_per_gpu_hour": rounded(offer.price_per_gpu_hour),
        "storage_price_per_hour": rounded(offer.storage_price_per_hour),
        "value_price_per_hour": rounded(ranking.value_price(offer)),
        "reliability": rounded(offer.reliability),
        "verified": offer.verified,
        "datacenter": offer.datacenter,
        "location": offer.location,
        "country": offer.country,
        "inet_up_mbps": rounded(offer.inet_up_mbps, 1),
        "inet_down_mbps": rounded(offer.inet_down_mbps, 1),
        "cuda": offer.cuda,
        "driver": offer.driver,
        "dlperf": rounded(offer.dlperf, 2),
        "dlperf_per_dollar": rounded(offer.dlperf_per_dollar, 2),
        "disk_gb": offer.disk_gb,
        "disk_available_gb": rounded(offer.disk_available_gb, 1),
        "interruptible": offer.interruptible,
        "min_bid": rounded(offer.min_bid),
        "market_median_per_gpu_hour": rounded(offer.market_median_per_gpu),
        "market_delta_pct": rounded(offer.market_delta_pct, 1),
    }


def market_json(summary: MarketSummary) -> dict[str, Any]:
    return {
        "total_offers": summary.total_offers,
        "cached": summary.cached,
        "models": [
            {
                "gpu_name": m.gpu_name,
                "offers": m.offers,
                "gpus": m.gpus,
                "p10_per_gpu_hour": rounded(m.p10),
                "p50_per_gpu_hour": rounded(m.p50),
                "p90_per_gpu_hour": rounded(m.p90),
                "best": offer_json(m.best) if m.best else None,
            }
            for m in summary.models
        ],
    }
