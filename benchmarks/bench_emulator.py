"""Emulator search throughput over 20,000 offers, against a trivial endpoint as the baseline.

The typical query (what `gpushop offers` and the official CLI send): gpu_ram >= 24000,
reliability > 0.98, verified, rentable, order dph_total asc, limit 64 — over POST /bundles/ with
keep-alive clients, ~3 s per measurement (bounded by time and count). The server runs in a thread
of this process (EmulatorThread), so clients and server share one GIL: the figures are a floor.

Run: .venv/bin/python benchmarks/bench_emulator.py
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from gpushop.emulator import EmulatorConfig, EmulatorThread

DURATION_S = 3.0
MAX_REQUESTS = 20_000
TYPICAL_QUERY: dict[str, Any] = {
    "gpu_ram": {"gte": 24000},
    "reliability": {"gt": 0.98},
    "verified": {"eq": True},
    "rentable": {"eq": True},
    "order": [["dph_total", "asc"]],
    "limit": 64,
}

Call = Callable[[httpx.Client, int], httpx.Response]


def _measure(url: str, call: Call, clients: int) -> dict[str, float]:
    """Requests/s of `call` from `clients` threads, each with its own keep-alive client."""
    done = [0] * clients
    errors = [0] * clients
    deadline = time.perf_counter() + DURATION_S
    per_client = MAX_REQUESTS // clients

    def worker(slot: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            n = 0
            while n < per_client and time.perf_counter() < deadline:
                if call(client, n).status_code != 200:
                    errors[slot] += 1
                n += 1
            done[slot] = n

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    total = sum(done)
    return {
        "requests": total,
        "errors": sum(errors),
        "seconds": round(elapsed, 3),
        "rps": round(total / elapsed, 1),
        "ms_per_request": round(1000 * elapsed / total * clients, 3) if total else 0.0,
    }


def _search(client: httpx.Client, n: int) -> httpx.Response:
    return client.post("/api/v0/bundles/", json=TYPICAL_QUERY)


def _search_distinct(client: httpx.Client, n: int) -> httpx.Response:
    # A different reliability threshold each time: defeats the per-condition mask cache.
    query = {**TYPICAL_QUERY, "reliability": {"gt": 0.9 + (n % 997) / 10_000}}
    return client.post("/api/v0/bundles/", json=query)


def _gpu_names(client: httpx.Client, n: int) -> httpx.Response:
    return client.get("/api/v0/gpu_names/unique/")


def run() -> dict[str, Any]:
    started = time.perf_counter()
    with EmulatorThread(EmulatorConfig(offers=20_000, rate_limit=False)) as emu:
        startup_s = time.perf_counter() - started
        with httpx.Client(base_url=emu.url, timeout=30) as client:
            t0 = time.perf_counter()
            first = client.post("/api/v0/bundles/", json=TYPICAL_QUERY)
            first_ms = (time.perf_counter() - t0) * 1000
            hits = len(first.json()["offers"])
            body_kb = len(first.content) / 1024
        results: dict[str, Any] = {
            "offers": 20_000,
            "startup_s": round(startup_s, 2),
            "first_search_ms": round(first_ms, 1),
            "hits": hits,
            "response_kb": round(body_kb, 1),
            "gpu_names_1": _measure(emu.url, _gpu_names, 1),
            "search_1": _measure(emu.url, _search, 1),
            "search_4": _measure(emu.url, _search, 4),
            "search_distinct_1": _measure(emu.url, _search_distinct, 1),
        }
    results["search_vs_baseline"] = round(
        results["search_1"]["rps"] / results["gpu_names_1"]["rps"], 3
    )
    return results


def main() -> None:
    r = run()
    print(f"   emulator start with 20,000 offers: {r['startup_s']:.2f} s")
    print(
        f"   first search (builds caches): {r['first_search_ms']:.1f} ms, "
        f"{r['hits']} offers, {r['response_kb']:.0f} KB"
    )
    rows = [
        ("baseline GET /gpu_names/unique/, 1 client", r["gpu_names_1"]),
        ("POST /bundles/ typical query, 1 client", r["search_1"]),
        ("POST /bundles/ typical query, 4 clients", r["search_4"]),
        ("POST /bundles/ distinct queries, 1 client", r["search_distinct_1"]),
    ]
    for label, m in rows:
        print(
            f"   {label:45s} {m['rps']:8.1f} req/s  ({m['requests']} requests, "
            f"{m['errors']} errors)"
        )
    print(f"   search / baseline throughput: {r['search_vs_baseline']:.2f}x")


if __name__ == "__main__":
    main()
