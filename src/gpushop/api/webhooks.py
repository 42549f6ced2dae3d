"""/v1/webhooks: a user's webhook endpoints, their delivery log, pings and redeliveries.

Deliveries follow Standard Webhooks (docs/api.md "Webhooks"). A user sees and manages their own
endpoints (404 for anyone else's); an admin, everyone's. The signing secret is in the answer of
a create and of a rotation only: never again."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gpushop.api.auth import CurrentUser
from gpushop.service import webhooks
from gpushop.service.types import Store

router = APIRouter(prefix="/v1", tags=["webhooks"])

EndpointId = Annotated[str, Path(max_length=64, description="wh_...")]
MAX_ID = 2**63 - 1  # a delivery id: the store's BIGINT
DeliveryStatus = Literal["pending", "delivered", "failed", "held"]


class WebhookBody(BaseModel):
    """A receiver of the events its owner may see."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2000,
        description="http(s) URL that resolves to public addresses only",
    )
    event_types: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list,
        max_length=100,
        description="e.g. ['rental.ready', 'job.*']; empty: every event its owner may see",
    )
    description: str = Field(default="", max_length=500)


def _store(request: Request) -> Store:
    store: Store = request.app.state.stores.get()
    return store


def _no_store(response: Response) -> None:
    """An answer that holds a secret is not kept by any cache on the way."""
    response.headers["Cache-Control"] = "no-store"


@router.post("/webhooks", status_code=201)
async def create(
    body: WebhookBody, user: CurrentUser, request: Request, response: Response
) -> dict[str, Any]:
    """Register an endpoint. The answer holds its signing secret (`whsec_...`): shown here
    once, kept encrypted by the service, never shown again (rotate it to get a new one)."""
    cfg = request.app.state.settings
    made = await webhooks.create(
        cfg, _store(request), user, body.url, body.event_types, body.description
    )
    response.headers["Location"] = f"/v1/webhooks/{made['id']}"
    _no_store(response)
    return made


@router.get("/webhooks")
def list_(
    user: CurrentUser,
    request: Request,
    everyone: Annotated[bool, Query(alias="all", description="an admin: everyone's")] = False,
) -> list[dict[str, Any]]:
    """Your endpoints (an admin's ``all``: everyone's), oldest first; no secrets."""
    return webhooks.listing(_store(request), user, everyone=everyone)


@router.get("/webhooks/{endpoint_id}")
def get(endpoint_id: EndpointId, user: CurrentUser, request: Request) -> dict[str, Any]:
    """URL, event types, enabled or why disabled, rotation in progress; no secret."""
    return webhooks.view(webhooks.visible(_store(request), user, endpoint_id))


@router.delete("/webhooks/{endpoint_id}", status_code=204, response_class=Response)
def delete(endpoint_id: EndpointId, user: CurrentUser, request: Request) -> Response:
    """Remove it; what was still to be delivered to it ends as failed (the log stays)."""
    webhooks.delete(_store(request), user, endpoint_id)
    return Response(status_code=204)


@router.post("/webhooks/{endpoint_id}/ping", status_code=202)
def ping(endpoint_id: EndpointId, user: CurrentUser, request: Request) -> dict[str, Any]:
    """A `webhook.ping` delivery to this endpoint alone, sent at once (even while it is
    disabled: check a fixed receiver before enabling it again)."""
    return webhooks.ping(_store(request), user, endpoint_id)


@router.post("/webhooks/{endpoint_id}/enable")
def enable(endpoint_id: EndpointId, user: CurrentUser, request: Request) -> dict[str, Any]:
    """Enable it again after it was disabled (410, or consistent failure); the deliveries
    held meanwhile are sent now (`resumed_deliveries`: how many)."""
    return webhooks.enable(_store(request), user, endpoint_id)


@router.post("/webhooks/{endpoint_id}/rotate-secret")
def rotate_secret(
    endpoint_id: EndpointId, user: CurrentUser, request: Request, response: Response
) -> dict[str, Any]:
    """A new signing secret, shown here once. For 24 hours the old one signs too
    (`webhook-signature` carries both), so receivers switch over without losing a delivery."""
    cfg = request.app.state.settings
    _no_store(response)
    return webhooks.rotate(cfg, _store(request), user, endpoint_id)


@router.get("/webhooks/{endpoint_id}/deliveries")
def deliveries(
    endpoint_id: EndpointId,
    user: CurrentUser,
    request: Request,
    status: Annotated[DeliveryStatus | None, Query(description="only these")] = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="the `next` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """`{"deliveries": [...], "next": cursor}`, newest first, each with its attempt log (when,
    status code, error, duration); pass `next` as `before` for older ones (null: no more)."""
    found = webhooks.deliveries(
        _store(request), user, endpoint_id, status=status, before=before, limit=limit
    )
    more = len(found) == limit
    return {"deliveries": found, "next": found[-1]["id"] if found and more else None}


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=202)
def redeliver(
    endpoint_id: EndpointId,
    delivery_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    user: CurrentUser,
    request: Request,
) -> dict[str, Any]:
    """Send a delivery again now, with the same `webhook-id` (receivers dedupe on it)."""
    return webhooks.redeliver(_store(request), user, endpoint_id, delivery_id)
