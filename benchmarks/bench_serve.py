"""`gpushop serve` under read load (issue 11 §5): 200 requests/s for 30 s of the reads a team's
scripts make (their rentals, one rental, offers from the market cache) against one serve
process on PostgreSQL, from a second process (an open-loop asyncio client); p50, p99, errors.
Baseline in the same run: the same load on /healthz (the framework and the loopback, no store).

    .venv/bin/python benchmarks/bench_serve.py [--rate 200] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from gpushop.emulator.config import EmulatorConfig
from gpushop.emulator.server import EmulatorThread
from gpushop.service import users
from gpushop.store import Store

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import serve_process  # noqa: E402


def _load(url: str, token: str, rate: float, seconds: float, paths: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(HERE / "load_reads.py"), url, token, str(rate), str(seconds), *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(rate: float, seconds: float) -> dict[str, Any]:
    schema = f"gpushop_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    db_url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    home = Path(tempfile.mkdtemp(prefix="gpushop-bench-serve-"))
    emulator = EmulatorThread(EmulatorConfig(rate_limit=False, speed=1000.0)).start()
    server: subprocess.Popen[str] | None = None
    try:
        with Store.open(db_url) as store:
            user, token = users.add(store, "bench")
            ids = [
                store.new_rental(
                    provider="vastai",
                    max_duration_s=3600,
                    owner_host="bench",
                    owner_pid=1,
                    price_per_hour=0.3,
                    user_id=user.id,
                ).id
                for _ in range(20)
            ]
        env = {
            **os.environ,
            "VASTAI_URL": emulator.url,
            "VASTAI_API_KEY": emulator.api_key,
            "GPUSHOP_DB_URL": db_url,
            "GPUSHOP_CACHE_DIR": str(home / "cache"),
            "GPUSHOP_DATA_DIR": str(home / "data"),
            "GPUSHOP_RATE_LIMIT": "false",
            "GPUSHOP_API_RATE_LIMIT": "100000/second",
            "GPUSHOP_MARKET_TTL": "3600",
        }
        url, server = serve_process.start(env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        headers = {"Authorization": f"Bearer {token}"}
        httpx.get(f"{url}/v1/offers?min_vram=24", headers=headers, timeout=60)  # fill the cache
        reads = ["/v1/rentals", f"/v1/rentals/{ids[0]}", "/v1/offers?min_vram=24"]
        baseline = _load(url, token, rate, seconds, ["/healthz"])
        loaded = _load(url, token, rate, seconds, reads)
        return {"rate": rate, "seconds": seconds, "baseline": baseline, "reads": loaded}
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        emulator.stop()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    r = run(args.rate, args.seconds)
    b, x = r["baseline"], r["reads"]
    print(
        f"== gpushop serve on PostgreSQL: {r['rate']:g} requests/s for {r['seconds']:g} s "
        "from a second process (open loop)"
    )
    print(
        f"   baseline GET /healthz:  {b['rate']:6.1f}/s  p50 {b['p50_ms']:6.2f} ms  "
        f"p99 {b['p99_ms']:7.2f} ms  errors {sum(b['errors'].values())}"
    )
    print(
        f"   reads (rentals, a rental, offers): {x['rate']:6.1f}/s  p50 {x['p50_ms']:6.2f} ms  "
        f"p99 {x['p99_ms']:7.2f} ms ({x['p99_ms'] / max(b['p99_ms'], 0.01):.1f}x the baseline's; "
        f"goal < 100 ms)  errors {sum(x['errors'].values())} {x['errors'] or ''}"
    )


if __name__ == "__main__":
    main()
