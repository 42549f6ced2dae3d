"""The account's money, from the same timestamps as the life cycle (reference section 10).

GPU time is billed at the contract's `dph_base` while the instance is `running` (not while
provisioning or loading, DOCS), storage at `storage_cost x disk / 720` per hour for as long as
the instance exists, running or stopped; so a running instance costs its `dph_total`. Bandwidth
is not simulated. `GET /api/v0/charges/` renders the same figures per instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

HOUR = 3600.0
DAY = 86400.0

Span = tuple[float, float]


@dataclass
class Usage:
    """One instance's billable facts; `gpu_spans` hold the closed running periods."""

    instance_id: int
    label: str | None
    template_id: int | None
    gpu_rate: float  # $/h while running (dph_base)
    storage_cost: float  # $/GB/month
    disk_gb: float
    created_at: float
    ended_at: float | None = None  # destroyed
    # earlier GPU rates, oldest first: (until, $/h) — a bid change (instance_ops.py)
    earlier_rates: list[tuple[float, float]] = field(default_factory=list)

    @property
    def disk_rate(self) -> float:
        """$/h of storage (the API's storage_total_cost)."""
        return self.storage_cost * self.disk_gb / 720.0


def overlap(span: Span, start: float, end: float) -> float:
    return max(0.0, min(span[1], end) - max(span[0], start))


def gpu_seconds(spans: Iterable[Span], start: float, end: float) -> float:
    return sum(overlap(span, start, end) for span in spans)


def disk_span(usage: Usage, now: float) -> Span:
    return (usage.created_at, usage.ended_at if usage.ended_at is not None else now)


def rate_periods(usage: Usage, start: float, end: float) -> list[tuple[float, float, float]]:
    """(from, to, $/h) of each GPU rate within [start, end]: one unless the bid changed."""
    periods, lo = [], float("-inf")
    for until, rate in [*usage.earlier_rates, (float("inf"), usage.gpu_rate)]:
        if min(until, end) > max(lo, start):
            periods.append((max(lo, start), min(until, end), rate))
        lo = until
    return periods


def cost(usage: Usage, spans: Iterable[Span], start: float, end: float, now: float) -> float:
    """USD the instance cost between `start` and `end` (times after `now` do not count)."""
    end = min(end, now)
    spans = list(spans)
    gpu = sum(
        gpu_seconds(spans, lo, hi) / HOUR * rate for lo, hi, rate in rate_periods(usage, start, end)
    )
    disk = overlap(disk_span(usage, now), start, end) / HOUR * usage.disk_rate
    return gpu + disk


def _human(seconds: float) -> str:
    """'3 hours', '2 days', '12 minutes' as the charges descriptions say it."""
    for unit, size in (("day", DAY), ("hour", HOUR), ("minute", 60.0)):
        if seconds >= size or unit == "minute":
            n = max(1, round(seconds / size))
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return ""  # pragma: no cover


def charge(
    usage: Usage, spans: list[Span], start: float, end: float, now: float
) -> dict[str, Any] | None:
    """One `results` entry of /charges/ for [start, end], or None if nothing was billed."""
    lo, hi = disk_span(usage, now)
    lo, hi = max(lo, start), min(hi, end, now)
    if hi <= lo:
        return None
    items: list[dict[str, Any]] = []
    for start_at, end_at, rate in rate_periods(usage, lo, hi):  # one item per bid price
        hours = gpu_seconds(spans, start_at, end_at) / HOUR
        if hours > 0:
            items.append(
                _item(
                    start_at, end_at, "gpu", f"{hours:.3f} hours at ${rate:.3f}/hour", hours * rate
                )
            )
    days = (hi - lo) / DAY
    items.append(
        _item(
            lo,
            hi,
            "disk",
            f"{usage.disk_gb:.3f} GB for {days:.3f} days at ${usage.storage_cost:.3f}/GB/month",
            (hi - lo) / HOUR * usage.disk_rate,
        )
    )
    metadata: dict[str, Any] = {"label": usage.label}
    if usage.template_id is not None:
        metadata["template_id"] = usage.template_id
    return {
        "start": int(lo),
        "end": int(hi),
        "type": "instance",
        "source": f"instance-{usage.instance_id}",
        "description": f"Instance {usage.instance_id} Charges - {_human(hi - lo)}",
        "amount": round(sum(item["amount"] for item in items), 3),
        "metadata": metadata,
        "items": items,
    }


def _item(start: float, end: float, kind: str, description: str, amount: float) -> dict[str, Any]:
    return {
        "start": int(start),
        "end": int(end),
        "type": kind,
        "source": None,
        "description": description,
        "amount": round(amount, 3),
        "metadata": {},
        "items": [],
    }
