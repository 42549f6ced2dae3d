"""``gpushop offers`` and ``gpushop market``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import typer

from gpushop.cli.common import call_service, print_json, run_async, settings, team_service, warn
from gpushop.errors import UsageError
from gpushop.models import SortKey
from gpushop.offer_flags import build_query

GpuOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--gpu", "-g", help="GPU model(s): repeat or comma-separate (4090, RTX 4090, A100)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UsageError(message)


MinVramOpt = Annotated[float | None, typer.Option("--min-vram", help="GB of VRAM per GPU.")]
NumGpusOpt = Annotated[int | None, typer.Option("--num-gpus", help="Exact GPU count.")]
MaxPriceOpt = Annotated[
    float | None,
    typer.Option("--max-price", help="USD/h cap for the whole offer [VASTAI_MAX_BID_PER_HOUR]."),
]
MinRelOpt = Annotated[float, typer.Option("--min-reliability", help="0..1 host reliability floor.")]
DiskOpt = Annotated[float, typer.Option("--disk", help="GB of disk, priced in.")]
MinCudaOpt = Annotated[
    float | None, typer.Option("--min-cuda", help="Highest CUDA the driver must support.")
]
CountryOpt = Annotated[
    list[str] | None, typer.Option("--country", help="ISO country code(s), e.g. US,DE.")
]
InterruptibleOpt = Annotated[
    bool, typer.Option("--interruptible", help="Price at the minimum bid (can be outbid).")
]
UnverifiedOpt = Annotated[
    bool, typer.Option("--include-unverified", help="Also show unverified hosts.")
]
SortOpt = Annotated[SortKey, typer.Option("--sort", help="Ranking.")]
ProviderOpt = Annotated[
    str | None,
    typer.Option(
        "--provider",
        help="vastai, tensordock or all (default: every provider with credentials).",
    ),
]


def offers(
    gpu: GpuOpt = None,
    min_vram: MinVramOpt = None,
    num_gpus: NumGpusOpt = None,
    max_price: MaxPriceOpt = None,
    min_reliability: MinRelOpt = 0.98,
    disk: DiskOpt = 32.0,
    min_cuda: MinCudaOpt = None,
    country: CountryOpt = None,
    interruptible: InterruptibleOpt = False,
    unverified: UnverifiedOpt = False,
    sort: SortOpt = SortKey.VALUE,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many offers to show.")] = 10,
    provider: ProviderOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the best offers: cheapest at market price on a reliable host, by default."""
    _check(1 <= limit <= 1000, "--limit must be between 1 and 1000")
    cfg = settings()
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

    service = team_service(cfg)
    if service is not None:
        from gpushop.client import remote

        params: dict[str, Any] = {
            "gpu": gpu,
            "min_vram": min_vram,
            "num_gpus": num_gpus,
            # the cap this machine sets (VASTAI_MAX_BID_PER_HOUR) holds here too
            "max_price": max_price if max_price is not None else cfg.vastai_max_bid_per_hour,
            "min_reliability": min_reliability,
            "disk": disk,
            "min_cuda": min_cuda,
            "country": country,
            "interruptible": interruptible,
            "unverified": unverified,
            "sort": sort.value,
            "limit": limit,
            "provider": provider,
        }
        found = call_service(service, lambda client: remote.offers(client, params))
        shown, warnings, described = found["offers"], found["warnings"], found["query"]
        known: Iterable[str] = [o["id"] for o in shown]  # the service names no others
    else:

        async def go() -> object:
            from gpushop.shop import Shop

            async with Shop(cfg, provider=provider) as shop:
                return await shop.market.search(query, sort, limit)

        from gpushop.market.service import SearchResult
        from gpushop.market.views import offer_json

        result = run_async(go())
        assert isinstance(result, SearchResult)
        shown = [offer_json(o) for o in result.offers]
        warnings, described, known = result.warnings, query.describe(), result.known_ids
    for message in warnings:
        warn(message)
    if as_json:
        print_json(shown)
        return
    from gpushop.cli import render

    title = f"Best {len(shown)} offers by {sort.value}: {described}"
    render.offers_table(shown, title, _short_ids([o["id"] for o in shown], known))


def market(
    gpu: GpuOpt = None,
    min_reliability: Annotated[
        float, typer.Option("--min-reliability", help="Floor for the 'best reliable offer'.")
    ] = 0.98,
    provider: ProviderOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Market prices per GPU model: offer count, p10/p50/p90 $/GPU/h, best reliable offer."""
    from gpushop.gpus import parse_gpu_list

    _check(0 <= min_reliability <= 1, "--min-reliability must be between 0 and 1")
    selectors = parse_gpu_list(gpu)
    cfg = settings()

    service = team_service(cfg)
    if service is not None:
        from gpushop.client import remote

        params: dict[str, Any] = {
            "gpu": gpu,
            "min_reliability": min_reliability,
            "provider": provider,
        }
        summary, warnings = call_service(service, lambda client: remote.market(client, params))
        known: Iterable[str] = [m["best"]["id"] for m in summary["models"] if m["best"]]
    else:

        async def go() -> object:
            from gpushop.shop import Shop

            async with Shop(cfg, provider=provider) as shop:
                return await shop.market.summary(selectors, min_reliability)

        from gpushop.market.service import MarketSummary
        from gpushop.market.views import market_json

        found = run_async(go())
        assert isinstance(found, MarketSummary)
        summary, warnings, known = market_json(found), found.warnings, found.known_ids
    for message in warnings:
        warn(message)
    if as_json:
        print_json(summary)
        return
    from gpushop.cli import render

    title = (
        f"Market: {summary['total_offers']} verified on-demand offers"
        f" (best reliable = reliability >= {min_reliability:g}, 32 GB disk)"
    )
    best = [m["best"]["id"] for m in summary["models"] if m["best"]]
    render.market_table(summary, title, _short_ids(best, known))


def _short_ids(shown: list[str], known: Iterable[str]) -> dict[str, str]:
    """The short ids a table shows (unique among every current offer the command saw), kept on
    this machine so that `--offer SHORT` rents exactly the offer shown (offer_ids.py)."""
    from gpushop import offer_ids
    from gpushop.config import cache_dir

    short = offer_ids.short_ids(shown, known)
    offer_ids.remember(cache_dir(), short)
    return short


def register(app: typer.Typer) -> None:
    app.command()(offers)
    app.command()(market)
