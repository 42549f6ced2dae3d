"""Events through the outbox to a receiver (issue 12 §4): two `gpushop serve` replicas on one
PostgreSQL deliver what a third process writes. Two figures:

- throughput: a backlog of events (written while the endpoint was disabled) drained by both
  replicas once it is enabled (events per second, end to end);
- delay from the state change (the event's commit) to its delivery, under an open-loop load of
  a steady rate (p50, p99).

Baseline in the same run: the same number of signed POSTs sent straight to the same receiver by
one asyncio client with as many connections (the loopback and receiver's ceiling).

    .venv/bin/python benchmarks/bench_webhooks.py [--burst 2000] [--rate 100] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from gpushop.config import load_settings
from gpushop.service import users
from gpushop.service import webhooks as hooks
from gpushop.store import Store
from gpushop.store.secret_box import keygen

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import serve_process  # noqa: E402
from receiver import receiving  # noqa: E402


def _delays(got: list[Any]) -> list[float]:
    out = []
    for r in got:
        sent = datetime.fromisoformat(json.loads(r.body)["timestamp"].replace("Z", "+00:00"))
        out.append((r.at - sent.timestamp()) * 1000)
    return out


def _wait_for(receiver: Any, path: str, count: int, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while len(receiver.on(path)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(receiver.on(path))} of {count} delivered in {timeout:.0f} s")
        time.sleep(0.01)
    return time.time()


async def _baseline(url: str, count: int, secret: str) -> float:
    body = b'{"type":"orphan.destroyed","timestamp":"2026-12-05T00:00:00Z","data":{}}'
    limits = httpx.Limits(max_connections=16)
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def one(i: int) -> None:
            async with sem:
                stamp = int(time.time())
                signature = hooks.sign(secret, f"msg_{i}", stamp, body)
                headers = {
                    "webhook-id": f"msg_{i}",
                    "webhook-timestamp": str(stamp),
                    "webhook-signature": signature,
                    "content-type": "application/json",
                }
                await client.post(f"{url}/baseline", content=body, headers=headers)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return count / (time.perf_counter() - started)


def run(burst: int, rate: float, seconds: float) -> dict[str, Any]:
    schema = f"gpushop_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    db_url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    home = Path(tempfile.mkdtemp(prefix="gpushop-bench-webhooks-"))
    env = {
        **os.environ,
        "GPUSHOP_DB_URL": db_url,
        "GPUSHOP_CACHE_DIR": str(home / "cache"),
        "GPUSHOP_DATA_DIR": str(home / "data"),
        "GPUSHOP_SECRET_KEY": keygen(),
        "GPUSHOP_WEBHOOK_ALLOW_PRIVATE": "1",
        "GPUSHOP_SYNC_INTERVAL": "3600",
    }
    servers: list[subprocess.Popen[str]] = []
    try:
        with receiving() as receiver, Store.open(db_url) as store:
            cfg = load_settings(
                gpushop_db_url=db_url,
                gpushop_secret_key=env["GPUSHOP_SECRET_KEY"],
                gpushop_webhook_allow_private=True,
            )
            admin, _ = users.add(store, "bench", is_admin=True)
            created = asyncio.run(hooks.create(cfg, store, admin, f"{receiver.url}/hook", [], ""))
            baseline = asyncio.run(_baseline(receiver.url, burst, created["secret"]))
            for _ in range(2):
                _, proc = serve_process.start(
                    env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                servers.append(proc)

            # a backlog: the endpoint disabled while the events are written (held), then
            # enabled: every delivery is due at once, and both replicas drain it
            store.webhooks.disable(created["id"], "bench: hold the backlog")
            started = time.time()
            for i in range(burst):
                store.tell("orphan.destroyed", f"instance:bench:{i}", "bench", {"i": i})
            write_rate = burst / (time.time() - started)
            enabled = time.time()
            store.webhooks.enable(created["id"])
            finished = _wait_for(receiver, "/hook", burst)
            burst_rate = burst / (finished - enabled)

            receiver.got.clear()
            total = int(rate * seconds)
            t0 = time.monotonic()
            for i in range(total):  # open loop: each event on its schedule
                pause = t0 + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                store.tell("orphan.destroyed", f"instance:steady:{i}", "bench", {"i": i})
            _wait_for(receiver, "/hook", total)
            delays = sorted(_delays(receiver.on("/hook")))
            replicas = {a for a in _replicas(store)}
        return {
            "burst": burst,
            "burst_per_s": burst_rate,
            "write_per_s": write_rate,
            "baseline_per_s": baseline,
            "rate": rate,
            "seconds": seconds,
            "p50_ms": statistics.median(delays),
            "p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))],
            "replicas_sending": len(replicas),
        }
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(30)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _replicas(store: Store) -> set[str]:
    from sqlalchemy import select

    from gpushop.store.schema_webhooks import WebhookAttemptRow

    with store._read() as session:
        return set(session.scalars(select(WebhookAttemptRow.replica).distinct()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    r = run(args.burst, args.rate, args.seconds)
    print(
        f"== webhooks: events through the outbox, 2 serve replicas on PostgreSQL "
        f"({r['replicas_sending']} sent), a receiver on 127.0.0.1"
    )
    print(
        f"   baseline (signed POSTs straight to the receiver, 16 connections): "
        f"{r['baseline_per_s']:7.0f}/s"
    )
    print(
        f"   backlog of {r['burst']} events (written at {r['write_per_s']:.0f}/s by one writer): "
        f"delivered {r['burst_per_s']:7.0f}/s ({r['burst_per_s'] / r['baseline_per_s']:.2f}x "
        "the baseline)"
    )
    print(
        f"   steady {r['rate']:g} events/s for {r['seconds']:g} s: delay from the change to the "
        f"delivery p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
