"""Who owns an in-flight rental, and whether that owner is still alive."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

# A live owner refreshes its heartbeat every few seconds; these graces leave ample room.
SAME_HOST_STALE = timedelta(minutes=10)  # a pid can be reused: a very old heartbeat is dead too
OTHER_HOST_GRACE = timedelta(minutes=3)


@dataclass(frozen=True, slots=True)
class Owner:
    host: str
    pid: int

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid())


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
    is_alive: Callable[[int], bool] = pid_alive,
    other_host_grace: timedelta = OTHER_HOST_GRACE,
) -> bool:
    """True while the owner may still be working on the rental.

    On this host the pid tells (and a heartbeat older than ``SAME_HOST_STALE`` means the pid was
    reused). From another host only the heartbeat can: older than the grace is abandoned.
    """
    if owner_host is None or owner_pid is None or heartbeat_at is None:
        return False
    age = now - heartbeat_at
    if owner_host == (this_host or socket.gethostname()):
        return is_alive(owner_pid) and age < SAME_HOST_STALE
    return age < other_host_grace
