"""The market for a long-running face (`gpushop serve`): one Shop per provider choice, kept
open (its HTTP clients and market snapshots are reused), and search results kept for the
market's TTL, so that a team's scripts polling offers cost no provider call each."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from gpushop.config import Settings
from gpushop.market.service import SearchResult
from gpushop.models import OfferQuery, SortKey
from gpushop.shop import Shop

MAX_RESULTS = 256  # distinct queries kept


class MarketReads:
    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self.ttl_s = min(cfg.gpushop_market_ttl, 60.0)
        self._shops: dict[str | None, Shop] = {}
        self._results: OrderedDict[tuple[object, ...], tuple[float, SearchResult]] = OrderedDict()
        self._lock = asyncio.Lock()

    def shop(self, provider: str | None) -> Shop:
        if provider not in self._shops:
            self._shops[provider] = Shop(self.cfg, provider=provider)
        return self._shops[provider]

    async def search(
        self, query: OfferQuery, sort: SortKey, limit: int, provider: str | None
    ) -> SearchResult:
        key = (query.describe(), repr(query), sort, limit, provider)
        now = time.monotonic()
        hit = self._results.get(key)
        if hit is not None and now - hit[0] <= self.ttl_s:
            return hit[1]
        async with self._lock:  # one search per query at a time: the others wait and reuse it
            hit = self._results.get(key)
            if hit is not None and time.monotonic() - hit[0] <= self.ttl_s:
                return hit[1]
            result = await self.shop(provider).market.search(query, sort, limit)
            self._results[key] = (time.monotonic(), result)
            self._results.move_to_end(key)
            while len(self._results) > MAX_RESULTS:
                self._results.popitem(last=False)
            return result

    async def aclose(self) -> None:
        for shop in self._shops.values():
            await shop.aclose()
        self._shops.clear()
