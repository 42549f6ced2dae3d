"""A seeded synthetic Vast.ai market.

`Market.generate(offers, seed)` builds every offer once: the full JSON object (priced the default
way: on-demand, 5 GB of storage) plus one list per scalar field ("columns"), so that a search can
filter and sort with C-level `map`/`sorted` calls instead of walking dicts. Only a few fields change
per request (duration, rented, rn, and the price fields for other storage sizes or bid/reserved
pricing); `Market.payload` applies them on a shallow copy.
"""

from __future__ import annotations

import itertools
import math
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpushop.emulator.catalog import (
    CONSUMER_BOARDS,
    CONSUMER_CPUS,
    DATACENTER_SHARE,
    DISKS,
    DRIVERS,
    GPU_COUNTS,
    GPU_MODELS,
    IP_PREFIXES,
    LOCATIONS,
    OS_VERSIONS,
    RAM_SIZES_MB,
    SERVER_BOARDS,
    SERVER_CPUS,
    GpuModel,
)

DEFAULT_STORAGE_GB = 5.0
"""`allocated_storage` when a query gives none: the official CLI's `--storage` default (OAPI says
8 GB; the CLI always sends its value, so 5 is what CLI users see)."""

PRICE_KINDS = ("on-demand", "bid", "reserved")
PRIVATE_FIELDS = ("_od_base", "_bid_base", "_country")  # generator helpers, never sent

# Fields whose value depends on the request (storage size, pricing kind); everything else in an
# offer is fixed for the life of the market.
PRICE_FIELDS = (
    "dph_base",
    "storage_total_cost",
    "dph_total",
    "dph_total_adj",
    "discount_rate",
    "discounted_hourly",
    "discounted_dph_total",
    "dlperf_per_dphtotal",
    "flops_per_dphtotal",
    "vram_costperhour",
    "is_bid",
)

Offer = dict[str, Any]


def driver_int(version: str) -> int:
    """'570.133.07' -> 570133007 (3 digits per part), as the API's `driver_vers`."""
    total = 0
    for part in version.strip().split(".")[:3]:
        total = total * 1000 + int(part)
    for _ in range(3 - len(version.strip().split("."))):
        total *= 1000
    return total


def price_fields(
    offer: Offer, storage_gb: float, kind: str, *, base: float | None = None
) -> dict[str, Any]:
    """The price-dependent fields of an offer or instance, per the fixtures README formulas.

    `kind` "bid" prices from `min_bid` (the API computes bid searches from the current minimum
    bid); "reserved" applies the maximum prepay discount. `base` overrides the GPU price (an
    instance's own bid).
    """
    if base is None:
        base = offer["_bid_base"] if kind == "bid" else offer["_od_base"]
    storage = round(offer["storage_cost"] * storage_gb / 720.0, 12)
    total = round(base + storage, 10)
    discount_rate = offer["credit_discount_max"] if kind == "reserved" else 0.0
    discount = round(base * discount_rate, 10)
    discounted_total = round(total - discount, 10)
    per_total = total if total > 0 else 1e-9
    return {
        "dph_base": base,
        "storage_total_cost": storage,
        "dph_total": total,
        "dph_total_adj": total,
        "discount_rate": discount_rate,
        "discounted_hourly": discount,
        "discounted_dph_total": discounted_total,
        "dlperf_per_dphtotal": round(offer["dlperf"] / per_total, 6),
        "flops_per_dphtotal": round(offer["total_flops"] / per_total, 6),
        "vram_costperhour": round(total / (offer["gpu_total_ram"] / 1024.0), 9),
        "is_bid": kind == "bid",
        "search": {
            "discountTotalHour": discount or 0,  # an int 0 when undiscounted, as the API sends
            "discountedTotalPerHour": discounted_total,
            "diskHour": storage,
            "gpuCostPerHour": base,
            "totalHour": total,
        },
        "instance": {
            "discountTotalHour": 0,
            "discountedTotalPerHour": storage,
            "diskHour": storage,
            "gpuCostPerHour": 0,
            "totalHour": storage,
        },
    }


