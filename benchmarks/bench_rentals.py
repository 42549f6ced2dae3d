"""Rental benchmarks (issue: rentals, section 10).

1. Readiness latency: from the moment the instance's SSH server answers (seen by an independent
   observer probing the port every 10 ms) to `up` returning a ready rental (which includes the
   host check over SSH). Real rate limits on; 429s counted.
2. 20 concurrent `gpushop up` processes under the real rate limits: every one must succeed (no
   429 reaches a user); total time against the floor the create limit imposes (one create per
   4.5 s per key after a burst of 2). The processes do not share a limiter: each paces itself
   with its own token buckets and absorbs the others' 429s with backoff (a 429 proves nothing
   was done, so it is retried within a time budget); the cost is the extra 429 answers.
3. `reconcile` over 5,000 listed instances: its own work (planning and store reads, listing
   excluded) and the API calls it makes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from gpushop.config import load_settings
from gpushop.emulator.config import EmulatorConfig
from gpushop.emulator.server import EmulatorThread
from gpushop.fleet import labels
from gpushop.fleet.provision import UpOptions
from gpushop.fleet.reconcile import reconcile
from gpushop.fleet.reconcile_plan import plan
from gpushop.models import OfferQuery, RentalState
from gpushop.providers.http import RetryPolicy
from gpushop.providers.vastai import VastAIProvider
from gpushop.shop import Shop
from gpushop.store import Store


def _env(emu: EmulatorThread, home: Path) -> dict[str, str]:
    return {
        "VASTAI_URL": emu.url,
        "VASTAI_API_KEY": emu.api_key,
        "GPUSHOP_CACHE_DIR": str(home / "cache"),
        "GPUSHOP_DATA_DIR": str(home / "data"),
        "GPUSHOP_DB_URL": f"sqlite:///{home / 'store.db'}",
    }


def _banner_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.settimeout(0.2)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _observe(
    emu: EmulatorThread, before: set[int], seen: dict[str, float], stop: threading.Event
) -> None:
    """Note when the new instance's SSH server first answers, independently of `up`."""
    while not stop.is_set() and "ssh_up" not in seen:
        for inst in emu.control.state()["instances"]:
            if inst["id"] in before:
                continue
            port = emu.control.instance(inst["id"])["ssh_port"]
            while not stop.is_set() and not _banner_up(port):
                time.sleep(0.01)
            seen.setdefault("ssh_up", time.perf_counter())
            return
        time.sleep(0.01)


def readiness(runs: int = 8) -> dict[str, Any]:
    latencies: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmulatorThread(EmulatorConfig(offers=600, seed=5, rate_limit=True, speed=20)) as emu,
    ):
        os.environ.update(_env(emu, Path(tmp)))
        for _ in range(runs):
            before = {i["id"] for i in emu.control.state()["instances"]}
            seen: dict[str, float] = {}
            stop = threading.Event()
            watcher = threading.Thread(target=_observe, args=(emu, before, seen, stop), daemon=True)
            watcher.start()

            async def go() -> Any:
                async with Shop(load_settings()) as shop:
                    opts = UpOptions(query=OfferQuery(min_vram_gb=24), max_attempts=1)
                    rental = await shop.provisioner().up(opts)
                    done = time.perf_counter()
                    from gpushop.fleet.release import release_rental

                    await release_rental(shop.store, shop.provider("vastai"), rental, "bench")
                    return done

            done = asyncio.run(go())
            stop.set()
            watcher.join()
            latencies.append(done - seen["ssh_up"])
        too_many = [r["endpoint"] for r in emu.control.requests() if r["status"] == 429]
    latencies.sort()
    return {
        "runs": runs,
        "p50_s": statistics.median(latencies),
        "p90_s": latencies[int(0.9 * (len(latencies) - 1))],
        "max_s": latencies[-1],
        "429s": len(too_many),
        "429_endpoints": sorted(set(too_many)),
    }


def concurrent_ups(n: int = 20) -> dict[str, Any]:
    create_interval, burst = 4.5, 2
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmulatorThread(EmulatorConfig(offers=600, seed=6, rate_limit=True, speed=50)) as emu,
    ):
        env = {**os.environ, **_env(emu, Path(tmp))}
        cmd = [
            sys.executable,
            "-m",
            "gpushop",
            "up",
            "--min-vram",
            "16",
            "--json",
            "--ready-timeout",
            "5m",
            "--attempts",
            "5",
        ]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(n)
        ]
        results = [p.communicate(timeout=900) for p in procs]
        total = time.perf_counter() - started
        failed = [
            err.strip().splitlines()[-1]
            for p, (_, err) in zip(procs, results, strict=True)
            if p.returncode != 0
        ]
        requests = emu.control.requests()
        counts = emu.control.state()["request_counts"]
        ready = len(emu.control.state()["instances"])
    floor = (n - burst) * create_interval
    return {
        "processes": n,
        "succeeded": n - len(failed),
        "failed": failed[:3],
        "instances": ready,
        "total_s": total,
        "floor_s": floor,
        "ratio": total / floor,
        "429s_absorbed_in_log_tail": sum(1 for r in requests if r["status"] == 429),
        "api_calls": sum(counts.values()),
    }


