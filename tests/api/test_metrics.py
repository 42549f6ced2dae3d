"""/metrics in Prometheus' format against a real `gpushop serve`: request latency by route,
provider calls by endpoint and outcome, rentals by state and spend read from the store,
background-loop lag, lease takeovers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from waiting import until

from .conftest import token
from .test_rentals_api import BODY


def scrape(url: str) -> dict[str, list[Any]]:
    answer = httpx.get(f"{url}/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(answer.text)}


def value(samples: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_tell_requests_provider_calls_rentals_and_spend(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve(environment)
    alice = token(capsys, "alice")
    created = httpx.post(f"{url}/v1/rentals", json=BODY, headers=alice, timeout=60)
    where = url + created.headers["location"]
    until(lambda: httpx.get(where, headers=alice).json()["state"] == "ready", "a ready rental")
    price = httpx.get(where, headers=alice).json()["price_per_hour"]
    assert httpx.get(f"{url}/v1/rentals/rnothing", headers=alice).status_code == 404

    found = scrape(url)
    requests = found["gpushop_http_request_duration_seconds"]
    count = "gpushop_http_request_duration_seconds_count"
    assert value(requests, count, method="POST", route="/v1/rentals", status="202") == 1
    assert value(requests, count, route="/v1/rentals/{rental_id}", status="404") == 1
    calls = found["gpushop_provider_calls"]
    assert value(calls, "gpushop_provider_calls_total", provider="vastai", outcome="ok") >= 2
    assert {s.labels["endpoint"] for s in calls} >= {"PUT /asks/{id}/"}
    assert value(found["gpushop_rentals"], "gpushop_rentals", state="ready") == 1
    spend = value(found["gpushop_spend_usd_per_hour"], "gpushop_spend_usd_per_hour")
    assert abs(spend - price) < 1e-6
    assert "gpushop_lease_takeovers" in found and "gpushop_webhook_attempts" in found
    until(
        lambda: any(
            s.labels.get("loop") == "event_loop"
            for s in scrape(url)["gpushop_background_lag_seconds"]
        ),
        "the event loop's lag",
    )

    assert httpx.post(f"{where}/release", headers=alice, timeout=60).status_code == 200
    after = scrape(url)
    assert value(after["gpushop_rentals"], "gpushop_rentals", state="released") == 1
    assert value(after["gpushop_spend_usd_per_hour"], "gpushop_spend_usd_per_hour") == 0


def _workers(pid: int) -> list[Path]:
    """The processes multiprocessing spawned for ``pid`` (uvicorn's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.append(stat.parent)
    return found


def test_with_workers_a_scrape_counts_every_workers_requests(
    serve: Any, environment: dict[str, str], capsys: Any
) -> None:
    url, proc = serve(environment, "--workers", "2")
    alice = token(capsys, "alice")
    until(lambda: len(_workers(proc.pid)) == 2, "two worker processes")
    for _ in range(40):  # a connection each: the kernel hands them to either worker
        assert httpx.get(f"{url}/v1/me", headers=alice).status_code == 200
    requests = scrape(url)["gpushop_http_request_duration_seconds"]
    count = "gpushop_http_request_duration_seconds_count"
    assert value(requests, count, method="GET", route="/v1/me", status="200") == 40
