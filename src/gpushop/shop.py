"""The facade the CLI and (later) the service talk to: Shop(settings) → market, providers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpushop.config import Settings, cache_dir
from gpushop.gpus import GpuSelector, resolve

if TYPE_CHECKING:
    import httpx

    from gpushop.fleet.provision import Provisioner
    from gpushop.market.service import Market
    from gpushop.providers.base import Provider
    from gpushop.ssh.keys import KeyPair
    from gpushop.store import Store


class Shop:
    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._providers: list[Provider] | None = None
        self._market: Market | None = None
        self._store: Store | None = None

    def providers(self) -> list[Provider]:
        if self._providers is None:
            from gpushop.providers.vastai import VastAIProvider

            key = self.settings.vastai_api_key
            self._providers = [
                VastAIProvider(
                    url=self.settings.vastai_url,
                    api_key=key.get_secret_value() if key else None,
                    transport=self._transport,
                    # every gpushop process on this machine queues for the same limits
                    shared_limits_dir=cache_dir() / "ratelimit",
                )
            ]
        return self._providers

    def preferred(self) -> list[GpuSelector]:
        out = []
        for name in self.settings.vastai_preferred_gpus:
            try:
                out.append(resolve(name))
            except Exception:  # an unknown preferred GPU only loses its preference
                continue
        return out

    @property
    def market(self) -> Market:
        if self._market is None:
            from gpushop.market.cache import MarketCache
            from gpushop.market.service import Market

            cache = MarketCache(cache_dir(), self.settings.gpushop_market_ttl)
            self._market = Market(self.providers(), cache, self.preferred())
        return self._market

    def provider_map(self) -> dict[str, Provider]:
        return {p.name: p for p in self.providers()}

    def provider(self, name: str) -> Provider:
        try:
            return self.provider_map()[name]
        except KeyError:
            from gpushop.errors import UsageError

            raise UsageError(f"unknown provider {name!r}") from None

    @property
    def store(self) -> Store:
        if self._store is None:
            from gpushop.store import Store

            self._store = Store.open(self.settings.db_url)
        return self._store

    def keypair(self) -> KeyPair:
        from gpushop.config import data_dir
        from gpushop.ssh.keys import load_or_create

        return load_or_create(self.settings.vastai_ssh_key_path, data_dir())

    def provisioner(self) -> Provisioner:
        import os
        import random

        from gpushop.fleet.provision import Provisioner

        # GPUSHOP_SEED makes the pick among near-equal offers reproducible (tests, debugging);
        # unset, concurrent `up`s spread over them at random.
        seed = os.environ.get("GPUSHOP_SEED")
        rng = random.Random(int(seed)) if seed and seed.isdigit() else None
        return Provisioner(self.store, self.provider_map(), self.market, self.keypair(), rng=rng)

    async def aclose(self) -> None:
        for provider in self._providers or []:
            await provider.aclose()
        if self._store is not None:
            self._store.close()

    async def __aenter__(self) -> Shop:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
