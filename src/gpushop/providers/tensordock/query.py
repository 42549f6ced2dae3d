"""OfferQuery -> TensorDock offers. Pure functions.

Whether ``GET /hostnodes`` honours any query filter is unverified (reference 2.4, 6), so the
adapter asks for every hostnode and filters here, on every ``OfferQuery`` field:

- ``gpus``, ``min_vram_gb`` (per GPU), ``num_gpus``, ``max_price`` (the whole VM, storage
  included), ``min_reliability`` (the host's uptime), ``countries`` (ISO codes),
  ``min_inet_down_mbps`` (the location's network speed), ``datacenter`` and ``verified``
  (location tier, see ``mapping``), ``exclude_machines`` (hostnode ids);
- ``disk_gb``: the storage priced is at least the API's minimum of 100 GB, and the node must
  have that much free;
- ``min_cuda``: the API reports no driver or CUDA version, so an offer passes and the rented
  machine is checked with ``nvidia-smi`` before it is used (fleet/verify.py): a driver too old is
  released and the next offer tried, as a host that lied would be;
- ``interruptible``: TensorDock v2 has no spot market, so such a query has no offer.
"""

from __future__ import annotations

from gpushop import matching
from gpushop.models import Offer, OfferQuery, SortKey

UNKNOWN_RELIABILITY = 0.9  # for ordering only, as the market ranks offers without one


def mismatch(offer: Offer, query: OfferQuery) -> str | None:
    """Why ``offer`` does not satisfy ``query`` (None when it does): the shared rules, plus
    TensorDock's own (no spot market; the storage priced must fit on the node)."""
    if query.interruptible:
        return "no interruptible offers"
    if offer.disk_available_gb < max(query.disk_gb, offer.disk_gb):
        return f"{offer.disk_available_gb:.0f} GB disk"
    return matching.mismatch(offer, query)


def order(offers: list[Offer], sort: SortKey) -> list[Offer]:
    """Best candidates first, as the server's order would be on Vast.ai. ``value`` is ranked by
    the market from a price-ordered pool; ``perf`` has no benchmark here, so it is by price."""

    def reliability(o: Offer) -> float:
        return o.reliability if o.reliability is not None else UNKNOWN_RELIABILITY

    if sort is SortKey.RELIABILITY:
        return sorted(offers, key=lambda o: (-reliability(o), o.price_per_hour, o.id))
    return sorted(offers, key=lambda o: (o.price_per_hour, -reliability(o), o.id))


def select(offers: list[Offer], query: OfferQuery, *, sort: SortKey, limit: int) -> list[Offer]:
    """The offers matching ``query``, best first, at most ``limit``."""
    kept = [o for o in offers if mismatch(o, query) is None]
    return order(kept, sort)[: max(limit, 0)]
