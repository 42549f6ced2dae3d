"""The FastAPI application of `gpushop serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gpushop import __version__
from gpushop.api import errors, events, jobs, market, metrics, rentals, reports, webhooks
from gpushop.api.auth import CurrentUser, Stores
from gpushop.api.limits import RequestLimits
from gpushop.api.uploads import UploadLimit
from gpushop.config import Settings
from gpushop.service import users
from gpushop.service.artifacts import Digests
from gpushop.service.health import Readiness
from gpushop.service.market import MarketReads
from gpushop.service.replica import Replica
from gpushop.service.team_rentals import Provisioning


class SshKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public_key: str = Field(min_length=1, max_length=16_384, description="one OpenSSH line")


def _document_forms(app: FastAPI) -> None:
    """The OpenAPI document, with the models of the JSON parts of the job forms."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            jobs.document(generate())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(cfg: Settings) -> FastAPI:
    readiness = Readiness(cfg)
    stores = Stores(cfg)
    replica = Replica(cfg, stores.get)
    provisioning = Provisioning(cfg, replica.owner)
    market_reads = MarketReads(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        replica.start()  # the sync job, takeovers, webhook deliveries
        yield
        await provisioning.aclose()  # what is still provisioning is released, not left
        await replica.aclose()
        await market_reads.aclose()
        readiness.close()
        stores.close()

    app = FastAPI(
        title="gpushop",
        version=__version__,
        description="A team's GPU rentals, jobs and money limits over HTTP.",
        lifespan=lifespan,
    )
    app.state.settings = cfg
    app.state.limits = RequestLimits(cfg)
    app.state.stores = stores
    app.state.provisioning = provisioning
    app.state.replica = replica
    app.state.market = market_reads
    app.state.digests = Digests()
    app.include_router(rentals.router)
    app.include_router(market.router)
    app.include_router(reports.router)
    app.include_router(events.router)
    app.include_router(jobs.router)
    app.include_router(webhooks.router)
    app.include_router(metrics.router)
    app.add_middleware(metrics.Timing)
    app.add_middleware(UploadLimit, max_bytes=cfg.gpushop_max_upload_bytes)
    errors.install(app)
    _document_forms(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """The store answers (503 otherwise); each configured provider's API, with its latency."""
        ready, report = await readiness.check()
        if not ready:
            report = {"code": "store_unavailable", "message": report["store"]["detail"], **report}
        return JSONResponse(report, status_code=200 if ready else 503)

    @app.get("/v1/me", tags=["users"])
    def me(user: CurrentUser) -> dict[str, object]:
        """The user the token names: admin or not, quotas."""
        return users.public(user)

    @app.post("/v1/me/ssh-keys", tags=["users"], status_code=201)
    def add_ssh_key(body: SshKeyBody, user: CurrentUser) -> dict[str, str]:
        """Register your PUBLIC SSH key: it is installed on the rentals you make from now on,
        so that you `ssh` in with it (the service's own key stays the service's)."""
        return users.add_ssh_key(stores.get(), user, body.public_key)

    @app.get("/v1/me/ssh-keys", tags=["users"])
    def list_ssh_keys(user: CurrentUser) -> list[dict[str, str]]:
        return users.ssh_keys(stores.get(), user)

    return app


def from_environment() -> FastAPI:
    """The app for each of `gpushop serve --workers N`'s processes (uvicorn imports it)."""
    from gpushop.config import load_settings

    return create_app(load_settings())
