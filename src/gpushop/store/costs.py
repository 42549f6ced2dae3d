"""Money accounting for rentals: pure functions, no I/O.

A rental bills at ``price_per_hour`` while READY (GPU running) and at
``details["storage_per_hour"]`` (if known) while STOPPED or INTERRUPTED (the provider keeps the
disk). Every such interval that has ended is a closed :class:`Segment` in ``rental.segments``
(the store appends it on the transition that ends it); the interval still going on is derived from
``running_since`` / ``stopped_at`` and the current state. Other states (creating, provisioning,
releasing, terminal) bill nothing here: the provider's own charges are the reference for those
seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from gpushop.models import RentalState
from gpushop.store.records import GPU, STORAGE, Rental, Segment

STORAGE_RATE_KEY = "storage_per_hour"


def storage_rate(rental: Rental) -> float:
    value = rental.details.get(STORAGE_RATE_KEY)
    return float(value) if isinstance(value, int | float) else 0.0


def open_segment(rental: Rental, now: datetime) -> Segment | None:
    """The billed interval in progress at ``now`` (ending at ``now``), if any."""
    if rental.state is RentalState.READY:
        since = rental.running_since or rental.ready_at
        if since is not None and rental.price_per_hour:
            return Segment(GPU, since, max(since, now), rental.price_per_hour)
    elif rental.state in (RentalState.STOPPED, RentalState.INTERRUPTED):
        rate = storage_rate(rental)
        if rental.stopped_at is not None and rate:
            return Segment(STORAGE, rental.stopped_at, max(rental.stopped_at, now), rate)
    return None


def segments_cost(segments: Iterable[Segment], start: datetime, end: datetime) -> float:
    """USD billed by ``segments`` within ``[start, end)``."""
    total = 0.0
    for seg in segments:
        lo, hi = max(seg.start, start), min(seg.end, end)
        if hi > lo:
            total += seg.rate * (hi - lo).total_seconds() / 3600.0
    return total


def accrued_cost(rental: Rental, start: datetime, end: datetime, now: datetime) -> float:
    """USD the rental accrued within ``[start, end)``, as known at ``now`` (nothing after ``now``).

    >>> from datetime import UTC, timedelta
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> r = Rental(id="r1", provider="vastai", state=RentalState.READY, label="x",
    ...            max_duration_s=7200, created_at=t0, updated_at=t0, price_per_hour=0.5,
    ...            running_since=t0)
    >>> accrued_cost(r, t0, t0 + timedelta(days=1), now=t0 + timedelta(hours=2))
    1.0
    """
    segments = list(rental.segments)
    current = open_segment(rental, now)
    if current is not None:
        segments.append(current)
    return segments_cost(segments, start, min(end, now))


def committed_cost(rental: Rental, now: datetime) -> float:
    """USD the rental may still cost if it runs to its deadline: price x remaining time.

    Terminal rentals commit nothing. A stopped rental is counted at its full price too: it may be
    started again, and a budget check must not under-count.
    """
    if rental.state.terminal or not rental.price_per_hour:
        return 0.0
    remaining = (rental.deadline - now).total_seconds()
    return rental.price_per_hour * max(remaining, 0.0) / 3600.0


def close_segment(rental: Rental, now: datetime) -> list[Segment]:
    """``rental.segments`` plus the interval in progress, closed at ``now`` (for a transition)."""
    current = open_segment(rental, now)
    return (
        [*rental.segments, current]
        if current is not None and current.end > current.start
        else list(rental.segments)
    )
