"""Client benchmarks.

1. In-process: parse, normalise and rank 20,000 offers (baseline: ``json.loads`` of the same
   bytes, the least any client must do).
2. Whole process: ``gpushop offers --json`` against ``vastai search offers --raw`` (the official
   CLI 1.9.1) on the same emulator with the same query; median of N runs each; gpushop with its
   market cache cold and warm.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from gpushop.emulator.config import EmulatorConfig
from gpushop.emulator.server import EmulatorThread
from gpushop.market import ranking, stats
from gpushop.models import OfferQuery, SortKey
from gpushop.providers.vastai.mapping import offer_from_vast

ROOT = Path(__file__).resolve().parent.parent


def _best_of(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_rank(emu_url: str, repeat: int = 5) -> dict[str, float]:
    body = {
        "rentable": {"eq": True},
        "limit": 20000,
        "order": [["score", "desc"]],
        "allocated_storage": 32,
    }
    payload = httpx.post(f"{emu_url}/api/v0/bundles/", json=body, timeout=120).content
    n = len(json.loads(payload)["offers"])
    query = OfferQuery(min_vram_gb=24, min_reliability=0.98, verified=False)

    def pipeline() -> None:
        import orjson

        raw = orjson.loads(payload)["offers"]
        offers = [offer_from_vast(o, disk_gb=32, interruptible=False) for o in raw]
        med = stats.medians(offers)
        kept = [o for o in offers if ranking.mismatch(o, query) is None]
        for o in kept:
            o.market_median_per_gpu = med.get(o.gpu_name)
        ranking.rank(kept, SortKey.VALUE)

    baseline = _best_of(lambda: json.loads(payload), repeat)
    ours = _best_of(pipeline, repeat)
    return {
        "offers": n,
        "payload_mb": len(payload) / 1e6,
        "json_loads_ms": baseline * 1e3,
        "parse_normalise_rank_ms": ours * 1e3,
        "ratio": ours / baseline,
    }


def _median_wall(cmd: list[str], env: dict[str, str], runs: int, before: Any = None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0 or (
            b"error" in proc.stderr.lower() and b"warning" not in proc.stderr.lower()
        ):
            raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.decode()[:300]}")
    return statistics.median(times)


def bench_cli(emu: EmulatorThread, runs: int = 7) -> dict[str, float]:
    vastai = os.environ.get("VASTAI_CLI") or str(ROOT / ".venv-vastai" / "bin" / "vastai")
    gpushop = str(Path(sys.executable).parent / "gpushop")
    tmp = Path(tempfile.mkdtemp(prefix="gpushop-bench-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST", "GPUSHOP_"))}
    base_env.update(
        {
            "HOME": str(tmp / "home"),
            "XDG_CONFIG_HOME": str(tmp / "cfg"),
            "XDG_CACHE_HOME": str(tmp / "xcache"),
        }
    )
    vast_env = {**base_env, "VAST_URL": emu.url, "VASTAI_NO_UPDATE_CHECK": "1"}
    cache = tmp / "cache"
    ours_env = {
        **base_env,
        "VASTAI_URL": emu.url,
        "VASTAI_API_KEY": emu.api_key,
        "GPUSHOP_CACHE_DIR": str(cache),
    }
    vast_cmd = [
        vastai,
        "--url",
        emu.url,
        "--api-key",
        emu.api_key,
        "search",
        "offers",
        "gpu_name=RTX_4090 num_gpus=1 gpu_ram>=24 reliability>=0.98 disk_space>=32",
        "-o",
        "dph+",
        "--limit",
        "10",
        "--storage",
        "32",
        "--raw",
    ]
    ours_cmd = [
        gpushop,
        "offers",
        "--gpu",
        "4090",
        "--num-gpus",
        "1",
        "--min-vram",
        "24",
        "--min-reliability",
        "0.98",
        "--disk",
        "32",
        "--sort",
        "price",
        "--limit",
        "10",
        "--json",
    ]
    # the official CLI caches gpu names for 24 h in HOME: warm it once, as a user's would be
    subprocess.run(vast_cmd, env=vast_env, capture_output=True, timeout=120)

    def fresh_buckets() -> None:
        # Runs back to back share the rate-limit buckets and would pace each other (by design:
        # the official CLI does not pace and meets 429s instead). Each run here starts as a
        # user's first command would, so the figure is the process's own cost.
        shutil.rmtree(cache / "ratelimit", ignore_errors=True)

    def clear_cache() -> None:
        fresh_buckets()
        for p in cache.glob("*"):
            if p.is_file():
                p.unlink()

    official = _median_wall(vast_cmd, vast_env, runs)
    cold = _median_wall(ours_cmd, ours_env, runs, before=clear_cache)
    subprocess.run(ours_cmd, env=ours_env, capture_output=True, timeout=120)
    warm = _median_wall(ours_cmd, ours_env, runs, before=fresh_buckets)
    return {
        "runs": runs,
        "vastai_s": official,
        "gpushop_cold_s": cold,
        "gpushop_warm_s": warm,
        "cold_ratio": cold / official,
        "warm_ratio": warm / official,
    }


def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with EmulatorThread(EmulatorConfig(offers=20000, seed=1, rate_limit=False)) as emu:
        out["rank_20k"] = bench_rank(emu.url)
    with EmulatorThread(EmulatorConfig(offers=600, seed=1, rate_limit=False)) as emu:
        out["cli"] = bench_cli(emu)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
