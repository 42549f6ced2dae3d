"""The facade the CLI and (later) the service talk to: Shop(settings) → market, providers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpushop.config import Settings, cache_dir
from gpushop.errors import UsageError
from gpushop.gpus import GpuSelector, resolve

if TYPE_CHECKING:
    import httpx

    from gpushop.fleet.owners import Owner
    from gpushop.fleet.provision import Provisioner
    from gpushop.market.service import Market
    from gpushop.providers.base import Provider
    from gpushop.ssh.keys import KeyPair
    from gpushop.store import Store


KNOWN = ("vastai", "tensordock")  # every provider gpushop has an adapter for
PROVIDER_CHOICES = (*KNOWN, "all")
_CREDENTIAL = {
    "tensordock": "TENSORDOCK_API_TOKEN is not set",
    "vastai": "VASTAI_API_KEY is not set",
}


class Shop:
    """``provider``: "vastai", "tensordock", "all" (every provider that can answer), or None:
    every provider with credentials (Vast.ai alone when none has any: its search needs no key).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        provider: str | None = None,
    ) -> None:
        if provider is not None and provider not in PROVIDER_CHOICES:
            raise UsageError(
                f"--provider {provider!r}: choose one of {', '.join(PROVIDER_CHOICES)}"
            )
        self.settings = settings
        self._transport = transport
        self._choice = provider
        self._built: dict[str, Provider] = {}
        self._providers: list[Provider] | None = None
        self._market: Market | None = None
        self._store: Store | None = None

    def _build(self, name: str) -> Provider:
        redis = self.settings.gpushop_redis_url  # with it, the limits are shared by every host
        redis_url = (redis.get_secret_value() or None) if redis else None
        if name == "vastai":
            from gpushop.providers.vastai import VastAIProvider

            key = self.settings.vastai_api_key
            return VastAIProvider(
                url=self.settings.vastai_url,
                api_key=key.get_secret_value() if key else None,
                transport=self._transport,
                rate_limit=self.settings.gpushop_rate_limit,
                # every gpushop process on this machine queues for the same limits
                shared_limits_dir=cache_dir() / "ratelimit",
                redis_url=redis_url,
            )
        from gpushop.providers.tensordock import Sizing, TensorDockProvider

        token = self.settings.tensordock_api_token
        return TensorDockProvider(
            url=self.settings.tensordock_url,
            api_token=token.get_secret_value() if token else None,
            transport=self._transport,
            rate_limit=self.settings.gpushop_rate_limit,
            shared_limits_dir=cache_dir() / "ratelimit",
            redis_url=redis_url,
            sizing=Sizing(
                vcpu_per_gpu=self.settings.tensordock_vcpu_per_gpu,
                ram_gb_per_gpu=self.settings.tensordock_ram_gb_per_gpu,
            ),
        )

    def _get(self, name: str) -> Provider:
        """A provider by name, built on first use (an unused one costs no import, no client)."""
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def _configured(self, name: str) -> bool:
        secret = {
            "vastai": self.settings.vastai_api_key,
            "tensordock": self.settings.tensordock_api_token,
        }[name]
        return secret is not None and bool(secret.get_secret_value())

    def providers(self) -> list[Provider]:
        """The providers this shop searches and rents from (see the class docstring)."""
        if self._providers is None:
            if self._choice == "all":
                # Vast.ai answers searches without a key; TensorDock does not without a token
                names = [n for n in KNOWN if self._configured(n) or n == "vastai"]
            elif self._choice is not None:
                names = [self._choice]
                if not self._configured(self._choice) and self._choice != "vastai":
                    raise UsageError(f"--provider {self._choice}: {_CREDENTIAL[self._choice]}")
            else:
                names = [n for n in KNOWN if self._configured(n)] or ["vastai"]
            chosen = [self._get(n) for n in names]
            self._providers = chosen
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

            ttl = self.settings.gpushop_market_ttl
            redis_url = self.settings.gpushop_redis_url
            cache: MarketCache
            if redis_url is not None:  # one cache for every replica and host
                from gpushop.market.cache_redis import RedisMarketCache

                cache = RedisMarketCache(
                    redis_url.get_secret_value(),
                    self.settings.gpushop_redis_prefix,
                    cache_dir(),
                    ttl,
                )
            else:
                cache = MarketCache(cache_dir(), ttl)
            self._market = Market(self.providers(), cache, self.preferred())
        return self._market

    def provider_map(self) -> dict[str, Provider]:
        return {p.name: p for p in self.providers()}

    def provider(self, name: str) -> Provider:
        """Any known provider by name (a rental may be on one this shop does not search)."""
        if name not in KNOWN:
            raise UsageError(f"unknown provider {name!r}")
        return self._get(name)

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

    def provisioner(self, owner: Owner | None = None) -> Provisioner:
        """``owner``: who holds the rentals it makes (a service replica passes its lease)."""
        import os
        import random

        from gpushop.fleet.provision import Provisioner

        # GPUSHOP_SEED makes the pick among near-equal offers reproducible (tests, debugging);
        # unset, concurrent `up`s spread over them at random.
        seed = os.environ.get("GPUSHOP_SEED")
        rng = random.Random(int(seed)) if seed and seed.isdigit() else None
        return Provisioner(
            self.store, self.provider_map(), self.market, self.keypair(), owner=owner, rng=rng
        )

    async def aclose(self) -> None:
        for provider in self._built.values():
            await provider.aclose()
        if self._store is not None:
            self._store.close()

    async def __aenter__(self) -> Shop:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
