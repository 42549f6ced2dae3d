"""Rentals over HTTP with two users against a real `gpushop serve` and the emulator: rent
(202 + Location), see only one's own (404 for another's), release; quotas and Idempotency-Keys
under concurrent requests; money rules as on the CLI."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncssh
import httpx
import pytest

from waiting import until

from .conftest import token

BODY = {"min_vram": 24, "max_duration": "1h"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every test here holds on both stores the service runs on."""
    return str(request.param)


def live_instances(emulator: Any) -> list[dict[str, Any]]:
    return [
        i for i in emulator.control.state()["instances"] if i.get("actual_status") != "destroyed"
    ]


def test_two_users_rent_see_their_own_and_release(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve(environment)
    alice, bob = token(capsys, "alice"), token(capsys, "bob")
    admin = token(capsys, "root", "--admin")
    created = httpx.post(f"{url}/v1/rentals", json=BODY, headers=alice, timeout=60)
    assert created.status_code == 202, created.text
    rental = created.json()
    assert created.headers["location"] == f"/v1/rentals/{rental['rental_id']}"
    where = url + created.headers["location"]

    def ready() -> dict[str, Any] | None:
        shown = httpx.get(where, headers=alice).json()
        return shown if shown["state"] == "ready" else None

    shown = until(ready, "the rental to be ready")
    assert shown["ssh"]["port"] and shown["cost_usd"] >= 0 and shown["price_per_hour"] > 0
    assert httpx.get(where, headers=bob).status_code == 404  # not even "it exists"
    assert httpx.get(f"{url}/v1/rentals", headers=bob).json() == []
    assert [r["rental_id"] for r in httpx.get(f"{url}/v1/rentals", headers=alice).json()] == [
        rental["rental_id"]
    ]
    everyone = httpx.get(f"{url}/v1/rentals", params={"all": "true"}, headers=admin).json()
    assert [r["rental_id"] for r in everyone] == [rental["rental_id"]]
    assert httpx.post(f"{where}/release", headers=bob).status_code == 404
    released = httpx.post(f"{where}/release", headers=alice, timeout=60)
    assert released.status_code == 200 and released.json()["state"] == "released"
    assert live_instances(emulator) == []


def concurrently(n: int, send: Any) -> list[httpx.Response]:
    barrier = threading.Barrier(n)
    answers: list[httpx.Response] = []

    def one() -> None:
        barrier.wait()
        answers.append(send())

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answers


def test_twenty_concurrent_creates_against_a_quota_of_three(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve(environment)
    bob = token(capsys, "bob", "--max-rentals", "3")
    answers = concurrently(
        20, lambda: httpx.post(f"{url}/v1/rentals", json=BODY, headers=bob, timeout=120)
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 3 + [403] * 17, [a.text for a in answers if a.status_code >= 500]
    refused = [a.json() for a in answers if a.status_code == 403]
    assert {r["code"] for r in refused} == {"quota_exceeded"}
    assert "3 concurrent rentals at most" in refused[0]["message"]
    until(lambda: len(live_instances(emulator)) == 3, "the three rentals' instances")
    assert len(httpx.get(f"{url}/v1/rentals", headers=bob).json()) == 3


def test_the_same_idempotency_key_twice_at_once_rents_once(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve(environment)
    carol = token(capsys, "carol")
    headers = {**carol, "Idempotency-Key": "train-2026-12-04-a"}
    answers = concurrently(
        2, lambda: httpx.post(f"{url}/v1/rentals", json=BODY, headers=headers, timeout=120)
    )
    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    assert answers[0].json()["rental_id"] == answers[1].json()["rental_id"]
    again = httpx.post(f"{url}/v1/rentals", json=BODY, headers=headers, timeout=60)
    assert again.json()["rental_id"] == answers[0].json()["rental_id"]  # a later retry too
    other = httpx.post(
        f"{url}/v1/rentals", json={**BODY, "max_duration": "2h"}, headers=headers, timeout=60
    )
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    until(lambda: len(live_instances(emulator)) == 1, "the one instance")
    assert len(httpx.get(f"{url}/v1/rentals", headers=carol).json()) == 1


def test_bad_bodies_and_money_rules_rent_nothing(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve({**environment, "GPUSHOP_BUDGET_USD": "0"})
    dave = token(capsys, "dave")
    cases = [
        ({"disk": -1}, 422, "invalid_request", "disk"),
        ({"colour": "red"}, 422, "invalid_request", "colour"),
        ({"env": {"HF_TOKEN": "x"}}, 400, "bad_request", "env.HF_TOKEN"),
        ({"max_duration": "soon"}, 400, "bad_request", "soon"),
        (BODY, 403, "money_limit", "GPUSHOP_BUDGET_USD=0"),
    ]
    for body, status, code, says in cases:
        answer = httpx.post(f"{url}/v1/rentals", json=body, headers=dave, timeout=60)
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
        assert says in answer.json()["message"], answer.text
    assert emulator.control.request_count("PUT /api/v0/asks/{id}/") == 0
    assert httpx.post(f"{url}/v1/rentals", json=BODY).status_code == 401


def test_a_users_own_ssh_key_gets_into_their_rentals(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve(environment)
    erin = token(capsys, "erin")
    mine = asyncssh.generate_private_key("ssh-ed25519")
    public = mine.export_public_key().decode().strip()
    added = httpx.post(f"{url}/v1/me/ssh-keys", json={"public_key": public}, headers=erin)
    assert added.status_code == 201, added.text
    assert added.json()["fingerprint"].startswith("SHA256:")
    listed = httpx.get(f"{url}/v1/me/ssh-keys", headers=erin).json()
    assert [k["fingerprint"] for k in listed] == [added.json()["fingerprint"]]
    private = mine.export_private_key().decode()
    for text, says in ((private, "PRIVATE key"), ("ssh-ed25519 nonsense", "not an OpenSSH")):
        bad = httpx.post(f"{url}/v1/me/ssh-keys", json={"public_key": text}, headers=erin)
        assert bad.status_code == 400 and says in bad.json()["message"]
        assert private not in bad.text
    created = httpx.post(f"{url}/v1/rentals", json=BODY, headers=erin, timeout=60)
    where = url + created.headers["location"]
    ssh = until(lambda: httpx.get(where, headers=erin).json()["ssh"], "the rental's SSH address")

    async def log_in() -> str:
        async with asyncssh.connect(
            ssh["host"],
            ssh["port"],
            username=ssh["user"],
            client_keys=[mine],
            known_hosts=None,
            agent_path=None,
            config=None,
        ) as conn:
            return str((await conn.run("echo in", check=True)).stdout)

    def gets_in() -> bool:
        try:
            return asyncio.run(log_in()) == "in\n"
        except (asyncssh.PermissionDenied, OSError):
            return False  # not installed yet: it comes once the rental is ready

    until(gets_in, "the user's own key to get in")


@pytest.mark.slow  # it waits out a 2 s ready timeout and a second host's loading
def test_a_failed_host_names_the_rental_that_replaces_it(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve(environment)
    fay = token(capsys, "fay")
    emulator.control.stuck_loading(count=1)  # the first host never finishes loading
    body = {**BODY, "ready_timeout": "2s"}
    created = httpx.post(f"{url}/v1/rentals", json=body, headers=fay, timeout=60)
    first = url + created.headers["location"]

    def replaced() -> str | None:
        shown = httpx.get(first, headers=fay).json()
        return shown["replaced_by"] if shown["state"] in ("failed", "released") else None

    second = until(replaced, "the first host to fail and the next offer to be rented")
    shown = until(
        lambda: (
            (r := httpx.get(f"{url}/v1/rentals/{second}", headers=fay).json())["state"] == "ready"
            and r
        ),
        "the replacement to be ready",
    )
    assert shown["replaced_by"] is None and shown["ssh"]


@pytest.mark.parametrize("store_kind", ["sqlite"])  # the provisioner's logic: one store is enough
def test_a_rental_released_while_provisioning_is_not_replaced(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve(environment)
    gil = token(capsys, "gil")
    emulator.control.stuck_loading(count=1)  # it stays loading until released
    created = httpx.post(f"{url}/v1/rentals", json=BODY, headers=gil, timeout=60)
    where = url + created.headers["location"]
    until(lambda: live_instances(emulator), "the instance to be created")
    assert httpx.post(f"{where}/release", headers=gil, timeout=60).status_code == 200
    # the provisioner sees its instance go: no host failure, nothing rented in its place
    shown = until(
        lambda: (r := httpx.get(where, headers=gil).json())["provisioning_ended"] and r,
        "the provisioning to end",
    )
    assert shown["state"] == "released" and shown["replaced_by"] is None
    assert "released while it was being provisioned" in shown["provisioning_error"]
    assert emulator.control.request_count("PUT /api/v0/asks/{id}/") == 1
    assert httpx.get(f"{url}/v1/rentals", headers=gil).json() == []
    assert live_instances(emulator) == []


def test_events_tell_each_user_of_their_own_rentals_from_a_cursor(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    url, _ = serve(environment)
    gus, hal = token(capsys, "gus"), token(capsys, "hal")
    admin = token(capsys, "ops", "--admin")
    created = httpx.post(f"{url}/v1/rentals", json=BODY, headers=gus, timeout=60)
    where = url + created.headers["location"]
    until(lambda: httpx.get(where, headers=gus).json()["state"] == "ready", "ready")
    httpx.post(f"{where}/release", headers=gus, timeout=60)
    page = httpx.get(f"{url}/v1/events", headers=gus).json()
    subject = f"rental:{created.json()['rental_id']}"
    assert [(e["type"], e["subject"]) for e in page["events"]] == [
        ("rental.ready", subject),
        ("rental.released", subject),
    ]
    # the user acted (their request, and the provisioning it started): not the replica
    assert {e["actor"] for e in page["events"]} == {"user:gus"}
    assert httpx.get(f"{url}/v1/events", headers=hal).json()["events"] == []
    assert len(httpx.get(f"{url}/v1/events", headers=admin).json()["events"]) == 2
    after = httpx.get(f"{url}/v1/events", params={"after": page["next"]}, headers=gus).json()
    assert after == {"events": [], "next": page["next"]}
    first = httpx.get(f"{url}/v1/events", params={"limit": 1}, headers=gus).json()
    rest = httpx.get(f"{url}/v1/events", params={"after": first["next"]}, headers=gus).json()
    assert first["events"] + rest["events"] == page["events"]
    typed = httpx.get(f"{url}/v1/events", params={"type": "rental.released"}, headers=gus)
    assert [e["type"] for e in typed.json()["events"]] == ["rental.released"]