def reconcile_5000(instances: int = 5000) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmulatorThread(
            EmulatorConfig(offers=min(20000, instances * 3), seed=7, rate_limit=False, ssh=False)
        ) as emu,
    ):
        store = Store.open(f"sqlite:///{Path(tmp) / 'store.db'}")
        dep = store.deployment_id
        offers = httpx.post(
            f"{emu.url}/api/v0/bundles/", json={"limit": instances * 3}, timeout=120
        ).json()["offers"]
        auth = {"Authorization": f"Bearer {emu.api_key}"}
        ours = int(instances * 0.8)
        made = 0
        with httpx.Client(base_url=emu.url, headers=auth, timeout=60) as http:
            for offer in offers:
                if made == instances:
                    break
                r = http.put(f"/api/v0/asks/{offer['id']}/", json={"image": "x"}).json()
                if "new_contract" not in r:
                    continue  # a sibling offer on a machine already rented
                iid = str(r["new_contract"])
                if made < ours:
                    rental = store.new_rental(
                        provider="vastai", max_duration_s=86400, owner_host="bench", owner_pid=1
                    )
                    label = rental.label
                    for state in (
                        RentalState.CREATING,
                        RentalState.PROVISIONING,
                        RentalState.READY,
                    ):
                        store.transition(rental.id, state, "bench", instance_id=iid)
                elif made < ours + instances // 10:
                    label = f"{labels.deployment_prefix(dep)}r{made:010d}"  # orphans
                else:
                    label = f"someone-else-{made}"
                http.put(f"/api/v0/instances/{iid}/", json={"label": label})
                made += 1
        provider = VastAIProvider(
            url=emu.url, api_key=emu.api_key, retry=RetryPolicy(attempts=1), rate_limit=False
        )

        async def go() -> dict[str, Any]:
            from datetime import UTC, datetime

            t0 = time.perf_counter()
            listed = await provider.list_instances(label_prefix=labels.deployment_prefix(dep))
            t_list = time.perf_counter() - t0
            t1 = time.perf_counter()
            rentals = store.list(provider="vastai")
            actions = plan(
                deployment_id=dep,
                rentals=rentals,
                instances=listed,
                now=datetime.now(UTC),
                owner_alive=lambda r: False,
            )
            t_own = time.perf_counter() - t1
            calls_before = sum(emu.control.state()["request_counts"].values())
            report = await reconcile(store, {"vastai": provider}, dry_run=True)
            calls = sum(emu.control.state()["request_counts"].values()) - calls_before
            await provider.aclose()
            return {
                "instances": made,
                "listed": len(listed),
                "actions": len(actions),
                "own_work_ms": t_own * 1e3,
                "listing_s": t_list,
                "dry_run_api_calls": calls,
                "dry_run_actions": len(report.actions),
            }

        out = asyncio.run(go())
        store.close()
        return out


def main() -> None:
    r = readiness()
    print("== readiness latency: SSH answering -> `up` returns (host check included)")
    print(
        f"   p50 {r['p50_s'] * 1e3:.0f} ms, p90 {r['p90_s'] * 1e3:.0f} ms, max "
        f"{r['max_s'] * 1e3:.0f} ms over {r['runs']} rentals (goal p50 < 1 s);"
        f" 429s: {r['429s']}"
    )
    c = reconcile_5000()
    print("== reconcile over 5,000 listed instances")
    print(
        f"   {c['listed']} of ours listed in {c['listing_s']:.1f} s (paged 25 at a time); "
        f"own work {c['own_work_ms']:.0f} ms; a dry run costs {c['dry_run_api_calls']} API"
        f" calls and plans {c['dry_run_actions']} actions"
    )
    u = concurrent_ups()
    print("== 20 concurrent `gpushop up` processes, real rate limits")
    print(
        f"   {u['succeeded']}/{u['processes']} ready ({u['instances']} instances), "
        f"{u['total_s']:.0f} s; floor {u['floor_s']:.0f} s (one create per 4.5 s after a "
        f"burst of 2): {u['ratio']:.2f}x; 429s absorbed by backoff: "
        f"{u['429s_absorbed_in_log_tail']} (of {u['api_calls']} calls)"
    )
    if u["failed"]:
        print(f"   failures: {u['failed']}")


if __name__ == "__main__":
    main()
