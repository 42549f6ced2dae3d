"""Market statistics: $/GPU/h percentiles per GPU model. Pure functions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpushop.models import Offer


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of an ascending, non-empty sequence.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    pos = (len(sorted_values) - 1) * p / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def per_gpu_price(offer: Offer, interruptible: bool = False) -> float | None:
    """$/GPU/h of the GPUs alone (storage excluded, so disk size does not skew the market)."""
    if interruptible:
        if offer.min_bid is None:
            return None
        return offer.min_bid / max(offer.num_gpus, 1)
    return offer.gpu_price_per_hour / max(offer.num_gpus, 1)


def medians(offers: Iterable[Offer], interruptible: bool = False) -> dict[str, float]:
    """Median $/GPU/h per canonical GPU model."""
    prices: dict[str, list[float]] = defaultdict(list)
    for offer in offers:
        price = per_gpu_price(offer, interruptible)
        if price is not None:
            prices[offer.gpu_name].append(price)
    return {name: percentile(sorted(values), 50) for name, values in prices.items()}


@dataclass(slots=True)
class ModelStats:
    gpu_name: str
    offers: int
    gpus: int
    p10: float  # $/GPU/h
    p50: float
    p90: float
    best: Offer | None  # the best-value reliable offer of this model


def summarize(offers: Iterable[Offer], *, best: dict[str, Offer] | None = None) -> list[ModelStats]:
    """Per model: offer count, GPU count, p10/p50/p90 $/GPU/h; sorted by median price."""
    groups: dict[str, list[Offer]] = defaultdict(list)
    for offer in offers:
        groups[offer.gpu_name].append(offer)
    out: list[ModelStats] = []
    for name, group in groups.items():
        prices = sorted(per_gpu_price(o) or 0.0 for o in group)
        out.append(
            ModelStats(
                gpu_name=name,
                offers=len(group),
                gpus=sum(o.num_gpus for o in group),
                p10=percentile(prices, 10),
                p50=percentile(prices, 50),
                p90=percentile(prices, 90),
                best=(best or {}).get(name),
            )
        )
    out.sort(key=lambda s: (s.p50, s.gpu_name))
    return out
