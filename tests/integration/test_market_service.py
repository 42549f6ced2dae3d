"""The market service over real providers: partial failures, market context, caching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpushop import errors
from gpushop.market.cache import MarketCache
from gpushop.market.service import Market
from gpushop.models import OfferQuery, SortKey
from gpushop.providers.http import RetryPolicy
from gpushop.providers.vastai import VastAIProvider

FAST = RetryPolicy(attempts=2, connect_attempts=1, backoff_base_s=0.01, backoff_max_s=0.02)


def vast(emu: Any) -> VastAIProvider:
    return VastAIProvider(url=emu.url, api_key=emu.api_key, retry=FAST, rate_limit=False)


async def test_a_failing_provider_is_a_warning_while_another_answers(
    emulator: Any, make_emulator: Any, tmp_path: Path
) -> None:
    broken = make_emulator(rate_limit=False, seed=9)
    broken.control.fault("*", "status", status=503, count=100)
    providers = [vast(emulator), vast(broken)]
    market = Market(providers, MarketCache(tmp_path, 60))
    result = await market.search(OfferQuery(min_vram_gb=24), SortKey.VALUE, 5)
    assert len(result.offers) == 5
    assert len(result.warnings) == 1 and "Vast.ai failed" in result.warnings[0]
    summary = await market.summary()
    assert summary.total_offers > 0 and len(summary.warnings) == 1
    for p in providers:
        await p.aclose()


async def test_all_providers_failing_raises(make_emulator: Any, tmp_path: Path) -> None:
    a, b = make_emulator(rate_limit=False), make_emulator(rate_limit=False, seed=2)
    for emu in (a, b):
        emu.control.fault("*", "status", status=503, count=100)
    providers = [vast(a), vast(b)]
    with pytest.raises(errors.ProviderUnavailable):
        await Market(providers, MarketCache(tmp_path, 60)).search(OfferQuery(), SortKey.PRICE, 3)
    for p in providers:
        await p.aclose()


async def test_failing_market_context_does_not_cost_the_results(
    emulator: Any, tmp_path: Path
) -> None:
    emulator.control.fault("GET /api/v0/bundles/", "status", status=503, count=100)
    p = vast(emulator)
    result = await Market([p], MarketCache(tmp_path, 60)).search(OfferQuery(), SortKey.PRICE, 3)
    assert len(result.offers) == 3
    assert all(o.market_delta_pct is None for o in result.offers)
    await p.aclose()


def corrupt_cache(directory: Path) -> None:
    next(directory.glob("market-*.json")).write_text("{not json")


async def test_cache_expires_after_its_ttl(emulator: Any, tmp_path: Path) -> None:
    p = vast(emulator)
    fresh = Market([p], MarketCache(tmp_path, 60))
    await fresh.summary()
    await fresh.summary()
    assert emulator.control.request_count("GET /api/v0/bundles/") == 1
    expired = Market([p], MarketCache(tmp_path, 0))  # TTL 0: always a miss
    await expired.summary()
    assert emulator.control.request_count("GET /api/v0/bundles/") == 2
    corrupt_cache(tmp_path)  # a corrupt file is a miss, never a crash
    await fresh.summary()
    assert emulator.control.request_count("GET /api/v0/bundles/") == 3
    await p.aclose()
