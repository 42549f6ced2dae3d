"""Does an offer satisfy a query? One answer for every provider: the market re-checks what each
server returned, and an adapter that filters locally (TensorDock) uses the same rules."""

from __future__ import annotations

from gpushop.models import Offer, OfferQuery


def mismatch(offer: Offer, query: OfferQuery) -> str | None:
    """Why ``offer`` does not satisfy ``query`` (None when it does).

    Every offer a provider returns is checked again here: a filter the server dropped must not
    hand the user the wrong GPU or a disk too small (anchors, pain point 5). A value the
    provider does not report fails a filter that names it, except CUDA (see below).
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
