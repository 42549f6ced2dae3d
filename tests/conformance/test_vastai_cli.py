"""The official `vastai` CLI 1.9.1, unchanged, against the emulator.

It lives in its own venv (.venv-vastai, made by `make vastai-cli`). The CLI exits 0 even on HTTP
errors, so these tests read its stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpushop.gpus import resolve
from gpushop.models import OfferQuery, SortKey
from gpushop.providers.http import RetryPolicy
from gpushop.providers.vastai import VastAIProvider

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.vastai_cli


def _cli_path() -> str:
    path = os.environ.get("VASTAI_CLI") or str(ROOT / ".venv-vastai" / "bin" / "vastai")
    if not Path(path).exists() and not shutil.which(path):
        if os.environ.get("CI"):
            pytest.fail(f"the official vastai CLI is missing at {path}: run `make vastai-cli`")
        pytest.skip("official vastai CLI not installed (make vastai-cli)")
    return path


@pytest.fixture
def vastai(emulator: Any, tmp_path: Path) -> Any:
    cli = _cli_path()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / ".config"),
        "XDG_CACHE_HOME": str(tmp_path / ".cache"),
        "VAST_URL": emulator.url,
        "VASTAI_NO_UPDATE_CHECK": "1",
    }

    def run(*args: str, key: str | None = emulator.api_key) -> subprocess.CompletedProcess[str]:
        cmd = [cli, "--url", emulator.url]
        if key is not None:
            cmd += ["--api-key", key]
        proc = subprocess.run(
            [*cmd, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def _gpushop(emulator: Any) -> VastAIProvider:
    return VastAIProvider(
        url=emulator.url, api_key=emulator.api_key, retry=RetryPolicy(attempts=1), rate_limit=False
    )


QUERIES = [
    (
        "gpu_name=RTX_4090 num_gpus=1 reliability>=0.98 disk_space>=32",
        OfferQuery(gpus=[resolve("RTX 4090")], num_gpus=1, min_reliability=0.98, disk_gb=32),
    ),
    (
        "gpu_ram>=24 reliability>=0.99 geolocation in [US,CA] cuda_vers>=12.4 dph<=2",
        OfferQuery(
            min_vram_gb=24,
            min_reliability=0.99,
            countries=["US", "CA"],
            min_cuda=12.4,
            max_price=2.0,
            disk_gb=32,
        ),
    ),
    (
        "gpu_name in [A100_SXM4,A100_PCIE] num_gpus>=1 reliability>=0.9",
        OfferQuery(
            gpus=[resolve("A100 SXM4"), resolve("A100 PCIE")], min_reliability=0.9, disk_gb=32
        ),
    ),
]


@pytest.mark.parametrize(("text", "query"), QUERIES, ids=["4090", "24gb-us-ca", "a100"])
async def test_search_offers_matches_gpushop(
    vastai: Any, emulator: Any, text: str, query: OfferQuery
) -> None:
    proc = vastai(
        "search", "offers", text, "-o", "dph+", "--limit", "15", "--storage", "32", "--raw"
    )
    official = json.loads(proc.stdout)
    assert official, proc.stderr
    p = _gpushop(emulator)
    ours = await p.search_offers(query, pool=15, sort=SortKey.PRICE)
    await p.aclose()
    assert [round(o.price_per_hour, 6) for o in ours] == [
        round(o["dph_total"], 6) for o in official
    ]
    assert {o.offer_id for o in ours} == {str(o["id"]) for o in official}


async def test_search_interruptible_prices(vastai: Any, emulator: Any) -> None:
    proc = vastai(
        "search",
        "offers",
        "gpu_name=RTX_3090",
        "-t",
        "bid",
        "-o",
        "dph+",
        "--limit",
        "5",
        "--storage",
        "32",
        "--raw",
    )
    official = json.loads(proc.stdout)
    p = _gpushop(emulator)
    ours = await p.search_offers(
        OfferQuery(gpus=[resolve("3090")], interruptible=True, min_reliability=None, disk_gb=32),
        pool=5,
        sort=SortKey.PRICE,
    )
    await p.aclose()
    assert [round(o.price_per_hour, 6) for o in ours] == [
        round(o["dph_total"], 6) for o in official
    ]


def test_show_user(vastai: Any) -> None:
    proc = vastai("show", "user", "--raw")
    user = json.loads(proc.stdout)
    assert "credit" in user and "api_key" not in user


def test_wrong_key_is_an_error_on_stderr(vastai: Any) -> None:
    proc = vastai("show", "instances", key="not-the-key")
    assert proc.returncode == 0  # the official CLI exits 0 on HTTP errors
    assert "Failed with error 401" in proc.stderr and "Invalid user key" in proc.stderr


@pytest.mark.slow
def test_instance_lifecycle_with_the_official_cli(vastai: Any, emulator: Any) -> None:
    offers = json.loads(vastai("search", "offers", "num_gpus=1", "-o", "dph+", "--raw").stdout)
    offer_id = offers[0]["id"]
    proc = vastai(
        "create",
        "instance",
        str(offer_id),
        "--image",
        "ostris/aitoolkit:latest",
        "--disk",
        "32",
        "--label",
        "gpushop-cli000-r1",
        "--ssh",
        "--direct",
        "--raw",
    )
    created = json.loads(proc.stdout)
    assert created["success"] is True
    iid = str(created["new_contract"])

    listed = json.loads(vastai("show", "instances", "--raw").stdout)
    assert [str(i["id"]) for i in listed] == [iid]
    assert listed[0]["label"] == "gpushop-cli000-r1"

    shown = json.loads(vastai("show", "instance", iid, "--raw").stdout)
    assert str(shown["id"]) == iid and shown["image_uuid"] == "ostris/aitoolkit:latest"

    assert f"label for {iid} set to renamed." in vastai("label", "instance", iid, "renamed").stdout
    assert json.loads(vastai("show", "instance", iid, "--raw").stdout)["label"] == "renamed"

    url = vastai("ssh-url", iid).stdout.strip()
    assert url.startswith("ssh://root@") and url.rsplit(":", 1)[1].isdigit()

    assert f"stopping instance {iid}." in vastai("stop", "instance", iid).stdout
    assert json.loads(vastai("show", "instance", iid, "--raw").stdout)["actual_status"] in (
        "exited",
        "stopped",
    )
    assert f"starting instance {iid}." in vastai("start", "instance", iid).stdout

    assert "destroying instance" in vastai("destroy", "instance", iid, "-y").stdout
    assert json.loads(vastai("show", "instances", "--raw").stdout) == []
    gone = vastai("show", "instance", iid)
    assert "not found" in (gone.stdout + gone.stderr).lower()


@pytest.mark.slow
def test_show_instances_pages_beyond_25(vastai: Any, emulator: Any) -> None:
    import httpx

    offers = json.loads(
        vastai("search", "offers", "num_gpus=1", "-o", "dph+", "--limit", "30", "--raw").stdout
    )
    auth = {"Authorization": f"Bearer {emulator.api_key}"}
    created = set()
    for offer in offers[:27]:  # made over plain HTTP: 27 CLI start-ups would be slow
        r = httpx.put(
            f"{emulator.url}/api/v0/asks/{offer['id']}/", json={"image": "img"}, headers=auth
        )
        created.add(r.json()["new_contract"])
    listed = json.loads(vastai("show", "instances", "--raw").stdout)
    assert {i["id"] for i in listed} == created and len(listed) == 27
