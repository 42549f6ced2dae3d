"""/v1/offers and /v1/market: the market as the CLI's `offers` and `market` show it (the same
JSON keys as their --json); /v1/templates: Vast.ai templates (any signed-in user)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from gpushop.api.auth import CurrentUser
from gpushop.gpus import parse_gpu_list
from gpushop.market.views import market_json, offer_json
from gpushop.models import SortKey
from gpushop.offer_flags import build_query
from gpushop.service.market import MarketReads
from gpushop.service.templates import ranked
from gpushop.service.templates import search as search_templates

router = APIRouter(prefix="/v1", tags=["market"])


@router.get("/offers")
async def offers(
    user: CurrentUser,
    request: Request,
    gpu: Annotated[list[str] | None, Query()] = None,
    min_vram: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    num_gpus: Annotated[int | None, Query(ge=1, le=64)] = None,
    max_price: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
    min_reliability: Annotated[float, Query(ge=0, le=1, allow_inf_nan=False)] = 0.98,
    disk: Annotated[float, Query(gt=0, le=100_000, allow_inf_nan=False)] = 32.0,
    min_cuda: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    country: Annotated[list[str] | None, Query()] = None,
    interruptible: bool = False,
    unverified: bool = False,
    sort: SortKey = SortKey.VALUE,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    provider: str | None = None,
) -> dict[str, Any]:
    """The best offers (cheapest at market price on a reliable host, by default)."""
    cfg = request.app.state.settings
    query = build_query(
        gpu=gpu,
        min_vram=min_vram,
        num_gpus=num_gpus,
        max_price=max_price,
        min_reliability=min_reliability,
        disk=disk,
        min_cuda=min_cuda,
        country=country,
        interruptible=interruptible,
        unverified=unverified,
        settings_max_price=cfg.vastai_max_bid_per_hour,
    )
    reads: MarketReads = request.app.state.market
    result = await reads.search(query, sort, limit, provider)
    return {
        "query": query.describe(),
        "offers": [offer_json(o) for o in result.offers],
        "warnings": list(result.warnings),
    }


@router.get("/market")
async def market(
    user: CurrentUser,
    request: Request,
    gpu: Annotated[list[str] | None, Query()] = None,
    min_reliability: Annotated[float, Query(ge=0, le=1, allow_inf_nan=False)] = 0.98,
    provider: str | None = None,
) -> dict[str, Any]:
    """$/GPU/h per model (p10, p50, p90) and the best reliable offer of each."""
    reads: MarketReads = request.app.state.market
    summary = await reads.shop(provider).market.summary(parse_gpu_list(gpu), min_reliability)
    return {**market_json(summary), "warnings": list(summary.warnings)}


@router.get("/templates")
async def templates(
    user: CurrentUser,
    request: Request,
    query: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    """Launch templates (most created first), as `gpushop templates --json` shows them; a
    template's ``hash_id`` goes to a rental's ``template``."""
    reads: MarketReads = request.app.state.market
    found, warnings = await search_templates(reads.shop(None).providers(), query)
    return {"templates": ranked(found, limit), "warnings": warnings}
