"""Rate limits: per endpoint template and identity, token buckets with the real thresholds."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from emulator_wire import ERRORS

from gpushop.emulator import EmulatorThread


def test_search_get_allows_one_then_429_and_refills(
    make_emulator: Callable[..., EmulatorThread],
) -> None:
    emu = make_emulator(offers=50)
    with httpx.Client(base_url=emu.url) as c:
        assert c.get("/api/v0/bundles/", params={"q": "{}"}).status_code == 200
        limited = c.get("/api/v0/bundles/", params={"q": "{}"})
        assert limited.status_code == 429
        assert limited.json() == {"detail": "API requests too frequent endpoint threshold=0.8"}
        assert "retry-after" not in limited.headers  # the real API sends none
        time.sleep(0.85)
        assert c.get("/api/v0/bundles/", params={"q": "{}"}).status_code == 200


def test_post_search_burst_of_two(make_emulator: Callable[..., EmulatorThread]) -> None:
    emu = make_emulator(offers=50)
    with httpx.Client(base_url=emu.url) as c:
        codes = [c.post("/api/v0/bundles/", json={}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert c.post("/api/v0/bundles/", json={}).json() == ERRORS["error_rate_limited"]
        # gpu names are never limited
        assert {c.get("/api/v0/gpu_names/unique/").status_code for _ in range(10)} == {200}


def test_destroy_uses_the_json_429_body(make_emulator: Callable[..., EmulatorThread]) -> None:
    emu = make_emulator(offers=50)
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.url, headers=headers) as c:
        # per template, not per id: two different ids share the bucket
        codes = [
            c.request("DELETE", f"/api/v0/instances/{i}/", json={}).status_code for i in (1, 2, 3)
        ]
        assert codes == [404, 404, 429]
        body = c.request("DELETE", "/api/v0/instances/4/").json()
        assert body == ERRORS["error_rate_limited_json"]


def test_identities_have_their_own_buckets(make_emulator: Callable[..., EmulatorThread]) -> None:
    emu = make_emulator(offers=50)
    me = {"Authorization": f"Bearer {emu.api_key}"}
    other = {"Authorization": "Bearer someone-else"}
    with httpx.Client(base_url=emu.url) as c:
        for _ in range(2):
            assert c.get("/api/v0/instances/1/", headers=me).status_code == 200
        assert c.get("/api/v0/instances/1/", headers=me).status_code == 429
        assert c.get("/api/v0/instances/1/", headers=other).status_code == 401  # not 429
        assert c.get("/api/v0/instances/1/").status_code == 403  # anonymous: by client IP


def test_retry_after_can_be_turned_on(make_emulator: Callable[..., EmulatorThread]) -> None:
    emu = make_emulator(offers=50)
    emu.control.reset(retry_after=True)
    with httpx.Client(base_url=emu.url) as c:
        c.get("/api/v0/bundles/", params={"q": "{}"})
        limited = c.get("/api/v0/bundles/", params={"q": "{}"})
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"


def test_rate_limit_off(emulator: EmulatorThread) -> None:
    with httpx.Client(base_url=emulator.url) as c:
        assert {c.post("/api/v0/bundles/", json={"limit": 1}).status_code for _ in range(5)} == {
            200
        }


def test_control_api_is_never_limited(make_emulator: Callable[..., EmulatorThread]) -> None:
    emu = make_emulator(offers=50)
    for _ in range(5):
        emu.control.state()
