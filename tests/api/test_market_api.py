"""The market and the reports over HTTP: the same JSON as the CLI's --json, admins only where
the figures are the whole account's."""

from __future__ import annotations

import json
from typing import Any

import httpx

from cli_run import cli

from .conftest import token


def test_offers_and_market_answer_what_the_cli_prints(
    serve: Any, environment: dict[str, str], capsys: Any
) -> None:
    url, _ = serve(environment)
    me = token(capsys, "ann")
    params = {"min_vram": 24, "limit": 5, "gpu": ["4090", "3090"]}
    answer = httpx.get(f"{url}/v1/offers", params=params, headers=me, timeout=60)
    assert answer.status_code == 200, answer.text
    offers = answer.json()["offers"]
    code, out, _ = cli(
        capsys, "offers", "--min-vram", "24", "--limit", "5", "--gpu", "4090,3090", "--json"
    )
    assert code == 0
    printed = json.loads(out)
    assert [o["id"] for o in offers] == [o["id"] for o in printed]
    assert set(offers[0]) == set(printed[0])
    summary = httpx.get(f"{url}/v1/market", headers=me, timeout=60).json()
    assert summary["total_offers"] > 0 and summary["models"][0]["p50_per_gpu_hour"] > 0
    bad = httpx.get(f"{url}/v1/offers", params={"limit": 0}, headers=me)
    assert bad.status_code == 422 and bad.json()["field"] == "limit"
    assert httpx.get(f"{url}/v1/offers").status_code == 401


def test_costs_and_reconcile_are_an_admins_timings_anyones(
    serve: Any, environment: dict[str, str], capsys: Any
) -> None:
    url, _ = serve(environment)
    user, admin = token(capsys, "ben"), token(capsys, "boss", "--admin")
    for method, path in (("GET", "/v1/costs"), ("POST", "/v1/reconcile")):
        refused = httpx.request(method, f"{url}{path}", headers=user, timeout=60)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        allowed = httpx.request(method, f"{url}{path}", headers=admin, timeout=60)
        assert allowed.status_code == 200, allowed.text
    report = httpx.post(f"{url}/v1/reconcile", headers=admin, timeout=60).json()
    assert report["dry_run"] is True and report["actions"] == []
    assert httpx.get(f"{url}/v1/timings", headers=user).json() == []


def test_the_same_offers_query_again_is_answered_from_the_services_cache(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve(environment)
    me = token(capsys, "cat")
    first = httpx.get(f"{url}/v1/offers", params={"min_vram": 48}, headers=me, timeout=60)
    searches = emulator.control.request_count("POST /api/v0/bundles/")
    again = httpx.get(f"{url}/v1/offers", params={"min_vram": 48}, headers=me, timeout=60)
    assert again.json()["offers"] == first.json()["offers"]
    assert emulator.control.request_count("POST /api/v0/bundles/") == searches
    other = httpx.get(f"{url}/v1/offers", params={"min_vram": 80}, headers=me, timeout=60)
    assert other.status_code == 200  # another query: searched anew
    assert emulator.control.request_count("POST /api/v0/bundles/") > searches


def test_templates_answer_what_the_cli_prints(
    serve: Any, environment: dict[str, str], capsys: Any
) -> None:
    url, _ = serve(environment)
    me = token(capsys, "dan")
    answer = httpx.get(f"{url}/v1/templates", params={"limit": 5}, headers=me, timeout=60)
    assert answer.status_code == 200, answer.text
    code, out, _ = cli(capsys, "templates", "--limit", "5", "--json")
    assert code == 0 and answer.json()["templates"] == json.loads(out)
    assert not {"env", "onstart"} & set(answer.json()["templates"][0])  # never shown
