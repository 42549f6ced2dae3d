"""Templates (reference section 9) over real HTTP: search, the account's own templates, edits that
change the hash but not the id, and creates that start from a template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop.emulator import EmulatorThread

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/vastai/templates_search.json"
PYTORCH_HASH = "661d064bbda1f2a133816b6d55da07c3"


def search(client: httpx.Client, filters: Any = None, **params: Any) -> Any:
    query = {"select_cols": json.dumps(["*"]), "select_filters": json.dumps(filters or {})}
    query.update({k: json.dumps(v) for k, v in params.items()})
    response = client.get("/api/v0/template/", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def create_template(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": "mine", "image": "pytorch/pytorch", "tag": "2.5.1-cuda12.4", **fields}
    response = client.post("/api/v0/template/", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def offer(client: httpx.Client, **query: Any) -> dict[str, Any]:
    q = {"rentable": {"eq": True}, "order": [["dph_total", "asc"]], "limit": 1, **query}
    offers: list[dict[str, Any]] = client.post("/api/v0/bundles/", json=q).json()["offers"]
    assert offers, q
    return offers[0]


def test_search_answers_the_fixture_shape_with_a_realistic_catalogue(
    client: httpx.Client,
) -> None:
    answer = search(client)
    assert answer["success"] is True and answer["templates_found"] == len(answer["templates"])
    rows = answer["templates"]
    fixture = json.loads(FIXTURE.read_text())["templates"]
    assert all(set(row) == set(fixture[0]) for row in rows)
    by_image = {row["image"]: row for row in rows}
    for image in ("vastai/pytorch", "ostris/aitoolkit", "vastai/comfy", "vllm/vllm-openai"):
        assert image in by_image
    assert "nvidia/cuda" in by_image and "devel" in by_image["nvidia/cuda"]["tag"]
    assert any("kohya" in row["image"] for row in rows)
    assert by_image["vastai/pytorch"] == fixture[0]  # the fixture's template, field for field
    toolkit = by_image["ostris/aitoolkit"]
    assert toolkit["recommended_disk_space"] >= 60
    assert toolkit["extra_filters"]["gpu_ram"] == {"gte": 24000}
    assert "LoRA" in toolkit["name"] and toolkit["runtype"] == "ssh"
    assert all(not row["private"] for row in rows)  # another user's private one never shows
    counts = [row["count_created"] for row in rows]
    assert counts == sorted(counts, reverse=True)  # most used first by default


def test_filters_order_and_columns(client: httpx.Client) -> None:
    hits = search(client, {"image": {"eq": "ostris/aitoolkit"}})["templates"]
    assert [row["image"] for row in hits] == ["ostris/aitoolkit"]
    roomy = search(client, {"recommended_disk_space": {"gte": "60"}})["templates"]
    assert roomy and all(row["recommended_disk_space"] >= 60 for row in roomy)
    picked = search(client, {"image": {"in": ["vastai/comfy", "vastai/pytorch"]}})["templates"]
    assert {row["image"] for row in picked} == {"vastai/comfy", "vastai/pytorch"}
    ordered = search(client, order_by=[{"col": "name", "dir": "asc"}])["templates"]
    assert [r["name"] for r in ordered] == sorted(r["name"] for r in ordered)
    cols = search(client, {"hash_id": {"eq": PYTORCH_HASH}}, select_cols=["name"])
    assert cols["templates"] == [{"id": 297196, "name": "PyTorch (Vast)"}]
    assert search(client, {"name": {"eq": "nothing like this"}}) == {
        "success": False,
        "msg": "No templates found",
    }
    bad = client.get(
        "/api/v0/template/", params={"select_filters": json.dumps({"bogus": {"eq": 1}})}
    )
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "invalid_request",
        "msg": "Invalid query: bogus is not a valid search key",
    }


def test_private_templates_are_the_callers_only(client: httpx.Client, anon: httpx.Client) -> None:
    made = create_template(client, name="secret recipe", private=True)
    assert made["success"] is True
    template = made["template"]
    assert made["msg"] == f"Template Created Successfully! New Template ID: {template['id']}"
    assert set(template) == {"name", "id", "hash_id"} and len(template["hash_id"]) == 32
    mine = search(client, {"private": {"eq": True}})["templates"]
    assert [row["name"] for row in mine] == ["secret recipe"]
    assert mine[0]["creator_id"] == client.get("/api/v0/users/current").json()["id"]
    public = search(anon)["templates"]
    assert public and "secret recipe" not in [row["name"] for row in public]
    narrow = search(anon, select_cols=["name"])["templates"]  # without the `private` column too
    assert "secret recipe" not in [row["name"] for row in narrow]


def test_edit_changes_the_hash_not_the_id_and_delete_removes_it(client: httpx.Client) -> None:
    made = create_template(client, env="-e A=1", extra_filters={"gpu_ram": {"gte": 24000}})
    old = made["template"]
    edited = client.put(
        "/api/v1/template/",
        json={
            "id": old["id"],
            "hash_id": old["hash_id"],
            "name": "renamed",
            "image": "pytorch/pytorch",
        },
    )
    assert edited.status_code == 200, edited.text
    new = edited.json()["template"]
    assert edited.json()["success"] is True
    assert new["id"] == old["id"] and new["hash_id"] != old["hash_id"] and new["name"] == "renamed"
    assert new["env"] == "-e A=1"  # fields not sent are kept
    again = client.put("/api/v0/template/", json={"hash_id": new["hash_id"], "tag": "latest"})
    assert again.status_code == 200 and again.json()["template"]["id"] == old["id"]
    # somebody else's template cannot be edited or deleted
    assert client.put("/api/v1/template/", json={"id": 297196, "name": "x"}).status_code == 403
    assert (
        client.request("DELETE", "/api/v0/template/", json={"template_id": 297196}).status_code
        == 403
    )

    gone = client.request(
        "DELETE", "/api/v0/template/", json={"hash_id": again.json()["template"]["hash_id"]}
    )
    assert gone.json() == {"success": True, "msg": f"Template {old['id']} Deleted Successfully"}
    assert search(client, {"id": {"eq": old["id"]}})["success"] is False
    missing = client.request("DELETE", "/api/v0/template/", json={"template_id": old["id"]})
    assert missing.status_code == 404 and missing.json()["success"] is False


def test_bad_template_bodies_are_invalid_args(client: httpx.Client) -> None:
    for body in (
        {"name": "no image"},
        {"image": "x", "extra_filters": {"nonsense_field": {"eq": 1}}},
        {"image": "x", "env": "-e"},
        {"image": "x", "recommended_disk_space": "lots"},
    ):
        response = client.post("/api/v0/template/", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_args"


def test_create_from_a_template_applies_it_and_the_request_overrides(
    client: httpx.Client,
) -> None:
    tpl = create_template(
        client,
        env="-e A=1 -e B=2 -p 8080:8080",
        onstart="echo from-template",
        runtype="jupyter",
        recommended_disk_space=24,
        extra_filters={"gpu_ram": {"gte": 20000}},
    )["template"]
    target = offer(client, gpu_ram={"gte": 24000}, disk_space={"gte": 40})
    created = client.put(
        f"/api/v0/asks/{target['id']}/",
        json={
            "client_id": "me",
            "image": None,
            "template_hash_id": tpl["hash_id"],
            "env": {"B": "3", "C": "4"},
        },
    )
    assert created.status_code == 200, created.text
    row = client.get(f"/api/v0/instances/{created.json()['new_contract']}/").json()["instances"]
    assert row["image_uuid"] == "pytorch/pytorch:2.5.1-cuda12.4"
    assert row["extra_env"] == [["A", "1"], ["B", "3"], ["-p 8080:8080", "1"], ["C", "4"]]
    assert row["onstart"] == "echo from-template" and row["image_runtype"] == "jupyter"
    assert row["disk_space"] == 24.0
    assert (row["template_id"], row["template_hash_id"], row["template_name"]) == (
        tpl["id"],
        tpl["hash_id"],
        "mine",
    )
    used = search(client, {"id": {"eq": tpl["id"]}})["templates"][0]
    assert used["count_created"] == 1 and used["recent_create_date"] is not None

    # by id, with the request's own scalars winning
    other = offer(client, gpu_ram={"gte": 24000}, id={"neq": target["id"]})
    by_id = client.put(
        f"/api/v0/asks/{other['id']}/",
        json={"template_id": tpl["id"], "image": "ubuntu:22.04", "disk": 12, "onstart": "true"},
    )
    row = client.get(f"/api/v0/instances/{by_id.json()['new_contract']}/").json()["instances"]
    assert (row["image_uuid"], row["disk_space"], row["onstart"]) == ("ubuntu:22.04", 12.0, "true")
    assert row["template_hash_id"] == tpl["hash_id"]


def test_the_old_hash_of_an_edited_template_still_creates(client: httpx.Client) -> None:
    old = create_template(client, name="v1")["template"]
    client.put("/api/v1/template/", json={"id": old["id"], "name": "v2", "tag": "2.6.0"})
    created = client.put(
        f"/api/v0/asks/{offer(client)['id']}/", json={"template_hash_id": old["hash_id"]}
    )
    assert created.status_code == 200
    row = client.get(f"/api/v0/instances/{created.json()['new_contract']}/").json()["instances"]
    assert (row["template_name"], row["image_uuid"]) == ("v1", "pytorch/pytorch:2.5.1-cuda12.4")


def test_template_errors_on_create(client: httpx.Client) -> None:
    target = offer(client, gpu_ram={"lt": 17000})
    unknown = client.put(f"/api/v0/asks/{target['id']}/", json={"template_hash_id": "0" * 32})
    assert unknown.status_code == 400
    assert unknown.json() == {
        "success": False,
        "error": "invalid_args",
        "msg": f"No template found with hash_id {'0' * 32}.",
        "ask_id": target["id"],
    }
    toolkit = search(client, {"image": {"eq": "ostris/aitoolkit"}})["templates"][0]
    small = client.put(
        f"/api/v0/asks/{target['id']}/", json={"template_hash_id": toolkit["hash_id"]}
    )
    assert small.status_code == 400 and small.json()["error"] == "invalid_args"
    assert "gpu_ram >= 24000" in small.json()["msg"]
    # the refused offer is still for rent
    assert client.post("/api/v0/bundles/", json={"id": {"eq": target["id"]}}).json()["offers"]


def test_template_search_is_rate_limited(make_emulator: Any) -> None:
    emu: EmulatorThread = make_emulator(offers=20, ssh=False)
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.url, headers=headers, timeout=10) as client:
        statuses = [client.get("/api/v0/template/").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = client.get("/api/v0/template/")
        assert limited.json() == {"detail": "API requests too frequent endpoint threshold=1.9"}
        assert client.post("/api/v0/template/", json={"image": "x"}).status_code == 200


@pytest.mark.parametrize("path", ["/api/v0/template", "/api/v0/template/"])
def test_both_slash_forms(client: httpx.Client, path: str) -> None:
    assert client.get(path).json()["success"] is True
