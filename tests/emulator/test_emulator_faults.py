"""Injected faults: status, quota, latency, drop; they count down and disappear."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest
from emulator_wire import ERRORS

from gpushop.emulator import EmulatorThread
from gpushop.emulator.control import EmulatorControlError


def first_offer(client: httpx.Client) -> int:
    return int(client.post("/api/v0/bundles/", json={"limit": 1}).json()["offers"][0]["id"])


def test_status_fault_answers_without_acting(
    emulator: EmulatorThread, client: httpx.Client
) -> None:
    offer_id = first_offer(client)
    emulator.control.fault("PUT /api/v0/asks/{id}/", "status", status=503, count=2)
    for _ in range(2):
        response = client.put(f"/api/v0/asks/{offer_id}/", json={"image": "x"})
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("text/html")  # like nginx would
    assert emulator.control.state()["instances"] == []  # nothing was created
    assert emulator.control.state()["faults"] == []  # counted down and gone
    assert client.put(f"/api/v0/asks/{offer_id}/", json={"image": "x"}).status_code == 200
    assert emulator.control.request_count("PUT /api/v0/asks/{id}/") == 3


def test_status_fault_default_429_body_and_custom_body(
    emulator: EmulatorThread, client: httpx.Client
) -> None:
    emulator.control.fault("POST /api/v0/bundles/", "status", status=429)
    limited = client.post("/api/v0/bundles/", json={})
    assert limited.status_code == 429 and limited.json() == ERRORS["error_rate_limited"]
    emulator.control.fault("DELETE /api/v0/instances/{id}/", "status", status=429)
    assert (
        client.request("DELETE", "/api/v0/instances/1/").json()
        == (ERRORS["error_rate_limited_json"])
    )
    emulator.control.fault(
        "GET /api/v0/gpu_names/unique/",
        "status",
        status=429,
        body="API requests too frequent endpoint threshold=2.0",
        headers={"Retry-After": "1"},
    )
    text = client.get("/api/v0/gpu_names/unique/")
    assert (
        text.status_code == 429 and text.text == "API requests too frequent endpoint threshold=2.0"
    )
    assert text.headers["retry-after"] == "1"


def test_quota_fault(emulator: EmulatorThread, client: httpx.Client) -> None:
    emulator.control.fault("POST /api/v0/bundles/", "quota")
    response = client.post("/api/v0/bundles/", json={})
    assert response.status_code == 429
    assert response.json() == ERRORS["error_search_quota_exceeded"]
    reset = int(response.headers["x-ratelimit-reset"])
    midnight = dt.datetime.fromtimestamp(reset, dt.UTC)
    assert (midnight.hour, midnight.minute, midnight.second) == (0, 0, 0)
    assert 0 < reset - time.time() <= 86400
    assert client.post("/api/v0/bundles/", json={}).status_code == 200


def test_latency_fault(emulator: EmulatorThread, client: httpx.Client) -> None:
    emulator.control.fault("GET /api/v0/users/current/", "latency", latency_s=0.3)
    started = time.monotonic()
    assert client.get("/api/v0/users/current").status_code == 200
    assert time.monotonic() - started >= 0.3
    assert emulator.control.state()["faults"] == []  # one call only: the next one is not held


def test_drop_fault_acts_then_breaks_the_connection(
    emulator: EmulatorThread, client: httpx.Client
) -> None:
    offer_id = first_offer(client)
    emulator.control.fault("PUT /api/v0/asks/{id}/", "drop")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.put(f"/api/v0/asks/{offer_id}/", json={"image": "x", "label": "dropped"})
    instances = emulator.control.state()["instances"]
    assert [i["label"] for i in instances] == ["dropped"]  # the create happened
    # the client recovers on a new connection
    assert client.get("/api/v1/instances/").json()["total_instances"] == 1


def test_wildcard_fault_and_clear(emulator: EmulatorThread, client: httpx.Client) -> None:
    emulator.control.fault("*", "status", status=502, count=5)
    assert client.get("/api/v0/ssh/").status_code == 502
    assert client.post("/api/v0/bundles/", json={}).status_code == 502
    assert emulator.control.state()["faults"][0]["count"] == 3
    emulator.control.clear_faults()
    assert client.get("/api/v0/ssh/").status_code == 200


def test_invalid_fault_specs_are_refused(emulator: EmulatorThread) -> None:
    with pytest.raises(EmulatorControlError):
        emulator.control.fault("POST /api/v0/bundles/", "explode")
    with pytest.raises(EmulatorControlError):
        emulator.control.fault("POST /api/v0/bundles/", "status")  # no status
    with pytest.raises(EmulatorControlError):
        emulator.control.fault("POST /api/v0/bundles/", "status", status=503, count=0)
