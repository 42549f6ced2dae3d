"""Instances: create, show, list (v0/v1), manage, destroy, lifecycle over time, error bodies."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from emulator_wire import ERRORS, INSTANCE_KEYS

from gpushop.emulator import EmulatorThread


def offers(client: httpx.Client, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    q = {"rentable": {"eq": True}, "order": [["dph_total", "asc"]], "limit": 100, **(query or {})}
    response = client.post("/api/v0/bundles/", json=q)
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()["offers"]
    return result


def create(client: httpx.Client, offer_id: int, **body: Any) -> httpx.Response:
    payload = {"client_id": "me", "image": "pytorch/pytorch:latest", "disk": 10, **body}
    return client.put(f"/api/v0/asks/{offer_id}/", json=payload)


def show(client: httpx.Client, instance_id: int) -> dict[str, Any] | None:
    response = client.get(f"/api/v0/instances/{instance_id}/", params={"owner": "me"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] | None = response.json()["instances"]
    return result


def new_instance(client: httpx.Client, **body: Any) -> int:
    offer = offers(client)[0]
    response = create(client, offer["id"], **body)
    assert response.status_code == 200, response.text
    return int(response.json()["new_contract"])


def test_create_answers_like_the_real_api(client: httpx.Client) -> None:
    offer = offers(client)[0]
    response = create(client, offer["id"], label="gpushop-abc", env={"A": "1"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "new_contract", "instance_api_key"}
    assert body["success"] is True
    assert isinstance(body["new_contract"], int)
    assert re.fullmatch(r"[0-9a-f]{64}", body["instance_api_key"])


def test_offer_is_unavailable_while_rented_and_back_after_destroy(client: httpx.Client) -> None:
    offer = offers(client)[0]
    instance_id = create(client, offer["id"]).json()["new_contract"]
    assert offer["id"] not in [o["id"] for o in offers(client, {"limit": 1000})]
    again = create(client, offer["id"])
    assert again.status_code == 404
    assert again.json() == {
        "success": False,
        "error": "no_such_ask",
        "msg": f"No ask by id {offer['id']} is available.",
        "ask_id": offer["id"],
    }
    assert set(again.json()) == set(ERRORS["error_offer_not_found"])
    assert client.request("DELETE", f"/api/v0/instances/{instance_id}/", json={}).json() == {
        "success": True
    }
    assert offer["id"] in [o["id"] for o in offers(client, {"limit": 1000})]


def test_rented_flag_marks_offers_on_machines_you_rent(client: httpx.Client) -> None:
    everything = offers(client, {"limit": 1000, "rentable": {"eq": True}})
    by_machine: dict[int, list[dict[str, Any]]] = {}
    for o in everything:
        by_machine.setdefault(o["machine_id"], []).append(o)
    siblings = next(group for group in by_machine.values() if len(group) > 1)
    create(client, siblings[0]["id"])
    rented = offers(client, {"rented": {"eq": True}, "limit": 1000})
    assert {o["id"] for o in rented} >= {o["id"] for o in siblings[1:]}
    assert all(o["rented"] is True for o in rented)
    anonymous = httpx.post(
        f"{client.base_url}/api/v0/bundles/", json={"rented": {"eq": True}}
    ).json()
    assert anonymous["offers"] == []


def test_instance_row_has_every_real_field(client: httpx.Client) -> None:
    instance_id = new_instance(
        client, env="-e HF_HOME=/workspace/hf -p 8675:8675 -p 7000:7000/udp", label="x"
    )
    row = show(client, instance_id)
    assert row is not None
    assert set(row) == INSTANCE_KEYS
    assert isinstance(row["start_date"], float)
    assert row["extra_env"] == [
        ["HF_HOME", "/workspace/hf"],
        ["-p 8675:8675", "1"],
        ["-p 7000:7000/udp", "1"],
    ]
    assert row["ssh_host"] == "127.0.0.1" and row["public_ipaddr"] == "127.0.0.1"
    assert row["disk_space"] == 10.0
    assert row["dph_total"] == pytest.approx(
        row["dph_base"] + row["storage_cost"] * 10 / 720, rel=1e-6
    )
    assert row["instance"]["totalHour"] == row["storage_total_cost"]
    assert row["duration"] == pytest.approx(row["end_date"] - time.time(), abs=30)


def test_env_as_dict_and_runtype_args(client: httpx.Client) -> None:
    instance_id = new_instance(
        client, env={"A": "1", "-p 8000:8000": "1"}, args=["-c", "sleep 1"], runtype="args"
    )
    row = show(client, instance_id)
    assert row is not None
    assert row["extra_env"] == [["A", "1"], ["-p 8000:8000", "1"]]
    assert row["image_args"] == ["-c", "sleep 1"] and row["image_runtype"] == "args"


def test_template_without_image(client: httpx.Client) -> None:
    offer = offers(client)[0]
    response = client.put(
        f"/api/v0/asks/{offer['id']}/",
        json={
            "client_id": "me",
            "image": None,
            "template_hash_id": "661d064bbda1f2a133816b6d55da07c3",  # the seeded PyTorch one
            "price": None,
        },
    )
    assert response.status_code == 200
    row = show(client, response.json()["new_contract"])
    assert row is not None and row["template_hash_id"] == "661d064bbda1f2a133816b6d55da07c3"
    assert row["image_uuid"] == "vastai/pytorch:@vastai-automatic-tag"


def test_lifecycle_over_time(emulator: EmulatorThread, client: httpx.Client) -> None:
    # 10 s of provisioning, then 10 s of loading, on the emulator's clock: `advance` moves it,
    # and the wall clock's few milliseconds cannot cross a phase
    emulator.control.reset(speed=1.0, provision_delay_s=10.0, loading_delay_s=10.0)
    instance_id = new_instance(client, image="ostris/aitoolkit:latest")
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] is None
    assert (row["intended_status"], row["cur_state"], row["next_state"]) == ("running",) * 3
    assert row["ports"] == {}
    emulator.control.advance(12.0)
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "loading"
    assert row["status_msg"].startswith("Pulling image ostris/aitoolkit:latest")
    assert row["ports"] == {}
    emulator.control.advance(10.0)
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "running"
    assert row["status_msg"] == "success, running ostris/aitoolkit_latest/ssh"
    port = row["ports"]["22/tcp"][0]
    assert port == {"HostIp": "0.0.0.0", "HostPort": str(row["ssh_port"])}
    assert isinstance(row["uptime_mins"], float)

    stop = client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    assert stop.json() == {"success": True}
    row = show(client, instance_id)
    assert row is not None
    assert row["actual_status"] == "exited"
    assert (row["intended_status"], row["cur_state"], row["next_state"]) == ("stopped",) * 3
    assert row["ports"] == {}

    # start goes back through loading (no provisioning the second time)
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
    row = show(client, instance_id)
    assert row is not None and row["intended_status"] == "running"
    assert row["actual_status"] == "loading"
    emulator.control.advance(11.0)
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "running"


def test_fast_clock_reaches_running(client: httpx.Client) -> None:
    # speed 1000: 3 ms + an 8 GB pull over >= 100 Mbit/s (<= 0.64 s) + 20 ms boot
    instance_id = new_instance(client)
    deadline = time.monotonic() + 10.0  # minutes at speed 1; well under a second here
    while (row := show(client, instance_id)) is not None and row["actual_status"] != "running":
        assert time.monotonic() < deadline, row["status_msg"]
        time.sleep(0.02)
    assert row is not None and row["actual_status"] == "running"


def test_label_and_its_limit(client: httpx.Client) -> None:
    instance_id = new_instance(client)
    path = f"/api/v0/instances/{instance_id}/"
    assert client.put(path, json={"label": "gpushop-abcdef-r01"}).json() == {"success": True}
    row = show(client, instance_id)
    assert row is not None and row["label"] == "gpushop-abcdef-r01"
    too_long = client.put(path, json={"label": "x" * 1025})
    assert too_long.status_code == 400
    assert too_long.json() == {"error": "invalid_args", "msg": "label_too_long"}
    bad_state = client.put(path, json={"state": "paused"})
    assert bad_state.status_code == 400
    assert bad_state.json() == {"success": False, "msg": "Invalid target state"}


def test_unknown_and_invalid_instance_ids(client: httpx.Client) -> None:
    assert show(client, 31415926) is None
    for method in ("PUT", "DELETE"):
        response = client.request(method, "/api/v0/instances/31415926/", json={"state": "stopped"})
        assert response.status_code == 404
        assert response.json() == ERRORS["error_instance_not_found"]
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(method, "/api/v0/instances/abc/", json={})
        assert response.status_code == 400
        assert response.json() == ERRORS["error_invalid_instance_id"]


def test_destroy(client: httpx.Client) -> None:
    instance_id = new_instance(client)
    path = f"/api/v0/instances/{instance_id}/"
    assert client.request("DELETE", path, json={}).json() == {"success": True}
    assert show(client, instance_id) is None
    again = client.delete(path)
    assert again.status_code == 404
    assert again.json()["error"] == "no_such_instance"


def test_v1_list_paging(client: httpx.Client) -> None:
    cheap = offers(client, {"limit": 30})
    created = [
        create(client, o["id"], label=f"l{i % 3}").json()["new_contract"]
        for i, o in enumerate(cheap)
    ]
    params = {"select_filters": "{}", "order_by": json.dumps([{"col": "id", "dir": "asc"}])}
    first = client.get("/api/v1/instances/", params={**params, "limit": 25}).json()
    assert first["success"] is True
    assert first["instances_found"] == 25 and first["total_instances"] == 30
    assert first["label_counts"] == {"l0": 10, "l1": 10, "l2": 10}
    assert isinstance(first["next_token"], str)
    second = client.get(
        "/api/v1/instances/", params={**params, "limit": 25, "after_token": first["next_token"]}
    ).json()
    assert second["instances_found"] == 5 and second["next_token"] is None
    seen = [r["id"] for r in first["instances"] + second["instances"]]
    assert seen == sorted(created)
    # default limit 25, max 25, <= 0 gives 5
    assert len(client.get("/api/v1/instances/").json()["instances"]) == 25
    assert len(client.get("/api/v1/instances/", params={"limit": 100}).json()["instances"]) == 25
    assert len(client.get("/api/v1/instances/", params={"limit": 0}).json()["instances"]) == 5


def test_v1_filters_order_and_select_cols(client: httpx.Client) -> None:
    ids = [new_instance(client, label=label) for label in ("a", "b", None)]
    client.put(f"/api/v0/instances/{ids[1]}/", json={"state": "stopped"})
    response = client.get(
        "/api/v1/instances/",
        params={
            "select_filters": json.dumps({"intended_status": {"in": ["stopped"]}}),
            "select_cols": json.dumps(["label", "actual_status"]),
        },
    ).json()
    assert response["instances"] == [{"id": ids[1], "label": "b", "actual_status": "exited"}]
    assert response["label_counts"] == {"a": 1, "b": 1, "": 1}
    unlabelled = client.get(
        "/api/v1/instances/", params={"select_filters": json.dumps({"label": {"in": [None]}})}
    ).json()
    assert [r["id"] for r in unlabelled["instances"]] == [ids[2]]
    desc = client.get(
        "/api/v1/instances/", params={"order_by": json.dumps([{"col": "id", "dir": "desc"}])}
    ).json()
    assert [r["id"] for r in desc["instances"]] == sorted(ids, reverse=True)


def test_v1_errors(client: httpx.Client) -> None:
    bad = client.get("/api/v1/instances/", params={"select_filters": '{"dph_total": {"lt": 1}}'})
    assert bad.status_code == 400
    assert bad.json() == ERRORS["error_v1_bad_filter"]
    token = client.get("/api/v1/instances/", params={"after_token": "garbage!"})
    assert token.status_code == 400
    assert token.json() == ERRORS["error_v1_bad_token"]


def test_v0_list_filters_and_deprecation(emulator: EmulatorThread, client: httpx.Client) -> None:
    instance_id = new_instance(client)
    legacy = client.get("/api/v0/instances", params={"owner": "me"}).json()
    assert legacy["instances_found"] == 1 and legacy["instances"][0]["id"] == instance_id
    assert set(legacy["instances"][0]) == INSTANCE_KEYS
    filters = client.get("/api/v0/instances/filters/").json()["filters"]
    assert set(filters[0]) == {"actual_status", "verification", "gpu_name"}
    emulator.control.reset(legacy_list_deprecated=True)
    gone = client.get("/api/v0/instances/")
    assert gone.status_code == 410
    assert gone.json() == ERRORS["error_v0_instances_deprecated"]


@pytest.mark.parametrize(
    "body",
    [
        {"disk": -5},
        {"disk": "big"},
        {"env": 42},
        {"env": "-x nonsense"},
        {"image": 7},
        {"label": 5},
        {"onstart": "x" * 5000},
        {"target_state": "paused"},
        {"args": "not a list"},
    ],
)
def test_create_invalid_args(client: httpx.Client, body: dict[str, Any]) -> None:
    response = create(client, offers(client)[0]["id"], **body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_args"
    assert response.json()["success"] is False


def test_create_with_bad_offer_ids(client: httpx.Client) -> None:
    response = client.put("/api/v0/asks/abc/", json={"image": "x"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_args"
    missing = client.put("/api/v0/asks/1/", json={"image": "x"})
    assert missing.status_code == 404 and missing.json()["error"] == "no_such_ask"


def test_create_disk_larger_than_offer(client: httpx.Client) -> None:
    offer = offers(client)[0]
    response = create(client, offer["id"], disk=offer["disk_space"] + 1)
    assert response.status_code == 400 and response.json()["error"] == "invalid_args"


@pytest.mark.parametrize("price", [0.0001, 0, 129, 1000])
def test_bid_price_out_of_range(client: httpx.Client, price: float) -> None:
    offer = offers(client)[0]
    response = create(client, offer["id"], price=price)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == set(ERRORS["error_invalid_price"])
    assert body["error"] == "invalid_price" and body["ask_id"] == offer["id"]


def test_bid_below_min_bid_creates_a_stopped_instance(client: httpx.Client) -> None:
    offer = offers(client, {"min_bid": {"gt": 0.05}})[0]
    response = create(client, offer["id"], price=0.001)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False and isinstance(body["new_contract"], int)
    row = show(client, body["new_contract"])
    assert row is not None
    assert row["is_bid"] is True and row["dph_base"] == 0.001
    assert (row["intended_status"], row["cur_state"], row["actual_status"]) == (
        "stopped",
        "stopped",
        "exited",
    )
    start = client.put(f"/api/v0/instances/{body['new_contract']}/", json={"state": "running"})
    assert start.status_code == 200
    assert start.json() == ERRORS["error_resources_unavailable"]


def test_bid_at_min_bid_runs(client: httpx.Client) -> None:
    offer = offers(client)[0]
    response = create(client, offer["id"], price=offer["min_bid"])
    assert response.json()["success"] is True
    row = show(client, response.json()["new_contract"])
    assert row is not None and row["is_bid"] is True and row["intended_status"] == "running"


def test_cancel_unavail_low_bid_is_410(client: httpx.Client) -> None:
    offer = offers(client, {"min_bid": {"gt": 0.05}})[0]
    response = create(client, offer["id"], price=0.001, cancel_unavail=True)
    assert response.status_code == 410
    assert set(response.json()) == set(ERRORS["error_offer_no_longer_available"])
    assert client.get("/api/v1/instances/").json()["total_instances"] == 0


def test_no_credit(emulator: EmulatorThread, client: httpx.Client) -> None:
    emulator.control.reset(credit=0.0)
    response = create(client, offers(client)[0]["id"])
    assert response.status_code == 400
    assert response.json() == ERRORS["error_insufficient_credit"]


def test_user_current(client: httpx.Client) -> None:
    from emulator_wire import USER_KEYS

    for path in ("/api/v0/users/current", "/api/v0/users/current/"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 200
        assert set(response.json()) == USER_KEYS
        assert response.json()["credit"] == 100.0
