"""Provider rate limits shared across hosts through Redis (issue 13 §2, GPUSHOP_REDIS_URL).

Two gpushop processes that use one account, each with its own rate-limit folder (as on two
hosts), queue for the account's limits together through Redis: no 429 from the emulator's real
limits. Without Redis the same burst passes the limit, which shows the test can fail. A Redis
that does not answer costs one warning and nothing else; a bad state in Redis a short wait."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gpushop.providers.http import RetryPolicy
from gpushop.providers.ratelimit import MAX_QUEUE_WAIT_S, EndpointLimit
from gpushop.providers.ratelimit_redis import BUCKET_LUA, RedisLink, RedisTokenBucket, redact
from gpushop.providers.vastai import VastAIProvider

ENDPOINT = "GET /api/v1/instances/"  # what list_instances calls: the server allows 2, then 1/s
SERVER_INTERVAL_S = 1.0
SERVER_BURST = 2
CLIENT_INTERVAL_S = SERVER_INTERVAL_S * 1.15  # the adapter's margin
# a 429 fails the call at once (no retry, no waiting it out): the outcome shows every collision
NO_RETRY = RetryPolicy(attempts=1, rate_limit_budget_s=0)

# One gpushop process on one "host": builds the Vast.ai provider, says it is ready, waits for
# the go (so that the processes start their bursts together), makes CALLS calls, prints outcomes.
HOST = r"""
import asyncio, json, sys
from pathlib import Path
from gpushop import errors
from gpushop.providers.http import RetryPolicy
from gpushop.providers.vastai import VastAIProvider

url, key, redis_url, prefix, limits_dir, calls = sys.argv[1:7]

async def main() -> None:
    provider = VastAIProvider(
        url=url,
        api_key=key,
        retry=RetryPolicy(attempts=1, rate_limit_budget_s=0),
        shared_limits_dir=Path(limits_dir),
        redis_url=redis_url or None,
        redis_prefix=prefix,
    )
    print("ready", flush=True)
    sys.stdin.readline()
    outcomes = []
    for _ in range(int(calls)):
        try:
            await provider.list_instances()
            outcomes.append("ok")
        except errors.RateLimited:
            outcomes.append("429")
    await provider.aclose()
    print(json.dumps(outcomes), flush=True)

asyncio.run(main())
"""


def run_hosts(
    emu: Any, tmp_path: Path, redis_url: str, prefix: str, calls: int
) -> tuple[list[str], str]:
    """Two processes, each with its own limits folder (two hosts), one account: their outcomes
    and what they logged."""
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-c", HOST, emu.url, emu.api_key, redis_url, prefix),
                *(str(tmp_path / f"host{n}" / "ratelimit"), str(calls)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line == "ready", proc.communicate(timeout=30)[1]
        emu.control.reset()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outcomes: list[str] = []
        logged = ""
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            outcomes += json.loads(out.strip().splitlines()[-1])
            logged += err
        return outcomes, logged
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def store(redis_url: Any) -> Iterator[redis.Redis]:
    """A plain client of the test Redis, to look at (or spoil) the buckets' keys."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def served(emu: Any) -> list[dict[str, Any]]:
    return [r for r in emu.control.requests() if r["endpoint"] == ENDPOINT]


def test_two_hosts_sharing_an_account_through_redis_never_pass_its_limit(
    make_emulator: Any, redis_url: Any, store: redis.Redis, tmp_path: Path
) -> None:
    emu = make_emulator(rate_limit=True)
    store.script_load(BUCKET_LUA)  # as on a Redis in use: the first reservations are one round trip
    outcomes, logged = run_hosts(emu, tmp_path, redis_url, redis_url.prefix, calls=2)
    assert "does not answer" not in logged  # no fallback to a host's own bucket
    assert outcomes == ["ok"] * 4, logged
    calls = served(emu)
    assert [c["status"] for c in calls] == [200] * 4  # the emulator's real limits: no 429
    # the burst of two, then one a second at most: the four calls span two intervals or more
    times = sorted(c["time"] for c in calls)
    assert times[-1] - times[0] >= (len(times) - SERVER_BURST) * SERVER_INTERVAL_S - 0.05
    # and the queue lived in Redis, under this test's prefix
    assert len(store.keys(f"{redis_url.prefix}vastai:*")) == 1


