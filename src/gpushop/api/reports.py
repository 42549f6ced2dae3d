"""/v1/costs and /v1/timings (what `gpushop costs` and `gpushop timings` show), and
/v1/reconcile for admins (a dry-run report, or run now)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from gpushop.api.auth import CurrentUser
from gpushop.service import jobs, rentals, users

router = APIRouter(prefix="/v1", tags=["reports"])


@router.get("/costs")
async def costs(
    user: CurrentUser,
    request: Request,
    days: Annotated[int | None, Query(ge=1, le=366)] = None,
) -> dict[str, Any]:
    """What the rentals cost this month (or the last ``days``), against what the providers
    billed. The account's figures: an admin's."""
    users.require_admin(user)
    notes: list[str] = []
    report = await rentals.cost_report(
        request.app.state.settings, days=days, now=datetime.now(UTC), warn=notes.append
    )
    return {**report, "warnings": notes}


@router.get("/timings")
def timings(user: CurrentUser, request: Request) -> list[dict[str, Any]]:
    """Per-phase timings by GPU model, image and provider (median, p90)."""
    return jobs.timing_rows(request.app.state.settings)


@router.post("/reconcile")
async def reconcile(user: CurrentUser, request: Request, dry_run: bool = True) -> dict[str, Any]:
    """Compare the store with every provider and act on what differs (orphans destroyed,
    overdue rentals released); ``dry_run`` (the default) only reports. Admins only."""
    users.require_admin(user)
    passes = rentals.reconcile_passes(request.app.state.settings, dry_run=dry_run, every_s=None)
    async for report in passes:
        return report
    raise AssertionError("a reconcile pass always reports")
