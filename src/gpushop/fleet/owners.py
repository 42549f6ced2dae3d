"""Who owns an in-flight rental or a job, and whether that owner is still alive.

One model for a CLI process and a service replica: an owner is a host and a pid holding a
heartbeat **lease**. The owner renews it every ``beat_s``; once ``lease_until`` has passed, the
owner counts as dead whatever its host (a replica that stopped renewing is as good as gone), and
on the owner's own host a dead pid tells sooner. Rows written before leases existed fall back to
the heartbeat's age.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

# A live owner refreshes its heartbeat every few seconds; these graces leave ample room.
SAME_HOST_STALE = timedelta(minutes=10)  # a pid can be reused: a very old heartbeat is dead too
OTHER_HOST_GRACE = timedelta(minutes=3)
DEFAULT_LEASE_S = 180.0  # a CLI process: as long as the old grace (a laptop that sleeps a while)
MAX_BEAT_S = 5.0


@dataclass(frozen=True, slots=True)
class Owner:
    host: str
    pid: int
    lease_s: float = DEFAULT_LEASE_S

    @classmethod
    def me(cls, lease_s: float = DEFAULT_LEASE_S) -> Owner:
        return cls(socket.gethostname(), os.getpid(), lease_s)

    @property
    def beat_s(self) -> float:
        """How often to renew: a few renewals fit in a lease, so one slow write loses nothing."""
        return min(MAX_BEAT_S, self.lease_s / 3)

    def lease_from(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.lease_s)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that ended but was not reaped (its parent, or a PID 1 that never reaps, has
    not waited for it) still answers ``kill -0``: it is dead all the same."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"


def owner_alive(
    owner_host: str | None,
    owner_pid: int | None,
    heartbeat_at: datetime | None,
    now: datetime,
    *,
    this_host: str | None = None,
    lease_until: datetime | None = None,
    is_alive: Callable[[int], bool] = pid_alive,
    other_host_grace: timedelta = OTHER_HOST_GRACE,
) -> bool:
    """True while the owner may still be working on the rental (or job).

    An expired lease is a dead owner. On this host the pid tells too (and a heartbeat older than
    ``SAME_HOST_STALE`` means the pid was reused). From another host only the lease (or, for a
    row without one, the heartbeat's age against the grace) can.
    """
    if owner_host is None or owner_pid is None or heartbeat_at is None:
        return False
    if lease_until is not None and now >= lease_until:
        return False
    age = now - heartbeat_at
    if owner_host == (this_host or socket.gethostname()):
        return is_alive(owner_pid) and age < SAME_HOST_STALE
    return lease_until is not None or age < other_host_grace
