"""Bearer auth and the 100-requests-per-minute limit of TensorDock v2."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tensordock_helpers import td_client

from gpushop.emulator import EmulatorThread

UNAUTHORIZED = {"status": 401, "error": "Unauthorized"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/hostnodes"),
        ("GET", "/hostnodes/x"),
        ("POST", "/instances"),
        ("GET", "/instances"),
        ("GET", "/instances/x"),
        ("POST", "/instances/x/start"),
        ("POST", "/instances/x/stop"),
        ("PUT", "/instances/x/modify"),
        ("DELETE", "/instances/x"),
        ("GET", "/secrets"),
    ],
)
def test_every_endpoint_needs_the_token(emulator: EmulatorThread, method: str, path: str) -> None:
    url = emulator.tensordock_url + path
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = httpx.request(method, url, headers=headers, json={}, timeout=10)
        assert response.status_code == 401
        assert response.json() == UNAUTHORIZED
        assert response.headers["content-type"] == "application/json"


def test_the_vast_key_is_not_a_tensordock_token(emulator: EmulatorThread) -> None:
    with td_client(emulator.tensordock_url, emulator.api_key) as client:
        assert client.get("/instances").status_code == 401
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        assert client.get("/instances").status_code == 200


def test_locations_answer_an_empty_list_without_a_token(emulator: EmulatorThread) -> None:
    """As the real API has since mid-2026 (reference 2.1): send the token."""
    anonymous = httpx.get(emulator.tensordock_url + "/locations", timeout=10)
    assert anonymous.status_code == 200
    assert anonymous.json() == {"data": {"locations": []}}
    wrong = httpx.get(
        emulator.tensordock_url + "/locations", headers={"Authorization": "Bearer no"}, timeout=10
    )
    assert wrong.status_code == 401
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        assert client.get("/locations").json()["data"]["locations"]


def test_the_token_can_be_changed(emulator: EmulatorThread) -> None:
    emulator.control.reset(tensordock_token="tok-2")
    with td_client(emulator.tensordock_url, "tok-2") as client:
        assert client.get("/instances").status_code == 200
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        assert client.get("/instances").status_code == 401
    assert "tensordock_token" not in emulator.control.tensordock_state()["config"]


def test_100_requests_per_minute_per_token(make_emulator: Any) -> None:
    emu = make_emulator(offers=20, rate_limit=True, ssh=False)
    with td_client(emu.tensordock_url, emu.tensordock_token) as client:
        first = client.get("/hostnodes")
        assert first.headers["x-ratelimit-limit"] == "100"
        assert first.headers["x-ratelimit-remaining"] == "99"
        answers = [client.get("/instances") for _ in range(99)]
        assert all(a.status_code == 200 for a in answers)
        assert answers[-1].headers["x-ratelimit-remaining"] == "0"
        limited = client.post("/instances", json={})  # any endpoint: one budget per token
        assert limited.status_code == 429
        assert limited.json() == {"status": 429, "error": "Too many requests"}
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["content-type"] == "application/json"
    # another identity (no token: by address) has its own budget; the control API has none
    assert httpx.get(emu.tensordock_url + "/instances", timeout=10).status_code == 401
    counts = emu.control.tensordock_state()["request_counts"]
    assert counts["GET /tensordock/api/v2/instances"] == 100
    # the Vast.ai side keeps its own limits
    assert httpx.get(emu.url + "/api/v0/gpu_names/unique/", timeout=10).status_code == 200


def test_no_limits_when_turned_off(emulator: EmulatorThread) -> None:
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        answers = [client.get("/instances") for _ in range(120)]
    assert {a.status_code for a in answers} == {200}
    assert "x-ratelimit-limit" not in answers[0].headers
