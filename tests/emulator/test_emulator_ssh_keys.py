"""Account SSH keys and per-instance keys."""

from __future__ import annotations

import json

import httpx
from emulator_wire import ERRORS

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake0001 a@b"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake0002 c@d"


def new_instance(client: httpx.Client) -> int:
    offer = client.post("/api/v0/bundles/", json={"limit": 1}).json()["offers"][0]
    return int(
        client.put(f"/api/v0/asks/{offer['id']}/", json={"image": "x"}).json()["new_contract"]
    )


def test_account_keys_crud(client: httpx.Client) -> None:
    assert client.get("/api/v0/ssh/").json() == []
    created = client.post("/api/v0/ssh/", json={"ssh_key": KEY1}).json()
    assert created["success"] is True
    key = created["key"]
    assert set(key) == {"id", "user_id", "public_key", "created_at", "deleted_at"}
    assert key["public_key"] == KEY1
    assert client.get("/api/v0/ssh").json() == [key]
    updated = client.put(f"/api/v0/ssh/{key['id']}/", json={"id": key["id"], "ssh_key": KEY2})
    assert updated.json()["key"]["public_key"] == KEY2
    assert client.request("DELETE", f"/api/v0/ssh/{key['id']}/", json={}).json() == {
        "success": True
    }
    assert client.get("/api/v0/ssh/").json() == []
    gone = client.request("DELETE", f"/api/v0/ssh/{key['id']}/")
    assert gone.status_code == 404 and gone.json()["error"] == "no_such_ssh_key"


def test_missing_key_is_no_ssh_key(client: httpx.Client) -> None:
    for body in ({}, {"ssh_key": ""}, {"ssh_key": "   "}):
        response = client.post("/api/v0/ssh/", json=body)
        assert response.status_code == 400
        assert response.json() == ERRORS["error_no_ssh_key"]
    garbage = client.post("/api/v0/ssh/", json={"ssh_key": "not-a-key"})
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_args"


def test_instance_keys(client: httpx.Client) -> None:
    client.post("/api/v0/ssh/", json={"ssh_key": KEY1})
    instance_id = new_instance(client)
    listed = client.get(f"/api/v0/instances/{instance_id}/ssh/").json()
    assert listed["success"] is True
    assert [k["public_key"] for k in json.loads(listed["keys"])] == [KEY1]  # account keys copied

    attached = client.post(f"/api/v0/instances/{instance_id}/ssh/", json={"ssh_key": KEY2}).json()
    assert attached["success"] is True and attached["msg"] == "SSH key added to instance."
    key = json.loads(attached["key"])  # a JSON-encoded string, as the real API
    assert set(key) == {"id", "instance_id", "ssh_key_id", "public_key"}
    assert key["instance_id"] == instance_id and key["public_key"] == KEY2
    twice = client.post(f"/api/v0/instances/{instance_id}/ssh/", json={"ssh_key": KEY2}).json()
    assert twice["success"] is False

    detached = client.request(
        "DELETE", f"/api/v0/instances/{instance_id}/ssh/{key['id']}/", json={}
    )
    assert detached.json() == {"success": True, "msg": "SSH key removed from instance."}
    again = client.request("DELETE", f"/api/v0/instances/{instance_id}/ssh/{key['id']}/")
    assert again.status_code == 200 and again.json()["error"] == "no_such_ssh_key"
    nobody = client.request("DELETE", "/api/v0/instances/1/ssh/1/")
    assert nobody.status_code == 200 and nobody.json()["error"] == "no_such_instance"
    empty = client.post(f"/api/v0/instances/{instance_id}/ssh/", json={"ssh_key": ""})
    assert empty.status_code == 400 and empty.json() == ERRORS["error_no_ssh_key"]


def test_new_account_key_reaches_existing_instances(client: httpx.Client) -> None:
    instance_id = new_instance(client)
    client.post("/api/v0/ssh/", json={"ssh_key": KEY2})
    listed = json.loads(client.get(f"/api/v0/instances/{instance_id}/ssh/").json()["keys"])
    assert [k["public_key"] for k in listed] == [KEY2]
