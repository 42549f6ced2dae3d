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
from gpushop.matching import mismatch as mismatch  # the market re-checks with it
from gpushop.models import Offer, SortKey

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
