"""The official `vastai` CLI 1.9.1, unchanged, on the emulator's templates (skipped when it is not
installed locally; CI installs it)."""

from __future__ import annotations

import ast
import json
import os
import subprocess

import pytest

from gpushop.emulator import EmulatorThread

pytestmark = pytest.mark.vastai_cli


def run(cli: str, emu: EmulatorThread, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAST_URL": emu.url, "VASTAI_NO_UPDATE_CHECK": "1"}
    result = subprocess.run(
        [cli, "--url", emu.url, "--api-key", emu.api_key, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_search_templates(vastai_cli: str, emulator: EmulatorThread) -> None:
    every = json.loads(run(vastai_cli, emulator, "search", "templates").stdout)
    assert len(every) >= 6 and {"hash_id", "image", "extra_filters"} <= set(every[0])
    found = run(vastai_cli, emulator, "search", "templates", "image=ostris/aitoolkit")
    rows = json.loads(found.stdout)
    assert [r["image"] for r in rows] == ["ostris/aitoolkit"]
    roomy = json.loads(
        run(vastai_cli, emulator, "search", "templates", "recommended_disk_space>=60").stdout
    )
    assert roomy and all(r["recommended_disk_space"] >= 60 for r in roomy)


@pytest.mark.slow
def test_create_update_delete_and_rent_from_a_template(
    vastai_cli: str, emulator: EmulatorThread
) -> None:
    made = run(
        vastai_cli,
        emulator,
        "create",
        "template",
        "--name",
        "cli trainer",
        "--image",
        "ostris/aitoolkit",
        "--image_tag",
        "latest",
        "--env",
        "-e HF_HUB_ENABLE_HF_TRANSFER=1 -p 8675:8675",
        "--ssh",
        "--direct",
        "--search_params",
        "gpu_ram>=24 num_gpus=1",
        "--disk_space",
        "64",
    )
    assert made.stdout.startswith("New Template: "), made.stdout + made.stderr
    template = ast.literal_eval(made.stdout.removeprefix("New Template: ").strip())
    shown = json.loads(
        run(vastai_cli, emulator, "search", "templates", f"hash_id={template['hash_id']}").stdout
    )
    assert shown[0]["extra_filters"]["gpu_ram"] == {"gte": 24000.0}
    assert shown[0]["private"] is True and shown[0]["recommended_disk_space"] == 64.0

    updated = run(
        vastai_cli,
        emulator,
        "update",
        "template",
        template["hash_id"],
        "--name",
        "cli trainer v2",
        "--image",
        "ostris/aitoolkit",
        "--image_tag",
        "latest",
        "--ssh",
        "--disk_space",
        "80",
    )
    new = json.loads(updated.stdout.removeprefix("updated template: "))
    assert new["id"] == template["id"] and new["hash_id"] != template["hash_id"]

    offers = json.loads(
        run(vastai_cli, emulator, "search", "offers", "gpu_ram>=24 num_gpus=1", "--raw").stdout
    )
    created = run(
        vastai_cli,
        emulator,
        "create",
        "instance",
        str(offers[0]["id"]),
        "--template_hash",
        new["hash_id"],
        "--raw",
    )
    instance_id = json.loads(created.stdout)["new_contract"]
    row = json.loads(
        run(vastai_cli, emulator, "show", "instance", str(instance_id), "--raw").stdout
    )
    assert row["image_uuid"] == "ostris/aitoolkit:latest"
    assert row["template_name"] == "cli trainer v2" and row["disk_space"] == 10.0  # CLI's --disk

    deleted = run(vastai_cli, emulator, "delete", "template", "--template-id", str(new["id"]))
    assert deleted.stdout.strip() == f"Template {new['id']} Deleted Successfully"
