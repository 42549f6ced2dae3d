"""Reboot, recycle, change bid and execute over HTTP: bodies, errors, and what the instance's
processes and files do (reference sections 6 and 7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from emulator_ssh import (
    all_gone,
    cheapest,
    create,
    lasting,
    new_key,
    register,
    show,
    ssh_run,
    wait_status,
    wait_until,
)

from gpushop.emulator import EmulatorThread
from waiting import until


@pytest.fixture
def instant(emulator: EmulatorThread) -> EmulatorThread:
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    return emulator


@pytest.fixture
def key(client: httpx.Client, instant: EmulatorThread) -> asyncssh.SSHKey:
    key = new_key()
    register(client, key)
    return key


def running(client: httpx.Client, **body: Any) -> tuple[int, dict[str, Any]]:
    instance_id = create(client, cheapest(client)["id"], **body)
    return instance_id, wait_status(client, instance_id, "running")


def result_text(url: str) -> str:
    """What the CLI does with a result_url: GET without auth until 200."""

    def ready() -> httpx.Response | None:
        answer = httpx.get(url, timeout=10)
        return answer if answer.status_code == 200 else None

    return until(ready, "the result_url to be ready").text


# -- reboot / recycle -------------------------------------------------------------------------
def test_reboot_restarts_the_container_and_keeps_the_disk(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    instance_id, row = running(client, onstart="echo x >> /root/onstart-count")
    port = row["ssh_port"]
    ssh_run(port, key, "echo kept > /workspace/file; setsid sleep infinity >/dev/null 2>&1 &")
    pids = lasting(lambda: instant.control.instance(instance_id), 1)

    answer = client.put(f"/api/v0/instances/reboot/{instance_id}/", json={})
    assert (answer.status_code, answer.json()) == (200, {"success": True})
    assert all_gone(pids)  # its processes (PID 1 with them) ended before the answer
    wait_status(client, instance_id, "running")
    assert ssh_run(port, key, "cat /workspace/file").stdout == "kept\n"
    view = instant.control.instance(instance_id)
    assert view["init_pid"] not in pids  # a new PID 1
    sandbox = Path(view["sandbox"])
    # onstart ran again, as at every start of the container (what it started runs again)
    assert wait_until(lambda: (sandbox / "root" / "onstart-count").read_text() == "x\nx\n")
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    wait_status(client, instance_id, "exited")
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
    wait_status(client, instance_id, "running")
    assert wait_until(lambda: (sandbox / "root" / "onstart-count").read_text() == "x\nx\nx\n")


def test_recycle_gives_a_fresh_container_from_the_image(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    instance_id, row = running(client, onstart="echo x >> /root/onstart-count")
    port = row["ssh_port"]
    ssh_run(port, key, "echo mine > /workspace/file; setsid sleep infinity >/dev/null 2>&1 &")
    pids = lasting(lambda: instant.control.instance(instance_id), 1)
    old_host_key = instant.control.instance(instance_id)["ssh_host_key"]

    answer = client.put(f"/api/v0/instances/recycle/{instance_id}", json={})
    assert (answer.status_code, answer.json()) == (200, {"success": True})
    assert all_gone(pids)
    assert wait_status(client, instance_id, "running")["ssh_port"] == port
    sandbox = Path(instant.control.instance(instance_id)["sandbox"])
    assert wait_until(lambda: (sandbox / "root" / "onstart-count").exists())
    assert ssh_run(port, key, "ls /workspace; cat /root/onstart-count").stdout == "x\n"
    assert instant.control.instance(instance_id)["ssh_host_key"] != old_host_key


def test_reboot_and_recycle_refusals(emulator: EmulatorThread, client: httpx.Client) -> None:
    for action in ("reboot", "recycle"):
        unknown = client.put(f"/api/v0/instances/{action}/31415926/", json={})
        assert unknown.status_code == 200
        assert unknown.json() == {
            "success": False,
            "error": "invalid_id",
            "msg": "Invalid instance id.",
        }
        bad = client.put(f"/api/v0/instances/{action}/abc/", json={})
        assert bad.status_code == 400 and bad.json()["msg"] == "invalid instance_id"
    instance_id = create(client, cheapest(client)["id"])
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    stopped = client.put(f"/api/v0/instances/reboot/{instance_id}/", json={})
    assert stopped.status_code == 400 and stopped.json()["error"] == "invalid_args"
    assert show(client, instance_id)["actual_status"] == "exited"  # type: ignore[index]
    no_key = httpx.put(f"{emulator.url}/api/v0/instances/reboot/{instance_id}/", json={})
    assert no_key.status_code == 403


# -- change bid -------------------------------------------------------------------------------
def test_change_bid_outbids_and_resumes(instant: EmulatorThread, client: httpx.Client) -> None:
    offer = cheapest(client)
    min_bid = offer["min_bid"]
    instance_id = create(client, offer["id"], price=round(min_bid * 1.2, 4))
    wait_status(client, instance_id, "running")

    low = client.put(
        f"/api/v0/instances/bid_price/{instance_id}/",
        json={"client_id": "me", "price": round(min_bid / 2, 4)},
    )
    assert (low.status_code, low.json()) == (200, {"success": True})
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "exited"
    assert row["status_msg"] == "Instance stopped: outbid by a higher priority rental"
    assert row["intended_status"] == "stopped"

    high = round(min_bid * 1.5, 4)
    answer = client.put(
        f"/api/v0/instances/bid_price/{instance_id}/", json={"client_id": "me", "price": high}
    )
    assert answer.json() == {"success": True}
    row = wait_status(client, instance_id, "running")
    assert row["dph_base"] == pytest.approx(high)


def test_change_bid_bills_each_price_for_its_time(
    instant: EmulatorThread, client: httpx.Client
) -> None:
    offer = cheapest(client)
    first = round(offer["min_bid"] * 1.2, 3)
    instance_id = create(client, offer["id"], price=first)
    wait_status(client, instance_id, "running")
    instant.control.advance(3600)
    second = round(first * 2, 3)
    client.put(f"/api/v0/instances/bid_price/{instance_id}/", json={"price": second})
    instant.control.advance(3600)
    charge = client.get("/api/v0/charges/").json()["results"][0]
    gpu = [item for item in charge["items"] if item["type"] == "gpu"]
    assert [item["description"].split(" at ")[1] for item in gpu] == [
        f"${first:.3f}/hour",
        f"${second:.3f}/hour",
    ]
    assert sum(item["amount"] for item in gpu) == pytest.approx(first + second, abs=0.01)


def test_change_bid_refusals(emulator: EmulatorThread, client: httpx.Client) -> None:
    offer = cheapest(client)
    bid = create(client, offer["id"], price=round(offer["min_bid"] * 1.1, 4))
    url = f"/api/v0/instances/bid_price/{bid}/"
    for price, limit in ((0.0, ">= 0.001"), (40.0, "<= 32")):
        answer = client.put(url, json={"client_id": "me", "price": price})
        assert answer.status_code == 400
        assert answer.json() == {
            "success": False,
            "error": "invalid_price",
            "msg": f"Please set a bid price {limit}.",
        }
    assert client.put(url, json={"price": "cheap"}).status_code == 400
    gone = client.put("/api/v0/instances/bid_price/31415926/", json={"price": 0.2})
    assert gone.status_code == 404
    assert gone.json() == {
        "success": False,
        "error": "no_such_instance",
        "msg": "Instance with that ID does not exist.",
    }
    on_demand = create(client, cheapest(client)["id"])
    refused = client.put(f"/api/v0/instances/bid_price/{on_demand}/", json={"price": 0.2})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_args"
    # no --price: a winning bid (the offer's min_bid)
    assert client.put(url, json={"client_id": "me", "price": None}).json() == {"success": True}
    assert show(client, bid)["dph_base"] == pytest.approx(offer["min_bid"])  # type: ignore[index]


# -- execute ----------------------------------------------------------------------------------
def test_execute_runs_ls_du_rm_on_a_stopped_instances_disk(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    instance_id, row = running(client)
    ssh_run(row["ssh_port"], key, "mkdir -p /workspace/out && echo data > /workspace/out/a.txt")
    url = f"/api/v0/instances/command/{instance_id}/"
    refused = client.put(url, json={"command": "ls"})
    assert refused.status_code == 400
    assert refused.json() == {
        "success": False,
        "error": "invalid_args",
        "msg": "Execute command only avail on stopped instances. "
        "Use ssh to run commands on running instances.",
    }
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})

    answer = client.put(url, json={"command": "ls -l /workspace/out"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True and body["writeable_path"]
    assert body["msg"] == "Command is executing, wait a few seconds and then view the result_url"
    assert "a.txt" in result_text(body["result_url"])
    assert "/workspace/out" in result_text(
        client.put(url, json={"command": "du -s /workspace/out"}).json()["result_url"]
    )
    removed = client.put(url, json={"command": "rm /workspace/out/a.txt"}).json()
    result_text(removed["result_url"])
    listing = client.put(url, json={"command": "ls /workspace/out"}).json()
    assert "a.txt" not in result_text(listing["result_url"])
    # nothing of the command's sandbox lasts, and the instance starts as before
    assert instant.control.instance(instance_id)["processes"] == []
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
    row = wait_status(client, instance_id, "running")
    assert ssh_run(row["ssh_port"], key, "ls /workspace/out").stdout == ""


def test_execute_refusals(instant: EmulatorThread, client: httpx.Client) -> None:
    instance_id, _ = running(client)
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    url = f"/api/v0/instances/command/{instance_id}/"
    for command, msg in (
        (None, "Missing command."),
        ("", "Missing command."),
        ("cat /etc/passwd", "Invalid command."),
        ("ls; rm -rf /", "Invalid command."),
        ("ls $(id)", "Invalid command."),
        ("ls " + "x" * 600, "Invalid command."),
    ):
        answer = client.put(url, json={"command": command})
        assert answer.status_code == 400, command
        assert answer.json() == {"success": False, "error": "invalid_args", "msg": msg}
    bad_json = client.put(url, content=b"{nope", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 483
    assert bad_json.json() == {
        "success": False,
        "error": "invalid_args",
        "msg": "Invalid json_body",
    }
    gone = client.put("/api/v0/instances/command/31415926/", json={"command": "ls"})
    assert (gone.status_code, gone.json()) == (
        404,
        {"error": "not_found", "msg": "Instance not found."},
    )
    never_ran = create(client, cheapest(client)["id"], target_state="stopped")
    answer = client.put(f"/api/v0/instances/command/{never_ran}/", json={"command": "ls"})
    assert answer.status_code == 400 and answer.json()["msg"] == "Container not ready"


def test_unknown_result_url_is_404(emulator: EmulatorThread) -> None:
    answer = httpx.get(f"{emulator.url}/vast.ai/instance_logs/{'0' * 32}.log")
    assert answer.status_code == 404 and "NoSuchKey" in answer.text
