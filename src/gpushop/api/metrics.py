"""/metrics: Prometheus' text format. The process's counters (gpushop/metrics.py; every
worker's with PROMETHEUS_MULTIPROC_DIR) and, read from the store at each scrape, rentals and jobs
by state, the active rentals' $/h and webhook deliveries by status. Like /healthz it needs no
token: bind the service to a private address and let only the scraper reach it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpushop import metrics
from gpushop.service.types import Store

router = APIRouter(tags=["health"])


class StoreCollector(Collector):
    def __init__(self, store: Callable[[], Store]) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from gpushop.service.health import census

        found = census(self.store())
        for name, doc, counts in (
            ("gpushop_rentals", "Rentals by state", found.rentals),
            ("gpushop_jobs", "Jobs by state", found.jobs),
            ("gpushop_webhook_deliveries", "Webhook deliveries by status", found.deliveries),
        ):
            family = GaugeMetricFamily(name, doc, labels=["state"])
            for state, count in sorted(counts.items()):
                family.add_metric([state], count)
            yield family
        yield GaugeMetricFamily(
            "gpushop_spend_usd_per_hour",
            "What the rentals that bill cost per hour, together",
            value=found.usd_per_hour,
        )


def _process_registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request) -> Response:
    store_part = CollectorRegistry(auto_describe=False)
    store_part.register(StoreCollector(request.app.state.stores.get))
    body = generate_latest(_process_registry()) + generate_latest(store_part)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class Timing:
    """Every request's latency (to its response's start) by its route's template
    (``/v1/rentals/{rental_id}``). Plain ASGI: Starlette's BaseHTTPMiddleware cost a third of
    a millisecond of CPU per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.REQUEST_SECONDS.labels(scope["method"], template, str(status[0])).observe(
                time.perf_counter() - started
            )
