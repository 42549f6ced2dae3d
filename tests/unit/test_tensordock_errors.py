"""TensorDock error answers -> typed errors, HTTP 200 error bodies included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop.errors import (
    AuthFailed,
    BadRequest,
    InsufficientCredit,
    NotFound,
    OfferUnavailable,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from gpushop.providers.tensordock.errors import (
    already_in_state,
    check_id,
    classify,
    error_in_body,
    map_error,
    message_of,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tensordock" / "v2"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("GET", "http://td.test/api/v2/x")
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_no_capacity_in_an_http_200_body_is_offer_unavailable() -> None:
    err = error_in_body(load("errors/create_no_capacity_http200.json"), "POST /instances")
    assert isinstance(err, OfferUnavailable)
    assert "No available nodes" in str(err)
    assert err.status == 400 and err.provider == "tensordock"


def test_low_balance_in_an_http_200_body_is_insufficient_credit() -> None:
    err = error_in_body(load("errors/create_insufficient_balance_http200.json"), "POST /instances")
    assert isinstance(err, InsufficientCredit)
    assert err.exit_code == 5


@pytest.mark.parametrize(
    "body",
    [
        {"error": "something broke"},
        {"status": "500", "message": "internal"},
        {"success": False, "error": "Machine is stoppeddisassociated, therefore it cannot be"},
    ],
)
def test_other_error_bodies_are_errors(body: dict[str, Any]) -> None:
    assert isinstance(error_in_body(body, "POST /instances/{id}/stop"), ProviderError)


@pytest.mark.parametrize(
    "name",
    [
        "instance_create_response.json",
        "instance_start_response.json",
        "instance_stop_response.json",
        "instance_delete_response.json",
        "instance_get_running.json",
        "instances_list.json",
        "hostnodes_list.json",
    ],
)
def test_success_bodies_carry_no_error(name: str) -> None:
    # the flat detail has "status": "running", which is no HTTP status
    assert error_in_body(load(name), "GET /x") is None


def test_unauthorized_is_auth_failed_without_the_token() -> None:
    err = map_error(response(401, load("errors/unauthorized_http401.json")), "GET /hostnodes")
    assert isinstance(err, AuthFailed) and err.exit_code == 4
    assert "TENSORDOCK_API_TOKEN" in str(err)
    assert isinstance(map_error(response(403, {"error": "no"}), "GET /x"), AuthFailed)


def test_not_found() -> None:
    body = load("errors/instance_not_found_http404.json")
    err = map_error(response(404, body), "GET /instances/{id}")
    assert isinstance(err, NotFound) and "Instance not found" in str(err)
    # the offer's hostnode gone: the offer is unavailable, not the call wrong
    assert isinstance(map_error(response(404, body), "GET /hostnodes/{id}"), OfferUnavailable)


def test_rate_limited_carries_retry_after() -> None:
    err = map_error(
        response(429, load("errors/rate_limited_http429.json"), {"Retry-After": "7"}), "GET /x"
    )
    assert isinstance(err, RateLimited) and err.retryable
    assert err.retry_after == 7.0


def test_validation_and_start_refusals_are_bad_requests() -> None:
    err = map_error(response(400, load("errors/create_validation_http400.json")), "POST /instances")
    assert isinstance(err, BadRequest) and "100 GB" in str(err)
    assert not already_in_state(err)
    start = map_error(
        response(400, load("errors/start_not_stopped_http400.json")), "POST /instances/{id}/start"
    )
    assert isinstance(start, BadRequest) and already_in_state(start)
    assert already_in_state(map_error(response(409, {"error": "conflict"}), "POST /x"))


def test_server_errors_and_plain_text() -> None:
    err = map_error(response(503, "<html>down</html>"), "GET /hostnodes")
    assert isinstance(err, ProviderUnavailable) and err.retryable
    assert isinstance(map_error(response(400, "bad"), "GET /x"), BadRequest)


def test_restart_without_a_free_gpu_is_offer_unavailable() -> None:
    err = classify(400, "GPU slot expired", "POST /instances/{id}/start")
    assert isinstance(err, OfferUnavailable)


def test_messages_from_several_body_shapes() -> None:
    assert message_of({"error": "a"}) == "a"
    assert message_of({"message": "b"}) == "b"
    assert message_of({"error": {"message": "c"}}) == "c"
    assert message_of({"errors": [{"detail": "d"}]}) == "d"
    assert message_of({"errors": ["e"]}) == "e"
    assert message_of(None) == ""


def test_ids_in_paths_are_checked() -> None:
    assert check_id("7f3a9c2e-4b1d-4e8a-9c6f-0a2b4d6e8f31")
    for bad in ("", "../secrets", "a/b", "a b", "x?y"):
        with pytest.raises(BadRequest):
            check_id(bad)
