"""Rendering for people (rich tables) and programs (stable snake_case JSON).

rich is imported only when a table is drawn, so ``--json`` never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpushop.market.views import market_json, offer_json

__all__ = ["console", "market_json", "market_table", "offer_json", "offers_table"]

if TYPE_CHECKING:
    from gpushop.market.service import MarketSummary
    from gpushop.models import Offer


def console() -> Any:
    """A rich console; when output is not a terminal (a pipe, a CI log) tables get 160 columns
    rather than rich's 80, so nothing is cut."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _fmt(value: float | None, spec: str) -> str:
    return "?" if value is None else format(value, spec)


def _delta(pct: float | None) -> str:
    if pct is None:
        return "?"
    colour = "green" if pct < -0.5 else ("red" if pct > 0.5 else "white")
    return f"[{colour}]{pct:+.0f}%[/{colour}]"


def _where(offer: Offer) -> str:
    region = offer.location.rsplit(",", 1)[0].strip() if "," in offer.location else ""
    if len(region) > 12:
        region = region[:11] + "…"
    return f"{offer.country or '?'} {region}".strip()


def offers_table(offers: list[Offer], title: str, short: dict[str, str] | None = None) -> None:
    """``short``: full offer id -> the short id shown (offer_ids.short_ids); `--offer` takes it."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold", pad_edge=False)
    for name, justify in [
        ("#", "right"),
        ("offer", "left"),
        ("GPU", "left"),
        ("VRAM", "right"),
        ("$/h", "right"),
        ("vs mkt", "right"),
        ("rel.", "right"),
        ("CUDA", "right"),
        ("↓Mb/s", "right"),
        ("where", "left"),
    ]:
        table.add_column(name, justify=justify, no_wrap=name != "where")  # type: ignore[arg-type]
    for i, o in enumerate(offers, 1):
        gpu = f"{o.num_gpus}x {o.gpu_variant}" + ("" if o.verified else " [dim](unverified)[/dim]")
        table.add_row(
            str(i),
            (short or {}).get(o.id, o.id),
            gpu,
            f"{o.gpu_ram_gb:.1f}GB",
            f"{o.price_per_hour:.3f}",
            _delta(o.market_delta_pct),
            _fmt(o.reliability, ".3f"),
            _fmt(o.cuda, ".1f"),
            _fmt(o.inet_down_mbps, ".0f"),
            _where(o),
        )
    console().print(table)


def market_table(summary: MarketSummary, title: str, short: dict[str, str] | None = None) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in [
        ("GPU", "left"),
        ("offers", "right"),
        ("p10 $/GPU/h", "right"),
        ("p50", "right"),
        ("p90", "right"),
        ("best reliable offer", "left"),
        ("$/h", "right"),
        ("rel.", "right"),
        ("vs mkt", "right"),
    ]:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for m in summary.models:
        best = m.best
        table.add_row(
            m.gpu_name,
            str(m.offers),
            f"{m.p10:.3f}",
            f"{m.p50:.3f}",
            f"{m.p90:.3f}",
            f"{(short or {}).get(best.id, best.id)} {best.num_gpus}x {best.country or '?'}"
            if best
            else "-",
            f"{best.price_per_hour:.3f}" if best else "-",
            _fmt(best.reliability, ".3f") if best else "-",
            _delta(best.market_delta_pct) if best else "-",
        )
    console().print(table)
