"""``gpushop costs``: what our rentals cost, by day, GPU model and provider (pure), and how that
compares with what the provider says it billed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gpushop.store import Rental, accrued_cost


@dataclass
class CostReport:
    start: datetime
    end: datetime
    total: float = 0.0
    by_day: dict[str, float] = field(default_factory=dict)
    by_gpu: dict[str, float] = field(default_factory=dict)
    by_provider: dict[str, float] = field(default_factory=dict)
    by_rental: dict[str, float] = field(default_factory=dict)
    billed: dict[str, float] = field(default_factory=dict)  # provider -> what it billed us
    unmatched_charges: float = 0.0  # billed for instances that are not ours (other tools)

    def as_json(self) -> dict[str, Any]:
        def r(d: Mapping[str, float]) -> dict[str, float]:
            return {k: round(v, 6) for k, v in sorted(d.items())}

        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "total_usd": round(self.total, 6),
            "by_day": r(self.by_day),
            "by_gpu": r(self.by_gpu),
            "by_provider": r(self.by_provider),
            "by_rental": r(self.by_rental),
            "billed_by_provider": r(self.billed) if self.billed else None,
            "billed_other_instances_usd": round(self.unmatched_charges, 4),
        }


def summarize(
    rentals: Iterable[Rental], start: datetime, end: datetime, now: datetime
) -> CostReport:
    """Costs accrued within [start, end), split by UTC day."""
    report = CostReport(start, end)
    by_day: dict[str, float] = defaultdict(float)
    by_gpu: dict[str, float] = defaultdict(float)
    by_provider: dict[str, float] = defaultdict(float)
    for rental in rentals:
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        total = 0.0
        while day < end:
            nxt = day + timedelta(days=1)
            cost = accrued_cost(rental, max(day, start), min(nxt, end), now)
            if cost:
                by_day[day.date().isoformat()] += cost
                total += cost
            day = nxt
        if total:
            report.by_rental[rental.id] = total
            by_gpu[rental.gpu_name or "?"] += total
            by_provider[rental.provider] += total
            report.total += total
    report.by_day, report.by_gpu, report.by_provider = dict(by_day), dict(by_gpu), dict(by_provider)
    return report


def add_charges(
    report: CostReport, provider: str, charges: Iterable[Mapping[str, Any]], ours: set[str]
) -> None:
    """Fold the provider's per-instance charges in: ours (by instance id) and everyone else's."""
    billed = 0.0
    for charge in charges:
        source = str(charge.get("source") or "")
        amount = float(charge.get("amount") or 0.0)
        if source.removeprefix("instance-") in ours:
            billed += amount
        elif charge.get("type") == "instance":
            report.unmatched_charges += amount
    report.billed[provider] = billed
