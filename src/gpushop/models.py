"""Provider-neutral domain records. Units: GB, USD per hour, seconds, UTC (DESIGN.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpushop.gpus import GpuSelector


class SortKey(enum.StrEnum):
    PRICE = "price"
    VALUE = "value"
    RELIABILITY = "reliability"
    PERF = "perf"


class Feature(enum.StrEnum):
    """Optional capabilities; callers ask ``provider.supports(...)`` before relying on one."""

    INTERRUPTIBLE = "interruptible"
    LABELS = "labels"
    TEMPLATES = "templates"
    SSH_KEYS = "ssh_keys"
    STOP_KEEPS_GPU = "stop_keeps_gpu"
    # stop gives the GPU back (else the stopped VM bills the full rate): a restart may find none
    STOP_RELEASES_GPU = "stop_releases_gpu"
    CHARGES = "charges"
    # runs the requested Docker image as the instance itself (Vast.ai); without it the provider
    # rents VMs from OS images and a job's image runs under `docker run` on the VM (TensorDock)
    CONTAINERS = "containers"


class InstanceStatus(enum.StrEnum):
    """Normalised instance status; the provider's own word is kept in ``Instance.raw_status``."""

    PROVISIONING = "provisioning"  # accepted, not yet pulling
    LOADING = "loading"  # pulling the image / booting
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"  # created but cannot start (OCI error), will not reach running
    OFFLINE = "offline"  # host lost / unknown
    GONE = "gone"  # destroyed or never ours


@dataclass(slots=True)
class OfferQuery:
    """What the user wants, independent of any provider.

    Memory and disk in GB (per GPU for ``min_vram_gb``), prices in USD per hour for the whole
    offer, reliability 0..1. ``None`` means "no constraint".
    """

    gpus: list[GpuSelector] = field(default_factory=list)
    min_vram_gb: float | None = None
    num_gpus: int | None = None
    max_price: float | None = None
    min_reliability: float | None = 0.98
    disk_gb: float = 32.0
    min_cuda: float | None = None
    countries: list[str] = field(default_factory=list)
    interruptible: bool = False
    verified: bool = True
    datacenter: bool | None = None
    min_inet_down_mbps: float | None = None
    limit: int | None = None
    exclude_machines: frozenset[str] = frozenset()

    def describe(self) -> str:
        parts = []
        if self.gpus:
            names = (s.model.name if len(s.variants) > 1 else s.variants[0] for s in self.gpus)
            parts.append("/".join(names))
        if self.num_gpus:
            parts.append(f"{self.num_gpus}x")
        if self.min_vram_gb is not None:
            parts.append(f">= {self.min_vram_gb:g} GB VRAM")
        if self.min_reliability is not None:
            parts.append(f"reliability >= {self.min_reliability:g}")
        if self.max_price is not None:
            parts.append(f"<= ${self.max_price:g}/h")
        if self.min_cuda is not None:
            parts.append(f"CUDA >= {self.min_cuda:g}")
        if self.countries:
            parts.append("in " + ",".join(self.countries))
        parts.append(f"{self.disk_gb:g} GB disk")
        if self.interruptible:
            parts.append("interruptible")
        return ", ".join(parts)


@dataclass(slots=True)
class Offer:
    """One rentable configuration, normalised. ``price_per_hour`` includes the requested disk."""

    provider: str
    offer_id: str
    gpu_name: str  # canonical model name
    gpu_variant: str  # the provider's spelling ("A100 SXM4")
    num_gpus: int
    gpu_ram_gb: float  # per GPU
    price_per_hour: float  # whole offer, incl. storage for disk_gb (at min_bid if interruptible)
    gpu_price_per_hour: float  # whole offer, excl. storage
    storage_price_per_hour: float
    disk_gb: float  # the disk this price was computed for
    disk_available_gb: float
    reliability: float | None
    verified: bool
    datacenter: bool
    location: str
    country: str | None
    inet_up_mbps: float | None
    inet_down_mbps: float | None
    cuda: float | None
    driver: str | None
    dlperf: float | None
    min_bid: float | None
    interruptible: bool
    machine_id: str | None = None
    cpu_cores: float | None = None
    ram_gb: float | None = None
    provider_data: dict[str, Any] = field(default_factory=dict)
    market_median_per_gpu: float | None = None  # filled by the market layer

    @property
    def id(self) -> str:
        return f"{self.provider}:{self.offer_id}"

    @property
    def price_per_gpu_hour(self) -> float:
        return self.gpu_price_per_hour / max(self.num_gpus, 1)

    @property
    def dlperf_per_dollar(self) -> float | None:
        if self.dlperf is None or self.price_per_hour <= 0:
            return None
        return self.dlperf / self.price_per_hour

    @property
    def market_delta_pct(self) -> float | None:
        """How this offer's $/GPU/h compares with the market median of its model, in percent."""
        median = self.market_median_per_gpu
        if not median:
            return None
        return (self.price_per_gpu_hour - median) / median * 100.0


