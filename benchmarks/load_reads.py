"""Open-loop load (run as its own process): GET requests at a fixed rate for a while, each
sent on its schedule whatever the earlier ones did; prints the latencies' summary as JSON.

    python benchmarks/load_reads.py BASE_URL TOKEN RATE SECONDS PATH [PATH ...]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import httpx


async def main(base: str, token: str, rate: float, seconds: float, paths: list[str]) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=10) as c:

        async def one(path: str) -> None:
            started = time.perf_counter()
            try:
                answer = await c.get(path)
                if answer.status_code != 200:
                    errors[str(answer.status_code)] = errors.get(str(answer.status_code), 0) + 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            latencies.append(time.perf_counter() - started)

        tasks = []
        total = int(rate * seconds)
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(paths[i % len(paths)])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "rate": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "errors": errors,
    }


if __name__ == "__main__":
    base, token, rate, seconds, *paths = sys.argv[1:]
    print(json.dumps(asyncio.run(main(base, token, float(rate), float(seconds), paths))))
