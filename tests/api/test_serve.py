"""`gpushop serve` as a team runs it: a real process (uvicorn on a free port) against the
emulator; health, readiness with each provider's latency, OpenAPI and docs, errors as JSON, and
the deployment rules (production refuses SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import free_port


def test_health_readiness_with_provider_latency_openapi_and_docs(
    serve: Any, environment: dict[str, str]
) -> None:
    url, _ = serve(environment)
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200, ready.text
    report = ready.json()
    assert report["status"] == "ok" and report["store"]["ok"] is True
    [vast] = report["providers"]
    assert vast["name"] == "vastai" and vast["ok"] is True and vast["latency_ms"] > 0
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/healthz", "/readyz"} <= set(spec["paths"])
    assert "swagger" in httpx.get(f"{url}/docs").text.lower()


def test_a_provider_that_fails_leaves_the_service_ready_but_degraded(
    serve: Any, environment: dict[str, str], emulator: Any
) -> None:
    url, _ = serve({**environment, "VASTAI_API_KEY": "not-the-key"})
    report = httpx.get(f"{url}/readyz").json()
    assert report["status"] == "degraded"
    [vast] = report["providers"]
    assert vast["ok"] is False and "not-the-key" not in vast["detail"]


def test_a_store_that_is_down_makes_readiness_503_with_a_code(
    serve: Any, environment: dict[str, str]
) -> None:
    password = "s3cretPw"  # a test value: it must show nowhere
    env = {**environment, "GPUSHOP_DB_URL": f"postgresql://u:{password}@127.0.0.1:1/shop"}
    url, _ = serve(env)
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["code"] == "store_unavailable" and body["status"] == "unavailable"
    assert password not in ready.text


def test_errors_are_json_with_a_code(serve: Any, environment: dict[str, str]) -> None:
    url, _ = serve(environment)
    missing = httpx.get(f"{url}/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "message": "Not Found"}
    wrong = httpx.delete(f"{url}/healthz")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


def test_production_refuses_sqlite_in_one_line(environment: dict[str, str]) -> None:
    profile = Path(environment["GPUSHOP_CONFIG_DIR"]) / "production.toml"
    profile.parent.mkdir(parents=True)
    profile.write_text("GPUSHOP_BUDGET_USD = 500\n")
    env = {**environment, "GPUSHOP_PROFILE": "production"}
    done = subprocess.run(
        [sys.executable, "-m", "gpushop", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "needs PostgreSQL" in done.stderr


@pytest.mark.parametrize("profile", ["development", "staging", "production"])
def test_the_example_profiles_load(profile: str, environment: dict[str, str]) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "profiles"
    env = {**environment, "GPUSHOP_CONFIG_DIR": str(docs), "GPUSHOP_PROFILE": profile}
    env.pop("GPUSHOP_DB_URL")
    done = subprocess.run(
        [sys.executable, "-m", "gpushop", "config", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    url = json.loads(done.stdout)["GPUSHOP_DB_URL"]["value"]
    assert url.startswith("postgresql://") == (profile != "development")


def test_production_refuses_webhooks_to_private_addresses(
    environment: dict[str, str], pg_url: str
) -> None:
    """GPUSHOP_WEBHOOK_ALLOW_PRIVATE is for tests and labs: production will not start with it
    (a webhook URL could then reach the service's own network)."""
    profile = Path(environment["GPUSHOP_CONFIG_DIR"]) / "production.toml"
    profile.parent.mkdir(parents=True)
    profile.write_text("GPUSHOP_WEBHOOK_ALLOW_PRIVATE = true\n")
    env = {**environment, "GPUSHOP_PROFILE": "production", "GPUSHOP_DB_URL": pg_url}
    done = subprocess.run(
        [sys.executable, "-m", "gpushop", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "GPUSHOP_WEBHOOK_ALLOW_PRIVATE" in done.stderr
