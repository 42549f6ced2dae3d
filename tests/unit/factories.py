"""Builders for test data."""

import dataclasses

from gpushop.models import Offer


def offer(oid: str, price: float, rel: float | None, gpu: str = "RTX 4090", **kw: object) -> Offer:
    base = Offer(
        provider="vastai",
        offer_id=oid,
        gpu_name=gpu,
        gpu_variant=gpu,
        num_gpus=1,
        gpu_ram_gb=24.6,
        price_per_hour=price,
        gpu_price_per_hour=price,
        storage_price_per_hour=0.0,
        disk_gb=32,
        disk_available_gb=100,
        reliability=rel,
        verified=True,
        datacenter=False,
        location="Texas, US",
        country="US",
        inet_up_mbps=100,
        inet_down_mbps=500,
        cuda=12.4,
        driver="550.1",
        dlperf=100.0,
        min_bid=price * 0.7,
        interruptible=False,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]
