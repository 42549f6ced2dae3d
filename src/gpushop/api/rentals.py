"""/v1/rentals: rent (202 + Location, provisioned in the service; Idempotency-Key), list, get,
release, stop, start. A user sees their own rentals; an admin sees everyone's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gpushop.api.auth import CurrentUser
from gpushop.service import team_rentals
from gpushop.service.team_rentals import Provisioning, RentalRequest
from gpushop.service.types import Store

router = APIRouter(prefix="/v1/rentals", tags=["rentals"])


class OfferFields(BaseModel):
    """The offer flags every create takes (`up`, `run`, `train`), as JSON."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    gpu: list[str] | None = Field(default=None, description="GPU models, e.g. ['4090', 'A100']")
    min_vram: float | None = Field(default=None, ge=0, le=10_000, description="GB per GPU")
    num_gpus: int | None = Field(default=None, ge=1, le=64)
    max_price: float | None = Field(default=None, gt=0, le=10_000, description="USD/h cap")
    min_reliability: float = Field(default=0.98, ge=0, le=1)
    disk: float = Field(default=32.0, gt=0, le=100_000, description="GB")
    min_cuda: float | None = Field(default=None, ge=0, le=100)
    country: list[str] | None = None
    interruptible: bool = False
    unverified: bool = False
    sort: str = "value"
    provider: str | None = None
    offer: str | None = Field(default=None, description="exactly this offer id")
    attempts: int = Field(default=3, ge=1, le=20)


class RentalBody(OfferFields):
    """The options of `gpushop up`, as JSON."""

    image: str | None = None
    template: str | None = None
    env: dict[str, str] = Field(default_factory=dict, description="no secrets: they would show")
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list)
    max_duration: str = Field(default="4h", description="released after this, e.g. 2h")
    ready_timeout: str = "15m"
    watchdog_grace: str = "10m"


def _store(request: Request) -> Store:
    store: Store = request.app.state.stores.get()
    return store


def _provisioning(request: Request) -> Provisioning:
    provisioning: Provisioning = request.app.state.provisioning
    return provisioning


@router.post("", status_code=202)
async def create(
    body: RentalBody,
    user: CurrentUser,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> dict[str, Any]:
    """Rent what the body asks for: answers once the rental is written ahead (202, Location);
    provisioning goes on in the service. The same Idempotency-Key again answers with the first
    request's rental, never a second one."""
    rental, _ = await _provisioning(request).create(
        _store(request), user, RentalRequest(**body.model_dump()), idempotency_key
    )
    response.headers["Location"] = f"/v1/rentals/{rental.id}"
    return team_rentals.view(rental)


@router.get("")
def list_(
    user: CurrentUser,
    request: Request,
    everyone: Annotated[bool, Query(alias="all")] = False,
    ended: bool = False,
) -> list[dict[str, Any]]:
    """Your rentals (an admin's ``all``: everyone's), live ones unless ``ended``."""
    return team_rentals.listing(_store(request), user, everyone=everyone, include_ended=ended)


@router.get("/{rental_id}")
def get(rental_id: str, user: CurrentUser, request: Request) -> dict[str, Any]:
    """State, SSH host and port, cost so far."""
    return team_rentals.view(team_rentals.visible(_store(request), user, rental_id))


@router.post("/{rental_id}/release")
async def release(rental_id: str, user: CurrentUser, request: Request) -> dict[str, Any]:
    cfg = request.app.state.settings
    return await team_rentals.release(cfg, _store(request), user, rental_id)


@router.post("/{rental_id}/stop")
async def stop(rental_id: str, user: CurrentUser, request: Request) -> dict[str, Any]:
    cfg = request.app.state.settings
    return await team_rentals.set_power(cfg, _store(request), user, rental_id, "stopped")


@router.post("/{rental_id}/start")
async def start(rental_id: str, user: CurrentUser, request: Request) -> dict[str, Any]:
    cfg = request.app.state.settings
    return await team_rentals.set_power(cfg, _store(request), user, rental_id, "running")
