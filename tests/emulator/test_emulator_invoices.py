"""The invoice endpoints (reference section 10): the starting credit as the payment, the
instances' GPU and disk charges, and the auth answers of a "login" endpoint."""

from __future__ import annotations

import time

import httpx
import pytest
from emulator_ssh import cheapest, create, wait_status

from gpushop.emulator import EmulatorThread


@pytest.fixture
def billed(emulator: EmulatorThread, client: httpx.Client) -> int:
    """One instance that ran for a simulated hour."""
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0, credit=50.0)
    instance_id = create(client, cheapest(client)["id"])
    wait_status(client, instance_id, "running")
    emulator.control.advance(3600)
    return instance_id


def test_legacy_invoices_list_charges_and_the_payment(
    emulator: EmulatorThread, client: httpx.Client, billed: int
) -> None:
    params = {"owner": "me", "sdate": 0, "edate": time.time() + 7200, "inc_charges": "true"}
    answer = client.get("/api/v0/users/me/invoices", params=params)
    assert answer.status_code == 200
    body = answer.json()
    user = client.get("/api/v0/users/current").json()
    payments = [row for row in body["invoices"] if row["type"] == "payment"]
    assert [p["amount"] for p in payments] == [50.0]
    charges = [row for row in body["invoices"] if row["type"] == "charge"]
    assert {row["instance_id"] for row in charges} == {billed}
    assert {"GPU", "storage"} <= {row["description"].split()[2] for row in charges}
    assert sum(row["amount"] for row in charges) == pytest.approx(user["total_spend"], abs=0.01)
    assert body["current"]["credit"] == user["credit"]
    assert set(body) >= {"invoices", "current", "username", "email", "bill_to"}
    # only credits: no charges
    only = client.get("/api/v0/users/me/invoices", params={**params, "inc_charges": "false"})
    assert all(row["type"] == "payment" for row in only.json()["invoices"])
    # a range after everything: nothing
    later = {**params, "sdate": time.time() + 10**6, "edate": time.time() + 2 * 10**6}
    assert client.get("/api/v0/users/me/invoices", params=later).json()["invoices"] == []


def test_v1_invoices_and_search(
    emulator: EmulatorThread, client: httpx.Client, billed: int
) -> None:
    filters = '{"when": {"gte": 0, "lte": 9999999999}}'
    body = client.get("/api/v1/invoices/", params={"select_filters": filters}).json()
    assert body["success"] is True and body["count"] == body["total"] == 1
    assert body["next_token"] is None
    payment = body["results"][0]
    assert payment["type"] == "credit" and payment["amount"] == -50.0
    assert payment["metadata"]["service"] == "stripe_payments"
    bad = client.get("/api/v1/invoices/", params={"select_filters": '{"cost": {"gt": 1}}'})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"

    rows = client.get("/api/v0/invoices", params={"select_cols": '["*"]'}).json()
    assert isinstance(rows, list) and {row["type"] for row in rows} == {"payment", "charge"}
    assert all(isinstance(row["amount"], str) for row in rows)
    charges = client.get(
        "/api/v0/invoices", params={"select_filters": '{"type": {"eq": "charge"}}'}
    ).json()
    assert charges and {row["instance_id"] for row in charges} == {billed}


@pytest.mark.parametrize("path", ["/api/v0/users/me/invoices", "/api/v1/invoices/", "/invoices"])
def test_invoices_need_a_login(emulator: EmulatorThread, path: str) -> None:
    url = emulator.url + (path if path.startswith("/api/") else "/api/v0" + path)
    missing = httpx.get(url)
    assert missing.status_code == 403
    assert missing.json()["msg"] == "This action requires login."
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()["msg"]) == (404, "Invalid user key")
