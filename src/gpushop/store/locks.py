"""Locks that work across processes and die with their holder.

- SQLite: ``flock`` on a file beside the database. The kernel drops it when the holder exits or is
  killed, and holding it does not lock the database itself. (Holding ``BEGIN IMMEDIATE`` for the
  length of a reconcile would block every other writer, including the reconciler's own writes
  through its other connections, for as long as the provider calls take.)
- PostgreSQL: a session-level advisory lock on a dedicated connection. The server drops it when
  that connection ends: at once when the holder is killed, and within a minute, by TCP keepalives,
  when the holder's host vanishes (LOCK_KEEPALIVES).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select, text


class LockBusy(Exception):
    """The lock is held elsewhere and the caller asked not to wait."""


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` derived from a name."""
    digest = hashlib.sha256(f"gpushop:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def file_lock(path: Path, *, wait: bool, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(f"{what} is held by another process") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def thread_lock(lock: threading.Lock, *, wait: bool, what: str) -> Iterator[None]:
    """For an in-memory SQLite store, which only one process can see anyway."""
    if not lock.acquire(blocking=wait):
        raise LockBusy(f"{what} is held by another thread")
    try:
        yield
    finally:
        lock.release()


# The lock's server session notices a holder whose host vanished (power cut, network gone: no
# FIN, no RST) by TCP keepalives, and then ends, which frees the lock: probes after 15 s idle,
# every 5 s, and a connection unacknowledged for 45 s is dropped (tcp_user_timeout, also while
# data is in flight). Without them Linux's defaults keep a dead holder's lock for over 2 hours.
# Over a Unix socket they do nothing (and the holder is on the server's own host). They stay
# on the connection when it goes back to the pool: harmless there.
LOCK_KEEPALIVES = {
    "tcp_keepalives_idle": "15",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "6",
    "tcp_user_timeout": "45000",  # milliseconds
}


def _keep_alive(conn: Connection) -> None:
    """Set LOCK_KEEPALIVES on this session, for the ones the server knows (tcp_user_timeout
    is PostgreSQL 12+)."""
    names = ", ".join(f"('{name}', '{value}')" for name, value in LOCK_KEEPALIVES.items())
    conn.execute(
        text(
            "SELECT set_config(w.name, w.value, false) "  # false: for the session, not the tx
            f"FROM (VALUES {names}) AS w(name, value) "
            "WHERE w.name IN (SELECT name FROM pg_settings)"
        )
    )


@contextmanager
def pg_advisory_lock(engine: Engine, key: int, *, wait: bool, what: str) -> Iterator[Connection]:
    """Yields the lock's own connection (its session holds the lock)."""
    conn = engine.connect()
    clean = False
    try:
        _keep_alive(conn)
        if wait:
            conn.execute(select(func.pg_advisory_lock(key)))
            got = True
        else:
            got = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar_one())
        # A session lock outlives the transaction: end it, so the connection does not sit
        # "idle in transaction" for the whole reconcile.
        conn.commit()
        if not got:
            clean = True
            raise LockBusy(f"{what} is held by another session")
        try:
            yield conn
        finally:
            clean = bool(conn.execute(select(func.pg_advisory_unlock(key))).scalar_one())
            conn.commit()
    finally:
        if not clean:
            # the lock's state is unknown: drop the server session, which frees the lock, rather
            # than hand a connection that may still hold it back to the pool
            conn.invalidate()
        conn.close()