@dataclass(slots=True)
class Instance:
    """An instance as the provider reports it."""

    provider: str
    instance_id: str
    status: InstanceStatus
    raw_status: str | None
    label: str | None
    gpu_name: str
    num_gpus: int
    price_per_hour: float | None
    ssh_host: str | None = None
    ssh_port: int | None = None
    direct_ssh_host: str | None = None
    direct_ssh_port: int | None = None
    status_msg: str | None = None
    started_at: datetime | None = None
    image: str | None = None
    provider_data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CreateRequest:
    """Everything a provider needs to start an instance from an offer."""

    offer_id: str
    label: str
    disk_gb: float
    image: str | None = None
    template_hash: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    onstart: str | None = None
    bid_price: float | None = None  # None: on-demand


class RentalState(enum.StrEnum):
    """Our record's state (issue: rentals). In-flight states have an owner and a heartbeat."""

    REQUESTED = "requested"  # row written, no provider call yet (write-ahead)
    CREATING = "creating"  # create call in flight or answered
    PROVISIONING = "provisioning"  # instance exists, waiting until SSH answers
    READY = "ready"
    STOPPED = "stopped"  # stopped on purpose: still bills storage
    RELEASING = "releasing"  # destroy in flight / being verified
    RELEASED = "released"  # verified gone
    FAILED = "failed"  # never became ready, or abandoned; the instance is (being) destroyed
    LOST = "lost"  # active rental whose instance vanished (ghost)
    INTERRUPTED = "interrupted"  # outbid interruptible instance

    @property
    def in_flight(self) -> bool:
        return self in IN_FLIGHT

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


IN_FLIGHT = frozenset(
    {RentalState.REQUESTED, RentalState.CREATING, RentalState.PROVISIONING, RentalState.RELEASING}
)
TERMINAL = frozenset({RentalState.RELEASED, RentalState.FAILED, RentalState.LOST})

# Allowed transitions; anything else is a bug. FAILED and LOST may still need their instance
# destroyed (reconcile does it) but never come back to life.
TRANSITIONS: dict[RentalState, frozenset[RentalState]] = {
    RentalState.REQUESTED: frozenset({RentalState.CREATING, RentalState.FAILED}),
    RentalState.CREATING: frozenset(
        {RentalState.PROVISIONING, RentalState.RELEASING, RentalState.FAILED}
    ),
    RentalState.PROVISIONING: frozenset(
        {
            RentalState.READY,
            RentalState.RELEASING,
            RentalState.FAILED,
            RentalState.LOST,
            RentalState.INTERRUPTED,
        }
    ),
    RentalState.READY: frozenset(
        {RentalState.STOPPED, RentalState.RELEASING, RentalState.LOST, RentalState.INTERRUPTED}
    ),
    RentalState.STOPPED: frozenset(
        {RentalState.PROVISIONING, RentalState.RELEASING, RentalState.LOST}
    ),
    RentalState.INTERRUPTED: frozenset(
        {RentalState.PROVISIONING, RentalState.RELEASING, RentalState.LOST}
    ),
    RentalState.RELEASING: frozenset({RentalState.RELEASED, RentalState.FAILED}),
    RentalState.RELEASED: frozenset(),
    RentalState.FAILED: frozenset(),
    RentalState.LOST: frozenset(),
}


def can_transition(old: RentalState, new: RentalState) -> bool:
    return new in TRANSITIONS[old]


class JobState(enum.StrEnum):
    """A job's progress (issue: jobs). Every non-terminal state can be resumed by ``attach``:
    uploads and downloads skip what is already there, and a launched job is found by its pid file.
    """

    PENDING = "pending"  # written, nothing rented yet
    PROVISIONING = "provisioning"  # renting (the rental id is set once its row exists)
    UPLOADING = "uploading"
    RUNNING = "running"  # launched on the instance (detached from SSH)
    DOWNLOADING = "downloading"
    RELEASING = "releasing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in JOB_TERMINAL


JOB_TERMINAL = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED}
)
