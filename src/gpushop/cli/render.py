"""Rendering for people (rich tables) and programs (stable snake_case JSON).

Tables are drawn from the documented JSON forms (what ``--json`` prints), so that a command
renders the same whether its data came from this machine or from a team service.
rich is imported only when a table is drawn, so ``--json`` never pays for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gpushop.models import JobState, RentalState

__all__ = ["console", "jobs_table", "market_table", "offers_table", "rentals_table"]


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


def _where(offer: dict[str, Any]) -> str:
    location = offer["location"] or ""
    region = location.rsplit(",", 1)[0].strip() if "," in location else ""
    if len(region) > 12:
        region = region[:11] + "…"
    return f"{offer['country'] or '?'} {region}".strip()


def offers_table(
    offers: list[dict[str, Any]], title: str, short: dict[str, str] | None = None
) -> None:
    """``offers``: offer JSON (market/views.py); ``short``: full offer id -> the short id shown
    (offer_ids.short_ids); `--offer` takes it."""
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
        gpu = f"{o['num_gpus']}x {o['gpu_variant']}"
        gpu += "" if o["verified"] else " [dim](unverified)[/dim]"
        table.add_row(
            str(i),
            (short or {}).get(o["id"], o["id"]),
            gpu,
            f"{o['gpu_ram_gb']:.1f}GB",
            f"{o['price_per_hour']:.3f}",
            _delta(o["market_delta_pct"]),
            _fmt(o["reliability"], ".3f"),
            _fmt(o["cuda"], ".1f"),
            _fmt(o["inet_down_mbps"], ".0f"),
            _where(o),
        )
    console().print(table)


def market_table(summary: dict[str, Any], title: str, short: dict[str, str] | None = None) -> None:
    """``summary``: the market's JSON (market/views.py)."""
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
    for m in summary["models"]:
        best = m["best"]
        table.add_row(
            m["gpu_name"],
            str(m["offers"]),
            f"{m['p10_per_gpu_hour']:.3f}",
            f"{m['p50_per_gpu_hour']:.3f}",
            f"{m['p90_per_gpu_hour']:.3f}",
            f"{(short or {}).get(best['id'], best['id'])} {best['num_gpus']}x "
            f"{best['country'] or '?'}"
            if best
            else "-",
            f"{best['price_per_hour']:.3f}" if best else "-",
            _fmt(best["reliability"], ".3f") if best else "-",
            _delta(best["market_delta_pct"]) if best else "-",
        )
    console().print(table)


def duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def rentals_table(rows: list[dict[str, Any]], now: datetime) -> None:
    """``rows``: rentals as `ps --json` prints them, their costs counted at ``now``."""
    from rich.table import Table

    table = Table(header_style="bold")
    for col in ("rental", "state", "provider:instance", "GPU", "$/h", "cost $", "age", "left"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        age = (now - datetime.fromisoformat(r["created_at"])).total_seconds()
        left = (datetime.fromisoformat(r["deadline"]) - now).total_seconds()
        table.add_row(
            r["rental_id"],
            r["state"],
            f"{r['provider']}:{r['instance_id'] or '-'}",
            f"{r['num_gpus'] or '?'}x {r['gpu_name'] or '?'}",
            f"{r['price_per_hour'] or 0:.3f}",
            f"{r['cost_usd']:.3f}",
            duration(age),
            "-" if RentalState(r["state"]).terminal else duration(max(left, 0)),
        )
    console().print(table)


def jobs_table(rows: list[dict[str, Any]], now: datetime, *, unwatched_hint: bool) -> None:
    """``rows``: jobs as `jobs --json` prints them; ``unwatched_hint``: a job nobody drives is
    marked for `attach` (a local one: a team service's are taken over by the service)."""
    from rich.table import Table

    table = Table(header_style="bold")
    for col in ("job", "kind", "name", "state", "rental", "GPU", "age", "exit", "cost $"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        state = r["state"]
        if unwatched_hint and not JobState(state).terminal and not r["watched"]:
            state += " (unwatched: attach)"
        table.add_row(
            r["job_id"],
            r["kind"],
            r["name"],
            state,
            r["rental_id"] or "-",
            r["gpu_name"] or "-",
            duration((now - datetime.fromisoformat(r["created_at"])).total_seconds()),
            "-" if r["exit_code"] is None else str(r["exit_code"]),
            "-" if r["cost_usd"] is None else f"{r['cost_usd']:.3f}",
        )
    console().print(table)