@dataclass
class Market:
    """Immutable offers plus column views; availability lives in the emulator state."""

    seed: int
    base_time: float
    offers: list[Offer]  # public payloads at default pricing, id ascending
    private: list[dict[str, Any]]  # per offer: _od_base, _bid_base, _country, ...
    columns: dict[str, list[Any]]
    index_by_id: dict[int, int]
    gpu_names: list[str]
    _price_cache: dict[tuple[float, str], dict[str, list[Any]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offers)

    @classmethod
    def generate(cls, count: int, seed: int, now: float | None = None) -> Market:
        base_time = time.time() if now is None else now
        rng = random.Random(seed)
        raw = _Generator(rng, base_time).build(count)
        raw.sort(key=lambda o: o["id"])
        offers: list[Offer] = []
        private: list[dict[str, Any]] = []
        for full in raw:
            hidden = {k: full.pop(k) for k in PRIVATE_FIELDS}
            merged = {**full, **hidden}
            full.update(price_fields(merged, DEFAULT_STORAGE_GB, "on-demand"))
            offers.append(full)
            private.append(hidden)
        columns = _columns(offers)
        columns["_country"] = [p["_country"] for p in private]
        return cls(
            seed=seed,
            base_time=base_time,
            offers=offers,
            private=private,
            columns=columns,
            index_by_id={o["id"]: i for i, o in enumerate(offers)},
            gpu_names=sorted({o["gpu_name"] for o in offers}),
        )

    def price_columns(self, storage_gb: float, kind: str) -> dict[str, list[Any]]:
        """Price-field columns for a storage size and pricing kind (cached: queries repeat)."""
        key = (storage_gb, kind)
        if key == (DEFAULT_STORAGE_GB, "on-demand"):
            return {name: self.columns[name] for name in PRICE_FIELDS}
        cached = self._price_cache.get(key)
        if cached is None:
            rows = [
                price_fields({**o, **p}, storage_gb, kind)
                for o, p in zip(self.offers, self.private, strict=True)
            ]
            cached = {name: [r[name] for r in rows] for name in PRICE_FIELDS}
            if len(self._price_cache) >= 16:
                self._price_cache.pop(next(iter(self._price_cache)))
            self._price_cache[key] = cached
        return cached

    def full(self, index: int) -> dict[str, Any]:
        """Payload plus private helper fields (for pricing an instance made from this offer)."""
        return {**self.offers[index], **self.private[index]}

    def payload(
        self,
        index: int,
        *,
        now: float,
        storage_gb: float,
        kind: str,
        rented: bool,
        rn: int,
        select: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        offer = self.offers[index]
        out = dict(offer)
        if (storage_gb, kind) != (DEFAULT_STORAGE_GB, "on-demand"):
            out.update(price_fields({**offer, **self.private[index]}, storage_gb, kind))
        out["duration"] = round(offer["end_date"] - now, 1)
        out["rented"] = rented
        out["rn"] = rn
        if select is not None:
            return {name: out.get(name) for name in select}
        return out


def _columns(offers: list[Offer]) -> dict[str, list[Any]]:
    """One list per scalar field; lists and objects (gpu_ids, search...) are not filterable."""
    if not offers:
        return {name: [] for name in OFFER_SCALAR_FIELDS}
    return {
        name: [o[name] for o in offers]
        for name, value in offers[0].items()
        if not isinstance(value, list | dict)
    }


class _Generator:
    """Draws machines, then one to three offers per machine (disjoint GPU sets)."""

    def __init__(self, rng: random.Random, now: float) -> None:
        self.rng = rng
        self.now = now
        self.next_offer_id = 20_000_000 + rng.randrange(1_000_000)
        self.next_machine_id = 1_000 + rng.randrange(5_000)
        self.models = GPU_MODELS
        self.model_weights = list(itertools.accumulate(m.weight for m in GPU_MODELS))
        self._tables: dict[int, tuple[list[Any], list[float]]] = {}

    def build(self, count: int) -> list[Offer]:
        offers: list[Offer] = []
        while len(offers) < count:
            offers.extend(self.machine(count - len(offers)))
        return offers

    def pick(self, items: Sequence[tuple[Any, float]]) -> Any:
        table = self._tables.get(id(items))
        if table is None:
            table = self._tables[id(items)] = (
                [i[0] for i in items],
                list(itertools.accumulate(i[1] for i in items)),
            )
        return self.rng.choices(table[0], cum_weights=table[1])[0]

    def machine(self, room: int) -> list[Offer]:
        rng = self.rng
        model: GpuModel = rng.choices(self.models, cum_weights=self.model_weights)[0]
        first = self.pick(GPU_COUNTS[model.tier])
        machine_gpus = first * rng.choice([1, 1, 1, 2, 4, 8])
        machine_gpus = min(max(machine_gpus, first), 8)
        sizes = [first]
        free = machine_gpus - first
        # Some machines list several asks (the rest of their GPUs): they share a machine_id,
        # which is what makes `rented` true for the others once one is rented.
        while free > 0 and len(sizes) < 3 and len(sizes) < room and rng.random() < 0.45:
            size = rng.choice([s for s in (1, 2, 4) if s <= free])
            sizes.append(size)
            free -= size
        machine = self.machine_fields(model, machine_gpus)
        offers = []
        gpu_index = 0
        for size in sizes[:room]:
            offers.append(self.offer(model, machine, size, machine_gpus, gpu_index))
            gpu_index += size
        return offers

    def machine_fields(self, model: GpuModel, machine_gpus: int) -> dict[str, Any]:
        rng = self.rng
        machine_id = self.next_machine_id
        self.next_machine_id += 1 + rng.randrange(40)
        datacenter = rng.random() < DATACENTER_SHARE[model.tier]
        server = datacenter or model.tier == "datacenter" or machine_gpus >= 4
        cpu_name, cores, ghz = rng.choice(SERVER_CPUS if server else CONSUMER_CPUS)
        ram_target = cores * rng.choice([2000, 4000, 8000, 16000])
        cpu_ram = min(RAM_SIZES_MB, key=lambda r: abs(r - ram_target))
        drivers = [d for d in DRIVERS if int(d[0].split(".")[0]) >= model.min_driver]
        driver, cuda, _ = drivers[
            rng.choices(range(len(drivers)), weights=[d[2] for d in drivers])[0]
        ]
        if rng.random() < 0.85:  # most hosts are solid; a tail goes down to ~0.80
            reliability = 1.0 - rng.uniform(0.0005, 0.05) ** 1.0 * rng.random()
            reliability = min(max(reliability, 0.95), 0.9995)
        else:
            reliability = rng.uniform(0.80, 0.95)
        if datacenter:
            reliability = max(reliability, rng.uniform(0.97, 0.999))
        reliability = round(reliability, 4)
        verified = datacenter or rng.random() >= 0.14
        geolocation = self.pick(LOCATIONS)
        disk_name, bw_lo, bw_hi = rng.choice(DISKS)
        inet_down = round(math.exp(rng.uniform(math.log(100), math.log(10000))), 1)
        if datacenter:
            inet_down = round(max(inet_down, rng.uniform(2000, 10000)), 1)
        inet_up = round(inet_down * rng.uniform(0.1, 1.0), 1)
        inet_cost = round(rng.uniform(0.002, 0.01), 4) if datacenter or rng.random() < 0.4 else 0.0
        pci_gen = 5.0 if model.compute_cap >= 1200 else rng.choice([3.0, 4.0, 4.0, 4.0])
        lanes = 16 if server or rng.random() < 0.7 else 8
        pcie_bw = round(
            {3.0: 11.8, 4.0: 24.0, 5.0: 50.0}[pci_gen] * lanes / 16 * rng.uniform(0.93, 1.04), 1
        )
        return {
            "machine_id": machine_id,
            "host_id": 100_000 + rng.randrange(150_000),
            "datacenter": datacenter,
            "cpu_name": cpu_name,
            "cpu_cores": cores,
            "cpu_ghz": ghz,
            "cpu_ram": cpu_ram,
            "mobo_name": rng.choice(SERVER_BOARDS if server else CONSUMER_BOARDS),
            "driver_version": driver,
            "cuda_max_good": cuda,
            "reliability": reliability,
            "verified": verified,
            "geolocation": geolocation,
            "disk_name": disk_name,
            "disk_bw": round(rng.uniform(bw_lo, bw_hi), 1),
            "disk_total": math.exp(rng.uniform(math.log(150), math.log(4000)))
            * math.sqrt(machine_gpus),
            "inet_down": inet_down,
            "inet_up": inet_up,
            "inet_cost": inet_cost,
            "pci_gen": pci_gen,
            "lanes": lanes,
            "pcie_bw": pcie_bw,
            "public_ipaddr": rng.choice(IP_PREFIXES) + str(rng.randrange(1, 255)),
            "static_ip": datacenter or rng.random() < 0.5,
            "direct_port_count": rng.choice([20, 32, 64, 100, 128, 200, 300, 400, 500, 1000]),
            "os_version": self.pick(OS_VERSIONS),
            "vms_enabled": rng.random() < (0.5 if datacenter else 0.15),
            "credit_discount_max": 0.4 if datacenter else rng.choice([0.0, 0.1, 0.2, 0.2, 0.3]),
            "start_date": round(self.now - rng.uniform(7_200, 240 * 86_400), 4),
            "end_date": float(round(self.now + rng.uniform(2 * 86_400, 365 * 86_400))),
            "gpu_max_temp": float(rng.choice([83, 85, 87, 90, 93])),
            "price_u": rng.gauss(0.45, 0.22),  # where the host prices within the model's range
            "display": model.tier == "consumer" and rng.random() < 0.08,
        }

    def offer(
        self,
        model: GpuModel,
        m: dict[str, Any],
        num_gpus: int,
        machine_gpus: int,
        gpu_index: int,
    ) -> Offer:
        rng = self.rng
        offer_id = self.next_offer_id
        self.next_offer_id += 1 + rng.randrange(1_500)
        u = m["price_u"] + rng.gauss(0.0, 0.05) + (0.25 if m["datacenter"] else 0.0)
        u = min(max(u, 0.0), 1.0)
        per_gpu = model.price_lo * (model.price_hi / model.price_lo) ** u
        roll = rng.random()
        if roll < 0.025:  # a few greedy outliers
            per_gpu *= rng.uniform(1.3, 2.5)
        elif roll < 0.035:  # and a few bargains
            per_gpu *= rng.uniform(0.6, 0.85)
        dph_base = round(per_gpu * num_gpus, 3 if per_gpu * num_gpus < 10 else 2)
        min_bid = round(dph_base * rng.uniform(0.55, 0.85), 4)
        frac = num_gpus / machine_gpus
        dlperf = round(model.dlperf * num_gpus * rng.uniform(0.93, 1.05), 4)
        total_flops = round(model.tflops * num_gpus, 2)
        disk_space = round(max(m["disk_total"] * frac, 20.0 * num_gpus), 1)
        reliability = m["reliability"]
        reliability_mult = round(reliability**8.5, 7)
        dph_total_guess = dph_base + 0.1 * DEFAULT_STORAGE_GB / 720
        score = round(0.45 * (dlperf / dph_total_guess) * reliability_mult + 15 * reliability, 6)
        storage_cost = round(rng.uniform(0.05, 0.25), 2)
        geolocation = m["geolocation"]
        return {
            "ask_contract_id": offer_id,
            "avail_vol_ask_id": None,
            "avail_vol_dph": None,
            "avail_vol_size": None,
            "bundle_id": 1_900_000_000 + rng.randrange(20_000_000),
            "bundled_results": None,
            "bw_nvlink": model.nvlink if num_gpus > 1 else 0.0,
            "cluster_id": None,
            "compute_cap": model.compute_cap,
            "cpu_arch": "amd64",
            "cpu_cores": m["cpu_cores"],
            "cpu_cores_effective": round(m["cpu_cores"] * frac, 1),
            "cpu_ghz": m["cpu_ghz"],
            "cpu_name": m["cpu_name"],
            "cpu_ram": m["cpu_ram"],
            "credit_discount_max": m["credit_discount_max"],
            "cuda_max_good": m["cuda_max_good"],
            "direct_port_count": m["direct_port_count"],
            "disk_bw": m["disk_bw"],
            "disk_name": m["disk_name"],
            "disk_space": disk_space,
            "dlperf": dlperf,
            "driver_vers": driver_int(m["driver_version"]),
            "driver_version": m["driver_version"],
            "duration": 0.0,  # set per response: end_date - now
            "end_date": m["end_date"],
            "expected_reliability": round(reliability - 0.38 * (1 - reliability), 7),
            "external": None,
            "geolocation": geolocation,
            "geolocode": zlib.crc32(geolocation.encode()) & 0x3FFFFFFF,
            "gpu_arch": "nvidia",
            "gpu_display_active": m["display"],
            "gpu_frac": frac,
            "gpu_ids": [m["machine_id"] * 10 + gpu_index + k for k in range(num_gpus)],
            "gpu_lanes": m["lanes"],
            "gpu_max_power": model.max_power,
            "gpu_max_temp": m["gpu_max_temp"],
            "gpu_mem_bw": model.mem_bw,
            "gpu_name": model.name,
            "gpu_ram": model.ram_mb,
            "gpu_total_ram": model.ram_mb * num_gpus,
            "has_avx": 1,
            "host_id": m["host_id"],
            "hostname": None,
            "hosting_type": 1 if m["datacenter"] else 0,
            "id": offer_id,
            "inet_down": m["inet_down"],
            "inet_down_billed": None,
            "inet_down_cost": m["inet_cost"],
            "inet_up": m["inet_up"],
            "inet_up_billed": None,
            "inet_up_cost": m["inet_cost"],
            "internet_down_cost_per_tb": round(m["inet_cost"] * 1024, 4),
            "internet_up_cost_per_tb": round(m["inet_cost"] * 1024, 4),
            "is_vm_deverified": False,
            "logo": "/static/logos/vastai_small2.png",
            "machine_id": m["machine_id"],
            "min_bid": min_bid,
            "mobo_name": m["mobo_name"],
            "num_gpus": num_gpus,
            "nw_disk_avg_bw": None,
            "nw_disk_max_bw": None,
            "nw_disk_min_bw": None,
            "os_version": m["os_version"],
            "pci_gen": m["pci_gen"],
            "pcie_bw": m["pcie_bw"],
            "pending_count": 0,
            "platform_fee": None,
            "public_ipaddr": m["public_ipaddr"],
            "reliability": reliability,
            "reliability2": reliability,
            "reliability_mult": reliability_mult,
            "rentable": rng.random() >= 0.03,
            "rented": False,
            "resource_type": "gpu",
            "rn": 0,
            "score": score,
            "start_date": m["start_date"],
            "static_ip": m["static_ip"],
            "storage_cost": storage_cost,
            "time_remaining": "",
            "time_remaining_isbid": "",
            "total_flops": total_flops,
            "vericode": 1 if m["verified"] else 0,
            "verification": "verified" if m["verified"] else "unverified",
            "vms_enabled": m["vms_enabled"],
            "webpage": None,
            # private helpers (not sent)
            "_od_base": dph_base,
            "_bid_base": min_bid,
            "_country": geolocation[-2:],
        }


# Filled lazily from a generated offer; the empty market (offers=0) still needs the names.
OFFER_SCALAR_FIELDS: tuple[str, ...] = ()


def _scalar_fields() -> tuple[str, ...]:
    sample = _Generator(random.Random(0), 0.0).machine(1)[0]
    for name in PRIVATE_FIELDS:
        sample.pop(name)
    sample.update(price_fields({**sample, "_od_base": 1.0, "_bid_base": 1.0}, 5.0, "on-demand"))
    return tuple(k for k, v in sample.items() if not isinstance(v, list | dict))


OFFER_SCALAR_FIELDS = _scalar_fields()
