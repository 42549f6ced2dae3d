"""schemathesis against `/openapi.json` of a real `gpushop serve`: generated requests for every
operation (reads, and the validation of write bodies) never get a 500, and answers match their
schemas and content types. The account's budget is zero, so a generated create rents nothing."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

import serve_process
from gpushop.service import users
from gpushop.store import Store
from gpushop.store.secret_box import keygen
from waiting import until


@pytest.fixture(scope="module")
def service(
    emulator_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(base URL, a user's token) of one serve for the whole module."""
    home = tmp_path_factory.mktemp("serve")
    db_url = f"sqlite:///{home / 'store.db'}"
    with Store.open(db_url) as store:
        _, token = users.add(store, "schemathesis", is_admin=True)
    env = {
        **os.environ,
        "VASTAI_URL": emulator_server.url,
        "VASTAI_API_KEY": emulator_server.api_key,
        "GPUSHOP_DB_URL": db_url,
        "GPUSHOP_CACHE_DIR": str(home / "cache"),
        "GPUSHOP_DATA_DIR": str(home / "data"),
        "GPUSHOP_CONFIG_DIR": str(home / "config"),
        "GPUSHOP_RATE_LIMIT": "false",
        "GPUSHOP_BUDGET_USD": "0",  # whatever is generated, nothing is rented
        "GPUSHOP_SECRET_KEY": keygen(),  # a generated job's secrets are sealed
        "GPUSHOP_API_RATE_LIMIT": "100000/second",
    }
    url, proc = serve_process.start(env, stdout=subprocess.DEVNULL)
    yield url, token
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err


def test_no_500_and_answers_match_their_schemas(
    service: tuple[str, str], emulator_server: Any
) -> None:
    url, token = service
    creates = emulator_server.control.request_count("PUT /api/v0/asks/{id}/")
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15
    headers = {"Authorization": f"Bearer {token}"}
    # every operation with valid data; write bodies also with invalid data (a 4xx, never 500)
    runs = [(op, GenerationMode.POSITIVE) for op in operations] + [
        (op, GenerationMode.NEGATIVE)
        for op in operations
        if op.method.upper() == "POST"
        and op.path in ("/v1/rentals", "/v1/me/ssh-keys", "/v1/jobs", "/v1/train/flux-lora")
    ]
    assert len(runs) == len(operations) + 4
    for operation, mode in runs:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: Any) -> None:
            case.call_and_validate(
                base_url=url,
                headers=headers,
                checks=[
                    checks.not_a_server_error,
                    checks.response_schema_conformance,
                    checks.content_type_conformance,
                ],
            )

        conforms()

    # the jobs that passed validation were refused money (budget 0) before any rental
    def all_ended() -> list[dict[str, Any]]:
        found = httpx.get(f"{url}/v1/jobs", params={"ended": "true"}, headers=headers).json()
        return found if all(j["state"] == "failed" for j in found) else []

    jobs = until(all_ended, "the generated jobs to end")
    assert jobs, "no generated job passed validation: the job schema is not exercised"
    assert emulator_server.control.request_count("PUT /api/v0/asks/{id}/") == creates
