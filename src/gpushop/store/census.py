"""What the store holds, counted (for /metrics): rentals and jobs by state, what the active
rentals cost per hour, webhook deliveries by status. A few GROUP BY queries, no row loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from gpushop.models import RentalState
from gpushop.store.schema import JobRow, RentalRow
from gpushop.store.schema_webhooks import WebhookDeliveryRow

if TYPE_CHECKING:
    from gpushop.store.store import Store

# the states that bill (a stopped instance still pays its storage: its price holds it)
BILLING = [RentalState.CREATING, RentalState.PROVISIONING, RentalState.READY, RentalState.STOPPED]


@dataclass(frozen=True)
class Census:
    rentals: dict[str, int]
    jobs: dict[str, int]
    usd_per_hour: float
    deliveries: dict[str, int]


def take(store: Store) -> Census:
    with store._read() as session:
        rentals = dict(
            session.execute(select(RentalRow.state, func.count()).group_by(RentalRow.state)).all()
        )
        jobs = dict(
            session.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        )
        spend = session.scalar(
            select(func.coalesce(func.sum(RentalRow.price_per_hour), 0.0)).where(
                RentalRow.state.in_([s.value for s in BILLING])
            )
        )
        deliveries = dict(
            session.execute(
                select(WebhookDeliveryRow.status, func.count()).group_by(WebhookDeliveryRow.status)
            ).all()
        )
    return Census(
        {str(k): int(v) for k, v in rentals.items()},
        {str(k): int(v) for k, v in jobs.items()},
        float(spend or 0.0),
        {str(k): int(v) for k, v in deliveries.items()},
    )
