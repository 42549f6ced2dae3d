"""The official `vastai` CLI 1.9.1, unchanged, against the emulator (skipped when not installed)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from gpushop.emulator import EmulatorThread

pytestmark = pytest.mark.vastai_cli


def run(cli: str, emu: EmulatorThread, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,  # HOME/XDG already point at a per-test tmp dir (autouse fixture)
        "VAST_URL": emu.url,  # the CLI fetches gpu names from VAST_URL at import time
        "VASTAI_NO_UPDATE_CHECK": "1",
    }
    return subprocess.run(
        [cli, "--url", emu.url, "--api-key", emu.api_key, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def raw(cli: str, emu: EmulatorThread, *args: str) -> Any:
    result = run(cli, emu, *args, "--raw")
    assert "Failed with error" not in result.stderr, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_search_offers(vastai_cli: str, emulator: EmulatorThread) -> None:
    query = "gpu_ram>=24 num_gpus=1 reliability>0.95 geolocation in [US,CA] duration>7"
    offers = raw(vastai_cli, emulator, "search", "offers", query, "-o", "dph+", "--limit", "5")
    assert 0 < len(offers) <= 5
    prices = [o["dph_total"] for o in offers]
    assert prices == sorted(prices)
    table = run(vastai_cli, emulator, "search", "offers", "gpu_name=RTX_4090", "--limit", "3")
    assert "invalid return Content-Type" not in table.stdout + table.stderr
    assert "RTX_4090" in table.stdout
    bids = raw(vastai_cli, emulator, "search", "offers", "-b", "--limit", "3")
    assert all(o["is_bid"] for o in bids)
    new = raw(vastai_cli, emulator, "search", "offers", "--new", "num_gpus=2", "--limit", "3")
    assert new and all(o["num_gpus"] == 2 for o in new)


@pytest.mark.slow
def test_instance_lifecycle(vastai_cli: str, emulator: EmulatorThread) -> None:
    offer = raw(vastai_cli, emulator, "search", "offers", "-o", "dph+", "--limit", "1")[0]
    created = raw(
        vastai_cli,
        emulator,
        "create",
        "instance",
        str(offer["id"]),
        "--image",
        "pytorch/pytorch:latest",
        "--disk",
        "20",
        "--label",
        "gpushop-cli",
        "--env",
        "-e A=1 -p 8080:8080",
    )
    assert created["success"] is True
    instance_id = str(created["new_contract"])
    shown = raw(vastai_cli, emulator, "show", "instance", instance_id)
    assert shown["label"] == "gpushop-cli" and shown["extra_env"]["A"] == "1"
    listed = raw(vastai_cli, emulator, "show", "instances")
    assert [i["id"] for i in listed] == [int(instance_id)]
    table = run(vastai_cli, emulator, "show", "instances")
    assert table.returncode == 0 and "Traceback" not in table.stderr
    assert "stopping instance" in run(vastai_cli, emulator, "stop", "instance", instance_id).stdout
    assert "label for" in run(vastai_cli, emulator, "label", "instance", instance_id, "x").stdout
    run(vastai_cli, emulator, "destroy", "instance", instance_id, "-y")
    assert emulator.control.state()["instances"] == []
    gone = run(vastai_cli, emulator, "show", "instance", instance_id)
    assert "not found" in gone.stdout + gone.stderr


def test_user_and_ssh_keys(vastai_cli: str, emulator: EmulatorThread) -> None:
    user = raw(vastai_cli, emulator, "show", "user")
    assert user["credit"] == 100.0 and "api_key" not in user
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFake cli@test"
    run(vastai_cli, emulator, "create", "ssh-key", key)
    assert [k["public_key"] for k in raw(vastai_cli, emulator, "show", "ssh-keys")] == [key]


def test_errors_reach_the_cli(vastai_cli: str, emulator: EmulatorThread) -> None:
    emulator.control.fault("PUT /api/v0/asks/{id}/", "status", status=503, count=3)
    result = run(vastai_cli, emulator, "create", "instance", "1", "--image", "x")
    assert "Failed with error 503" in result.stderr
    assert emulator.control.request_count("PUT /api/v0/asks/{id}/") == 3  # the CLI retried
