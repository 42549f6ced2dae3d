"""Is the service alive, and can it work: the store, and each configured provider's API with its
latency (the seeds' health check). Also the rules a deployment must meet before it serves."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from gpushop.config import Settings
from gpushop.errors import ConfigError, GpushopError, StoreUnavailable
from gpushop.shop import Shop
from gpushop.store import Store
from gpushop.store.census import Census
from gpushop.store.census import take as take_census

PROBE_TIMEOUT_S = 5.0  # a provider slower than this is reported down, not waited for


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    latency_ms: float | None
    detail: str = ""


def check_deployment(cfg: Settings) -> None:
    """What `gpushop serve` refuses to start with: production on SQLite (one file on one host
    cannot be shared by replicas, nor survive the host)."""
    if cfg.gpushop_profile == "production" and cfg.db_url.startswith("sqlite"):
        raise ConfigError(
            "the production profile needs PostgreSQL: set GPUSHOP_DB_URL=postgresql://..."
        )
    if cfg.gpushop_profile == "production" and cfg.gpushop_webhook_allow_private:
        raise ConfigError(
            "GPUSHOP_WEBHOOK_ALLOW_PRIVATE is refused with the production profile: webhooks"
            " must not reach the service's own network"
        )


class Readiness:
    """Probes the store and the providers; the store is opened once, on first use."""

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self._store: Store | None = None

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, report): ready when the store answers; providers are reported, not required
        (a provider's outage leaves the rest of the service working)."""
        store, providers = await asyncio.gather(self._store_probe(), self._provider_probes())
        ready = store.ok
        degraded = ready and not all(p.ok for p in providers)
        status = "ok" if ready and not degraded else "degraded" if ready else "unavailable"
        return ready, {
            "status": status,
            "store": asdict(store),
            "providers": [asdict(p) for p in providers],
        }

    async def _store_probe(self) -> Probe:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._ping)
        except GpushopError as exc:
            return Probe("store", False, None, str(exc))
        return Probe("store", True, _ms(started))

    def _ping(self) -> None:
        if self._store is None:
            self._store = Store.open(self.cfg.db_url)
        self._store.ping()

    async def _provider_probes(self) -> list[Probe]:
        async with Shop(self.cfg) as shop:
            return list(await asyncio.gather(*(_probe(p) for p in shop.providers())))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


async def _probe(provider: Any) -> Probe:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await provider.ping()
    except TimeoutError:
        return Probe(provider.name, False, None, f"no answer within {PROBE_TIMEOUT_S:.0f} s")
    except GpushopError as exc:
        return Probe(provider.name, False, _ms(started), str(exc))
    return Probe(provider.name, True, _ms(started))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


__all__ = ["Probe", "Readiness", "StoreUnavailable", "check_deployment"]


def census(store: Store) -> Census:
    """Rentals and jobs by state, spend, deliveries by status (for /metrics)."""
    return take_census(store)
