"""The seeded TensorDock market: locations and the hostnodes in them (a pure function of the seed).

Each location holds one to four hostnodes with different GPU models, so a location's entry for a
GPU model (`GET /locations`) is exactly one hostnode's offer and a location-based deploy lands
on that node, at the price the location showed. A few hostnodes are CPU-only. Ports are numbered
from 20000 to 32767 (below Linux's ephemeral range), never shared by two hostnodes.
"""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass

from gpushop.emulator.tensordock.catalog import (
    COUNTRY_CODES,
    DRIVERS,
    GPU_MODELS,
    GPUS_BY_NAME,
    ORG_FIRST,
    ORG_SECOND,
    PLACES,
    GpuModel,
    Place,
)

FIRST_PORT = 20000
LAST_PORT = 32767
# Every emulator of one process advertises the same ports for a seed; emulators of other
# processes (parallel test workers, a user's second one) advertise others, since a hostnode's
# ports are really bound on this machine when its VMs' SSH forwards listen.
PORT_SHIFT = (os.getpid() * 2654435761) % (LAST_PORT - FIRST_PORT)
CPU_ONLY_NODES = 3
VCPU_PRICES = (0.0025, 0.003, 0.003, 0.0035, 0.004)
RAM_PRICES = (0.0015, 0.002, 0.002, 0.0025)
STORAGE_PRICES = (5e-05, 5e-05, 5e-05, 8e-05, 0.0001)
TIERS = (1, 2, 2, 3, 3, 3, 4)  # about 0..4 on the real API; higher is a better datacenter
NETWORK_GBPS = {1: (1, 5), 2: (5, 10), 3: (10, 25), 4: (25, 100)}


@dataclass(frozen=True)
class Location:
    id: str
    place: Place
    tier: int
    has_network_storage: bool

    @property
    def country_code(self) -> str:
        return COUNTRY_CODES[self.place.country]


@dataclass(frozen=True)
class NodeGpu:
    v0_name: str
    count: int  # free when the market starts (other renters hold the rest of the node)
    price: float  # USD per GPU-hour

    @property
    def model(self) -> GpuModel:
        return GPUS_BY_NAME[self.v0_name]


@dataclass(frozen=True)
class Hostnode:
    id: str
    location: Location
    uptime: float  # percent
    gpus: tuple[NodeGpu, ...]
    vcpus: int  # free when the market starts
    ram_gb: int
    storage_gb: int
    vcpus_per_gpu: int | None  # per-GPU caps of one VM (None on CPU-only nodes)
    ram_per_gpu: int | None
    per_vcpu_hr: float
    per_gb_ram_hr: float
    per_gb_storage_hr: float
    ports: tuple[int, ...]
    public_ip: bool
    network_gbps: int
    upload_gbps: int
    organization: str
    organization_name: str
    driver_version: str
    cuda_version: str

    def gpu(self, v0_name: str) -> NodeGpu | None:
        return next((g for g in self.gpus if g.v0_name == v0_name), None)


@dataclass(frozen=True)
class Market:
    seed: int
    locations: tuple[Location, ...]
    hostnodes: tuple[Hostnode, ...]

    def location(self, location_id: str) -> Location | None:
        return next((loc for loc in self.locations if loc.id == location_id), None)

    def hostnode(self, node_id: str) -> Hostnode | None:
        return next((n for n in self.hostnodes if n.id == node_id), None)

    @property
    def gpu_names(self) -> list[str]:
        return sorted({g.v0_name for n in self.hostnodes for g in n.gpus})


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def generate(seed: int) -> Market:
    """The market of `seed`: 16 locations, ~40 hostnodes, every GPU model free somewhere."""
    rng = random.Random(f"tensordock-market:{seed}")
    locations = []
    for place in PLACES:
        tier = rng.choice(TIERS)
        locations.append(Location(_uuid(rng), place, tier, rng.random() < 0.2 + 0.2 * tier))
    # Plan the GPU models per location: distinct within a location, every model at least once.
    sizes = [rng.choice((1, 2, 2, 3, 3, 4)) for _ in locations]
    models = list(GPU_MODELS)
    rng.shuffle(models)
    plans: list[list[GpuModel]] = [[] for _ in locations]
    slots = [i for i, size in enumerate(sizes) for _ in range(size)]
    rng.shuffle(slots)
    guaranteed: set[tuple[int, str]] = set()  # (location, model) with every GPU free
    for model in models:  # one location each first: every model is rentable at the start
        for k, loc_index in enumerate(slots):
            if model not in plans[loc_index]:
                plans[loc_index].append(model)
                guaranteed.add((loc_index, model.v0_name))
                del slots[k]
                break
    weights = [m.weight for m in GPU_MODELS]
    for loc_index in slots:
        for _ in range(20):
            model = rng.choices(GPU_MODELS, weights)[0]
            if model not in plans[loc_index]:
                plans[loc_index].append(model)
                break
    cpu_only = set(rng.sample(range(len(locations)), CPU_ONLY_NODES))
    used_ports: set[int] = set()
    nodes: list[Hostnode] = []
    for loc_index, location in enumerate(locations):
        node_models = list(plans[loc_index])
        groups: list[list[GpuModel]] = []
        while node_models:  # now and then two models share a hostnode
            take = 2 if len(node_models) >= 2 and rng.random() < 0.2 else 1
            groups.append(node_models[:take])
            del node_models[:take]
        if loc_index in cpu_only:
            groups.append([])
        for group in groups:
            full = {m.v0_name for m in group if (loc_index, m.v0_name) in guaranteed}
            nodes.append(_hostnode(rng, location, group, used_ports, full))
    return Market(seed, tuple(locations), tuple(nodes))


