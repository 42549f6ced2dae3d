"""The shared rate-limit bucket survives a bad state file: every gpushop process on the machine
reads it, so a wrong clock or a broken write must cost at most a short wait, never an hour or a
hang (issue 10 §3a)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gpushop.providers.ratelimit import MAX_QUEUE_WAIT_S, EndpointLimit, SharedTokenBucket

LIMIT = EndpointLimit(interval_s=2.3, burst=2)  # Vast's POST /bundles/ with its margin


def bucket_with(tmp_path: Path, content: str) -> SharedTokenBucket:
    path = tmp_path / "bucket"
    path.write_text(content)
    return SharedTokenBucket(LIMIT, path)


@pytest.mark.parametrize(
    "content",
    [
        "-inf 1000.0",  # made every process sleep forever
        "inf 1000.0",
        "nan nan",
        "1.0 nan",
        "0.5 -inf",
        "garbage here",
        "1.0",
        "",
        "\x00\xff\x00",
    ],
)
def test_a_broken_bucket_file_counts_as_a_fresh_bucket(tmp_path: Path, content: str) -> None:
    bucket = bucket_with(tmp_path, content)
    assert bucket._reserve() == 0.0  # a fresh bucket has a token at once
    # and the file is healed: the next callers queue normally again
    assert bucket._reserve() == 0.0
    # a third caller queues for (up to) one interval: less by what passed since, on the wall clock
    assert 0.0 < bucket._reserve() <= LIMIT.interval_s


def test_a_time_in_the_future_does_not_make_everyone_wait_until_then(tmp_path: Path) -> None:
    # written an hour "later": the clock has stepped back since; before, every process waited
    # the hour out (a negative refill of 3600 s worth of tokens)
    bucket = bucket_with(tmp_path, f"0.0 {time.time() + 3600:.6f}")
    assert bucket._reserve() <= LIMIT.interval_s


def test_a_queue_deeper_than_any_real_one_is_cut_to_a_bounded_wait(tmp_path: Path) -> None:
    bucket = bucket_with(tmp_path, f"-1e12 {time.time():.6f}")
    assert bucket._reserve() <= MAX_QUEUE_WAIT_S + LIMIT.interval_s


def test_acquire_returns_promptly_after_minus_infinity_was_stored(tmp_path: Path) -> None:
    bucket = bucket_with(tmp_path, "-inf -inf")
    # the deadline is a safety net: before the fix this never returned
    asyncio.run(asyncio.wait_for(bucket.acquire(), timeout=30))
