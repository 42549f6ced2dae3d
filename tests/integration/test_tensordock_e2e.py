"""Everything on TensorDock, as on Vast.ai: one market across both, rentals, reconcile, jobs and
the flux-lora recipe, end to end against the emulator's TensorDock v2 (VMs from OS images: the
recipe's image runs under docker on the VM)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from cli_run import cli
from gpushop.recipes.safetensors import verify_lora
from gpushop.recipes.sample_data import write_sample_dataset

TOKEN = "hf_" + "td" * 16


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("TENSORDOCK_URL", emulator.tensordock_url)
    monkeypatch.setenv("TENSORDOCK_API_TOKEN", emulator.tensordock_token)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUSHOP_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)
    return emulator


def live_vms(emu: Any) -> list[dict[str, Any]]:
    return [v for v in emu.control.tensordock_state()["vms"] if v.get("status") != "deleted"]


def test_one_market_across_both_providers(env: Any, capsys: Any) -> None:
    code, out, err = cli(capsys, "offers", "--min-vram", "24", "--limit", "200", "--json")
    assert code == 0, err
    providers = {o["provider"] for o in json.loads(out)}
    assert providers == {"vastai", "tensordock"}
    # the same model under both names, filtered alike
    code, out, _ = cli(
        capsys, "offers", "--gpu", "4090", "--num-gpus", "1", "--limit", "200", "--json"
    )
    found = json.loads(out)
    assert {o["provider"] for o in found} == {"vastai", "tensordock"}
    assert {o["gpu_name"] for o in found} == {"RTX 4090"}
    assert all(abs(o["gpu_ram_gb"] - found[0]["gpu_ram_gb"]) < 1.0 for o in found)
    code, out, _ = cli(capsys, "offers", "--provider", "tensordock", "--json", "-n", "50")
    assert {o["provider"] for o in json.loads(out)} == {"tensordock"}
    assert all(o["id"].startswith("tensordock:") for o in json.loads(out))


def test_a_failing_provider_leaves_the_others_and_a_warning(env: Any, capsys: Any) -> None:
    env.control.fault("GET /tensordock/api/v2/hostnodes", kind="status", status=503, count=50)
    code, out, err = cli(capsys, "offers", "--min-vram", "24", "--json")
    assert code == 0
    assert {o["provider"] for o in json.loads(out)} == {"vastai"}
    assert "TensorDock" in err


def test_rent_ssh_stop_start_down_on_tensordock(env: Any, capsys: Any) -> None:
    code, out, err = cli(
        capsys,
        "up",
        "--provider",
        "tensordock",
        "--min-vram",
        "24",
        "--ready-timeout",
        "60s",
        "--json",
    )
    assert code == 0, err
    rental = json.loads(out)
    assert rental["provider"] == "tensordock" and rental["ssh_user"] == "user"
    [vm] = live_vms(env)
    assert vm["name"] == rental["label"]  # the label is the VM's name
    code, out, _ = cli(capsys, "ssh", rental["rental_id"], "--", "whoami")
    assert code == 0 and out.strip() == "user"
    code, _, err = cli(capsys, "stop", rental["rental_id"])
    assert code == 0 and "GPU released" in err
    assert (
        env.control.tensordock_vm(vm["id"])["billing"]["current_rate"]
        < vm["billing"]["rate_hourly"]
    )
    code, _, err = cli(capsys, "down", rental["rental_id"])
    assert code == 0, err
    assert live_vms(env) == []


def test_reconcile_destroys_a_tensordock_orphan_and_leaves_foreign_vms(
    env: Any, capsys: Any
) -> None:
    from gpushop.config import load_settings
    from gpushop.models import CreateRequest, OfferQuery
    from gpushop.shop import Shop
    from gpushop.store import Store

    with Store.open(os.environ["GPUSHOP_DB_URL"]) as store:
        deployment = store.deployment_id

    async def make_two() -> None:
        async with Shop(load_settings(), provider="tensordock") as shop:
            td = shop.provider("tensordock")
            await td.ensure_ssh_key(shop.keypair().public_key)
            offers = await td.search_offers(OfferQuery(min_reliability=None), pool=5)
            for label in (f"gpushop-{deployment}-rzzzzzzzzzz", "someone-elses-vm"):
                await td.create_instance(
                    CreateRequest(offer_id=offers[0].offer_id, label=label, disk_gb=100)
                )

    asyncio.run(make_two())
    assert len(live_vms(env)) == 2
    code, _, err = cli(capsys, "reconcile", "--json")
    assert code == 0, err
    left = live_vms(env)
    assert [v["name"] for v in left] == ["someone-elses-vm"]


def test_a_job_runs_on_a_tensordock_vm(env: Any, capsys: Any, tmp_path: Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "x.txt").write_text("hello\n")
    code, out, err = cli(
        capsys,
        "run",
        "--provider",
        "tensordock",
        "--min-vram",
        "24",
        "--upload",
        f"{data}:/workspace/in",
        "--cmd",
        "mkdir -p out && tr a-z A-Z < in/x.txt > out/x.txt && whoami",
        "--download",
        f"/workspace/out:{tmp_path / 'out'}",
    )
    assert code == 0, err
    assert (tmp_path / "out" / "x.txt").read_text() == "HELLO\n"
    assert "user" in out
    assert live_vms(env) == []


def test_flux_lora_on_tensordock_runs_the_image_under_docker(
    env: Any, capsys: Any, tmp_path: Path
) -> None:
    data = write_sample_dataset(tmp_path / "ds", count=3)
    out_dir = tmp_path / "lora"
    code, out, err = cli(
        capsys,
        "train",
        "flux-lora",
        "--provider",
        "tensordock",
        "--dataset",
        str(data),
        "--name",
        "td_lora",
        "--steps",
        "100",
        "--save-every",
        "50",
        "--out",
        str(out_dir),
        "--yes",
    )
    assert code == 0, err
    assert re.search(r"offer\s+tensordock:", out)
    verify_lora(out_dir / "td_lora.safetensors", rank=16)
    assert live_vms(env) == []
    for request in env.control.requests():
        assert TOKEN not in json.dumps(request)
