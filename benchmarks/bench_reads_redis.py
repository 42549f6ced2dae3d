"""Read latency over two `gpushop serve` replicas with and without Redis (issue 13 §5): the reads
a team's scripts poll (their jobs, a job, their rentals, a rental, offers) at a fixed rate spread
over both replicas (one PostgreSQL, the emulator as the provider), from an open-loop asyncio
client (load_reads.py); p50, p99, errors, and the replicas' CPU time per request.

Two pairs of replicas run side by side: one without GPUSHOP_REDIS_URL (request limits in each
replica's memory, market snapshots in files), one with it (request limits counted in Redis, one
round trip per window per request; market snapshots in Redis under a prefix of this run; every
key of the run is deleted afterwards). Each rate loads one pair, then the other: the light rate
(under the replicas' capacity, where latency is not queueing) in A B B A order, the two halves
averaged, so that the drift of a shared machine falls on both alike. The request limits are set
far above the load: a 429 would be counted apart.

    .venv/bin/python benchmarks/bench_reads_redis.py [--rate 200] [--seconds 5]
        [--light-rate 50] [--light-seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from gpushop.emulator.config import EmulatorConfig
from gpushop.emulator.server import EmulatorThread
from gpushop.service import users
from gpushop.store import Store
from gpushop.store.job_log import NOTE, OUT

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
# the production default is "20/second;600/minute": two windows, as here, far above the load
RATE_LIMIT = "100000/second;10000000/minute"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import load_reads  # noqa: E402
import serve_process  # noqa: E402


@dataclass(frozen=True, slots=True)
class Pair:
    """Two replicas of one configuration."""

    urls: list[str]
    procs: list[subprocess.Popen[str]]

    def cpu_s(self) -> float:
        """Both processes' CPU time so far (user + system, from /proc)."""
        total = 0.0
        for proc in self.procs:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def load(self, token: str, reads: list[str], rate: float, seconds: float) -> dict[str, Any]:
        """``rate`` requests/s for ``seconds``, each read alternately on either replica."""
        targets = [url + path for path in reads for url in self.urls]
        cpu = self.cpu_s()
        result: dict[str, Any] = asyncio.run(
            load_reads.main(self.urls[0], token, rate, seconds, targets)
        )
        result["cpu_ms"] = (self.cpu_s() - cpu) * 1000 / result["requests"]
        return result


def _data(store: Store, user_id: str) -> tuple[str, str]:
    """20 rentals and 10 unfinished jobs of the user on them, each job with a log of output and
    notes; (a rental id, a job id)."""
    rentals = [
        store.new_rental(
            provider="vastai",
            max_duration_s=3600,
            owner_host="bench",
            owner_pid=1,
            price_per_hour=0.3,
            user_id=user_id,
        ).id
        for _ in range(20)
    ]
    jobs = []
    for i in range(10):
        job = store.new_job(
            kind="run",
            name=f"bench-{i}",
            spec={"command": "bench"},
            # this live process under a long lease: no replica takes the job over to drive it
            owner_host=socket.gethostname(),
            owner_pid=os.getpid(),
            user_id=user_id,
            lease_s=3600,
        )
        store.update_job(job.id, rental_id=rentals[i])
        for step in range(20):  # what 20 flushes of a running job leave
            line = f"mylora: step {step}/1000 loss: 0.3\n".encode() * 40
            notes = [(NOTE, f"step {step}".encode())] if step % 4 == 0 else []
            store.job_log.append(job.id, [(OUT, line), *notes])
        jobs.append(job.id)
    return rentals[0], jobs[0]


def _start(envs: list[dict[str, str]]) -> list[Pair]:
    """Two replicas of each env, all started at once."""
    with ThreadPoolExecutor(2 * len(envs)) as pool:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        futures = [pool.submit(serve_process.start, env, **quiet) for env in envs for _ in "ab"]
        started, failed = [], None
        for future in futures:
            try:
                started.append(future.result())
            except RuntimeError as exc:
                failed = exc
    if failed is not None:
        for _, proc in started:
            proc.terminate()
        raise failed
    return [
        Pair([u for u, _ in started[i : i + 2]], [p for _, p in started[i : i + 2]])
        for i in range(0, len(started), 2)
    ]


def _halves(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Two runs of one configuration as one: means of the rates and percentiles."""
    errors = dict(first["errors"])
    for kind, count in second["errors"].items():
        errors[kind] = errors.get(kind, 0) + count
    out = {k: (first[k] + second[k]) / 2 for k in ("rate", "p50_ms", "p99_ms", "cpu_ms")}
    return {**out, "max_ms": max(first["max_ms"], second["max_ms"]), "errors": errors}


def _forget(prefix: str, user_id: str) -> list[str]:
    """Delete this run's keys: the market's (under the prefix) and the request limits' (which
    the `limits` package names after the user, outside the prefix); the keys deleted."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = [*client.scan_iter(match=f"{prefix}*", count=1000)]
        keys += [*client.scan_iter(match=f"*gpushop-api/{user_id}/*", count=1000)]
        if keys:
            client.delete(*keys)
        return keys
    finally:
        client.close()


