"""Money limits checked in the same transaction as the write-ahead rental they allow.

Two concurrent requests must never both pass a limit that allows one: the check and the insert
are one transaction, serialised per deployment (SQLite: BEGIN IMMEDIATE; PostgreSQL: a
transaction-level advisory lock), so the second sees the first's rental."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gpushop.errors import MoneyLimitError
from gpushop.models import TERMINAL
from gpushop.store import costs, events
from gpushop.store.records import Rental
from gpushop.store.schema import EventRow, RentalRow

WARN_SHARE = 0.8  # budget.warning once a month's spending (with what is committed) reaches this


class UserQuotaExceeded(MoneyLimitError):
    """Refused by a user's own quota (the team service's)."""


def _refused(exc: MoneyLimitError, budget_subject: str | None, user_id: str | None) -> Exception:
    """Mark a refusal by a monthly budget, so that the store tells of it (budget.exceeded)."""
    exc.budget_subject = budget_subject  # type: ignore[attr-defined]
    exc.budget_user_id = user_id  # type: ignore[attr-defined]
    return exc


def _warn_once(
    session: Session,
    subject: str,
    user_id: str | None,
    share: float,
    start: datetime,
    now: datetime,
) -> None:
    """budget.warning, once per budget and month, when the month's share reaches WARN_SHARE."""
    if share < WARN_SHARE:
        return
    seen = session.scalars(
        select(EventRow.id).where(
            EventRow.type == "budget.warning", EventRow.subject == subject, EventRow.at >= start
        )
    ).first()
    if seen is None:
        events.add(
            session,
            now,
            "budget.warning",
            subject,
            user_id=user_id,
            reason=f"{share:.0%} of the month's budget spent or committed",
            data={"share": round(share, 4)},
        )


@dataclass(frozen=True)
class SpendingLimits:
    """What a new rental must fit: the account's budget (``GPUSHOP_BUDGET_USD``) and, for a user
    of the team service, their quotas. ``hours``: the new rental's worst case (max duration)."""

    hours: float
    account_budget_usd: float | None = None
    user_id: str | None = None
    user_name: str = ""
    max_rentals: int | None = None
    max_usd_per_hour: float | None = None
    monthly_budget_usd: float | None = None


def month_window(now: datetime) -> tuple[datetime, datetime]:
    """[first instant of this UTC calendar month, first instant of the next)."""
    now = now.astimezone(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def check(
    session: Session,
    to_rental: Callable[[RentalRow], Rental],
    limits: SpendingLimits,
    price_per_hour: float,
    now: datetime,
) -> None:
    """Raise MoneyLimitError (UserQuotaExceeded for a user's quota) if the new rental, at
    ``price_per_hour`` for ``limits.hours``, does not fit. ``to_rental`` maps a row to a record."""
    start, end = month_window(now)
    rows = session.scalars(
        select(RentalRow).where(
            RentalRow.created_at < end,
            or_(RentalRow.ended_at.is_(None), RentalRow.ended_at >= start),
        )
    )
    month = [to_rental(r) for r in rows]
    live = [r for r in month if r.state not in TERMINAL]
    new_cost = price_per_hour * limits.hours
    if limits.account_budget_usd is not None:
        spent = sum(costs.accrued_cost(r, start, end, now) for r in month)
        committed = sum(costs.committed_cost(r, now) for r in live)
        total = spent + committed + new_cost
        if total > limits.account_budget_usd + 1e-9:
            raise _refused(
                MoneyLimitError(
                    f"refused by GPUSHOP_BUDGET_USD={limits.account_budget_usd:g}: spent "
                    f"${spent:.2f} this month, ${committed:.2f} committed by active rentals, "
                    f"and this rental may cost up to ${new_cost:.2f} "
                    f"(${price_per_hour:.3f}/h x {limits.hours:g} h)"
                ),
                "budget:account",
                None,
            )
        if limits.account_budget_usd > 0:
            share = total / limits.account_budget_usd
            _warn_once(session, "budget:account", None, share, start, now)
    if limits.user_id is None:
        return
    mine = [r for r in month if r.user_id == limits.user_id]
    mine_live = [r for r in mine if r.state not in TERMINAL]
    who = f"{limits.user_name or limits.user_id}'s quota"
    if limits.max_rentals is not None and len(mine_live) + 1 > limits.max_rentals:
        raise UserQuotaExceeded(
            f"refused by {who}: {limits.max_rentals} concurrent rentals at most "
            f"({len(mine_live)} live)"
        )
    rate = sum(r.price_per_hour or 0.0 for r in mine_live)
    cap = limits.max_usd_per_hour
    if cap is not None and rate + price_per_hour > cap + 1e-9:
        raise UserQuotaExceeded(
            f"refused by {who}: ${limits.max_usd_per_hour:g}/h at most for active rentals "
            f"(${rate:.3f}/h live, this one ${price_per_hour:.3f}/h)"
        )
    if limits.monthly_budget_usd is not None:
        spent = sum(costs.accrued_cost(r, start, end, now) for r in mine)
        committed = sum(costs.committed_cost(r, now) for r in mine_live)
        total = spent + committed + new_cost
        subject = f"budget:user:{limits.user_id}"
        if total > limits.monthly_budget_usd + 1e-9:
            raise _refused(
                UserQuotaExceeded(
                    f"refused by {who}: ${limits.monthly_budget_usd:g} a month at most (spent "
                    f"${spent:.2f}, ${committed:.2f} committed, this rental up to "
                    f"${new_cost:.2f})"
                ),
                subject,
                limits.user_id,
            )
        if limits.monthly_budget_usd > 0:
            share = total / limits.monthly_budget_usd
            _warn_once(session, subject, limits.user_id, share, start, now)