def _hostnode(
    rng: random.Random,
    location: Location,
    models: list[GpuModel],
    used_ports: set[int],
    full: set[str],
) -> Hostnode:
    node_id = _uuid(rng)
    gpus = []
    free_gpus = 0
    vcpus_per_gpu = ram_per_gpu = 0
    for model in models:
        total = rng.choice(model.counts)
        free = total if rng.random() < 0.6 else rng.randrange(0, total + 1)
        if model.v0_name in full:
            free = total
        low, high = model.price
        price = round(rng.uniform(low, high), 2)
        gpus.append(NodeGpu(model.v0_name, free, price))
        free_gpus += free
        vcpus_per_gpu = max(vcpus_per_gpu, rng.choice(model.vcpus_per_gpu))
        ram_per_gpu = max(ram_per_gpu, rng.choice(model.ram_per_gpu))
    if models:
        slack = rng.choice((0, 0, 2, 4, 8))
        vcpus = vcpus_per_gpu * free_gpus + slack
        ram = ram_per_gpu * free_gpus + slack * 4
        if vcpus < 4:  # every GPU is taken: some CPU is still free
            vcpus, ram = 8, 32
        storage = rng.choice((900, 1900, 2500, 3800, 6000, 9000, 12000, 20000))
    else:
        vcpus = rng.choice((32, 48, 64, 96, 128))
        ram = vcpus * rng.choice((2, 4))
        storage = rng.choice((2000, 4000, 6000))
    n_ports = rng.choice((3, 5, 10, 16, 20, 20, 20))
    span = LAST_PORT - n_ports - FIRST_PORT
    while True:
        base = FIRST_PORT + (rng.randrange(span) + PORT_SHIFT) % span
        ports = tuple(range(base, base + n_ports))
        if not used_ports.intersection(ports):
            used_ports.update(ports)
            break
    tier = location.tier
    low_gbps, high_gbps = NETWORK_GBPS[tier]
    network = rng.choice((low_gbps, high_gbps))
    driver, cuda = rng.choice(DRIVERS)
    return Hostnode(
        id=node_id,
        location=location,
        uptime=round(min(99.99, rng.uniform(98.4, 99.7) + 0.08 * tier), 2),
        gpus=tuple(gpus),
        vcpus=_even(vcpus),
        ram_gb=int(ram),
        storage_gb=storage,
        vcpus_per_gpu=vcpus_per_gpu if models else None,
        ram_per_gpu=ram_per_gpu if models else None,
        per_vcpu_hr=rng.choice(VCPU_PRICES),
        per_gb_ram_hr=rng.choice(RAM_PRICES),
        per_gb_storage_hr=rng.choice(STORAGE_PRICES),
        ports=ports,
        public_ip=rng.random() < 0.35 + 0.15 * tier,
        network_gbps=network,
        upload_gbps=network if rng.random() < 0.7 else max(1, network // 5),
        organization=f"org-{node_id[:8]}",
        organization_name=f"{rng.choice(ORG_FIRST)} {rng.choice(ORG_SECOND)}",
        driver_version=driver,
        cuda_version=cuda,
    )


def hourly_rate(
    node: Hostnode, v0_name: str | None, gpu_count: int, vcpus: int, ram_gb: int, storage_gb: int
) -> float:
    """`gpu_count x gpu price + vcpus x per_vcpu_hr + ram x per_gb_ram_hr + storage x
    per_gb_storage_hr` (reference 2.8), rounded to 5 decimals as gpuhunt did."""
    gpu = node.gpu(v0_name) if v0_name else None
    gpu_part = gpu_count * gpu.price if gpu is not None else 0.0
    return round(
        gpu_part
        + vcpus * node.per_vcpu_hr
        + ram_gb * node.per_gb_ram_hr
        + storage_gb * node.per_gb_storage_hr,
        5,
    )


def storage_rate(node: Hostnode, storage_gb: int) -> float:
    """What a released (`stoppeddisassociated`) VM still costs per hour."""
    return round(storage_gb * node.per_gb_storage_hr, 5)