def test_without_redis_the_same_two_hosts_pass_the_limit_together(
    make_emulator: Any, tmp_path: Path
) -> None:
    # each host paces itself in its own folder: together they send four calls at once
    emu = make_emulator(rate_limit=True)
    outcomes, _ = run_hosts(emu, tmp_path, "", "unused:", calls=2)
    assert "429" in outcomes
    assert 429 in [c["status"] for c in served(emu)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_redis_that_does_not_answer_costs_one_warning_and_no_call(
    make_emulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emu = make_emulator(rate_limit=True)
    down = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    provider = VastAIProvider(
        url=emu.url,
        api_key=emu.api_key,
        retry=NO_RETRY,
        shared_limits_dir=tmp_path / "ratelimit",
        redis_url=down,
    )
    caplog.set_level(logging.INFO, logger="gpushop")
    for _ in range(3):  # the local bucket paces them: the third waits its interval
        await provider.list_instances()
    await provider.aclose()
    assert [c["status"] for c in served(emu)] == [200] * 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert f"redis://:***@127.0.0.1:{down.rsplit(':', 1)[1]}" in warnings[0].getMessage()
    assert "s3cret-pw" not in caplog.text


@pytest.mark.parametrize(
    "state",
    [
        b"-inf -inf",
        b"nan nan",
        b"1e999 1e999",
        b"garbage",
        b"",
        b"0.5",
        b"FUTURE",  # written by a server whose clock has stepped back since
        b"HASH",  # not a string at all
    ],
)
async def test_a_bad_state_in_redis_costs_at_most_a_short_wait(
    emulator: Any, redis_url: Any, store: redis.Redis, state: bytes
) -> None:
    provider = VastAIProvider(
        url=emulator.url,
        api_key=emulator.api_key,
        redis_url=redis_url,
        redis_prefix=redis_url.prefix,
    )
    bucket = provider.http.limiter.bucket(ENDPOINT)
    assert isinstance(bucket, RedisTokenBucket)
    if state == b"HASH":
        store.hset(bucket.key, "tokens", "-inf")
    elif state == b"FUTURE":
        store.set(bucket.key, f"0 {store.time()[0] + 3600}")
    else:
        store.set(bucket.key, state)
    started = time.perf_counter()
    await provider.list_instances()
    assert time.perf_counter() - started < CLIENT_INTERVAL_S + 2.0  # not an hour, not 120 s
    # the state was healed: the next callers queue normally again
    assert (await bucket._reserve()) <= CLIENT_INTERVAL_S
    await provider.aclose()


# -- the Lua bucket itself ------------------------------------------------------------------------

LIMIT = EndpointLimit(interval_s=2.0, burst=2)


async def test_reservations_from_two_clients_queue_one_interval_apart(
    redis_url: Any, store: redis.Redis
) -> None:
    links = [RedisLink(redis_url), RedisLink(redis_url)]  # two pools, as two hosts would have
    key = f"{redis_url.prefix}queue"
    buckets = [RedisTokenBucket(LIMIT, link, key) for link in links]
    waits = [await buckets[n % 2]._reserve() for n in range(4)]
    assert waits[:2] == [0.0, 0.0]
    assert LIMIT.interval_s - 0.5 < waits[2] <= LIMIT.interval_s
    assert 2 * LIMIT.interval_s - 0.5 < waits[3] <= 2 * LIMIT.interval_s
    # idle, the key expires once the bucket would be full again
    ttl_ms = store.pttl(key)
    assert 0 < ttl_ms <= (LIMIT.burst + 2) * LIMIT.interval_s * 1000 + 1000
    for link in links:
        await link.aclose()


async def test_the_bucket_keeps_the_redis_servers_time_not_the_hosts(
    redis_url: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"{redis_url.prefix}skew"
    links = [RedisLink(redis_url), RedisLink(redis_url)]
    here = RedisTokenBucket(LIMIT, links[0], key)
    assert [await here._reserve() for _ in range(2)] == [0.0, 0.0]
    # a host whose clock is an hour ahead does not find the bucket refilled
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    there = RedisTokenBucket(LIMIT, links[1], key)
    assert (await there._reserve()) > LIMIT.interval_s - 0.5
    for link in links:
        await link.aclose()


async def test_drain_after_a_429_empties_the_shared_bucket(redis_url: Any) -> None:
    link = RedisLink(redis_url)
    bucket = RedisTokenBucket(LIMIT, link, f"{redis_url.prefix}drain")
    await bucket.drain()
    assert (await bucket._reserve()) > LIMIT.interval_s - 0.5
    await link.aclose()


async def test_a_queue_deeper_than_any_real_one_is_cut_to_a_bounded_wait(
    redis_url: Any, store: redis.Redis
) -> None:
    key = f"{redis_url.prefix}deep"
    store.set(key, f"-1e12 {store.time()[0]}")
    link = RedisLink(redis_url)
    bucket = RedisTokenBucket(LIMIT, link, key)
    assert LIMIT.interval_s < (await bucket._reserve()) <= MAX_QUEUE_WAIT_S + LIMIT.interval_s
    await link.aclose()


def test_shop_passes_gpushop_redis_url_to_both_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpushop.config import load_settings
    from gpushop.shop import Shop

    monkeypatch.setenv("GPUSHOP_REDIS_URL", "redis://:pw@127.0.0.1:6379/0")
    monkeypatch.setenv("VASTAI_API_KEY", "k1")
    monkeypatch.setenv("TENSORDOCK_API_TOKEN", "k2")
    shop = Shop(load_settings())
    for name, endpoint in (("vastai", ENDPOINT), ("tensordock", "GET /hostnodes")):
        bucket = shop.provider(name).http.limiter.bucket(endpoint)  # type: ignore[attr-defined]
        assert isinstance(bucket, RedisTokenBucket)  # built only: nothing connects yet
        assert bucket.key.startswith(f"gpushop:ratelimit:{name}:")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://user:p%40ss@cache:6380/1", "rediss://user:***@cache:6380/1"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_the_url_in_a_log_line_has_no_password(url: str, shown: str) -> None:
    assert redact(url) == shown
