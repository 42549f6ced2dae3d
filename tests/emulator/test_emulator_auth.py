"""Auth like the real API: Bearer or ?api_key=, anonymous search, 403/401/404 bodies."""

from __future__ import annotations

import httpx
import pytest
from emulator_wire import ERRORS

from gpushop.emulator import EmulatorThread

LOGIN_ENDPOINTS = [
    ("GET", "/api/v0/users/current"),
    ("GET", "/api/v0/ssh/"),
    ("GET", "/api/v1/instances/"),
    ("GET", "/api/v0/instances/"),
    ("GET", "/api/v0/instances/1/"),
    ("PUT", "/api/v0/instances/1/"),
    ("DELETE", "/api/v0/instances/1/"),
    ("PUT", "/api/v0/asks/1/"),
    ("POST", "/api/v0/ssh/"),
]


@pytest.mark.parametrize(("method", "path"), LOGIN_ENDPOINTS)
def test_no_key_is_403(anon: httpx.Client, method: str, path: str) -> None:
    response = anon.request(method, path, json={})
    assert response.status_code == 403
    assert response.json() == ERRORS["error_auth_missing"]
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(("method", "path"), LOGIN_ENDPOINTS)
def test_wrong_key_is_401(anon: httpx.Client, method: str, path: str) -> None:
    response = anon.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json() == ERRORS["error_auth_invalid_key"]


def test_search_is_anonymous_but_refuses_a_wrong_key_with_404(anon: httpx.Client) -> None:
    assert anon.post("/api/v0/bundles/", json={"limit": 1}).status_code == 200
    bad = anon.post("/api/v0/bundles/", json={}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 404
    assert bad.json() == ERRORS["error_auth_invalid_key"]
    bad_param = anon.get("/api/v0/bundles/", params={"q": "{}", "api_key": "nope"})
    assert bad_param.status_code == 404


def test_gpu_names_ignore_keys(anon: httpx.Client) -> None:
    response = anon.get("/api/v0/gpu_names/unique/", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 200


def test_query_param_key_works(emulator: EmulatorThread, anon: httpx.Client) -> None:
    response = anon.get("/api/v0/users/current/", params={"api_key": emulator.api_key})
    assert response.status_code == 200
    assert response.json()["username"] == "emulator"
    legacy = anon.get("/api/v0/instances", params={"owner": "me", "api_key": emulator.api_key})
    assert legacy.status_code == 200


def test_bearer_key_works_and_custom_key(make_emulator) -> None:
    emu = make_emulator(api_key="s3cret", rate_limit=False, offers=20)
    ok = httpx.get(f"{emu.url}/api/v0/users/current", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    wrong = httpx.get(
        f"{emu.url}/api/v0/users/current", headers={"Authorization": "Bearer emulator"}
    )
    assert wrong.status_code == 401


def test_unknown_paths_and_methods(client: httpx.Client) -> None:
    missing = client.get("/api/v0/nothing/here/")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    wrong_method = client.request("PATCH", "/api/v0/bundles/")
    assert wrong_method.status_code == 405
