"""Money limits: the price cap and the monthly budget. Pure functions."""

from __future__ import annotations

from gpushop.errors import MoneyLimitError
from gpushop.store.spending import month_window

__all__ = ["check_budget", "check_price_cap", "month_window"]


def check_budget(
    *, budget: float | None, spent: float, committed: float, price_per_hour: float, hours: float
) -> None:
    """Refuse a rental when spent + committed + this one's worst case would pass the budget."""
    if budget is None:
        return
    new = price_per_hour * hours
    if spent + committed + new > budget + 1e-9:
        raise MoneyLimitError(
            f"refused by GPUSHOP_BUDGET_USD={budget:g}: spent ${spent:.2f} this month, "
            f"${committed:.2f} committed by active rentals, and this rental may cost up to "
            f"${new:.2f} (${price_per_hour:.3f}/h x {hours:g} h)"
        )


def check_price_cap(price_per_hour: float, cap: float | None) -> None:
    if cap is not None and price_per_hour > cap + 1e-9:
        raise MoneyLimitError(
            f"refused by the price cap: ${price_per_hour:.3f}/h is above ${cap:.3f}/h"
        )
