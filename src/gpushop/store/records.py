"""Plain records the store hands out (never the ORM rows, so they stay valid after the
transaction that read them and can cross threads freely)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from gpushop.models import JobState, RentalState

GPU = "gpu"  # a segment billed at the rental's price_per_hour
STORAGE = "storage"  # a segment billed at details["storage_per_hour"] (stopped / interrupted)


class Segment(NamedTuple):
    """A closed billing interval ``[start, end)`` at ``rate`` USD per hour."""

    kind: str
    start: datetime
    end: datetime
    rate: float


@dataclass(slots=True)
class Rental:
    """OUR record of a rented instance. Times are tz-aware UTC."""

    id: str
    provider: str
    state: RentalState
    label: str
    max_duration_s: float
    created_at: datetime
    updated_at: datetime
    offer_id: str | None = None
    instance_id: str | None = None
    gpu_name: str | None = None
    num_gpus: int | None = None
    price_per_hour: float | None = None
    disk_gb: float | None = None
    image: str | None = None
    template_hash: str | None = None
    interruptible: bool = False
    bid_price: float | None = None
    keep_interrupted: bool = False
    ready_at: datetime | None = None
    running_since: datetime | None = None
    stopped_at: datetime | None = None
    ended_at: datetime | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    heartbeat_at: datetime | None = None
    lease_until: datetime | None = None  # past it, the owner counts as dead (fleet/owners.py)
    ssh_host: str | None = None
    ssh_port: int | None = None
    ssh_user: str | None = None
    host_key: str | None = None
    machine_id: str | None = None
    error: str | None = None
    user_id: str | None = None  # the team service's user it was rented for (None: the CLI's)
    details: dict[str, Any] = field(default_factory=dict)
    # Closed billing intervals, appended by the store when a billed state ends (costs.py). The
    # open interval (READY since running_since, STOPPED since stopped_at) is not in this list.
    segments: list[Segment] = field(default_factory=list)

    @property
    def deadline(self) -> datetime:
        return self.created_at + timedelta(seconds=self.max_duration_s)


@dataclass(slots=True)
class RentalEvent:
    """One line of a rental's log. ``kind``: "transition", "note", "claim", "cost", ..."""

    id: int
    rental_id: str
    at: datetime
    old_state: RentalState | None
    new_state: RentalState | None
    kind: str
    reason: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Job:
    """OUR record of a job: what to run (``spec``), where (``rental_id``) and how far it got."""

    id: str
    kind: str
    name: str
    state: JobState
    created_at: datetime
    updated_at: datetime
    rental_id: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    remote_dir: str | None = None
    log_offset: int = 0
    exit_code: int | None = None
    error: str | None = None
    cost_usd: float | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    heartbeat_at: datetime | None = None
    lease_until: datetime | None = None  # past it, the owner counts as dead (fleet/owners.py)
    details: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None  # a job submitted to the service
    sealed_secrets: str | None = field(default=None, repr=False)  # ciphertext only
