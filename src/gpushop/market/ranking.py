"""Ranking offers. Pure functions.

The ``value`` sort is the expected cost of a useful hour of work, given the risk that the host
fails mid-run (the seeds want "the market price best offer" on "a reliable machine"):

    q      = 1 - r ** T                  chance the host drops during a run of T hours, reading
                                          Vast's reliability r as an hourly survival rate
    factor = 1 + q * (1/2 + O / T)       a failure costs on average half the run, plus the
                                          overhead O of renting and setting up again
    value  = price_per_hour * factor     lower is better

with T = 4 h (the default max duration of a rental) and O = 0.25 h. An unknown reliability counts
as 0.95. Offers whose values are within $0.001/h are tied; preferred GPUs
(``VASTAI_PREFERRED_GPUS``) break ties, then the more reliable, then the cheaper.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpushop.gpus import GpuSelector
from gpushop.models import Offer, OfferQuery, SortKey

RUN_HOURS = 4.0
RESTART_OVERHEAD_HOURS = 0.25
UNKNOWN_RELIABILITY = 0.95


def failure_probability(reliability: float | None, hours: float = RUN_HOURS) -> float:
    r = UNKNOWN_RELIABILITY if reliability is None else min(max(reliability, 0.0), 1.0)
    return 1.0 - float(r**hours)


def expected_cost_factor(reliability: float | None, hours: float = RUN_HOURS) -> float:
    """How much more than its price an hour of useful work costs on this host.

    >>> round(expected_cost_factor(1.0), 3), round(expected_cost_factor(0.98), 3)
    (1.0, 1.044)
    """
    q = failure_probability(reliability, hours)
    return 1.0 + q * (0.5 + RESTART_OVERHEAD_HOURS / hours)


def value_price(offer: Offer) -> float:
    return offer.price_per_hour * expected_cost_factor(offer.reliability)


def preference_rank(offer: Offer, preferred: Sequence[GpuSelector]) -> int:
    for i, selector in enumerate(preferred):
        if selector.matches(offer.gpu_variant):
            return i
    return len(preferred)


def rank(
    offers: Sequence[Offer], sort: SortKey, preferred: Sequence[GpuSelector] = ()
) -> list[Offer]:
    """Offers best first, with a total order (the offer id is the last tie-breaker)."""

    def reliability(o: Offer) -> float:
        return o.reliability if o.reliability is not None else UNKNOWN_RELIABILITY

    def key(o: Offer) -> tuple[float | int | str, ...]:
        if sort is SortKey.PRICE:
            return (o.price_per_hour, preference_rank(o, preferred), -reliability(o), o.id)
        if sort is SortKey.VALUE:
            return (
                round(value_price(o), 3),
                preference_rank(o, preferred),
                -reliability(o),
                o.price_per_hour,
                o.id,
            )
        if sort is SortKey.RELIABILITY:
            return (-reliability(o), o.price_per_hour, o.id)
        return (-(o.dlperf_per_dollar or 0.0), o.price_per_hour, o.id)

    return sorted(offers, key=key)


def mismatch(offer: Offer, query: OfferQuery) -> str | None:
    """Why ``offer`` does not satisfy ``query`` (None when it does).

    Every offer a provider returns is checked again here: a filter the server dropped must not
    hand the user the wrong GPU or a disk too small (anchors, pain point 5). A value the
    provider does not report fails a filter that names it.
    """
    if query.gpus and not any(s.matches(offer.gpu_variant) for s in query.gpus):
        return f"GPU {offer.gpu_variant}"
    if query.min_vram_gb is not None and offer.gpu_ram_gb < query.min_vram_gb:
        return f"{offer.gpu_ram_gb:.1f} GB VRAM"
    if query.num_gpus is not None and offer.num_gpus != query.num_gpus:
        return f"{offer.num_gpus} GPUs"
    if query.max_price is not None and offer.price_per_hour > query.max_price + 1e-9:
        return f"${offer.price_per_hour:.3f}/h"
    if query.min_reliability is not None and (
        offer.reliability is None or offer.reliability < query.min_reliability
    ):
        return f"reliability {offer.reliability}"
    if query.disk_gb and offer.disk_available_gb and offer.disk_available_gb < query.disk_gb:
        return f"{offer.disk_available_gb:.0f} GB disk"
    # an offer that does not say (TensorDock) is checked on the machine once rented (verify.py)
    if query.min_cuda is not None and offer.cuda is not None and offer.cuda < query.min_cuda - 1e-9:
        return f"CUDA {offer.cuda}"
    if query.countries and (offer.country or "") not in {c.upper() for c in query.countries}:
        return f"country {offer.country}"
    if query.verified and not offer.verified:
        return "unverified"
    if query.datacenter is not None and offer.datacenter != query.datacenter:
        return "hosting type"
    if query.min_inet_down_mbps is not None and (
        offer.inet_down_mbps is None or offer.inet_down_mbps < query.min_inet_down_mbps
    ):
        return f"download {offer.inet_down_mbps} Mbit/s"
    if offer.machine_id and offer.machine_id in query.exclude_machines:
        return "blocklisted host"
    return None
