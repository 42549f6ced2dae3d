"""The market: search every provider, check and rank the answers, put prices in context."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from gpushop.errors import NoMatchError, ProviderError
from gpushop.gpus import GpuSelector
from gpushop.market import ranking, stats
from gpushop.market.cache import MarketCache
from gpushop.models import Offer, OfferQuery, SortKey
from gpushop.providers.base import Provider

log = logging.getLogger("gpushop.market")
T = TypeVar("T")

# Candidates fetched for a local ranking: the server's order matches ours for every sort but
# ``value``, which may prefer a slightly dearer but more reliable host.
VALUE_POOL = 128
EXTRA_POOL = 16
MARKET_DISK_GB = 32.0


@dataclass(slots=True)
class SearchResult:
    offers: list[Offer]
    warnings: list[str] = field(default_factory=list)
    dropped: int = 0  # offers the server returned that failed our own re-check
    market_cached: bool = False
    # every current offer this search saw (answers and market snapshots) by id: what a short
    # offer id must be unique among (offer_ids.py)
    known: dict[str, Offer] = field(default_factory=dict)

    @property
    def known_ids(self) -> set[str]:
        return set(self.known)


@dataclass(slots=True)
class MarketSummary:
    models: list[stats.ModelStats]
    total_offers: int
    warnings: list[str] = field(default_factory=list)
    cached: bool = False
    known_ids: set[str] = field(default_factory=set)  # every offer of the snapshots


def pool_size(sort: SortKey, limit: int) -> int:
    if sort is SortKey.VALUE:
        return max(VALUE_POOL, limit * 4)
    return limit + EXTRA_POOL


class Market:
    def __init__(
        self,
        providers: Sequence[Provider],
        cache: MarketCache | None = None,
        preferred: Sequence[GpuSelector] = (),
    ) -> None:
        if not providers:
            raise ValueError("a market needs at least one provider")
        self.providers = list(providers)
        self.cache = cache
        self.preferred = list(preferred)

    def _cache_key(self, provider: Provider) -> str:
        return f"{provider.name}|{getattr(provider, 'url', '')}"

    async def snapshot(self, provider: Provider) -> tuple[list[Offer], bool]:
        """The provider's broad market sample; (offers, came from cache)."""
        key = self._cache_key(provider)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit[1], True
        offers = await provider.market_offers(MARKET_DISK_GB)
        if self.cache is not None:
            self.cache.put(key, offers)
        return offers, False

    async def search(self, query: OfferQuery, sort: SortKey, limit: int) -> SearchResult:
        """Matching offers from every provider, re-checked, ranked and priced against the market.

        A provider that fails is a warning while another one answers; when all fail, the first
        error is raised. No match raises NoMatchError.
        """
        pool = pool_size(sort, limit)
        outcomes, warnings = await self._each_provider(
            lambda p: self._search_one(p, query, sort, pool)
        )
        result = SearchResult(offers=[], warnings=warnings)
        cached = True
        for offers, market, was_cached, dropped in outcomes:
            cached = cached and was_cached
            result.dropped += dropped
            medians = stats.medians(market, interruptible=query.interruptible)
            for offer in offers:
                offer.market_median_per_gpu = medians.get(offer.gpu_name)
            result.offers.extend(offers)
            result.known.update((o.id, o) for o in market)
            result.known.update((o.id, o) for o in offers)
        result.market_cached = cached
        result.offers = ranking.rank(result.offers, sort, self.preferred)[:limit]
        if not result.offers:
            raise NoMatchError(f"no offer matches: {query.describe()}")
        return result

    async def _each_provider(
        self, call: Callable[[Provider], Awaitable[T]]
    ) -> tuple[list[T], list[str]]:
        """Run ``call`` on every provider at once: (answers, warnings). A provider that fails is
        a warning while another one answers; when all fail, the first error is raised."""
        results = await asyncio.gather(*(call(p) for p in self.providers), return_exceptions=True)
        answers: list[T] = []
        warnings: list[str] = []
        errors: list[ProviderError] = []
        for provider, outcome in zip(self.providers, results, strict=True):
            if isinstance(outcome, ProviderError):
                errors.append(outcome)
                warnings.append(f"{provider.display_name} failed: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                answers.append(outcome)
        if errors and not answers:
            raise errors[0]
        return answers, warnings

    async def _search_one(
        self, provider: Provider, query: OfferQuery, sort: SortKey, pool: int
    ) -> tuple[list[Offer], list[Offer], bool, int]:
        search = provider.search_offers(query, pool=pool, sort=sort)
        found, (market, cached) = await asyncio.gather(search, self._market_or_empty(provider))
        kept = []
        for offer in found:
            reason = ranking.mismatch(offer, query)
            if reason is None:
                kept.append(offer)
            else:
                log.warning(
                    "dropping %s: server returned it but %s fails the query", offer.id, reason
                )
        return kept, market, cached, len(found) - len(kept)

    async def _market_or_empty(self, provider: Provider) -> tuple[list[Offer], bool]:
        # Market context is a nicety: its failure must not cost the user their results.
        try:
            return await self.snapshot(provider)
        except ProviderError as exc:
            log.warning("no market context from %s: %s", provider.display_name, exc)
            return [], False

    async def summary(
        self, gpus: Sequence[GpuSelector] = (), min_reliability: float = 0.98
    ) -> MarketSummary:
        """Per GPU model: offers, p10/p50/p90 $/GPU/h and the best reliable offer."""
        snapshots, warnings = await self._each_provider(self.snapshot)
        offers = [offer for found, _ in snapshots for offer in found]
        known_ids = {offer.id for offer in offers}
        cached = all(was_cached for _, was_cached in snapshots)
        if gpus:
            offers = [o for o in offers if any(s.matches(o.gpu_variant) for s in gpus)]
        if not offers:
            raise NoMatchError("no offer on the market" + (" for these GPUs" if gpus else ""))
        best: dict[str, Offer] = {}
        reliable = [o for o in offers if (o.reliability or 0.0) >= min_reliability]
        for offer in ranking.rank(reliable, SortKey.VALUE, self.preferred):
            best.setdefault(offer.gpu_name, offer)
        medians = stats.medians(offers)
        for offer in best.values():
            offer.market_median_per_gpu = medians.get(offer.gpu_name)
        return MarketSummary(
            stats.summarize(offers, best=best), len(offers), warnings, cached, known_ids
        )
