"""Money accounting (costs.py), pure: hand-computed figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpushop.models import RentalState
from gpushop.store import Rental, Segment, accrued_cost, committed_cost
from gpushop.store.records import GPU, STORAGE

T0 = datetime(2025, 3, 31, 22, 0, tzinfo=UTC)
APRIL = (datetime(2025, 4, 1, tzinfo=UTC), datetime(2025, 5, 1, tzinfo=UTC))
MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def rental(state: RentalState, **fields: object) -> Rental:
    values: dict[str, object] = {"price_per_hour": 0.6, "max_duration_s": 8 * 3600.0}
    values.update(fields)
    return Rental(
        id="r0000000001",
        provider="vastai",
        state=state,
        label="gpushop-abcdef-r0000000001",
        created_at=T0,
        updated_at=T0,
        **values,  # type: ignore[arg-type]
    )


def test_running_rental_accrues_price_times_time_up_to_now() -> None:
    r = rental(RentalState.READY, running_since=h(0.5))
    assert accrued_cost(r, *MARCH, now=h(1.5)) == pytest.approx(1.0 * 0.6)  # 22:30 .. 23:30
    assert accrued_cost(r, *MARCH, now=h(2)) == pytest.approx(1.5 * 0.6)  # 22:30 .. 24:00
    assert accrued_cost(r, *APRIL, now=h(1.5)) == 0.0
    # the window's end clips: nothing more accrues in March after midnight
    assert accrued_cost(r, *MARCH, now=h(5)) == pytest.approx(1.5 * 0.6)
    assert accrued_cost(r, *APRIL, now=h(3)) == pytest.approx(1.0 * 0.6)  # 00:00 .. 01:00


def test_nothing_bills_before_ready_or_after_the_end() -> None:
    assert accrued_cost(rental(RentalState.PROVISIONING), *MARCH, now=h(1)) == 0.0
    released = rental(
        RentalState.RELEASED,
        ended_at=h(1),
        segments=[Segment(GPU, h(0.25), h(0.75), 0.6)],
    )
    assert accrued_cost(released, *MARCH, now=h(10)) == pytest.approx(0.3)


def test_stopped_rental_bills_storage_only_when_its_rate_is_known() -> None:
    closed = [Segment(GPU, h(0), h(1), 0.6)]
    stopped = rental(
        RentalState.STOPPED,
        stopped_at=h(1),
        segments=closed,
        details={"storage_per_hour": 0.02},
    )
    # 0.6 GPU (22:00-23:00) + 2 h of storage at 0.02 (23:00-01:00, split over the month change)
    assert accrued_cost(stopped, *MARCH, now=h(3)) == pytest.approx(0.6 + 0.02)
    assert accrued_cost(stopped, *APRIL, now=h(3)) == pytest.approx(0.02)
    unknown_rate = rental(RentalState.STOPPED, stopped_at=h(1), segments=closed)
    assert accrued_cost(unknown_rate, *APRIL, now=h(3)) == 0.0


def test_interrupted_rental_bills_storage_like_a_stopped_one() -> None:
    r = rental(RentalState.INTERRUPTED, stopped_at=h(0), details={"storage_per_hour": 0.1})
    assert accrued_cost(r, T0, h(24), now=h(2)) == pytest.approx(0.2)


def test_committed_is_price_times_time_left_to_the_deadline() -> None:
    r = rental(RentalState.READY, max_duration_s=4 * 3600.0)
    assert committed_cost(r, now=h(1)) == pytest.approx(3 * 0.6)
    assert committed_cost(r, now=h(5)) == 0.0  # past the deadline: nothing more is committed
    assert committed_cost(rental(RentalState.FAILED), now=h(1)) == 0.0
    assert committed_cost(rental(RentalState.REQUESTED, price_per_hour=None), now=h(1)) == 0.0


def test_segment_kinds() -> None:
    assert {GPU, STORAGE} == {"gpu", "storage"}
