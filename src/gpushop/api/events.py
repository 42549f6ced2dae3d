"""/v1/events: what happened to your rentals and jobs, in order, cursor-paged."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from gpushop.api.auth import CurrentUser
from gpushop.service import events

router = APIRouter(prefix="/v1", tags=["events"])


@router.get("/events")
def list_events(
    user: CurrentUser,
    request: Request,
    after: Annotated[int, Query(ge=0, description="the `next` of the previous page")] = 0,
    type: Annotated[list[str] | None, Query(description="e.g. rental.ready")] = None,
    subject: Annotated[str | None, Query(description="e.g. rental:r4k2...")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Events after the cursor, oldest first: yours (an admin: everyone's)."""
    store = request.app.state.stores.get()
    return events.page(store, after=after, types=type, subject=subject, limit=limit, user=user)
