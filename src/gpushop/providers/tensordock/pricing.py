"""Sizing and pricing a TensorDock VM (reference 2.5, 2.8, 2.9). Pure functions.

TensorDock sells resources, not fixed machines: a VM is GPUs plus vCPUs, RAM and storage, each
priced per hour by its hostnode. The hourly price of a configuration is

    gpu_count * per_gpu_hr + vcpus * per_vcpu_hr + ram_gb * per_gb_ram_hr
        + storage_gb * per_gb_storage_hr

Sizing: every GPU brings ``vcpu_per_gpu`` vCPUs and ``ram_gb_per_gpu`` GB of RAM (defaults 8 and
32, settings ``TENSORDOCK_VCPU_PER_GPU`` / ``TENSORDOCK_RAM_GB_PER_GPU``), capped by the node's
per-GPU caps, its per-VM caps and what it has free; vCPUs are even (the API refuses odd counts).
Storage is the requested disk rounded up to whole GB and never below the API's minimum of 100 GB.

Billing: running and plain ``stopped`` VMs bill the full rate; a VM stopped with its resources
released (``stoppeddisassociated``) bills its storage only, which is what the adapter's stop does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpushop.config import DEFAULT_TENSORDOCK_RAM_GB_PER_GPU, DEFAULT_TENSORDOCK_VCPU_PER_GPU

MIN_STORAGE_GB = 100  # POST /instances refuses less (reference 2.5)
MIN_VCPUS = 2
MIN_RAM_GB = 2
PRICE_DECIMALS = 6  # sums of per-unit prices: drop float noise (0.448000000001)


@dataclass(frozen=True, slots=True)
class Sizing:
    """vCPUs and RAM a VM gets per GPU (CPU-only VMs get one GPU's worth)."""

    vcpu_per_gpu: int = DEFAULT_TENSORDOCK_VCPU_PER_GPU
    ram_gb_per_gpu: int = DEFAULT_TENSORDOCK_RAM_GB_PER_GPU


@dataclass(frozen=True, slots=True)
class UnitPrices:
    """USD per hour: per GPU, per vCPU, per GB of RAM, per GB of storage."""

    per_gpu_hr: float
    per_vcpu_hr: float
    per_gb_ram_hr: float
    per_gb_storage_hr: float


@dataclass(frozen=True, slots=True)
class Resources:
    gpu_count: int
    vcpus: int
    ram_gb: int
    storage_gb: int


@dataclass(frozen=True, slots=True)
class NodeCaps:
    """What one hostnode can give a VM (``available_resources``); None: not reported."""

    vcpus_free: int | None = None
    ram_gb_free: int | None = None
    storage_gb_free: int | None = None
    max_vcpus_per_gpu: int | None = None
    max_ram_per_gpu: int | None = None
    max_vcpus: int | None = None
    max_ram_gb: int | None = None
    max_storage_gb: int | None = None

    @property
    def storage_gb(self) -> int | None:
        """The most storage one VM can have here."""
        return _min(self.storage_gb_free, self.max_storage_gb)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _min(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def caps_from(available: dict[str, Any]) -> NodeCaps:
    """A hostnode's ``available_resources`` as caps."""
    return NodeCaps(
        vcpus_free=_int(available.get("vcpu_count")),
        ram_gb_free=_int(available.get("ram_gb")),
        storage_gb_free=_int(available.get("storage_gb")),
        max_vcpus_per_gpu=_int(available.get("max_vcpus_per_gpu")),
        max_ram_per_gpu=_int(available.get("max_ram_per_gpu")),
        max_vcpus=_int(available.get("max_vcpus")),
        max_ram_gb=_int(available.get("max_ram_gb")),
        max_storage_gb=_int(available.get("max_storage_gb")),
    )


def unit_prices(pricing: dict[str, Any], per_gpu_hr: Any = None) -> UnitPrices:
    """A hostnode's ``pricing`` object plus one GPU model's ``price_per_hr``."""
    return UnitPrices(
        per_gpu_hr=_float(per_gpu_hr),
        per_vcpu_hr=_float(pricing.get("per_vcpu_hr")),
        per_gb_ram_hr=_float(pricing.get("per_gb_ram_hr")),
        per_gb_storage_hr=_float(pricing.get("per_gb_storage_hr")),
    )


def storage_gb(disk_gb: float) -> int:
    """The storage to rent for ``disk_gb``: whole GB, at least the API's minimum."""
    return max(MIN_STORAGE_GB, math.ceil(disk_gb - 1e-9))


def size_vm(gpu_count: int, disk_gb: float, caps: NodeCaps, sizing: Sizing) -> Resources | None:
    """The VM ``gpu_count`` GPUs get on a node with ``caps``; None when it does not fit.

    >>> size_vm(1, 32, NodeCaps(vcpus_free=64, ram_gb_free=256, storage_gb_free=3800), Sizing())
    Resources(gpu_count=1, vcpus=8, ram_gb=32, storage_gb=100)
    """
    share = max(gpu_count, 1)  # a CPU-only VM gets one GPU's worth
    per_gpu_vcpus = _min(sizing.vcpu_per_gpu, caps.max_vcpus_per_gpu) or sizing.vcpu_per_gpu
    per_gpu_ram = _min(sizing.ram_gb_per_gpu, caps.max_ram_per_gpu) or sizing.ram_gb_per_gpu
    vcpus = _min(per_gpu_vcpus * share, caps.vcpus_free, caps.max_vcpus) or 0
    vcpus -= vcpus % 2  # the API accepts even counts only
    ram = _min(per_gpu_ram * share, caps.ram_gb_free, caps.max_ram_gb) or 0
    storage = storage_gb(disk_gb)
    room = caps.storage_gb
    if vcpus < MIN_VCPUS or ram < MIN_RAM_GB or (room is not None and room < storage):
        return None
    return Resources(gpu_count=gpu_count, vcpus=vcpus, ram_gb=ram, storage_gb=storage)


def compute_price(res: Resources, prices: UnitPrices) -> float:
    """USD per hour for the GPUs, vCPUs and RAM: what a released (stopped) VM stops paying."""
    total = (
        res.gpu_count * prices.per_gpu_hr
        + res.vcpus * prices.per_vcpu_hr
        + res.ram_gb * prices.per_gb_ram_hr
    )
    return round(total, PRICE_DECIMALS)


def storage_price(res: Resources, prices: UnitPrices) -> float:
    """USD per hour for the storage: all a stopped VM with its GPU released still bills."""
    return round(res.storage_gb * prices.per_gb_storage_hr, PRICE_DECIMALS)


def hourly_price(res: Resources, prices: UnitPrices) -> float:
    """The whole VM's USD per hour while running (or stopped with its GPU kept).

    >>> hourly_price(Resources(1, 8, 32, 200), UnitPrices(0.35, 0.003, 0.002, 0.00005))
    0.448
    """
    return round(compute_price(res, prices) + storage_price(res, prices), PRICE_DECIMALS)
