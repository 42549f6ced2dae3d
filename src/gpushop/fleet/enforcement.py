"""Who enforces a rental's max duration. Vast.ai's instances carry an on-instance watchdog; a
rental without one (TensorDock: no instance-scoped key to stop itself with, and a guest that
powers off still bills) is bounded only by ``gpushop reconcile``, so the user must be told, and
warned when no reconcile has been watching that provider lately."""

from __future__ import annotations

from datetime import datetime, timedelta

from gpushop.store import Rental

# "Lately": twice the period of the README's cron line (*/5), so one late run is no alarm.
# `reconcile --watch` passes every 60 s by default.
RECONCILE_RECENT = timedelta(minutes=10)


def has_watchdog(rental: Rental) -> bool:
    """Whether the instance stops itself at its deadline (provision records the deadline only
    when the provider gave a watchdog script and the user did not turn it off)."""
    return rental.details.get("watchdog_deadline") is not None


def watched_lately(last: datetime | None, now: datetime) -> bool:
    """Whether a `gpushop reconcile` that last passed over a provider at ``last``
    (``Store.last_reconcile``; None: never) still counts as watching it."""
    return last is not None and now - last <= RECONCILE_RECENT


def only_reconcile_note(provider: str) -> str:
    why = "TensorDock has none" if provider == "tensordock" else "turned off"
    return (
        f"no on-instance watchdog ({why}): only `gpushop reconcile` enforces the max duration "
        "(run it with --watch, or from cron / a systemd timer)"
    )


def overdue_warning(provider: str, last: datetime | None, now: datetime) -> str:
    when = "has never run" if last is None else f"last ran {_ago(now - last)} ago"
    return (
        f"no `gpushop reconcile` has watched {provider} in the last "
        f"{int(RECONCILE_RECENT.total_seconds() // 60)} minutes ({when}): nothing stops this "
        "rental at its max duration; start `gpushop reconcile --watch` or a timer"
    )


def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"
