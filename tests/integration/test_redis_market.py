"""The market cache shared through Redis: a replica on another host (its own cache folder) gets
the market sample another one fetched, without a provider call; a Redis that does not answer
only costs the sharing (the host's file cache serves, one warning, no password)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gpushop.config import load_settings
from gpushop.models import OfferQuery, SortKey
from gpushop.shop import Shop


def searches(emulator: Any) -> int:
    return sum(1 for r in emulator.control.requests() if "bundles" in r["endpoint"])


async def search(cfg: Any, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(cache))  # another host's disk
    async with Shop(cfg, provider="vastai") as shop:
        return await shop.market.search(OfferQuery(min_vram_gb=24), SortKey.PRICE, 5)


async def test_a_replica_on_another_host_reuses_the_market_another_fetched(
    emulator: Any, redis_url: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    cfg = load_settings(gpushop_redis_url=str(redis_url), gpushop_redis_prefix=redis_url.prefix)
    first = await search(cfg, tmp_path / "host-a", monkeypatch)
    assert not first.market_cached
    before = searches(emulator)
    second = await search(cfg, tmp_path / "host-b", monkeypatch)
    assert second.market_cached  # the market sample came from Redis
    assert searches(emulator) == before + 1  # the query itself; no second market sample
    assert not list((tmp_path / "host-b").glob("market-*.json"))  # not from a local file


async def test_a_redis_that_does_not_answer_leaves_the_hosts_cache(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    down = "redis://:s3cret-pass@127.0.0.1:1/0"  # nothing listens on port 1
    cfg = load_settings(gpushop_redis_url=down)
    with caplog.at_level(logging.WARNING, logger="gpushop.cache"):
        first = await search(cfg, tmp_path / "host", monkeypatch)
        second = await search(cfg, tmp_path / "host", monkeypatch)
    assert first.offers and not first.market_cached and second.market_cached  # the file
    warnings = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert warnings and all("s3cret-pass" not in w for w in warnings)
