from datetime import UTC, datetime, timedelta

import pytest

from gpushop.fleet.costs_report import add_charges, summarize
from gpushop.models import RentalState
from gpushop.store import Rental, Segment

T0 = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)


def rental(rid: str, gpu: str, price: float, hours: float, iid: str) -> Rental:
    end = T0 + timedelta(hours=hours)
    return Rental(
        id=rid,
        provider="vastai",
        state=RentalState.RELEASED,
        label=f"gpushop-abc123-{rid}",
        max_duration_s=24 * 3600,
        created_at=T0,
        updated_at=end,
        gpu_name=gpu,
        price_per_hour=price,
        ready_at=T0,
        running_since=T0,
        ended_at=end,
        instance_id=iid,
        segments=[Segment("gpu", T0, end, price)],  # what the store records on release
    )


def test_costs_split_by_day_gpu_and_provider_and_compare_with_charges() -> None:
    a = rental("r0000000001", "RTX 4090", 0.40, 4.0, "11")  # 22:00 -> 02:00 next day
    b = rental("r0000000002", "A100", 1.00, 1.0, "12")
    now = T0 + timedelta(days=1)
    report = summarize([a, b], T0.replace(hour=0), now, now)
    assert report.total == pytest.approx(0.40 * 4 + 1.0)
    assert report.by_day == pytest.approx({"2026-11-20": 0.40 * 2 + 1.0, "2026-11-21": 0.80})
    assert report.by_gpu == pytest.approx({"RTX 4090": 1.6, "A100": 1.0})
    assert report.by_provider == pytest.approx({"vastai": 2.6})
    charges = [
        {"type": "instance", "source": "instance-11", "amount": 1.62},
        {"type": "instance", "source": "instance-12", "amount": 1.0},
        {"type": "instance", "source": "instance-99", "amount": 5.0},  # not ours
    ]
    add_charges(report, "vastai", charges, {"11", "12"})
    data = report.as_json()
    assert data["billed_by_provider"] == {"vastai": 2.62}
    assert data["billed_other_instances_usd"] == 5.0
