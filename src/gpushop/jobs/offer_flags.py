"""A job's stored offer flags -> the provisioner's options (again after a lost rental)."""

from __future__ import annotations

from typing import Any

from gpushop.fleet.provision import UpOptions
from gpushop.jobs.spec import JobSpec
from gpushop.models import SortKey
from gpushop.offer_flags import build_query

QUERY_KEYS = (
    "gpu",
    "min_vram",
    "num_gpus",
    "max_price",
    "min_reliability",
    "disk",
    "min_cuda",
    "country",
    "interruptible",
    "unverified",
    "settings_max_price",
)
QUERY_DEFAULTS: dict[str, Any] = {
    "min_reliability": 0.98,
    "disk": 32.0,
    "interruptible": False,
    "unverified": False,
}
DEFAULT_IMAGE = "vastai/base-image:@vastai-automatic-tag"


def offer_flags(query: dict[str, Any], **rest: Any) -> dict[str, Any]:
    """What a job stores: the query flags as given (validated now, rebuilt later) and the rest
    of the renting options (sort, offer, attempts, ready_timeout_s, bid, keep_interrupted,
    rebid, budget_usd, price_cap, watchdog_grace_s)."""
    stored: dict[str, Any] = {k: query.get(k, QUERY_DEFAULTS.get(k)) for k in QUERY_KEYS}
    build_query(**stored)  # bad flags fail now, before anything is rented
    return {"query": stored, **rest}


def up_options(spec: JobSpec) -> UpOptions:
    flags = dict(spec.offer)
    stored = flags.get("query", {})
    query = build_query(**{k: stored.get(k, QUERY_DEFAULTS.get(k)) for k in QUERY_KEYS})
    sort = flags.get("sort")
    opts = UpOptions(
        query=query,
        sort=SortKey(sort) if sort else SortKey.VALUE,
        offer_id=flags.get("offer"),
        image=spec.image or (None if spec.template_hash else DEFAULT_IMAGE),
        template_hash=spec.template_hash,
        max_duration_s=spec.max_duration_s,
        max_attempts=int(flags.get("attempts") or 3),
        ready_timeout_s=float(flags.get("ready_timeout_s") or 15 * 60.0),
        bid_price=flags.get("bid"),
        keep_interrupted=bool(flags.get("keep_interrupted")),
        rebid=bool(flags.get("rebid")),
        budget_usd=flags.get("budget_usd"),
        price_cap=flags.get("price_cap"),
    )
    if "watchdog_grace_s" in flags:
        opts.watchdog_grace_s = flags["watchdog_grace_s"]
    return opts