def run(rate: float, seconds: float, light_rate: float, light_seconds: float) -> dict[str, Any]:
    schema = f"gpushop_bench_{uuid.uuid4().hex[:10]}"
    prefix = f"gpushop-bench-{uuid.uuid4().hex[:10]}:"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    db_url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    home = Path(tempfile.mkdtemp(prefix="gpushop-bench-reads-redis-"))
    emulator = EmulatorThread(EmulatorConfig(rate_limit=False, speed=1000.0)).start()
    pairs: list[Pair] = []
    user_id = ""
    result: dict[str, Any] = {"rate": rate, "seconds": seconds}
    try:
        with Store.open(db_url) as store:
            user, token = users.add(store, "bench")
            user_id = user.id
            rental_id, job_id = _data(store, user.id)
        reads = [
            "/v1/jobs",
            f"/v1/jobs/{job_id}",
            "/v1/rentals",
            f"/v1/rentals/{rental_id}",
            "/v1/offers?min_vram=24",
        ]
        env = {
            **os.environ,
            "VASTAI_URL": emulator.url,
            "VASTAI_API_KEY": emulator.api_key,
            "GPUSHOP_DB_URL": db_url,
            "GPUSHOP_DATA_DIR": str(home / "data"),
            "GPUSHOP_RATE_LIMIT": "false",
            "GPUSHOP_API_RATE_LIMIT": RATE_LIMIT,
            "GPUSHOP_MARKET_TTL": "3600",
            "GPUSHOP_SYNC_INTERVAL": "3600",
        }
        env.pop("GPUSHOP_REDIS_URL", None)
        plain = {**env, "GPUSHOP_CACHE_DIR": str(home / "cache-plain")}
        shared = {
            **env,
            "GPUSHOP_CACHE_DIR": str(home / "cache-redis"),
            "GPUSHOP_REDIS_URL": REDIS_URL,
            "GPUSHOP_REDIS_PREFIX": prefix,
        }
        pairs = _start([plain, shared])
        headers = {"Authorization": f"Bearer {token}"}
        for pair in pairs:  # the market cache filled through each replica
            for url in pair.urls:
                answer = httpx.get(f"{url}{reads[-1]}", headers=headers, timeout=60)
                answer.raise_for_status()
            pair.load(token, reads, light_rate or rate, 0.5)  # warm-up
        a, b = pairs
        if light_rate > 0:
            half = light_seconds / 2
            a1 = a.load(token, reads, light_rate, half)
            b1 = b.load(token, reads, light_rate, half)
            b2 = b.load(token, reads, light_rate, half)
            a2 = a.load(token, reads, light_rate, half)
            result["light"] = {
                "rate": light_rate,
                "seconds": light_seconds,
                "without": _halves(a1, a2),
                "with": _halves(b1, b2),
            }
        result["without"] = a.load(token, reads, rate, seconds)
        result["with"] = b.load(token, reads, rate, seconds)
        result["reads"] = reads
        return result
    finally:
        for pair in pairs:
            for proc in pair.procs:
                proc.terminate()
                proc.wait(30)
        emulator.stop()
        shutil.rmtree(home, ignore_errors=True)
        if user_id:
            result["keys"] = _forget(prefix, user_id)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _line(label: str, x: dict[str, Any], rate: float) -> str:
    errors = dict(x["errors"])
    limited = errors.pop("429", 0)
    return (
        f"     {label}: {x['rate']:6.1f}/s  p50 {x['p50_ms']:7.2f} ms  p99 {x['p99_ms']:8.2f} ms  "
        f"errors {sum(errors.values())}{' ' + str(errors) if errors else ''}  429s {limited}  "
        f"serve CPU {x['cpu_ms']:4.1f} ms/request"
        + ("" if x["rate"] > 0.95 * rate else "  SATURATED: the replicas did not keep up")
    )


def _compare(rate: float, seconds: float, a: dict[str, Any], b: dict[str, Any], how: str) -> None:
    print(f"   {rate:g} requests/s offered for {seconds:g} s{how}:")
    print(_line("without Redis (limits in memory, market in files)", a, rate))
    print(_line("with Redis (limits and market in Redis)          ", b, rate))
    print(
        f"     with/without Redis: p50 {b['p50_ms'] / a['p50_ms']:.2f}x, "
        f"p99 {b['p99_ms'] / a['p99_ms']:.2f}x, serve CPU {b['cpu_ms'] / a['cpu_ms']:.2f}x"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s over both")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--light-rate",
        type=float,
        default=50.0,
        help="a rate under the replicas' capacity, measured first (0: none)",
    )
    parser.add_argument("--light-seconds", type=float, default=4.0, help="both halves")
    args = parser.parse_args(argv)
    r = run(args.rate, args.seconds, args.light_rate, args.light_seconds)
    print(
        "== reads over 2 `gpushop serve` replicas on one PostgreSQL, open loop, each read "
        f"alternately on either replica ({os.cpu_count()} CPUs for the replicas, PostgreSQL "
        "and the client)"
    )
    print(f"   reads: {', '.join(p.split('?')[0] for p in r['reads'])}")
    if "light" in r:
        x = r["light"]
        _compare(x["rate"], x["seconds"], x["without"], x["with"], " (A B B A, halves averaged)")
    _compare(r["rate"], r["seconds"], r["without"], r["with"], "")
    print(
        f"   (with Redis each request counts in the {len(RATE_LIMIT.split(';'))} windows of its "
        "token there; after the first fill each replica answers offers from its own result "
        f"cache, not Redis; {len(r['keys'])} keys of this run deleted afterwards)"
    )


if __name__ == "__main__":
    main()
