"""What `gpushop serve` exposes at /metrics (prometheus-client). Counters and histograms are
updated where things happen (the shared provider HTTP layer, the API, the background work);
what the store knows (rentals and jobs by state, spend, deliveries by status) is read at scrape
time (api/metrics.py). With ``PROMETHEUS_MULTIPROC_DIR`` set (uvicorn workers), the library
keeps each process's values in that folder and the scrape adds them up."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUEST_SECONDS = Histogram(
    "gpushop_http_request_duration_seconds",
    "API requests by route template, method and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_CALLS = Counter(
    "gpushop_provider_calls_total",
    "Calls to provider APIs by endpoint template and outcome (ok, 429, 4xx, 5xx, unreachable,"
    " connection_lost)",
    ["provider", "endpoint", "outcome"],
)
PROVIDER_SECONDS = Histogram(
    "gpushop_provider_call_duration_seconds",
    "Provider API calls' latency",
    ["provider", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMITED = Counter(
    "gpushop_provider_rate_limited_total", "429 answers from provider APIs", ["provider"]
)
WEBHOOK_ATTEMPTS = Counter(
    "gpushop_webhook_attempts_total",
    "Webhook delivery attempts by outcome (delivered, retry, failed, disabled)",
    ["outcome"],
)
TAKEOVERS = Counter(
    "gpushop_lease_takeovers_total",
    "In-flight rentals and unfinished jobs this replica took over from a dead owner (an"
    " expired lease)",
)
LOOP_LAG = Gauge(
    "gpushop_background_lag_seconds",
    "How late background work ran: the event loop (a 1 s sleep's oversleep) and the sync job"
    " (its start after its tick began)",
    ["loop"],
    multiprocess_mode="max",
)


def provider_outcome(status: int | None, error: str | None = None) -> str:
    if error is not None:
        return error
    assert status is not None
    if status < 400:
        return "ok"
    if status == 429:
        return "429"
    return "4xx" if status < 500 else "5xx"
